"""The semi-supervised VAE (Kingma et al. 2014): the bounds as pure functions, M2 and M1+M2 training, resume,
data-free sampling, and the errors raised before training."""

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from datamodules import Digits, SemiSupervised
from lightning_gen import M2VAE, VAE
from lightning_gen.core.checks import ConfigError
from lightning_gen.m2vae import (
    bernoulli_features_log_likelihood,
    gaussian_features_log_likelihood,
    labeled_bound,
    m2_loss,
    unlabeled_bound,
)

SMALL = dict(latent_dim=3, hidden=[16], num_samples=10)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


def semi(**kwargs) -> SemiSupervised:
    return SemiSupervised(Digits(batch_size=32), num_labeled=50, num_validation=200, **kwargs)


def vae_checkpoint(path: Path, latent_dim: int = 4, image_shape: tuple[int, int, int] = (1, 8, 8)) -> str:
    """An untrained `VAE` checkpoint (the M1 of M1+M2): its weights and hyperparameters, as Lightning saves them."""
    vae = VAE(latent_dim=latent_dim, image_shape=image_shape, enc_features=4, decoder="mlp", dec_features=2)
    vae.configure_model()
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": dict(vae.hparams)}, path)
    return str(path)


# ---- the bounds --------------------------------------------------------------------------------------------------
def test_log_likelihoods_match_torch_distributions():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 5), torch.rand(3, 5).round()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(target).sum(1)
    torch.testing.assert_close(bernoulli_features_log_likelihood(logits, target), expected)
    mean, logvar, x = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    expected = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(x).sum(1)
    torch.testing.assert_close(gaussian_features_log_likelihood(mean, logvar, x), expected)


def test_bounds_and_loss_by_hand():
    # labeled: log p(x|y,z) + log p(y) - KL, p(y) uniform over K = 2
    torch.testing.assert_close(labeled_bound(torch.tensor([-3.0]), torch.tensor([0.5]), 2),
                               torch.tensor([-3.5 - math.log(2)]))
    # unlabeled: q(y|x) = (1/4, 3/4) from logits (0, log 3); class bounds (-1, -2)
    q = torch.tensor([0.25, 0.75])
    entropy = -(q * q.log()).sum()
    bound = unlabeled_bound(torch.tensor([[-1.0, -2.0]]), torch.tensor([[0.0, math.log(3)]]))
    torch.testing.assert_close(bound, torch.tensor([0.25 * -1 + 0.75 * -2]) + entropy)
    # the q-weighted sum of labeled bounds plus the entropy, for a batch of 3 and K = 4
    torch.manual_seed(0)
    bounds, logits = torch.randn(3, 4) * 10, torch.randn(3, 4)
    p = F.softmax(logits, 1)
    torch.testing.assert_close(unlabeled_bound(bounds, logits),
                               (p * bounds).sum(1) - (p * p.log()).sum(1))
    # loss: (sum_l [-ELBO + w * CE] + sum_u [-U]) / (B_l + B_u)
    labeled, u = torch.tensor([-10.0, -20.0]), torch.tensor([-30.0])
    logits_l, labels = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]), torch.tensor([0, 1])
    ce = torch.tensor([math.log(2), math.log(4)])
    loss, mean_ce = m2_loss(labeled, logits_l, labels, u, class_weight=5.0)
    torch.testing.assert_close(loss, (10 + 20 + 5 * ce.sum() + 30) / 3)
    torch.testing.assert_close(mean_ce, ce.mean())


def test_class_bounds_is_one_batched_pass_equal_to_each_class_alone(monkeypatch):
    model = M2VAE(image_shape=(1, 8, 8), num_classes=10, **SMALL)
    model.configure_model()
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # z = mean: the bound is deterministic
    features = torch.rand(5, 64)
    batched = model.class_bounds(features)  # (5, 10)
    alone = torch.stack([model.bound(features, torch.full((5,), k)) for k in range(10)], dim=1)
    torch.testing.assert_close(batched, alone)


def test_alpha_is_a_tenth_of_all_training_images_per_labeled_image(tmp_path):
    dm = semi()
    model = M2VAE(**SMALL)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, dm)
    n = dm.num_labeled + len(dm.unlabeled_set)  # every training image, labeled or not
    assert model.class_weight() == pytest.approx(0.1 * n / 50)
    assert M2VAE(alpha=10.0, **SMALL).hparams.alpha == 10.0


