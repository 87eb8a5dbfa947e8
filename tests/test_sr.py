"""Super-resolution: the data pipeline, the literature's metrics, SRCNN, SRResNet and SRGAN."""

import math
import sys

import pytest
import torch
from PIL import Image

from datamodules import DataError, SuperResolution
from datamodules.super_resolution import RandomCrops, degrade, modcrop
from lightning_gen import SRCNN, SRGAN, SRResNet
from lightning_gen.core.checks import ConfigError
from lightning_gen.metrics.sr import SRMetrics, rgb_to_y
from lightning_gen.nn.sr import SRDiscriminator
from lightning_gen.nn.sr import SRResNet as SRResNetNet
from tests.conftest import QUIET, ROOT, run_cli, shared_data


def built(model):
    """`model` with its networks built from its hyperparameters (what a trainer or `load_from_checkpoint` does)."""
    model.configure_model()
    return model


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixel_shuffle_generator_upscales_by_the_scale(scale):
    net = SRResNetNet(scale, channels=8, num_blocks=1)
    assert net(torch.rand(2, 3, 10, 7)).shape == (2, 3, 10 * scale, 7 * scale)


def test_residual_generator_starts_as_bicubic_and_learns_a_correction():
    torch.manual_seed(0)
    net = SRResNetNet(4, channels=8, num_blocks=1, residual=True)
    lr = torch.rand(2, 3, 9, 7) * 2 - 1
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(net(lr), bicubic)  # the last conv starts at zero
    hr = torch.randn(2, 3, 36, 28)
    torch.nn.functional.mse_loss(net(lr), hr).backward()
    assert net.tail.weight.grad.abs().sum() > 0  # and is trained
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    optimizer.step()
    assert not torch.equal(net(lr), bicubic)


def test_srcnn_keeps_the_size_and_discriminator_takes_any_crop():
    srcnn = SRCNN(scale=3, features=(8, 4))
    srcnn.configure_model()  # the network, from the hyperparameters
    assert srcnn(torch.rand(1, 3, 19, 23)).shape == (1, 3, 19, 23)
    d = SRDiscriminator(channels=4)
    assert d(torch.rand(2, 3, 32, 32)).shape == (2,) and d(torch.rand(2, 3, 96, 80)).shape == (2,)


