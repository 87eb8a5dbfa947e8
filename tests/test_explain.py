"""Explanations (CAM, Grad-CAM, LIME, Kernel SHAP), their faithfulness measures, and the Classifier's ImageNet
backbones."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import QUIET, ROOT, run_cli, shared_data
from torch import nn

from lightning_gen import Classifier
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.cli import GenCLI
from lightning_gen.explain import (
    Explain,
    cam,
    exact_shapley,
    grad_cam,
    perturbation_maps,
    retained_output,
    segment,
    spatial_layers,
)
from lightning_gen.metrics.faithfulness import (
    area_under,
    cascading_randomisation,
    deletion_insertion,
    edge_maps,
    layers_top_down,
    rank_correlation,
)
from lightning_gen.nn import ClassifierNet
from lightning_gen.nn.backbones import BackboneNet
from lightning_gen.nn.classifier import classifier_net_from_checkpoint, explained_network

TINY_CLASSIFIER = str(ROOT / "configs" / "classifier" / "tiny.yaml")
TINY_EXPLAIN = str(ROOT / "configs" / "explain" / "tiny.yaml")


def small_cnn(seed: int = 0, channels: int = 1, side: int = 12) -> ClassifierNet:
    torch.manual_seed(seed)
    return ClassifierNet((channels, side, side), 5, "cnn").eval().requires_grad_(False)


# ---- CAM and Grad-CAM ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["features.11", "features.6"])
def test_grad_cam_equals_captum_layer_grad_cam(layer):
    from captum.attr import LayerGradCam

    net, images, target = small_cnn(), torch.randn(3, 1, 12, 12), torch.tensor([0, 3, 4])
    ours = grad_cam(net, images, target, layer)
    theirs = LayerGradCam(net, dict(net.named_modules())[layer]).attribute(images, target=target,
                                                                           relu_attributions=True)
    assert ours.shape == theirs[:, 0].shape
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, theirs[:, 0], rtol=1e-4, atol=1e-6)


def test_cam_equals_grad_cam_on_a_global_average_pooling_network_up_to_scale():
    net, images, target = small_cnn(1), torch.randn(4, 1, 12, 12), torch.tensor([1, 2, 0, 4])
    class_map = cam(net, images, target, net.cam_layer, net.last_linear)
    gradient_map = grad_cam(net, images, target, net.cam_layer)
    h, w = class_map.shape[-2:]
    torch.testing.assert_close(gradient_map * h * w, torch.relu(class_map), rtol=1e-4, atol=1e-5)
    # and the CAM of each class sums (over the map, divided by h w) to that class's logit minus the bias
    logits = net(images).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(class_map.mean((1, 2)) + net.last_linear.bias[target], logits, rtol=1e-4, atol=1e-5)


def test_the_retained_output_hook_is_removed_even_when_the_forward_pass_fails():
    net = small_cnn()
    layer = dict(net.named_modules())["features.11"]
    with pytest.raises(RuntimeError), retained_output(net, "features.11"):
        net(torch.randn(2, 3, 12, 12))  # wrong channel count
    assert not layer._forward_hooks
    grad_cam(net, torch.randn(1, 1, 12, 12), torch.tensor([0]), "features.11")
    assert not any(m._forward_hooks for m in net.modules())


def test_spatial_layers_lists_the_convolutional_outputs_and_the_mlp_has_none():
    assert spatial_layers(small_cnn(), (1, 12, 12))[-1] == "features.12"  # the pooled (B, 128, 1, 1) map
    assert "features.11" in spatial_layers(small_cnn(), (1, 12, 12))
    assert spatial_layers(ClassifierNet((1, 12, 12), 5, "mlp"), (1, 12, 12)) == []


# ---- Kernel SHAP against exact Shapley values, LIME --------------------------------------------------------------
def test_exact_shapley_of_a_linear_function_is_weight_times_difference_and_efficient():
    w, x, base = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([1.0, 2.0, -1.0, 0.5]), torch.zeros(4)
    phi = exact_shapley(lambda z: z @ w, x, base)
    torch.testing.assert_close(phi.float(), w * (x - base))
    f = lambda z: torch.sin(z).prod(-1) + z[..., 0] * z[..., 2]  # noqa: E731 - interactions
    x = torch.tensor([0.3, 1.2, -0.7, 2.0, 0.1])
    phi = exact_shapley(f, x, torch.zeros(5))
    torch.testing.assert_close(phi.sum().float(), f(x) - f(torch.zeros(5)), rtol=1e-5, atol=1e-6)  # efficiency


def test_kernel_shap_from_captum_matches_exact_shapley_values_on_eight_features():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).requires_grad_(False)
    x, base = torch.randn(1, 8), torch.zeros(1, 8)
    exact = exact_shapley(lambda z: model(z)[..., 1], x[0], base[0])
    from captum.attr import KernelShap

    torch.manual_seed(1)
    estimate = KernelShap(model).attribute(x, baselines=base, target=1, n_samples=4000,
                                           perturbations_per_eval=500)[0]
    assert exact.abs().max() > 0.05
    torch.testing.assert_close(estimate.double(), exact, atol=0.03 * exact.abs().max().item(), rtol=0)


def test_lime_and_kernel_shap_maps_find_the_pixels_the_model_reads():
    # a model that reads the top-left 4x4 quarter only: its evidence must be there
    def probability(x):
        score = 4 * x[:, :, :4, :4].mean((1, 2, 3))
        return torch.stack([score, -score], 1).softmax(1)

    images = torch.ones(2, 1, 8, 8)
    segments = segment(images, "grid", 4)  # 2x2 cells of 4x4 pixels
    assert segments.unique().tolist() == [0, 1, 2, 3]
    for method in ("lime", "kernel_shap"):
        maps = perturbation_maps(method, probability, images, torch.tensor([0, 0]), segments,
                                 torch.zeros_like(images), n_samples=64)
        assert maps.shape == (2, 8, 8)
        assert (maps[:, :4, :4].mean((1, 2)) > maps[:, 4:, 4:].abs().mean((1, 2)) + 0.01).all(), method


def test_slic_segments_colour_and_grey_images():
    grey = torch.full((2, 1, 28, 28), -1.0)
    grey[:, :, 8:20, 8:20] = 1.0  # a bright square on black
    colour = torch.zeros(1, 3, 32, 32)
    colour[:, 0, :16], colour[:, 1, 16:, :16], colour[:, 2, 16:, 16:] = 1.0, 1.0, 1.0  # three colour regions
    grey_ids, colour_ids = segment(grey, "slic", 20), segment(colour, "slic", 20)
    assert grey_ids.shape == (2, 28, 28) and colour_ids.shape == (1, 32, 32)
    assert 2 <= len(colour_ids.unique()) <= 60 and 2 <= len(grey_ids[0].unique()) <= 60
    # no segment straddles a colour boundary
    for region in (colour_ids[0, :16], colour_ids[0, 16:, :16], colour_ids[0, 16:, 16:]):
        others = colour_ids[0][~torch.isin(colour_ids[0], region.unique())]
        assert not torch.isin(others, region.unique()).any()


# ---- faithfulness ----------------------------------------------------------------------------------------------
def test_deletion_and_insertion_reward_the_map_of_the_pixels_the_model_reads():
    checkers = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1  # +-1 checkerboard

    def probability(x):  # evidence: the top half's match with the checkerboard (a blur or black pixels have none)
        score = 3 * (x[:, 0, :16] * checkers[:16]).mean((1, 2))
        return torch.stack([score, torch.zeros_like(score)], 1).softmax(1)

    images, target = checkers.expand(1, 1, 32, 32).clone(), torch.tensor([0])
    true_map = torch.zeros(1, 32, 32)
    true_map[:, :16] = 1
    deletion, insertion = deletion_insertion(probability, images, true_map, target, steps=8)
    wrong_deletion, wrong_insertion = deletion_insertion(probability, images, 1 - true_map, target, steps=8)
    assert deletion.shape == (1, 9)
    torch.testing.assert_close(deletion[:, 0], probability(images)[:, 0])  # nothing removed yet
    assert area_under(deletion) < area_under(wrong_deletion) - 0.2
    assert area_under(insertion) > area_under(wrong_insertion) + 0.2
    torch.testing.assert_close(area_under(torch.ones(1, 5)), torch.tensor([1.0]))


def test_rank_correlation_and_edge_maps():
    a = torch.arange(16.0).view(1, 4, 4)
    torch.testing.assert_close(rank_correlation(a, a * 3 + 1), torch.tensor([1.0]))
    torch.testing.assert_close(rank_correlation(a, -a), torch.tensor([-1.0]))
    step = torch.full((1, 1, 6, 6), -1.0)
    step[..., 3:] = 1.0
    edges = edge_maps(step)[0]
    assert edges[:, 2:4].min() > 0 and edges[:, 0].max() == 0


def test_cascading_randomisation_goes_from_the_top_layer_down_and_changes_the_maps():
    net = small_cnn(2)
    order = layers_top_down(net)
    assert order[0] == "head" and order[-1] == "features.0"
    images, target = torch.randn(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    trained = grad_cam(net, images, target, "features.6")
    seen = []
    for name, randomised in cascading_randomisation(net):
        seen.append(name)
        assert not torch.equal(randomised.head.weight, net.head.weight)
    assert seen == order
    last = grad_cam(randomised, images, target, "features.6")
    assert rank_correlation(trained, last).mean() < 0.9


# ---- the technique, through the CLI -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classifier")
    GenCLI(args=["fit", "--config", TINY_CLASSIFIER, "--trainer.logger", "false", "--trainer.default_root_dir",
                 str(folder), *QUIET])
    return folder / "checkpoints" / "last.ckpt"


def drawn_test_images(n: int, seed: int = 0) -> list[int]:
    """The test images `Explain` draws from scikit-learn's digits: `n` of them, at random with `seed`."""
    from datamodules import Digits

    data = Digits(batch_size=32)
    data.setup("test")
    return sorted(torch.randperm(len(data.test_set), generator=torch.Generator().manual_seed(seed))[:n].tolist())