# ---- training ----------------------------------------------------------------------------------------------------
def test_m2_learns_resumes_and_samples_without_data(tmp_path):
    L.seed_everything(0)
    model = M2VAE(**SMALL, lr=3e-3)
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, limit_train_batches=20, max_epochs=1, enable_checkpointing=True, callbacks=[ckpt_cb],
            log_every_n_steps=1).fit(model, semi())
    first = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 20
    assert {"analogies_epoch0000.png", "class_samples_epoch0000.png", "samples_epoch0000.png"} <= {
        p.name for p in (tmp_path / "samples").iterdir()}
    # resume: continues from step 20 with the optimizer's state
    resumed = M2VAE(**SMALL, lr=3e-3)
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    t = trainer(tmp_path, limit_train_batches=20, max_epochs=2, enable_checkpointing=True, callbacks=[ckpt_cb])
    t.fit(resumed, semi(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert t.global_step == 40 and t.current_epoch == 2
    # the classifier learned something from 50 labels and 2 epochs of 20 steps (chance: 10%)
    acc = t.validate(resumed, semi(), verbose=False)[0]["val/accuracy"]
    assert acc > 0.3
    # a checkpoint loads and samples with no data: image i of class i % 10
    loaded = M2VAE.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    images = loaded.sample(torch.arange(4))
    assert images.shape == (4, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(images[1], loaded.sample(torch.tensor([1]))[0])
    out = trainer(tmp_path).predict(loaded)
    assert torch.cat([o["images"] for o in out]).shape == (10, 1, 8, 8)
    rows = loaded.analogies(torch.rand(2, 1, 8, 8) * 2 - 1)
    assert rows.shape == (2 * 11, 1, 8, 8)


def test_m1_plus_m2_trains_on_vae_features_and_loads_without_the_m1_file(tmp_path):
    m1 = vae_checkpoint(tmp_path / "m1.ckpt")
    model = M2VAE(m1_ckpt=m1, m1_latent_dim=4, **SMALL)
    t = trainer(tmp_path, enable_checkpointing=True)
    t.fit(model, semi())
    assert model.resolved_likelihood == "gaussian" and model.hparams.m1_config["class_path"] == "lightning_gen.VAE"
    assert not model.m1.training and not any(p.requires_grad for p in model.m1.parameters())
    torch.testing.assert_close(model.m1.state_dict(), torch.load(m1)["state_dict"])  # M1 is not trained
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    Path(m1).unlink()  # the M2 checkpoint holds M1 (its config and weights)
    loaded = M2VAE.load_from_checkpoint(ckpt)
    torch.testing.assert_close(loaded.m1.state_dict(), model.m1.state_dict())
    assert loaded.sample(torch.arange(3)).shape == (3, 1, 8, 8)


def test_bf16_mixed_trains_a_step(tmp_path):
    model = M2VAE(**SMALL)
    t = trainer(tmp_path, precision="bf16-mixed", max_steps=1, limit_val_batches=0)
    t.fit(model, semi())
    assert t.global_step == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---- errors before training --------------------------------------------------------------------------------------
def test_plain_labeled_data_names_semi_supervised(tmp_path):
    with pytest.raises(ConfigError, match=r"datamodules\.SemiSupervised"):
        trainer(tmp_path).fit(M2VAE(**SMALL), Digits(batch_size=32))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4)))
    with pytest.raises(ConfigError, match=r"train with `datamodules\.SemiSupervised`"):
        trainer(tmp_path).fit(M2VAE(image_shape=(1, 8, 8), num_classes=10, **SMALL), loader)


def test_bernoulli_decoder_refuses_data_outside_0_1(tmp_path):
    model = M2VAE(image_shape=(1, 8, 8), num_classes=10, **SMALL)
    model.configure_model()
    model.check_pixel_range(torch.rand(2, 1, 8, 8) * 2 - 1)  # [-1, 1]: pixels in [0, 1]
    with pytest.raises(ConfigError, match=r"Bernoulli decoder needs pixel values in \[0, 1\].*likelihood gaussian"):
        model.check_pixel_range(torch.rand(2, 1, 8, 8) * 255)
    with pytest.raises(ConfigError, match="Bernoulli decoder models values in"):
        M2VAE(m1_ckpt="m1.ckpt", likelihood="bernoulli")


def test_m1_of_another_latent_size_or_image_shape_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"latent_dim=4, but this M2 is built for m1_latent_dim=50"):
        trainer(tmp_path).fit(M2VAE(m1_ckpt=vae_checkpoint(tmp_path / "a.ckpt"), m1_latent_dim=50, **SMALL), semi())
    other = vae_checkpoint(tmp_path / "b.ckpt", image_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match=r"images of shape \(1, 28, 28\), but this data's images are \(1, 8, 8\)"):
        trainer(tmp_path).fit(M2VAE(m1_ckpt=other, **SMALL), semi())
    with pytest.raises(ConfigError, match="no such file. Train M1 first"):
        trainer(tmp_path).fit(M2VAE(m1_ckpt=str(tmp_path / "missing.ckpt"), **SMALL), semi())


def test_tiny_recipe_runs_through_the_cli_and_help_documents_alpha(tmp_path, monkeypatch, capsys):
    from lightning_gen.core.cli import GenCLI
    from tests.conftest import QUIET, ROOT

    monkeypatch.chdir(tmp_path)
    GenCLI(args=["fit", "--config", str(ROOT / "configs" / "m2vae" / "tiny.yaml"), "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(tmp_path), *QUIET])
    assert (tmp_path / "samples" / "analogies_epoch0000.png").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(SystemExit):
        GenCLI(args=["fit", "--model.help", "M2VAE"])
    help_text = capsys.readouterr().out
    assert "--model.alpha" in help_text and "0.1 * N" in help_text and "--model.m1_ckpt" in help_text
