"""VAE and conditional VAE: reparameterization, binarization, the importance-weighted bound, training, pictures,
predict, DDP test-set counting and bad input."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from datamodules import Digits
from lightning_gen import CVAE, VAE
from lightning_gen.core.checks import ConfigError
from lightning_gen.losses import gaussian_kl
from lightning_gen.vae import binarize_fixed, reparameterize
from tests.conftest import QUIET, ROOT, run_cli
from tests.helpers import fp16_on_cpu

SMALL = dict(latent_dim=4, enc_features=8, dec_features=8, num_samples=8, test_iw_samples=8)
TINY_VAE = str(ROOT / "configs" / "vae" / "tiny.yaml")
TINY_CVAE = str(ROOT / "configs" / "cvae" / "tiny.yaml")


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=4, limit_val_batches=1,
                    limit_test_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


def test_reparameterized_sample_has_the_right_mean_and_variance():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([1.5, -2.0]), torch.tensor([0.0, 2.0 * torch.log(torch.tensor(3.0)).item()])
    z = reparameterize(mu.expand(200_000, 2), logvar.expand(200_000, 2))
    assert torch.allclose(z.mean(0), mu, atol=0.03)
    assert torch.allclose(z.var(0), torch.tensor([1.0, 9.0]), rtol=0.02)
    mu.requires_grad_(True)
    reparameterize(mu, torch.zeros(2)).sum().backward()  # gradients flow to the mean
    assert torch.equal(mu.grad, torch.ones(2))


def test_binarization_dynamic_and_fixed():
    torch.manual_seed(0)
    probs = torch.rand(4, 1, 8, 8)
    model = VAE(**SMALL, image_shape=(1, 8, 8))
    images = probs * 2 - 1
    draws = torch.stack([model.targets(images, fixed=False) for _ in range(2000)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(draws.mean(0), probs, atol=0.05)  # a fresh Bernoulli(p) draw every time
    fixed = binarize_fixed(probs)
    assert set(fixed.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binarize_fixed(probs), fixed)  # the same draw every time
    assert torch.equal(binarize_fixed(probs[[2, 0]]), fixed[[2, 0]])  # whatever the batch it comes in
    assert torch.equal(binarize_fixed(torch.ones(1, 1, 3, 3)), torch.ones(1, 1, 3, 3))
    no_binarize = VAE(**SMALL, binarize=False, image_shape=(1, 8, 8))
    assert torch.allclose(no_binarize.targets(images, fixed=False), probs, atol=1e-6)


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    L.seed_everything(0)
    model = VAE(**SMALL)
    trainer(tmp_path_factory.mktemp("vae"), limit_train_batches=20).fit(model, Digits(batch_size=32))
    return model.eval()


def test_importance_weighted_bound_equals_elbo_at_k1_and_grows_with_k(trained_vae):
    dm = Digits(batch_size=16)
    dm.setup("fit")
    images, _ = next(iter(dm.val_dataloader()))
    target = trained_vae.targets(images, fixed=True)
    with torch.no_grad():
        mu, logvar = trained_vae.encode(trained_vae.as_input(target))
        torch.manual_seed(0)
        k1 = torch.stack([trained_vae.iw_log_likelihood(target, None, 1) for _ in range(400)]).mean(0)
        analytic = torch.stack([
            trained_vae.log_likelihood(trained_vae.decode(reparameterize(mu, logvar)), target) for _ in range(400)
        ]).mean(0) - gaussian_kl(mu, logvar)
        bounds = {k: torch.stack([trained_vae.iw_log_likelihood(target, None, k) for _ in range(20)]).mean().item()
                  for k in (1, 10, 100)}
    assert k1.shape == analytic.shape == (16,)
    # k = 1: the estimator's mean is the ELBO with the KL in closed form (both Monte Carlo, 400 draws)
    assert k1.mean().item() == pytest.approx(analytic.mean().item(), abs=0.5)
    assert bounds[1] < bounds[10] < bounds[100], bounds
    # chunking does not change the bound: the same noise in one pass or in passes of 3 samples (torch's CPU randn
    # gives the same numbers in one call or in calls of 3 * 16 * 4 values, a multiple of its block of 16)
    torch.manual_seed(1)
    one_pass = trained_vae.iw_log_likelihood(target, None, 12)
    trained_vae.hparams.iw_chunk = 3 * 16
    torch.manual_seed(1)
    chunked = trained_vae.iw_log_likelihood(target, None, 12)
    trained_vae.hparams.iw_chunk = 8192
    assert torch.allclose(one_pass, chunked, atol=1e-4)


class Losses(Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(trainer.callback_metrics["train/loss"].item())


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_training_reduces_the_loss(tmp_path, likelihood):
    L.seed_everything(0)
    record = Losses()
    model = VAE(likelihood=likelihood, latent_dim=8, enc_features=16, dec_features=16, lr=3e-3)
    trainer(tmp_path, limit_train_batches=40, log_every_n_steps=1, callbacks=[record]).fit(model, Digits(batch_size=32))
    first, last = sum(record.values[:5]) / 5, sum(record.values[-5:]) / 5
    assert last < first - 0.15 * abs(first), record.values


def test_kl_warmup_ramps_beta(tmp_path):
    betas = []

    class Beta(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            betas.append(trainer.callback_metrics["train/beta"].item())

    L.seed_everything(0)
    model = VAE(beta=2.0, kl_warmup_epochs=2, **SMALL)
    t = trainer(tmp_path, max_epochs=3, limit_train_batches=4, log_every_n_steps=1, callbacks=[Beta()])
    t.fit(model, Digits(batch_size=32))
    assert betas[0] == 0.0 and betas[4] == pytest.approx(1.0) and betas[-1] == 2.0
    assert all(a <= b for a, b in zip(betas, betas[1:]))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_evaluates(tmp_path, precision):
    L.seed_everything(0)
    model = VAE(**SMALL, image_shape=(1, 8, 8))
    # 16-mixed: real float16 autocast with a GradScaler (Lightning would run bf16 on a CPU)
    t = trainer(tmp_path, **({"precision": precision} if precision == "bf16-mixed" else {"plugins": [fp16_on_cpu()]}))
    dtypes = set()

    def record(module, inputs, output):  # training steps only: pictures are drawn outside autocast
        if module.training:
            dtypes.add(output.dtype)

    model.configure_model()  # the networks, for the hook (a trainer would build them itself)
    model.decoder.register_forward_hook(record)
    t.fit(model, Digits(batch_size=32))
    assert dtypes == {torch.float16 if precision == "16-mixed" else torch.bfloat16}  # training ran under autocast
    if precision == "16-mixed":
        assert t.precision_plugin.scaler._scale is not None  # the scaler really scaled the loss
    (result,) = t.test(model, Digits(batch_size=32), verbose=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result["test/nelbo"] > 0 and result["test/nll_iw8"] <= result["test/nelbo"] + 5


def test_cvae_samples_the_requested_classes(tmp_path):
    L.seed_everything(0)
    model = CVAE(**SMALL)
    trainer(tmp_path, limit_train_batches=2).fit(model, Digits(batch_size=32))
    assert model.hparams.num_classes == 10  # from the datamodule
    z = torch.randn(6, 4)
    images = model(z, torch.tensor([0, 3, 3, 9, 9, 9]))
    assert images.shape == (6, 1, 8, 8) and images.abs().max() <= 1
    assert (tmp_path / "samples" / "class_samples_epoch0000.png").is_file()
    ((key, grid, nrow),) = model.extra_pictures()
    assert key == "class_samples" and grid.shape == (10 * 10, 1, 8, 8) and nrow == 10
    model.hparams.sample_classes = [2, 5]
    out = model.predict_step(torch.arange(5), 0)
    assert out["labels"].tolist() == [2, 5, 2, 5, 2] and out["names"][1] == "00001_class5.png"
    assert out["images"].shape == (5, 1, 8, 8)
    # the class matters: the same z decodes differently for different classes
    assert not torch.allclose(model(z[:1], torch.tensor([0])), model(z[:1], torch.tensor([1])))
    # the labelled importance-weighted bound (labels repeated once per importance sample)
    (result,) = trainer(tmp_path).test(model, Digits(batch_size=32), verbose=False)
    assert result["test/images"] == 64 and result["test/nll_iw8"] < result["test/nelbo"] + 5


def test_bad_input_is_reported_before_training(tmp_path):
    with pytest.raises(ConfigError, match="latent_dim"):
        VAE(latent_dim=0)
    with pytest.raises(ConfigError, match="beta"):
        VAE(beta=-1.0)
    # Bernoulli on data outside [-1, 1] -> [0, 1]: refused at the first batch, before any weight changes
    model = VAE(**SMALL, image_shape=(1, 8, 8))
    model.configure_model()
    before = [p.detach().clone() for p in model.parameters()]
    raw = DataLoader(TensorDataset(torch.full((8, 1, 8, 8), 255.0), torch.zeros(8, dtype=torch.long)), batch_size=4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        trainer(tmp_path).fit(model, train_dataloaders=raw)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ConfigError, match="sample_classes"):
        CVAE(num_classes=10, sample_classes=[10], **SMALL)

    class Unlabelled(Digits):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.num_classes = None

    with pytest.raises(ConfigError, match="CVAE needs the number of classes"):
        trainer(tmp_path).fit(CVAE(**SMALL), Unlabelled(batch_size=32))
    model = CVAE(num_classes=3, **SMALL, image_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match=r"labels range over \[0, 5\] but the model has 3 classes"):
        model.condition(torch.tensor([0, 5]))


def read_metrics(folder):
    (path,) = folder.rglob("metrics.csv")
    rows = list(csv.DictReader(path.open()))
    return {k: float(v) for row in rows for k, v in row.items() if v not in ("", None) and k != "step"}


@pytest.mark.slow
def test_cli_fit_pictures_and_ddp_test_counts_every_image_once(tmp_path):
    fit = run_cli(["fit", "--config", TINY_VAE, "--trainer.logger", "false", "--trainer.default_root_dir", "run",
                   *QUIET], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    pictures = {p.name.split("_epoch")[0] for p in (tmp_path / "run" / "samples").glob("*.png")}
    assert pictures == {"samples", "reconstructions", "manifold", "interpolation"}  # latent_dim 2: manifold too
    # the Digits test set has 359 images: with batch 64 on 2 processes DistributedSampler repeats one image
    common = ["test", "--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path",
              str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--trainer.limit_test_batches", "1.0",
              "--data.batch_size", "64", "--trainer.logger", "CSVLogger", *QUIET]
    results = {}
    for devices in (1, 2):
        out = run_cli([*common, "--trainer.devices", str(devices), "--trainer.strategy",
                       "ddp" if devices == 2 else "auto", "--trainer.logger.save_dir", f"csv{devices}"], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        results[devices] = read_metrics(tmp_path / f"csv{devices}")
    assert results[1]["test/images"] == results[2]["test/images"] == 359
    # the KL is deterministic (closed form, fixed binarization): the same mean whatever the process count
    assert results[2]["test/kl"] == pytest.approx(results[1]["test/kl"], rel=1e-5)
    assert results[2]["test/nll_iw16"] == pytest.approx(results[1]["test/nll_iw16"], rel=0.02)


@pytest.mark.slow
def test_cli_cvae_predict_writes_requested_classes(tmp_path):
    fit = run_cli(["fit", "--config", TINY_CVAE, "--trainer.logger", "false", "--trainer.default_root_dir", "run",
                   *QUIET], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    pred = run_cli(["predict", "--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", "last",
                    "--trainer.default_root_dir", "run", "--model.num_samples", "4", "--model.sample_classes", "[7]",
                    *QUIET], tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "run" / "predictions").glob("0*.png"))
    assert names == [f"{i:05d}_class7.png" for i in range(4)]


def test_help_documents_every_option_and_choices_are_checked(capsys):
    from lightning_gen.core.cli import GenCLI

    with pytest.raises(SystemExit):
        GenCLI(args=["fit", "--model.help", "CVAE"])
    text = capsys.readouterr().out
    for arg in ("num_classes", "sample_classes", "latent_dim", "likelihood", "binarize", "beta", "kl_warmup_epochs",
                "enc_features", "decoder", "dec_features", "lr", "val_iw_samples", "test_iw_samples", "iw_chunk",
                "image_shape", "num_samples", "sample_seed"):
        assert f"--model.{arg}" in text, arg
    assert "{bernoulli,gaussian}" in text and "{conv,mlp}" in text
    with pytest.raises(SystemExit) as stop:
        GenCLI(args=["fit", "--config", TINY_VAE, "--model.likelihood", "poisson"])
    assert stop.value.code != 0 and "poisson" in capsys.readouterr().err


def test_iwae_objective_is_minus_the_k_sample_bound_and_trains(tmp_path, monkeypatch):
    """train_iw_samples = k: the training loss is minus the importance-weighted bound of k fresh samples (checked
    against `iw_log_likelihood` with the same noise), it is below the ELBO loss on average, and training on it lowers
    the held-out negative ELBO."""
    L.seed_everything(0)
    model = VAE(train_iw_samples=5, **SMALL)
    dm = Digits(batch_size=32)
    dm.setup("fit")
    images, _ = next(iter(dm.val_dataloader()))
    model.hparams.image_shape = tuple(images.shape[1:])
    model.build()
    target = model.targets(images, fixed=True)
    model.trainer = trainer(tmp_path)  # a step outside fit: attached, and logging nothing
    monkeypatch.setattr("lightning_gen.vae.logs_this_step", lambda trainer: False)
    torch.manual_seed(3)
    loss = model.training_step((images, None), 1)
    # the same draws through the evaluation path: training's binarization draw first, then the encoder's noise
    torch.manual_seed(3)
    fresh_target = model.targets(images, fixed=False)
    with torch.no_grad():
        bound = model.iw_log_likelihood(fresh_target, None, 5)
    assert loss.item() == pytest.approx(-bound.mean().item(), rel=1e-5)
    assert loss.requires_grad
    # averaged over draws, minus the 5-sample bound is below minus the ELBO (the bound is tighter)
    with torch.no_grad():
        mu, logvar = model.encode(model.as_input(target))
        iw = torch.stack([model.iw_log_likelihood(target, None, 5) for _ in range(50)]).mean()
        elbo = torch.stack([model.log_likelihood(model.decode(reparameterize(mu, logvar)), target) - gaussian_kl(
            mu, logvar) for _ in range(250)]).mean()
    assert iw > elbo
    # and it trains: the held-out negative ELBO falls
    L.seed_everything(0)
    before = trainer(tmp_path).validate(VAE(train_iw_samples=5, **SMALL), Digits(batch_size=32), verbose=False)
    L.seed_everything(0)
    fit = VAE(train_iw_samples=5, **SMALL)  # the same initial weights
    t = trainer(tmp_path, max_epochs=3, limit_train_batches=20)
    t.fit(fit, Digits(batch_size=32))
    after = t.validate(fit, Digits(batch_size=32), verbose=False)
    assert after[0]["val/nelbo"] < 0.95 * before[0]["val/nelbo"]  # 44.4 -> 38.7 nats when written


def test_iwae_refuses_a_kl_weight():
    with pytest.raises(ConfigError, match="beta to 1"):
        VAE(train_iw_samples=5, beta=0.5)
    with pytest.raises(ConfigError, match="kl_warmup_epochs"):
        VAE(train_iw_samples=5, kl_warmup_epochs=2)
    with pytest.raises(ConfigError, match="train_iw_samples"):
        VAE(train_iw_samples=0)


def test_second_stochastic_layer_reduces_to_one_layer_when_its_networks_are_off():
    """With the last layers of q(z2 | z) and p(z | z2) zeroed, both are N(0, I): log p(z2) - log q(z2 | z) = 0 for
    every draw and p(z | z2) is the one-layer prior, so every log importance weight equals the one-layer model's."""
    torch.manual_seed(0)
    two = VAE(top_latent_dim=3, top_hidden=16, **SMALL, image_shape=(1, 8, 8))
    two.build()
    for layer in (two.top_encoder, two.top_prior):
        torch.nn.init.zeros_(layer.net[-1].weight)
        torch.nn.init.zeros_(layer.net[-1].bias)
    one = VAE(**SMALL, image_shape=(1, 8, 8))
    one.build()
    one.encoder.load_state_dict(two.encoder.state_dict())
    one.decoder.load_state_dict(two.decoder.state_dict())
    target = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))
    mu, logvar = two.encode(two.as_input(target))
    z = reparameterize(mu.expand(7, -1, -1), logvar.expand(7, -1, -1))  # (7, 5, 4)
    assert torch.allclose(two.latent_log_ratio(z, mu, logvar), one.latent_log_ratio(z, mu, logvar), atol=1e-5)
    # and with live networks the ratio is log p(z2) p(z | z2) - log q(z | x) q(z2 | z) of the draw it makes
    torch.manual_seed(1)
    live = VAE(top_latent_dim=3, top_hidden=16, **SMALL, image_shape=(1, 8, 8))
    live.build()
    torch.manual_seed(2)
    ratio = live.latent_log_ratio(z, mu, logvar)
    torch.manual_seed(2)
    mu2, logvar2 = live.top_encoder(z)
    z2 = reparameterize(mu2, logvar2)
    prior_mu, prior_logvar = live.top_prior(z2)
    normal = torch.distributions.Normal
    expected = (normal(0, 1).log_prob(z2).sum(-1) + normal(prior_mu, (0.5 * prior_logvar).exp()).log_prob(z).sum(-1)
                - normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
                - normal(mu2, (0.5 * logvar2).exp()).log_prob(z2).sum(-1))
    assert ratio.shape == (7, 5) and torch.allclose(ratio, expected, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_two_stochastic_layers_train_sample_and_resume(tmp_path, k):
    L.seed_everything(0)
    options = dict(top_latent_dim=3, top_hidden=16, train_iw_samples=k, kl_warmup_epochs=0, **SMALL)
    before = trainer(tmp_path).validate(VAE(**options), Digits(batch_size=32), verbose=False)[0]
    L.seed_everything(0)
    model = VAE(**options)
    t = trainer(tmp_path, max_epochs=3, limit_train_batches=20, enable_checkpointing=True)
    t.fit(model, Digits(batch_size=32))
    after = t.validate(model, Digits(batch_size=32), verbose=False)[0]
    assert after["val/nelbo"] < 0.95 * before["val/nelbo"]
    # the single-sample ELBO's parts: recon + KL (estimated from the draw) = -ELBO
    assert after["val/recon"] + after["val/kl"] == pytest.approx(after["val/nelbo"], rel=1e-4)
    tested = t.test(model, Digits(batch_size=32), verbose=False)[0]
    assert tested["test/nll_iw8"] < tested["test/nelbo"] + 1.0  # the 8-sample bound is tighter (up to noise)
    samples = model.sample(torch.arange(6))
    assert samples.shape == (6, 1, 8, 8) and torch.equal(samples, model.sample(torch.arange(6)))
    path = tmp_path / "two.ckpt"
    t.save_checkpoint(path)
    loaded = VAE.load_from_checkpoint(path)
    assert loaded.hparams.top_latent_dim == 3 and torch.equal(loaded.sample(torch.arange(6)), samples)


def test_second_stochastic_layer_options_are_checked():
    with pytest.raises(ConfigError, match="top_latent_dim must be 0"):
        VAE(top_latent_dim=-1)
    with pytest.raises(ConfigError, match="top_hidden"):
        VAE(top_latent_dim=4, top_hidden=0)
    with pytest.raises(ConfigError, match="CVAE has one stochastic layer"):
        CVAE(top_latent_dim=4)
