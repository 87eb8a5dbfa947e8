import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from datamodules import Digits
from lightning_gen import DCGAN
from lightning_gen.core.checks import ConfigError
from tests.helpers import fp16_on_cpu

SMALL = dict(latent_dim=8, g_features=4, d_features=4, num_samples=4)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**defaults, **kwargs})


class GradNorms(Callback):
    """Records each optimizer's gradient norm as Lightning hands it to the optimizer (after unscaling)."""

    def __init__(self):
        self.norms = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad.float().norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(torch.stack(grads).norm().item())


@pytest.mark.parametrize("loss", ["bce", "lsgan", "hinge"])
def test_each_loss_mode_trains(tmp_path, loss):
    L.seed_everything(0)
    model = DCGAN(loss=loss, **SMALL)
    trainer(tmp_path).fit(model, Digits(batch_size=16))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / "samples" / "samples_epoch0000.png").is_file()


def test_discriminator_learns_to_separate_real_from_frozen_generator(tmp_path):
    # with the generator frozen (lr_g = 0) the discriminator's loss must fall: a closed-form-free sanity check
    L.seed_everything(0)
    model = DCGAN(lr_g=0.0, lr_d=2e-3, latent_dim=8, g_features=4, d_features=16, num_samples=4)
    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(trainer.callback_metrics["train/d_loss"].item())

    trainer(tmp_path, limit_train_batches=30, log_every_n_steps=1, callbacks=[Record()]).fit(
        model, Digits(batch_size=32))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_n_critic_steps_discriminator_more_often(tmp_path):
    L.seed_everything(0)
    model = DCGAN(n_critic=3, **SMALL)
    trainer(tmp_path, limit_train_batches=6).fit(model, Digits(batch_size=16))
    opt_g, opt_d = model.trainer.optimizers
    step = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert (step(opt_d), step(opt_g)) == (6, 2)


def test_16_mixed_scaler_is_correct_with_two_optimizers(tmp_path):
    # Same init, data and noise: the gradients each optimizer receives under fp16 (scaled, then unscaled) must
    # match fp32's. A scaler updated between one network's backward and its step would be off by 2^k.
    norms, scalers = {}, {}
    for name, kwargs in (("fp32", {}), ("fp16", {"plugins": [fp16_on_cpu()]}), ("bf16", {"precision": "bf16-mixed"})):
        L.seed_everything(0)
        model = DCGAN(**SMALL)
        record = GradNorms()
        t = trainer(tmp_path, limit_train_batches=3, callbacks=[record], **kwargs)
        t.fit(model, Digits(batch_size=16, shuffle=False))
        norms[name] = record.norms
        scalers[name] = getattr(t.precision_plugin, "scaler", None)
    assert scalers["fp16"] is not None and scalers["fp16"].get_scale() > 1  # the loss really was scaled
    assert len(norms["fp16"]) == 6  # D and G steps, three batches
    for name, tol in (("fp16", 0.02), ("bf16", 0.1)):
        for a, b in zip(norms["fp32"], norms[name]):
            assert b == pytest.approx(a, rel=tol), (name, norms)


def test_16_mixed_skips_a_step_with_inf_gradients_and_recovers(tmp_path):
    # An overflowing discriminator step is skipped (weights untouched) and the scale halves; training goes on.
    L.seed_everything(0)
    model = DCGAN(**SMALL)
    plugin = fp16_on_cpu()
    plugin.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # fp16 overflows at 65504
    t = trainer(tmp_path, limit_train_batches=3, plugins=[plugin])
    t.fit(model, Digits(batch_size=16))
    assert plugin.scaler.get_scale() < 2.0**40
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_round_trip_and_predict(tmp_path):
    L.seed_everything(0)
    model = DCGAN(**SMALL)
    t = trainer(tmp_path, enable_checkpointing=True)
    t.fit(model, Digits(batch_size=16))
    ckpt = tmp_path / "model.ckpt"
    t.save_checkpoint(ckpt)
    loaded = DCGAN.load_from_checkpoint(ckpt)  # no datamodule: the image shape comes from the checkpoint
    assert loaded.hparams.image_shape == (1, 8, 8)
    idx = torch.arange(4)
    assert torch.allclose(loaded.sample(idx), model.sample(idx), atol=1e-6)
    out = trainer(tmp_path).predict(loaded)
    images = torch.cat([o["images"] for o in out])
    assert images.shape == (4, 1, 8, 8) and images.abs().max() <= 1


