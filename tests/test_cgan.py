"""Conditional GAN: label input to both networks, one grid row per class, clear errors for unlabeled data."""

import lightning as L
import pytest
import torch

from datamodules import Digits, ImageFolder
from lightning_gen import CGAN
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.sampling import fixed_noise
from tests.conftest import QUIET, ROOT, run_cli
from tests.helpers import fp16_on_cpu

SMALL = dict(latent_dim=8, g_features=4, d_features=4, num_samples=20, num_classes=10, image_shape=(1, 8, 8))
TINY_CGAN = str(ROOT / "configs" / "cgan" / "tiny.yaml")


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_both_networks_see_the_class(conditioning):
    torch.manual_seed(0)
    model = CGAN(**SMALL, d_conditioning=conditioning)
    model.configure_model()  # the networks are built lazily, here from num_classes and image_shape
    model.eval()
    z = torch.randn(4, 8)
    a, b = model.generate(z, torch.zeros(4, dtype=torch.long)), model.generate(z, torch.full((4,), 3))
    assert a.shape == (4, 1, 8, 8) and not torch.allclose(a, b)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    logits0 = model.discriminate(x, torch.zeros(4, dtype=torch.long))
    logits3 = model.discriminate(x, torch.full((4,), 3))
    assert logits0.shape == (4,) and not torch.allclose(logits0, logits3)


def test_projection_adds_the_inner_product_with_the_class_embedding():
    torch.manual_seed(0)
    model = CGAN(**SMALL)
    model.configure_model()
    model.eval()
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([1, 4, 7])
    features = model.discriminator.net.features(x)
    unconditional = model.discriminator.net.head(features).flatten()
    inner = (model.discriminator.embed(y)[:, :, None, None] * features).sum(dim=(1, 2, 3))
    assert torch.allclose(model.discriminate(x, y), unconditional + inner, atol=1e-6)


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_discriminator_options_reach_the_conditional_discriminator(conditioning):
    model = CGAN(**SMALL, d_conditioning=conditioning, d_norm="none", d_spectral_norm=True, d_dropout=0.2)
    model.configure_model()
    d = model.discriminator
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert any(isinstance(m, torch.nn.Dropout) for m in d.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.generator.modules())


def test_sample_grid_has_one_row_per_class():
    model = CGAN(**{**SMALL, "num_samples": 30})
    model.configure_model()
    images, per_row = model.sample_grid()
    assert per_row == 3 and images.shape == (30, 1, 8, 8)
    # grid cell (row r, column c) shows sample index c * N + r, whose class is r: row 7, column 1 is index 17
    model.generator.eval()
    expected = model.generate(fixed_noise(torch.tensor([17]), 8, model.hparams.sample_seed), torch.tensor([7]))
    assert torch.allclose(images[7 * 3 + 1], expected[0], atol=1e-6)
    assert torch.equal(model.default_labels(torch.arange(12)), torch.arange(12) % 10)
    chosen = CGAN(**SMALL, sample_classes=[2, 5])
    assert chosen.default_labels(torch.arange(4)).tolist() == [2, 5, 2, 5]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_cgan_trains(tmp_path, precision, conditioning):
    L.seed_everything(0)
    model = CGAN(latent_dim=8, g_features=4, d_features=4, num_samples=20, d_conditioning=conditioning)
    kwargs = {"plugins": [fp16_on_cpu()]} if precision == "16-mixed" else {"precision": precision}
    t = trainer(tmp_path, log_every_n_steps=1, **kwargs)
    t.fit(model, Digits(batch_size=32))
    assert model.hparams.num_classes == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert {"train/d_loss", "train/g_loss", "val/d_accuracy"} <= set(t.callback_metrics)


def test_cgan_on_unlabeled_data_is_refused(tmp_path):
    from PIL import Image

    for i in range(8):
        Image.new("L", (8, 8), color=i * 30).save(tmp_path / f"{i}.png")
    with pytest.raises(ConfigError, match="no class labels"):
        trainer(tmp_path).fit(CGAN(latent_dim=8), ImageFolder(root=str(tmp_path), batch_size=4))


def test_cgan_bad_classes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="num_classes=5 but Digits has 10"):
        trainer(tmp_path).fit(CGAN(latent_dim=8, num_classes=5), Digits(batch_size=32))
    with pytest.raises(ConfigError, match=r"sample_classes \[3, 12\]"):
        CGAN(**SMALL, sample_classes=[3, 12])


def test_cgan_tiny_config_fit_and_predict_chosen_classes(tmp_path):
    args = ["--config", TINY_CGAN, "--trainer.logger", "false", "--trainer.default_root_dir", "out", *QUIET]
    fit = run_cli(["fit", *args], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (tmp_path / "out" / "samples" / "samples_epoch0000.png").is_file()
    pred = run_cli(["predict", *args, "--ckpt_path", "last", "--model.num_samples", "6", "--model.sample_classes",
                    "[4]"], tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "out" / "predictions").glob("0*.png"))
    assert written == [f"{i:05d}_class4.png" for i in range(6)]


def test_cgan_builds_lazily_and_loads_without_data(tmp_path):
    # the classes come from the datamodule at fit, are stored in the hyperparameters, and rebuild the networks of a
    # checkpoint without any data
    model = CGAN(latent_dim=8, g_features=4, d_features=4, num_samples=20)
    assert not model.networks_built
    t = trainer(tmp_path, limit_val_batches=0)
    t.fit(model, Digits(batch_size=32))
    assert model.networks_built and model.hparams.num_classes == 10 and model.hparams.image_shape == (1, 8, 8)
    t.save_checkpoint(tmp_path / "cgan.ckpt")
    loaded = CGAN.load_from_checkpoint(tmp_path / "cgan.ckpt")
    assert loaded.networks_built
    assert torch.equal(loaded.sample(torch.arange(4)), model.sample(torch.arange(4)))
    with pytest.raises(ConfigError, match="needs the number of classes"):
        CGAN(latent_dim=8, image_shape=(1, 8, 8)).configure_model()
