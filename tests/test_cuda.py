"""CUDA: every technique trains and evaluates on a GPU under 16-mixed (float16 autocast with a GradScaler) and
bf16-mixed, and its networks really run there. Skipped where no CUDA device is present (CI has none); on a GPU
machine: `python -m pytest tests/test_cuda.py`."""

import lightning as L
import pytest
import torch

from datamodules import Digits, PairedImages, SemiSupervised
from lightning_gen import CGAN, CVAE, DCGAN, SGAN, VAE, Classifier, Pix2Pix
from lightning_gen.callbacks import EMA
from tests.test_pix2pix import SMALL as PIX2PIX_SMALL
from tests.test_pix2pix import make_pairs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VAE_SMALL = dict(latent_dim=4, enc_features=8, dec_features=8, num_samples=8, test_iw_samples=8)
GAN_SMALL = dict(latent_dim=8, g_features=4, d_features=4, num_samples=20)


def semi() -> SemiSupervised:
    return SemiSupervised(Digits(batch_size=32), num_labeled=50, seed=0)


CASES = {
    "dcgan": lambda root: (DCGAN(**GAN_SMALL), Digits(batch_size=32)),
    "vae": lambda root: (VAE(**VAE_SMALL), Digits(batch_size=32)),
    "cvae": lambda root: (CVAE(**VAE_SMALL), Digits(batch_size=32)),
    "cgan": lambda root: (CGAN(**GAN_SMALL), Digits(batch_size=32)),
    "sgan": lambda root: (SGAN(latent_dim=8, num_samples=10), semi()),
    "classifier": lambda root: (Classifier(arch="cnn"), Digits(batch_size=32)),
    "pix2pix": lambda root: (Pix2Pix(**PIX2PIX_SMALL),
                             PairedImages(root=str(make_pairs(root)), load_size=18, crop_size=16, batch_size=2)),
}


class OnDevice(L.Callback):
    """Records where the parameters live and the loss scale while training runs."""

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.devices = {p.device.type for p in pl_module.parameters()}
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.scale = None if scaler is None else scaler.get_scale()


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("name", list(CASES))
def test_trains_and_evaluates_on_cuda(tmp_path, name, precision):
    L.seed_everything(0)
    model, data = CASES[name](tmp_path)
    probe = OnDevice()
    callbacks = [probe] + ([EMA()] if name in ("dcgan", "cgan") else [])
    t = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_epochs=2, limit_train_batches=4,
                  limit_val_batches=2, limit_test_batches=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                  callbacks=callbacks)
    t.fit(model, data)
    assert probe.devices == {"cuda"}
    if precision == "16-mixed":
        assert probe.scale is not None and 0 < probe.scale < float("inf")
    else:
        assert probe.scale is None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    results = t.validate(model, data, verbose=False)
    assert results and all(torch.isfinite(torch.tensor(v)) for v in results[0].values())


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_style_techniques_on_cuda(tmp_path, precision):
    from lightning_gen import DeepDream, FastStyleTransfer, StyleTransfer
    from tests.helpers import write_image

    content, style = write_image(tmp_path / "c.png", (40, 28), 0), write_image(tmp_path / "s.png", (32, 32), 1)
    common = dict(accelerator="gpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    fast = FastStyleTransfer(style=str(style), style_size=32, weights="random", width=4, num_residual=1)
    photos = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(8, 3, 24, 24) * 2 - 1), batch_size=4)
    probe = OnDevice()
    t = L.Trainer(max_epochs=1, callbacks=[probe], **common)
    t.fit(fast, photos)
    assert probe.devices == {"cuda"} and all(torch.isfinite(p).all() for p in fast.parameters())
    assert fast.perceptual.features.mean.device.type == "cuda"
    optimised = StyleTransfer(content=str(content), style=str(style), image_size=32, weights="random",
                              optimizer="adam", lr=0.05, steps_per_epoch=3)
    probe = OnDevice()
    L.Trainer(max_epochs=1, callbacks=[probe], **common).fit(optimised)
    assert probe.devices == {"cuda"} and torch.isfinite(optimised.image).all()
    dream = DeepDream(images=str(content), weights="random", layers=["conv_pw_3_relu"], octaves=2, steps=2)
    (out,) = L.Trainer(**common).predict(dream)
    assert dream.features.mean.device.type == "cuda"  # the ascent ran there (predictions come back on the CPU)
    assert out["images"].shape == (1, 3, 28, 40) and torch.isfinite(out["images"]).all()


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("name", ["srcnn", "srresnet", "srgan"])
def test_super_resolution_on_cuda(tmp_path, name, precision):
    from datamodules import SuperResolution
    from lightning_gen import SRCNN, SRGAN, SRResNet
    from tests.helpers import write_image

    for i in range(3):
        write_image(tmp_path / "hr" / f"{i}.png", (40, 36), i)
    data = SuperResolution(root=str(tmp_path / "hr"), scale=4, crop_size=32, batch_size=2, crops_per_epoch=4,
                           test_roots=[str(tmp_path / "hr")])
    model = {"srcnn": lambda: SRCNN(scale=4, features=(8, 4), residual=True),
             "srresnet": lambda: SRResNet(scale=4, channels=8, num_blocks=1),
             "srgan": lambda: SRGAN(scale=4, channels=8, num_blocks=1, d_channels=4, backbone="mobilenet_v1",
                                    weights="random")}[name]()
    probe = OnDevice()
    t = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_epochs=1, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=tmp_path, callbacks=[probe])
    t.fit(model, data)
    assert probe.devices == {"cuda"} and all(torch.isfinite(p).all() for p in model.parameters())
    results = t.test(model, data, verbose=False)[0]
    assert results["test/hr/psnr"] > 0 and results["test/hr/bicubic_psnr"] > 0


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_char_lstm_trains_resumes_and_samples_on_cuda(tmp_path, precision):
    """The carried recurrent state lives on the GPU, comes back from a checkpoint (saved on the CPU) to the GPU, and
    sampling runs there."""
    from datamodules import CharText
    from lightning_gen import CharLSTM
    from tests.test_char_lstm import write_text

    write_text(tmp_path / "t.txt")

    def fit(steps: int, ckpt_path=None) -> CharLSTM:
        model = CharLSTM(embedding_dim=8, hidden=32, num_layers=2, sample_length=20)
        t = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=steps, limit_val_batches=2,
                      logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        t.fit(model, CharText(path=str(tmp_path / "t.txt"), seq_len=8, batch_size=4), ckpt_path=ckpt_path)
        t.save_checkpoint(tmp_path / f"step{steps}.ckpt")
        return model

    fit(3)
    model = fit(6, ckpt_path=str(tmp_path / "step3.ckpt"))
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.generate(torch.tensor([0]), torch.tensor([0.5]))[0].startswith("\n")
