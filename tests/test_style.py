"""Feature networks (the MobileNet port against Keras' activations), style transfer by optimisation, fast style
transfer and DeepDream."""

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from datamodules import DataError
from lightning_gen import DeepDream, FastStyleTransfer, StyleTransfer
from lightning_gen.callbacks import same_size
from lightning_gen.core.checks import ConfigError
from lightning_gen.fast_style import TransformNet
from lightning_gen.nn.features import MOBILENET_FILE, FeatureNet, layer_names, perceptual_loss, tf_same_pad
from tests.conftest import QUIET, ROOT, run_cli, shared_data
from tests.helpers import write_image

GOLDEN = Path(__file__).parent / "golden" / "mobilenet_v1.pt"


def mobilenet_weights() -> str:
    return str(shared_data("weights", MOBILENET_FILE))


@pytest.fixture
def pictures(tmp_path):
    return (write_image(tmp_path / "content.png", (40, 28), 0), write_image(tmp_path / "style.png", (32, 32), 1))


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


# ---- feature networks -------------------------------------------------------------------------------------------

def test_mobilenet_port_matches_keras_activations():
    """Activations of Keras' own MobileNet on the same weights file (tests/golden/make_mobilenet_golden.py)."""
    golden = torch.load(GOLDEN, weights_only=True)
    net = FeatureNet("mobilenet_v1", mobilenet_weights())
    out = net(golden["input"], list(golden["activations"]))
    for name, expected in golden["activations"].items():
        assert out[name].shape == expected.shape, name
        assert torch.allclose(out[name], expected, atol=2e-4, rtol=1e-4), (name, (out[name] - expected).abs().max())


def test_tf_same_padding_puts_the_odd_pixel_after_the_image():
    x = torch.ones(1, 1, 5, 4)
    padded = tf_same_pad(x, kernel=3, stride=2)  # height 5: 1 + 1; width 4: 0 + 1
    assert padded.shape == (1, 1, 7, 5)
    assert padded[0, 0, 0].sum() == 0 and padded[0, 0, -1].sum() == 0  # a row above and below
    assert padded[0, 0, :, 0].sum() == 5 and padded[0, 0, :, -1].sum() == 0  # a column after only
    assert tf_same_pad(x, kernel=1, stride=1).shape == x.shape