def test_explain_predict_writes_pictures_grid_and_table(digits_classifier, tmp_path):
    GenCLI(args=["predict", "--config", TINY_EXPLAIN, "--model.classifier_ckpt", str(digits_classifier),
                 "--trainer.default_root_dir", str(tmp_path / "out"), *QUIET])
    folder = tmp_path / "out" / "predictions" / "explanations"
    drawn = drawn_test_images(4)
    assert sorted(p.name for p in folder.glob("0*.png")) == [f"{i:05d}.png" for i in drawn]
    assert (folder / "grid.png").is_file()
    rows = list(csv.DictReader((folder / "explanations.csv").open()))
    assert [int(r["index"]) for r in rows] == drawn
    assert all(r["predicted"] == r["target"] and 0 < float(r["probability"]) <= 1 for r in rows)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_explain_and_a_backbone_classifier_under_mixed_precision(digits_classifier, tmp_path, precision):
    import lightning as L

    from datamodules import Digits
    from lightning_gen.explain import ExplanationWriter
    from tests.helpers import fp16_on_cpu

    def trainer(**kw):
        mixed = {"plugins": [fp16_on_cpu()]} if precision == "16-mixed" else {"precision": precision}
        return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, **mixed, **kw)

    model = Explain(str(digits_classifier), methods=["cam", "gradcam", "kernel_shap"], segments="grid",
                    n_segments=16, n_samples=20, num_images=4)
    model.source_data = Digits(batch_size=32)
    out = trainer(callbacks=[ExplanationWriter(str(tmp_path / "explained"))]).predict(model)
    maps = out[0]["maps"]
    assert set(maps) == {"cam", "gradcam", "kernel_shap"}
    assert all(torch.isfinite(m).all() and m.abs().sum() > 0 for m in maps.values())
    classifier = Classifier(backbone="resnet18", weights="random", input_size=32)
    fit = trainer(max_steps=2, limit_val_batches=1, enable_checkpointing=False)
    fit.fit(classifier, datamodule=Digits(batch_size=32))
    assert torch.isfinite(classifier(torch.zeros(2, 1, 8, 8))).all()