def test_bad_settings_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="n_critic"):
        DCGAN(n_critic=0)
    with pytest.raises(ConfigError, match="hinge"):
        DCGAN(loss="hinge", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="image_size"):  # model built for 28x28, data is 8x8
        trainer(tmp_path).fit(DCGAN(image_shape=(1, 28, 28), **SMALL), Digits())
    with pytest.raises(ValueError, match="image_size"):  # 9x9 is no b * 2^n with b in 4..7
        trainer(tmp_path).fit(DCGAN(**SMALL), Digits(image_size=9))


class Shown(Callback):
    """The d_loss on the progress bar after each training step."""

    def __init__(self):
        self.shown = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.shown.append(trainer.progress_bar_metrics.get("train/d_loss"))


@pytest.mark.parametrize("progress_bar", [False, True])
def test_training_values_are_logged_when_someone_sees_them(tmp_path, progress_bar):
    # without a progress bar the step's values are logged only on the steps the logger writes (2, 5, 8 here), and
    # the CSV holds exactly those rows, the learning rates included; with a bar every step's values are shown
    L.seed_everything(0)
    calls = []
    model = DCGAN(**SMALL)
    log = model.log
    model.log = lambda name, *a, **k: (calls.append((model.trainer.global_step // 2, name)), log(name, *a, **k))[1]
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    probe = Shown()
    t = trainer(tmp_path, logger=logger, log_every_n_steps=3, limit_train_batches=10, limit_val_batches=0,
                enable_progress_bar=progress_bar, callbacks=[probe])
    t.fit(model, Digits(batch_size=32))
    logged_steps = sorted({step for step, name in calls if name == "train/d_loss"})
    rows = list(csv.DictReader((tmp_path / "lightning_logs" / "version_0" / "metrics.csv").open()))
    written = [int(r["step"]) for r in rows if r.get("train/d_loss")]
    assert written == [2, 5, 8]
    assert all(r["train/lr_g"] for r in rows if r.get("train/d_loss"))
    if progress_bar:
        assert logged_steps == list(range(10))
        assert len({round(v, 6) for v in probe.shown}) == 10  # a fresh value on screen every step
    else:
        assert logged_steps == [2, 5, 8]


def test_spectral_norm_bounds_every_discriminator_convolution(tmp_path):
    # after training, each convolution's effective weight (reshaped to out x rest) has largest singular value ~1
    L.seed_everything(0)
    model = DCGAN(d_spectral_norm=True, d_norm="none", **SMALL)
    trainer(tmp_path, limit_train_batches=8).fit(model, Digits(batch_size=16))
    convs = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(hasattr(m, "parametrizations") for m in convs)  # 8x8: input layer + head
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.generator.modules())  # `norm` still the generator's


def test_discriminator_options_survive_a_checkpoint(tmp_path):
    L.seed_everything(0)
    model = DCGAN(d_spectral_norm=True, d_norm="layer", d_dropout=0.3, **SMALL)
    t = trainer(tmp_path)
    t.fit(model, Digits(batch_size=16))
    t.save_checkpoint(tmp_path / "m.ckpt")
    loaded = DCGAN.load_from_checkpoint(tmp_path / "m.ckpt").eval()
    model.eval()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.allclose(loaded.discriminate(images), model.discriminate(images), atol=1e-6)
    assert sum(isinstance(m, torch.nn.Dropout) for m in loaded.discriminator.modules()) == 1  # 8x8: one hidden layer


def test_discriminator_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    d = DCGAN(d_dropout=0.5, image_shape=(1, 8, 8), **SMALL)
    d.build()
    x = torch.rand(4, 1, 8, 8)
    d.discriminator.train()
    assert not torch.allclose(d.discriminator(x), d.discriminator(x))
    d.discriminator.eval()
    assert torch.allclose(d.discriminator(x), d.discriminator(x))
    with pytest.raises(ConfigError, match="d_dropout"):
        DCGAN(d_dropout=1.0)