@pytest.mark.parametrize("backbone", ["vgg16", "vgg19", "mobilenet_v1"])
def test_feature_net_returns_the_requested_layers_and_is_frozen(backbone):
    net = FeatureNet(backbone, "random")
    names = layer_names(backbone)
    wanted = [names[1], names[len(names) // 2]]
    out = net(torch.rand(2, 3, 40, 36) * 2 - 1, wanted)
    assert list(out) == wanted and all(v.shape[0] == 2 for v in out.values())
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # batch norm keeps its stored statistics


def test_vgg_input_scaling_is_imagenet_normalisation():
    net = FeatureNet("vgg16", "random")
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = net.stages["conv1_1"](((x + 1) / 2 - mean) / std)  # torchvision's transform on [0, 1] pixels
    assert torch.allclose(net(x, ["conv1_1"])["conv1_1"], expected, atol=1e-5)


def test_unknown_layer_lists_the_valid_ones(pictures):
    content, style = pictures
    with pytest.raises(ConfigError, match="conv_pw_13_relu") as err:
        StyleTransfer(content=str(content), style=str(style), weights="random", style_layers=["relu4_2"])
    assert "relu4_2" in str(err.value) and "not layers of mobilenet_v1" in str(err.value)
    with pytest.raises(ConfigError, match="relu5_4"):
        DeepDream(images=str(content), backbone="vgg19", weights="random", layers=["mixed4c"])


def test_weights_of_the_wrong_architecture_or_missing_are_refused(tmp_path):
    vgg_file = tmp_path / "vgg16.pth"
    from torchvision.models import vgg16

    torch.save({f"features.{k}": v for k, v in vgg16().features.state_dict().items()}, vgg_file)  # torchvision's keys
    with pytest.raises(ConfigError, match="not an HDF5 file"):
        FeatureNet("mobilenet_v1", str(vgg_file))
    with pytest.raises(ConfigError, match="does not fit the vgg19 backbone"):
        FeatureNet("vgg19", str(vgg_file))
    import h5py

    wide = tmp_path / "mobilenet_1_0.h5"  # a width-1.0 MobileNet: conv1 has 32 filters
    with h5py.File(wide, "w") as f:
        f.create_dataset("conv1/conv1/kernel:0", data=torch.zeros(3, 3, 3, 32).numpy())
        for key in ("beta", "gamma", "moving_mean", "moving_variance"):
            f.create_dataset(f"conv1_bn/conv1_bn/{key}:0", data=torch.zeros(32).numpy())
    with pytest.raises(ConfigError, match="alpha 0.25"):
        FeatureNet("mobilenet_v1", str(wide))
    with pytest.raises(ConfigError, match="does not exist.*Keras file"):
        FeatureNet("mobilenet_v1", str(tmp_path / "nowhere.h5"))
    loaded = FeatureNet("vgg16", str(vgg_file))  # and the right architecture loads
    assert torch.equal(loaded.stages["conv1_1"].weight, torch.load(vgg_file)["features.0.weight"])


# ---- style transfer by optimisation ----------------------------------------------------------------------------

def test_style_transfer_lowers_the_loss_and_writes_the_image(tmp_path):
    data = shared_data("style")
    model = StyleTransfer(content=str(data / "content" / "chelsea.png"), style=str(data / "style" / "the_scream.jpg"),
                          image_size=64, weights=mobilenet_weights(), steps_per_epoch=15)
    model.configure_model()  # the image being optimised (a trainer would make it itself)
    loss = perceptual_loss("mobilenet_v1", mobilenet_weights(), None, None, 1.0, 1e5, 10.0)
    loss.set_style(model.style_image)
    targets = loss.content_targets(model.content_image)
    before = loss(model.image.detach(), targets)
    t = trainer(tmp_path, max_epochs=2)
    t.fit(model)
    after = loss(model.image.detach(), targets)
    assert after["total"] < 0.7 * before["total"] and after["style"] < before["style"]
    assert model.image.shape == (1, 3, 43, 64)  # chelsea is 451x300: longer side 64, aspect kept
    assert model.image.min() >= -1 and model.image.max() <= 1
    assert (tmp_path / "stylised.png").is_file()
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["stylised_epoch0000.png",
                                                                         "stylised_epoch0001.png"]


def test_style_transfer_adam_under_mixed_precision_and_lbfgs_refused(tmp_path, pictures):
    content, style = pictures
    model = StyleTransfer(content=str(content), style=str(style), image_size=32, weights="random",
                          optimizer="adam", lr=0.05, steps_per_epoch=4)
    model.configure_model()
    start = model.image.detach().clone()
    trainer(tmp_path, max_epochs=1, precision="bf16-mixed").fit(model)
    assert not torch.equal(model.image.detach(), start) and torch.isfinite(model.image).all()
    lbfgs = StyleTransfer(content=str(content), style=str(style), image_size=32, weights="random")
    with pytest.raises(ConfigError, match="L-BFGS does not work under mixed precision"):
        trainer(tmp_path, max_epochs=1, precision="bf16-mixed").fit(lbfgs)


@pytest.mark.slow
def test_style_transfer_cli_resumes_and_predict_writes_the_image(tmp_path):
    shared_data("style")
    config = str(ROOT / "configs" / "style_transfer" / "tiny.yaml")
    first = run_cli(["fit", "--config", config, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger",
                     "false", "--trainer.max_epochs", "1", *QUIET], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = run_cli(["fit", "--config", config, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger",
                       "false", "--trainer.max_epochs", "3", "--ckpt_path", "last", *QUIET], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (saved["epoch"], final["epoch"]) == (0, 2) and final["global_step"] == 9  # 3 epochs of 3 steps
    assert "optimizer_states" in final and final["optimizer_states"][0]["state"]  # L-BFGS history carried over
    assert not torch.equal(saved["state_dict"]["image"], final["state_dict"]["image"])
    assert not any(k.startswith("perceptual") for k in final["state_dict"])  # the frozen network is not saved
    out = run_cli(["predict", "--config", config, "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "last",
                   *QUIET], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    written = Image.open(tmp_path / "predictions" / "stylised.png")
    assert written.size == (32, 21)  # chelsea at longer side 32


def test_style_transfer_bad_images_are_reported_before_any_work(tmp_path, pictures):
    content, style = pictures
    with pytest.raises(DataError, match="does not exist"):
        StyleTransfer(content=str(tmp_path / "missing.jpg"), style=str(style), weights="random")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(DataError, match="cannot read .*notes.png as an image"):
        StyleTransfer(content=str(content), style=str(not_image), weights="random")
    with pytest.raises(DataError, match="is a folder; give one image file"):
        StyleTransfer(content=str(content), style=str(tmp_path), weights="random")
    with pytest.raises(ConfigError, match="loss weights must be 0 or more"):
        StyleTransfer(content=str(content), style=str(style), weights="random", style_weight=-1.0)


# ---- fast style transfer -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(32, 32), (37, 50), (5, 7), (1, 3)])
def test_transformation_network_keeps_the_image_size(size):
    out = TransformNet(width=4, num_residual=1)(torch.rand(2, 3, *size) * 2 - 1)
    assert out.shape == (2, 3, *size) and out.abs().max() <= 1


def test_fast_style_training_lowers_the_loss(tmp_path, pictures):
    _, style = pictures
    L.seed_everything(0)
    model = FastStyleTransfer(style=str(style), style_size=32, weights="random", width=8, num_residual=1, lr=3e-3)
    photos = torch.rand(4, 3, 24, 24) * 2 - 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(photos), batch_size=4)
    t = trainer(tmp_path, max_epochs=1)
    before = t.validate(model, loader, verbose=False)[0]["val/total"]
    t = trainer(tmp_path, max_epochs=40)
    t.fit(model, loader)
    after = t.validate(model, loader, verbose=False)[0]["val/total"]
    assert after < 0.5 * before


@pytest.mark.slow
def test_fast_style_cli_fit_then_predict_a_folder_at_its_own_sizes(tmp_path):
    shared_data("facades")
    folder = tmp_path / "photos"
    write_image(folder / "wide.png", (30, 18), 2)
    write_image(folder / "tall.jpg", (17, 25), 3)
    config = str(ROOT / "configs" / "fast_style" / "tiny.yaml")
    fit = run_cli(["fit", "--config", config, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger",
                   "false", *QUIET], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert list((tmp_path / "samples").glob("val_pairs_epoch*.png"))
    out = run_cli(["predict", "--config", config, "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "last",
                   "--model.predict_images", str(folder), "--model.predict_size", "null", *QUIET], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    written = tmp_path / "predictions"
    assert Image.open(written / "wide.png").size == (30, 18) and Image.open(written / "tall.png").size == (17, 25)
    assert (written / "grid.png").is_file()


@pytest.mark.slow
def test_fast_style_ddp_test_counts_every_photo_once(tmp_path, pictures):
    from tests.test_vae import read_metrics

    _, style = pictures
    # the Digits test set has 359 images: with batch 64 on 2 processes DistributedSampler repeats one image
    config = tmp_path / "fast_digits.yaml"
    config.write_text(f"""seed_everything: 0
model:
  class_path: lightning_gen.FastStyleTransfer
  init_args: {{style: {style}, style_size: 16, weights: random, width: 4, num_residual: 1}}
data:
  class_path: datamodules.Digits
  init_args: {{batch_size: 64}}
trainer: {{accelerator: cpu, limit_test_batches: 1.0}}
""")
    results = {}
    for devices in (1, 2):
        out = run_cli(["test", "--config", str(config), "--trainer.devices", str(devices), "--trainer.strategy",
                       "ddp" if devices == 2 else "auto", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir",
                       f"csv{devices}", *QUIET], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        results[devices] = read_metrics(tmp_path / f"csv{devices}")
    for term in ("total", "content", "style", "tv"):  # per-photo means: the same whatever the process count
        assert results[2][f"test/{term}"] == pytest.approx(results[1][f"test/{term}"], rel=1e-5), term


def test_fast_style_refuses_batches_that_are_not_images(pictures):
    with pytest.raises(ConfigError, match="batches of \\(B, 1 or 3, H, W\\) images"):
        FastStyleTransfer.photos((torch.zeros(4, 10), torch.zeros(4)))


# ---- DeepDream --------------------------------------------------------------------------------------------------

def test_deepdream_predict_raises_the_objective_under_inference_mode(tmp_path, pictures):
    content, _ = pictures
    model = DeepDream(images=str(content), weights="random", layers=["conv_pw_3_relu"], octaves=2, steps=4, jitter=3,
                      step_size=0.05)
    t = trainer(tmp_path)
    assert t.predict_loop.inference_mode  # Lightning's default: the module switches gradients back on itself
    (out,) = t.predict(model)
    image = model.predict_dataloader().dataset[0]["image"].unsqueeze(0)
    dreamt = out["images"]
    assert dreamt.shape == image.shape and out["names"] == ["content.png"]
    assert model.objective(dreamt) > 1.2 * model.objective(image)
    again = t.predict(model)[0]["images"]
    assert torch.equal(again, dreamt)  # the jitter follows the seed


def test_deepdream_octaves_reinject_detail(pictures):
    content, _ = pictures
    model = DeepDream(images=str(content), weights="random", layers=["conv_pw_3_relu"], octaves=3, steps=3, jitter=0,
                      step_size=0.05)
    model.configure_model()  # the feature network (a trainer would load it itself)
    image = model.predict_dataloader().dataset[0]["image"].unsqueeze(0)
    dreamt = model.dream(image)
    one_scale = DeepDream(images=str(content), weights="random", layers=["conv_pw_3_relu"], octaves=1, steps=3,
                          jitter=0, step_size=0.05)
    one_scale.features = model.features
    # with detail carried up from the small scales, the result moves further than 3 steps at full size alone
    assert (dreamt - image).abs().mean() > (one_scale.dream(image) - image).abs().mean()


def test_deepdream_bad_input_and_fit_are_refused(tmp_path, pictures):
    content, _ = pictures
    with pytest.raises(DataError, match="does not exist"):
        DeepDream(images=str(tmp_path / "missing"), weights="random")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    model = DeepDream(images=str(broken), weights="random")
    with pytest.raises(DataError, match="cannot read .*a.jpg as an image"):
        model.predict_dataloader()
    with pytest.raises(ConfigError, match="nothing to fit"):
        trainer(tmp_path, max_epochs=1).fit(DeepDream(images=str(content), weights="random"),
                                            torch.utils.data.DataLoader(torch.zeros(2, 1)))


def test_prediction_grid_pads_images_of_different_sizes():
    grid = same_size([torch.zeros(3, 4, 6), -torch.ones(3, 5, 2)])
    assert grid.shape == (2, 3, 5, 6)
    assert grid[0, :, 4].eq(1).all() and grid[1, :, :, 2:].eq(1).all() and grid[1, :, :, :2].eq(-1).all()


@pytest.mark.slow
def test_deepdream_tiny_config_predicts_from_the_command_line(tmp_path):
    shared_data("style")
    out = run_cli(["predict", "--config", str(ROOT / "configs" / "deepdream" / "tiny.yaml"),
                   "--trainer.default_root_dir", str(tmp_path), *QUIET], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "objective" in out.stdout + out.stderr
    dreamt = Image.open(tmp_path / "predictions" / "chelsea.png")
    assert dreamt.size == (32, 21)  # chelsea (451x300) at longer side 32