def test_explain_logs_a_wandb_table_offline(digits_classifier, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    GenCLI(args=["predict", "--config", TINY_EXPLAIN, "--model.classifier_ckpt", str(digits_classifier),
                 "--model.methods", "[gradcam]", "--trainer.logger", "lightning_gen.core.loggers.AutoWandbLogger",
                 "--trainer.logger.mode", "offline", "--trainer.default_root_dir", str(tmp_path / "out"), *QUIET])
    tables = list((tmp_path / "runs" / "wandb").glob("offline-run-*/files/media/table/explanations_*.table.json"))
    assert len(tables) == 1
    assert '"picture"' in tables[0].read_text()


def test_explain_a_chosen_class_and_the_maps_differ_between_classes(digits_classifier):
    net, classes, shape, technique = explained_network(str(digits_classifier))
    assert (classes, shape, technique) == (10, (1, 8, 8), "Classifier")
    model = Explain(str(digits_classifier), methods=["gradcam", "cam"], target_class=3)
    images = torch.randn(2, 1, 8, 8)
    maps3 = model.explain(images, torch.tensor([3, 3]))
    maps5 = model.explain(images, torch.tensor([5, 5]))
    assert set(maps3) == {"gradcam", "cam"} and maps3["cam"].shape == (2, 8, 8)
    assert not torch.allclose(maps3["cam"], maps5["cam"])


def test_explain_refuses_bad_input_before_any_work(digits_classifier, tmp_path):
    ckpt = str(digits_classifier)
    with pytest.raises(ConfigError, match=r"target_class 10 is out of range.*0\.\.9"):
        Explain(ckpt, target_class=10)
    with pytest.raises(ConfigError, match=r"layer 'features\.99' is not.*features\.11"):
        Explain(ckpt, methods=["gradcam"], layer="features.99")
    with pytest.raises(ConfigError, match="does not exist"):
        Explain(str(tmp_path / "missing.ckpt"))
    other = tmp_path / "dcgan.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "lightning_gen.DCGAN"}, "state_dict": {"generator.w": 1}}, other)
    with pytest.raises(ConfigError, match="DCGAN checkpoint, not a classifier"):
        Explain(str(other))
    mlp = tmp_path / "mlp.ckpt"
    net = ClassifierNet((1, 8, 8), 10, "mlp")
    hp = {"_class_path": "lightning_gen.Classifier", "arch": "mlp", "image_shape": (1, 8, 8), "num_classes": 10}
    torch.save({"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, mlp)
    with pytest.raises(ConfigError, match="CAM needs a network that ends in global average pooling.*gradcam"):
        Explain(str(mlp), methods=["cam"])
    with pytest.raises(ConfigError, match="no convolutional layer|has none"):
        Explain(str(mlp), methods=["gradcam"])
    Explain(str(mlp), methods=["lime", "kernel_shap"])  # the perturbation methods need no layer


def test_explain_refuses_grey_images_for_a_colour_classifier(tmp_path):
    net = ClassifierNet((3, 8, 8), 10, "cnn")
    hp = {"_class_path": "lightning_gen.Classifier", "arch": "cnn", "image_shape": (3, 8, 8), "num_classes": 10}
    path = tmp_path / "colour.ckpt"
    torch.save({"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    with pytest.raises(ConfigError, match="trained on colour images.*gives grey images"):
        GenCLI(args=["predict", "--config", TINY_EXPLAIN, "--model.classifier_ckpt", str(path),
                     "--trainer.default_root_dir", str(tmp_path), *QUIET])


def test_explain_every_picture_of_a_folder(tmp_path):
    from PIL import Image

    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 200 - 30 * i, 90)).save(tmp_path / f"photo{i}.png")
    net = ClassifierNet((3, 16, 16), 4, "cnn")
    hp = {"_class_path": "lightning_gen.Classifier", "arch": "cnn", "image_shape": (3, 16, 16), "num_classes": 4}
    ckpt = tmp_path / "colour.ckpt"
    torch.save({"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    GenCLI(args=["predict", "--config", TINY_EXPLAIN, "--model.classifier_ckpt", str(ckpt), "--model.split", "all",
                 "--model.methods", "[gradcam, lime]", "--model.num_images", "null", "--data",
                 "datamodules.ImageFolder", "--data.root", str(tmp_path), "--data.batch_size", "2",
                 "--trainer.default_root_dir", str(tmp_path / "out"), *QUIET])
    folder = tmp_path / "out" / "predictions" / "explanations"
    rows = list(csv.DictReader((folder / "explanations.csv").open()))
    assert len(rows) == 6 and len(list(folder.glob("0*.png"))) == 6


def test_the_sgan_discriminator_is_explained_on_its_real_class_logits(tmp_path):
    disc = ClassifierNet((1, 8, 8), 10, "cnn")  # fake_logit "zero": N outputs, the fake logit is a constant
    hp = {"_class_path": "lightning_gen.SGAN", "arch": "cnn", "image_shape": (1, 8, 8), "num_classes": 10,
          "fake_logit": "zero"}
    state = {f"discriminator.{k}": v for k, v in disc.state_dict().items()}
    torch.save({"hyper_parameters": hp, "state_dict": {**state, "generator.x": torch.zeros(1)}}, tmp_path / "s.ckpt")
    net, classes, _, technique = explained_network(str(tmp_path / "s.ckpt"))
    assert (classes, technique) == (10, "SGAN")
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(net(images), disc.eval()(images))
    maps = Explain(str(tmp_path / "s.ckpt"), methods=["gradcam"]).explain(images, torch.tensor([1, 2]))
    assert maps["gradcam"].shape == (2, 8, 8)


def test_explain_under_ddp_shares_the_images_out(digits_classifier, tmp_path):
    result = run_cli(["predict", "--config", TINY_EXPLAIN, "--model.classifier_ckpt", str(digits_classifier),
                      "--model.num_images", "6", "--model.methods", "[gradcam]", "--trainer.devices", "2",
                      "--trainer.strategy", "ddp", "--trainer.default_root_dir", "out", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "out" / "predictions" / "explanations"
    tables = [csv.DictReader((folder / f"explanations_rank{rank}.csv").open()) for rank in (0, 1)]
    seen = [int(row["index"]) for table in tables for row in table]
    assert sorted(seen) == drawn_test_images(6)  # each image once, split between the processes
    assert len(list(folder.glob("0*.png"))) == 6


# ---- ImageNet backbones ----------------------------------------------------------------------------------------
def test_backbone_weights_from_a_file_and_from_the_hub_cache(tmp_path, monkeypatch):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = BackboneNet((3, 32, 32), 10, "resnet18", str(path), 64).eval()
    torch.testing.assert_close(net.features.body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    # `imagenet`: torchvision's file name in the torch hub cache (what a machine with internet downloads there)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / Path(url).name)
    cached = BackboneNet((3, 32, 32), 10, "resnet18", "imagenet", 64)
    torch.testing.assert_close(cached.features.body.conv1.weight, reference.conv1.weight)
    wrong = tmp_path / "vgg.pth"
    torch.save(torchvision.models.mobilenet_v3_large(weights=None).state_dict(), wrong)
    with pytest.raises(ConfigError, match="does not fit resnet18"):
        BackboneNet((3, 32, 32), 10, "resnet18", str(wrong))
    with pytest.raises(ConfigError, match="does not exist"):
        BackboneNet((3, 32, 32), 10, "resnet18", str(tmp_path / "none.pth"))


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "mobilenet_v3_large", "mobilenet_v1"])
def test_every_backbone_classifies_grey_and_colour_images_and_supports_cam(name):
    net = BackboneNet((1, 28, 28), 10, name, None, 64).eval()
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    assert net(images).shape == (2, 10)
    target = torch.tensor([1, 2])
    class_map = cam(net, images, target, net.cam_layer, net.last_linear)
    gradient_map = grad_cam(net, images, target, net.cam_layer)
    h, w = class_map.shape[-2:]
    torch.testing.assert_close(gradient_map * h * w, torch.relu(class_map), rtol=1e-3, atol=1e-4)


def test_classifier_trains_the_head_only_on_the_offline_mobilenet_and_reloads_without_the_weights_file(tmp_path):
    weights = shared_data("weights", "mobilenet_2_5_224_tf_no_top.h5")
    local = tmp_path / "mobilenet.h5"
    local.write_bytes(weights.read_bytes())
    GenCLI(args=["fit", "--config", TINY_CLASSIFIER, "--model.backbone", "mobilenet_v1", "--model.weights",
                 str(local), "--model.input_size", "32", "--model.finetune", "head", "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(tmp_path / "run"), *QUIET])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    fresh = BackboneNet((1, 8, 8), 10, "mobilenet_v1", str(local), 32)
    local.unlink()  # a checkpoint holds the backbone: no weights file needed to load it
    model = Classifier.load_from_checkpoint(ckpt).eval()
    trained = model.net.features.body
    for (key, value), (_, start) in zip(trained.state_dict().items(), fresh.features.body.state_dict().items()):
        torch.testing.assert_close(value, start, msg=key)  # frozen: weights and batch-norm statistics unchanged
    assert not torch.equal(model.net.head.linear.weight, fresh.head.linear.weight)
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    net, _ = classifier_net_from_checkpoint(str(ckpt))
    torch.testing.assert_close(net(images), model(images))


def test_classifier_backbone_options_are_checked():
    with pytest.raises(ConfigError, match="input_size must be at least 32"):
        Classifier(backbone="resnet18", input_size=16)
    assert Classifier(backbone="resnet18").hparams.input_size == 224