def test_y_channel_matches_bt601():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    images = (rgb * 2 - 1).view(5, 3, 1, 1)  # [-1, 1]
    expected = torch.tensor([235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    assert torch.allclose(rgb_to_y(images).flatten(), expected, atol=1e-3)


def test_psnr_of_identical_images_is_infinite_and_known_for_a_known_error():
    hr = torch.rand(2, 3, 20, 20) * 1.6 - 0.8
    metrics = SRMetrics(["set"], channel="rgb", border=2)
    metrics.update(0, hr, hr, hr + 20 / 127.5)  # bicubic stand-in: every pixel 20 levels (of 255) off
    values = metrics.compute()
    assert math.isinf(values["set/psnr"]) and values["set/ssim"] == pytest.approx(1.0, abs=1e-6)
    assert values["set/bicubic_psnr"] == pytest.approx(10 * math.log10(255**2 / 20**2), abs=1e-3)


def test_psnr_is_averaged_per_image_and_shaves_the_border():
    hr = torch.zeros(2, 3, 12, 12)
    out = hr.clone()
    out[0] += 10 / 127.5  # image 0: 10 levels off
    out[1] += 20 / 127.5  # image 1: 20 levels off
    out[:, :, :3, :] = 1.0  # and far off in a border band that the scoring shaves away
    metrics = SRMetrics(["s"], channel="rgb", border=3)
    metrics.update(0, out, hr, out)
    per_image = (20 * math.log10(25.5) + 20 * math.log10(12.75)) / 2  # 28.13 and 22.11 dB
    assert metrics.compute()["s/psnr"] == pytest.approx(per_image, abs=1e-3)  # not 24.05, the pooled-MSE value


def test_hr_and_lr_crops_stay_aligned(tmp_path):
    # a smooth pattern survives x4 down- and upsampling: the item's bicubic image (made from its LR image) must sit
    # on its HR crop, much closer than the same image moved by one LR pixel, whatever crop, flip or rotation
    yy, xx = torch.meshgrid(torch.arange(160.0), torch.arange(200.0), indexing="ij")
    pattern = torch.stack([torch.sin(xx / 6), torch.cos(yy / 7), torch.sin((xx + yy) / 9)], -1)
    Image.fromarray(((pattern + 1) * 127.5).round().byte().numpy()).save(tmp_path / "waves.png")
    crops = RandomCrops({"waves": Image.open(tmp_path / "waves.png").convert("RGB")}, scale=4, crop_size=48,
                        augment=True, length=20)
    for i in range(20):
        item = crops[i]
        assert item["hr"].shape == (3, 48, 48) and item["lr"].shape == (3, 12, 12)
        inner = (slice(None), slice(8, -8), slice(8, -8))  # away from the borders' edge effects
        aligned = (item["bicubic"] - item["hr"])[inner].abs().mean()
        for shift in ((4, 0), (0, 4)):
            moved = torch.roll(item["bicubic"], shift, dims=(1, 2))
            assert aligned < 0.4 * (moved - item["hr"])[inner].abs().mean()


def test_scikit_image_photos_are_offline_training_data(monkeypatch):
    pytest.importorskip("skimage")
    data = SuperResolution(root="skimage", scale=4, crop_size=64, batch_size=4, crops_per_epoch=8,
                           test_roots=[str(shared_data("sr") / "Set5")])
    data.setup("fit")
    assert len(data.train_set.images) == 10 and all(im.mode == "RGB" for im in data.train_set.images)
    batch = next(iter(data.train_dataloader()))
    assert batch["hr"].shape == (4, 3, 64, 64) and batch["lr"].shape == (4, 3, 16, 16)
    assert batch["hr"].std() > 0.1  # photographs, not blank crops
    with pytest.raises(DataError, match="set a larger --data.crops_per_epoch"):  # 10 crops cannot fill a batch of 16
        SuperResolution(root="skimage", scale=4, batch_size=16, test_roots=[str(shared_data("sr") / "Set5")]).setup(
            "fit")
    with pytest.raises(DataError, match="set a larger --data.crops_per_epoch"):  # the same, set explicitly
        SuperResolution(root="skimage", scale=4, batch_size=16, crops_per_epoch=8,
                        test_roots=[str(shared_data("sr") / "Set5")]).setup("fit")
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    with pytest.raises(DataError, match=r"pip install 'lightning-gen\[sr\]'"):
        SuperResolution(root="skimage", scale=4, crop_size=64, batch_size=4, crops_per_epoch=8,
                        test_roots=[str(shared_data("sr") / "Set5")]).setup("fit")


@pytest.mark.parametrize(("scale", "set5", "set14"), [(3, 30.39, 27.54), (4, 28.43, 26.00)])
def test_bicubic_rows_read_the_published_values(scale, set5, set14):
    # Dong et al.'s bicubic rows; Set14's bridge.png is a one-channel file, scored on its grey values
    data = SuperResolution(root="skimage", scale=scale,
                           test_roots=[str(shared_data("sr") / "Set5"), str(shared_data("sr") / "Set14")])
    data.setup("test")
    metrics = SRMetrics(data.set_names("test"), "y", border=scale)
    for index, images in enumerate(data.eval_sets["test"]):
        for item in images:
            metrics.update(index, item["bicubic"][None], item["hr"][None], item["bicubic"][None],
                           torch.tensor([item["grey"]]))
    values = metrics.compute()
    assert [item["name"] for item in data.eval_sets["test"][1] if item["grey"]] == ["bridge.png"]
    assert values["Set5/bicubic_psnr"] == pytest.approx(set5, abs=0.015)
    assert values["Set14/bicubic_psnr"] == pytest.approx(set14, abs=0.005)


def test_grey_files_are_scored_on_their_grey_values_and_outputs_on_8_bits(tmp_path):
    Image.new("L", (16, 16), color=100).save(tmp_path / "grey.png")
    Image.new("RGB", (16, 16), color=(100, 100, 100)).save(tmp_path / "rgb.png")
    data = SuperResolution(root="skimage", scale=2, test_roots=[str(tmp_path)])
    data.setup("test")
    items = {item["name"]: item for item in data.eval_sets["test"][0]}
    assert items["grey.png"]["grey"] and not items["rgb.png"]["grey"]
    assert torch.equal(items["grey.png"]["hr"], items["rgb.png"]["hr"])  # read alike, three equal channels
    hr = items["grey.png"]["hr"][None]
    off = hr + 10 / 127.5  # every pixel 10 grey levels high
    metrics = SRMetrics(["s"], "y", border=0)
    metrics.update(0, off, hr, off, torch.tensor([True]))
    assert metrics.compute()["s/psnr"] == pytest.approx(20 * math.log10(25.5), abs=1e-3)  # 10 levels of 255
    metrics.update(0, off, hr, off, torch.tensor([False]))  # an RGB file: BT.601 luma, 16-235, errors * 219/255
    assert metrics.compute()["s/psnr"] == pytest.approx(20 * math.log10(255 / (10 * 219 / 255)), abs=1e-2)
    metrics.update(0, hr + 0.4 / 127.5, hr, hr - 0.6 / 127.5, torch.tensor([True]))  # rounded to 8 bits first
    values = metrics.compute()
    assert math.isinf(values["s/psnr"]) and values["s/bicubic_psnr"] == pytest.approx(20 * math.log10(255), abs=1e-3)


def test_validation_uses_its_own_folders_never_the_test_sets(tmp_path):
    for name in ("train", "val"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (64, 32), color=(10, 200, 30)).save(tmp_path / name / "a.png")
    test = [str(shared_data("sr") / "Set5")]
    data = SuperResolution(root=str(tmp_path / "train"), scale=4, crop_size=16, batch_size=1, test_roots=test)
    data.setup("fit")
    assert data.val_dataloader() == []  # no val_roots: fit runs no validation (it used to score the test sets)
    with pytest.raises(DataError, match="--data.val_roots"):
        data.setup("validate")
    data = SuperResolution(root=str(tmp_path / "train"), scale=4, crop_size=16, batch_size=1, half="left",
                           val_roots=[str(tmp_path / "val")], test_roots=test)
    data.setup("fit")
    assert data.set_names("validate") == ["val"]
    assert data.eval_sets["validate"][0][0]["hr"].shape == (3, 32, 32)  # the left half, as in training
    data.setup("test")
    assert data.eval_sets["test"][0][0]["hr"].shape[-1] > 32  # test images are whole


def test_modcrop_and_degrade_sizes():

    image = Image.new("RGB", (103, 70))
    hr = modcrop(image, 4)
    lr, bicubic = degrade(hr, 4)
    assert hr.size == (100, 68) and lr.size == (25, 17) and bicubic.size == (100, 68)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["srcnn", "srresnet", "srgan"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_tiny_configs_train_test_and_predict(tmp_path, config, precision):
    shared_data("facades")
    shared_data("sr")
    path = str(ROOT / "configs" / config / "tiny.yaml")
    common = ["--trainer.default_root_dir", str(tmp_path), *QUIET]
    fit = run_cli(["fit", "--config", path, "--trainer.logger", "false", "--trainer.precision", precision, *common],
                  tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert list((tmp_path / "samples").glob("val_strips_epoch*.png"))
    if precision == "bf16-mixed":
        return
    test = run_cli(["test", "--config", path, "--ckpt_path", "last", "--trainer.logger", "false", *common], tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/Set5/psnr" in test.stdout and "test/Set5/bicubic_psnr" in test.stdout
    small = tmp_path / "small"
    small.mkdir()
    Image.new("RGB", (10, 7), "red").save(small / "tiny.png")
    out = run_cli(["predict", "--config", path, "--ckpt_path", "last", "--data.predict_root", str(small), *common],
                  tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    scale = 3 if config == "srcnn" else 4
    assert Image.open(tmp_path / "predictions" / "tiny.png").size == (10 * scale, 7 * scale)


def test_bad_settings_are_refused_before_training(tmp_path):
    with pytest.raises(DataError, match="multiple of the scale"):
        SuperResolution(root=str(tmp_path), scale=4, crop_size=30)
    data = SuperResolution(root=str(tmp_path / "nowhere"), scale=4, crop_size=32)
    with pytest.raises(DataError, match="does not exist"):
        data.setup("fit")
    srresnet = built(SRResNet(scale=4, channels=4, num_blocks=1))
    ckpt = tmp_path / "x4.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in srresnet.generator.state_dict().items()}}, ckpt)
    gan = built(SRGAN(scale=2, channels=4, num_blocks=1, backbone="mobilenet_v1", weights="random"))
    with pytest.raises(ConfigError, match="does not fit this generator"):
        gan.load_generator(str(ckpt))
    with pytest.raises(ConfigError, match="not layers of mobilenet_v1"):
        SRGAN(backbone="mobilenet_v1", weights="random", content_layer="relu5_4")
    residual = built(SRResNet(scale=4, channels=4, num_blocks=1, residual=True))
    torch.save({"state_dict": {f"generator.{k}": v for k, v in residual.generator.state_dict().items()},
                "hyper_parameters": dict(residual.hparams)}, ckpt)
    gan = built(SRGAN(scale=4, channels=4, num_blocks=1, backbone="mobilenet_v1", weights="random"))
    with pytest.raises(ConfigError, match="residual=True but this model has residual=False; set --model.residual true"):
        gan.load_generator(str(ckpt))


def test_a_checkpoint_of_the_other_residual_setting_is_refused():
    # the bicubic skip has no weights: without the check an old checkpoint would load and give wrong images
    plain = built(SRResNet(scale=4, channels=4, num_blocks=1))
    checkpoint = {"state_dict": plain.state_dict(), "hyper_parameters": dict(plain.hparams)}
    with pytest.raises(ConfigError, match="residual=False but this model has residual=True"):
        SRResNet(scale=4, channels=4, num_blocks=1, residual=True).on_load_checkpoint(checkpoint)
    del checkpoint["hyper_parameters"]["residual"]  # a checkpoint from before the option: no skip
    with pytest.raises(ConfigError, match="residual=False"):
        SRResNet(scale=4, channels=4, num_blocks=1, residual=True).on_load_checkpoint(checkpoint)
    SRResNet(scale=4, channels=4, num_blocks=1).on_load_checkpoint(checkpoint)  # the same setting loads


def test_srgan_starts_from_the_srresnet_checkpoint(tmp_path):
    srresnet = built(SRResNet(scale=4, channels=4, num_blocks=1))
    ckpt = tmp_path / "srresnet.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in srresnet.generator.state_dict().items()}}, ckpt)
    gan = built(SRGAN(scale=4, channels=4, num_blocks=1, backbone="mobilenet_v1", weights="random"))
    gan.load_generator(str(ckpt))
    for (name, a), b in zip(gan.generator.state_dict().items(), srresnet.generator.state_dict().values()):
        assert torch.equal(a, b), name
