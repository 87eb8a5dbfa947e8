"""pix2pix: the U-Net, the PatchGAN, the paired datamodule, the loss, and the module through fit/test/predict."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import DataError, PairedImages
from datamodules.paired import joint_transform
from lightning_gen import Pix2Pix
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.technique import batch_statistics
from lightning_gen.losses import generator_loss, pix2pix_generator_loss
from lightning_gen.nn import PatchGAN, UNet, unet_depth
from tests.conftest import QUIET, ROOT, run_cli, shared_data
from tests.helpers import fp16_on_cpu

TINY = str(ROOT / "configs" / "pix2pix" / "tiny.yaml")
SMALL = dict(g_features=4, d_features=4, receptive_field=16, num_triplets=2, constant_epochs=1, decay_epochs=1)


def make_pairs(root, n=6, size=16, same=False, layout="aligned", seed=0):
    """`n` random pairs under root/train and root/val: aligned A | B files, or A/ and B/ folders. B is A with its
    colours inverted (a translation a network can learn), or A itself with `same`. `size` divisible by 4."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for i in range(n):
            blocks = rng.integers(0, 256, size=(size // 4, size // 4, 3), dtype=np.uint8)
            a = np.kron(blocks, np.ones((4, 4, 1), dtype=np.uint8))  # 4x4 blocks: a learnable amount of detail
            b = a if same else 255 - a
            if layout == "aligned":
                (root / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate([a, b], axis=1)).save(root / split / f"{i}.png")
            else:
                for side, image in (("A", a), ("B", b)):
                    (root / split / side).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(root / split / side / f"{i}.png")
    return root


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=2,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


def paired(root, **kwargs) -> PairedImages:
    return PairedImages(root=str(root), **{"load_size": 18, "crop_size": 16, "batch_size": 2, **kwargs})


# ---- networks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side, num_downs, norm", [(256, None, "batch"), (32, None, "instance"), (48, 4, "batch")])
def test_unet_keeps_the_image_shape(side, num_downs, norm):
    depth = unet_depth(side, side, num_downs)
    assert depth == (num_downs or int(math.log2(side)))
    net = UNet(3, 1, depth, features=4, norm=norm)
    assert net(torch.randn(2, 3, side, side)).shape == (2, 1, side, side)


def test_unet_depth_errors_name_the_fix():
    with pytest.raises(ConfigError, match="power-of-two"):
        unet_depth(48, 48)
    with pytest.raises(ConfigError, match="divide by 32"):
        unet_depth(48, 48, 5)


def test_unet_dropout_sits_in_the_innermost_wide_decoder_layers():
    net = UNet(3, 3, 8, features=4)
    with_dropout = [d for d, layer in enumerate(net.up) if any(isinstance(m, torch.nn.Dropout) for m in layer)]
    assert with_dropout == [4, 5, 6]  # the paper's three 512-wide layers next to the bottleneck


def test_skip_connections_carry_the_image_through_a_narrow_bottleneck():
    # 16x16x3 = 768 numbers through a 1x1x128 bottleneck: only the skip connections can carry the details.
    # Fresh random images every step, so the identity is learnt, not a few images.
    torch.manual_seed(0)
    net = UNet(3, 3, 4, features=16, norm="batch", dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        images = torch.rand(8, 3, 16, 16) * 1.6 - 0.8
        opt.zero_grad()
        (net(images) - images).abs().mean().backward()
        opt.step()
    fresh = torch.rand(8, 3, 16, 16) * 1.6 - 0.8
    with torch.no_grad():
        assert (net(fresh) - fresh).abs().mean() < 0.1 < (fresh - fresh.mean()).abs().mean()


@pytest.mark.parametrize("field, side", [(1, 256), (16, 126), (70, 30), (286, 6)])
def test_patchgan_map_size_and_receptive_field(field, side):
    net = PatchGAN(6, field, features=4).eval()  # eval: batch norm is per-pixel affine, so no pixel couples others
    x = torch.randn(1, 6, 256, 256, requires_grad=True)
    out = net(x)
    assert out.shape == (1, 1, side, side) and PatchGAN.map_side(256, field) == side
    if field < 256:  # the input pixels one central logit depends on: a field x field square
        out[0, 0, side // 2, side // 2].backward()
        rows, cols = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
        assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field


# ---- loss ------------------------------------------------------------------------------------------------------
def test_l1_weight_enters_the_generator_loss_as_the_formula_says():
    logits = torch.zeros(2, 1, 4, 4)  # D undecided: bce gives log 2
    outputs, targets = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)  # L1 = 0.5
    for weight in (0.0, 1.0, 100.0):
        total, gan, l1 = pix2pix_generator_loss(logits, outputs, targets, "bce", weight)
        assert gan.item() == pytest.approx(math.log(2)) and l1.item() == pytest.approx(0.5)
        assert total.item() == pytest.approx(math.log(2) + 0.5 * weight)
    total, gan, _ = pix2pix_generator_loss(logits, outputs, targets, "lsgan", 10.0)
    assert gan.item() == pytest.approx(generator_loss(logits, "lsgan").item()) == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.5 + 10.0 * 0.5)


# ---- data ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["aligned", "folders"])
def test_joint_jitter_keeps_a_and_b_aligned(tmp_path, layout):
    dm = paired(make_pairs(tmp_path, size=20, same=True, layout=layout), layout=layout, load_size=30, crop_size=16)
    dm.setup("fit")
    torch.manual_seed(0)
    for i in range(len(dm.train_set)):
        a, b = dm.train_set[i]
        assert a.shape == b.shape == (3, 16, 16) and torch.equal(a, b)
    # and the jitter really moves things: two draws of the same pair differ
    a = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    draws = [joint_transform(a, a.clone(), 30, 16, True)[0] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_direction_picks_the_input_half(tmp_path):
    root = make_pairs(tmp_path)  # B = 255 - A
    for direction in ("AtoB", "BtoA"):
        dm = paired(root, direction=direction)
        dm.setup("fit")
        x, y = dm.val_set[0]
        torch.testing.assert_close(x, -y, atol=0.02, rtol=0)  # one is the inverse of the other
        raw = torch.from_numpy(np.array(Image.open(root / "val" / "0.png"))).permute(2, 0, 1).float() / 127.5 - 1
        left = raw[:, :, :16]
        torch.testing.assert_close(x if direction == "AtoB" else y, left, atol=0.02, rtol=0)


def test_paired_data_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        paired(tmp_path / "nowhere").setup("fit")
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match="no train/ folder"):
        paired(tmp_path / "empty").setup("fit")
    odd = make_pairs(tmp_path / "odd")
    Image.new("RGB", (31, 16)).save(odd / "train" / "odd.png")
    with pytest.raises(DataError, match="odd.png is 31x16.*width must be even"):
        paired(odd).setup("fit")
    unpaired = make_pairs(tmp_path / "unpaired", layout="folders")
    Image.new("RGB", (16, 16)).save(unpaired / "train" / "A" / "lonely.png")
    with pytest.raises(DataError, match="unpaired.*A/lonely.png"):
        paired(unpaired, layout="folders").setup("fit")
    sizes = make_pairs(tmp_path / "sizes", layout="folders")
    Image.new("RGB", (20, 16)).save(sizes / "val" / "B" / "0.png")
    with pytest.raises(DataError, match="must have the same size"):
        paired(sizes, layout="folders").setup("fit")
    corrupt = make_pairs(tmp_path / "corrupt")
    (corrupt / "val" / "3.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image .*3.png"):
        paired(corrupt).setup("fit")
    with pytest.raises(DataError, match="crop_size <= load_size"):
        paired(corrupt, load_size=8)
    with pytest.raises(DataError, match="remove `image_size`"):
        paired(corrupt, image_size=16)


# ---- the module ------------------------------------------------------------------------------------------------
def test_batch_statistics_leave_running_statistics_alone_and_keep_dropout_on():
    torch.manual_seed(0)
    model = Pix2Pix(**SMALL, input_channels=3, image_shape=(3, 256, 256))  # 256: dropout at depths 4-6
    model.configure_model()  # the networks, from the shapes given
    model.eval()
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        first, second = model.translate(x), model.translate(x)
    assert not torch.equal(first, second)  # dropout on, as in training
    for k, v in model.generator.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics (and their counters) untouched
    assert not model.generator.training  # back in eval mode
    model.hparams.test_time = "eval"
    with torch.no_grad():
        assert torch.equal(model.translate(x), model.translate(x))
    with batch_statistics(model.generator):
        assert model.generator.training


class LearningRates(L.Callback):
    """Records the learning rates of both optimizers that each training epoch runs with."""

    def __init__(self) -> None:
        self.seen: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen[trainer.current_epoch] = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]


def test_learning_rate_is_constant_then_decays_linearly_also_after_a_resume(tmp_path):
    model = Pix2Pix(**{**SMALL, "constant_epochs": 2, "decay_epochs": 2})
    assert [model.lr_factor(e) for e in range(4)] == pytest.approx([1, 1, 2 / 3, 1 / 3])
    # the paper's schedule: epoch e (0-based) runs at lr * (1 - max(0, e + 1 - constant) / (decay + 1))
    expected = [[2e-4 * (1 - max(0, e + 1 - 2) / 3)] * 2 for e in range(4)]
    dm = paired(make_pairs(tmp_path))
    lrs = LearningRates()
    trainer(tmp_path, max_epochs=4, limit_train_batches=1, limit_val_batches=0, callbacks=[lrs]).fit(model, dm)
    assert [lrs.seen[e] for e in range(4)] == [pytest.approx(lr) for lr in expected]
    assert lrs.seen[3] == pytest.approx([2e-4 / 3] * 2)
    # stopped after 2 epochs (checkpoint at the end of the validation) and resumed: the same rates
    first = trainer(tmp_path / "a", max_epochs=2, limit_train_batches=1, limit_val_batches=1,
                    enable_checkpointing=True)
    first.fit(Pix2Pix(**{**SMALL, "constant_epochs": 2, "decay_epochs": 2}), dm)
    lrs = LearningRates()
    resumed = trainer(tmp_path / "b", max_epochs=4, limit_train_batches=1, limit_val_batches=1, callbacks=[lrs],
                      enable_checkpointing=True)
    resumed.fit(Pix2Pix(**{**SMALL, "constant_epochs": 2, "decay_epochs": 2}), dm,
                ckpt_path=first.checkpoint_callback.best_model_path)
    assert sorted(lrs.seen) == [2, 3] and [lrs.seen[e] for e in (2, 3)] == [pytest.approx(lr) for lr in expected[2:]]


def test_pix2pix_learns_a_translation(tmp_path):
    # B = 255 - A: the validation L1 falls well below that of the untrained generator
    L.seed_everything(0)
    model = Pix2Pix(**{**SMALL, "test_time": "eval", "lr": 2e-3, "constant_epochs": 40})
    dm = paired(make_pairs(tmp_path, n=8, size=16), load_size=16, flip=False)
    t = trainer(tmp_path, max_epochs=40, limit_train_batches=None, limit_val_batches=None,
                check_val_every_n_epoch=40)
    t.fit(model, dm)
    before = Pix2Pix(**{**SMALL, "test_time": "eval"})
    untrained = trainer(tmp_path).validate(before, dm, verbose=False)[0]["val/l1"]
    trained = t.callback_metrics["val/l1"].item()
    assert trained < 0.6 * untrained


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_pix2pix_trains_under_each_precision(tmp_path, precision):
    L.seed_everything(0)
    model = Pix2Pix(**SMALL)
    kwargs = {"plugins": [fp16_on_cpu()]} if precision == "16-mixed" else {"precision": precision}
    t = trainer(tmp_path, **kwargs)
    t.fit(model, paired(make_pairs(tmp_path)))
    assert t.global_step == 6  # 3 batches, a D step and a G step each
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(t.callback_metrics["val/psnr"]) and 0 <= t.callback_metrics["val/ssim"] <= 1


def test_too_small_images_for_the_patchgan_are_refused():
    with pytest.raises(ConfigError, match="70x70 PatchGAN needs images of at least 24 pixels.*smaller `receptive_fi"):
        Pix2Pix(receptive_field=70, input_channels=3, image_shape=(3, 16, 16)).configure_model()


def test_wrong_channels_are_refused_before_a_step(tmp_path):
    model = Pix2Pix(**SMALL, input_channels=1, image_shape=(3, 16, 16))
    with pytest.raises(ConfigError, match="inputs of 1 channels"):
        trainer(tmp_path).fit(model, paired(make_pairs(tmp_path)))


@pytest.mark.slow
def test_tiny_config_fit_test_predict_on_facades(tmp_path):
    shared_data("facades")
    args = ["--config", TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", *QUIET]
    fit = run_cli(["fit", *args], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert (tmp_path / "samples" / "val_triplets_epoch0001.png").is_file()
    test = run_cli(["test", *args, "--ckpt_path", str(ckpt)], tmp_path)
    assert test.returncode == 0 and "test/psnr" in test.stdout and "test/ssim" in test.stdout, test.stderr[-3000:]
    predict = run_cli(["predict", *args, "--ckpt_path", str(ckpt)], tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "predictions").glob("4*.jpg"))
    assert written[:3] == ["401.jpg", "402.jpg", "403.jpg"]  # the inputs' names (facades val/401.jpg, ...)
    assert Image.open(tmp_path / "predictions" / "401.jpg").size == (32, 32)


def test_predict_translates_a_folder_of_inputs(tmp_path):
    L.seed_everything(0)
    root = make_pairs(tmp_path / "data")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("x.png", "y.jpg", "z.png"):
        Image.new("RGB", (40, 24), color=(200, 10, 10)).save(inputs / name)
    model = Pix2Pix(**SMALL)
    dm = paired(root, predict_root=str(inputs))
    t = trainer(tmp_path)
    t.fit(model, dm)
    from lightning_gen.callbacks import ImageWriter

    writer = ImageWriter(output_dir=str(tmp_path / "out"))
    trainer(tmp_path, callbacks=[writer]).predict(model, dm)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.png", "x.png", "y.jpg", "z.png"]


def test_inception_fid_is_reported_and_kept_out_of_the_checkpoint(tmp_path, monkeypatch):
    import lightning_gen.pix2pix as module
    from lightning_gen.metrics import InceptionFeatures

    with pytest.raises(ConfigError, match="Inception v3 weights not found"):  # before any evaluation
        missing = str(tmp_path / "no.pth")
        trainer(tmp_path).validate(Pix2Pix(**SMALL, fid_network="inception", inception_weights=missing),
                                   paired(make_pairs(tmp_path / "a")))
    monkeypatch.setattr(module, "InceptionFeatures", lambda path: InceptionFeatures(pretrained=False))  # no weights
    model = Pix2Pix(**SMALL, fid_network="inception")
    t = trainer(tmp_path, limit_val_batches=2)
    metrics = t.validate(model, paired(make_pairs(tmp_path / "b", n=4)), verbose=False)[0]
    assert math.isfinite(metrics["val/tv_inception_fid"]) and metrics["val/tv_inception_fid"] >= 0
    assert not any(k.startswith("_fid") or "inception" in k for k in model.state_dict())


def test_triplet_grid_has_one_row_per_triplet(tmp_path):
    model = Pix2Pix(**{**SMALL, "num_triplets": 3})
    t = trainer(tmp_path, limit_val_batches=5)
    t.validate(model, paired(make_pairs(tmp_path / "data"), batch_size=1), verbose=False)
    (grid,) = (tmp_path / "samples").glob("val_triplets_*.png")
    assert Image.open(grid).size == (3 * 34 + 2, 3 * 34 + 2)  # 3 x 3 tiles of 16 px shown at 32 px, 2 px apart


class TinyFeatures(torch.nn.Module):
    """A cheap stand-in for the Inception features: 3 fixed random projections of each image, the same everywhere."""

    name = "tiny"

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 3)
        projection = torch.randn(images[0].numel(), 3, generator=torch.Generator().manual_seed(0))
        return images.flatten(1).float() @ projection.to(images.device)


class TinyFeaturesPix2Pix(Pix2Pix):
    """Pix2Pix whose Frechet distance is on `TinyFeatures` (random Inception weights would take minutes on a CPU)."""

    def setup(self, stage: str) -> None:
        if self.hparams.fid_network == "inception" and not self._fid:
            self._fid.append(TinyFeatures())


def test_ddp_validation_counts_each_pair_once(tmp_path):
    # 5 pairs on 2 processes: the sampler pads them to 6 by repeating pair 0, which process 1 gets alone in its last
    # batch; left out, every figure equals one process's, the Frechet distance's features included (batch norm on
    # running statistics, so a pair's output does not depend on its batch)
    L.seed_everything(0)
    model = TinyFeaturesPix2Pix(**{**SMALL, "test_time": "eval", "fid_network": "inception"})
    dm = paired(make_pairs(tmp_path, n=5), load_size=16)
    runs = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        t = trainer(tmp_path, devices=devices, strategy=strategy, limit_val_batches=None)
        runs[devices] = t.validate(model, dm, verbose=False)[0]
    assert set(runs[1]) == {"val/l1", "val/psnr", "val/ssim", "val/tiny_fid"}
    for key, value in runs[1].items():
        assert runs[2][key] == pytest.approx(value, rel=1e-5), (key, runs)
