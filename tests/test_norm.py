"""Normalisation as a choice (`lightning_gen.nn.norm`): the factory, which choices keep an image's output independent
of its batch, batch norm's train/eval behaviour in closed form, and every technique built with every choice."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from lightning_gen import (
    CGAN,
    DCGAN,
    DOC,
    SGAN,
    SRGAN,
    Classifier,
    DeepSVDD,
    FastStyleTransfer,
    Pix2Pix,
    Siamese,
    SRResNet,
)
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.embedding import EmbeddingTechnique
from lightning_gen.nn import ClassifierNet, DCGANGenerator
from lightning_gen.nn.embedding import EmbeddingNet
from lightning_gen.nn.norm import NORMS, batch_dependent, group_count, make_norm
from lightning_gen.srgan import checkpoint_norm
from tests.helpers import write_image

PER_IMAGE = ["layer", "instance", "group", "none"]


# ---- the factory ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("channels", "groups", "expected"), [(32, 32, 32), (64, 32, 32), (48, 32, 24), (20, 32, 20),
                                                               (3, 32, 3), (96, 32, 32), (64, 16, 16), (7, 4, 1)])
def test_group_count_is_the_largest_divisor_not_above_groups(channels, groups, expected):
    assert group_count(channels, groups) == expected


def test_the_factory_builds_each_kind():
    assert isinstance(make_norm("batch", 8), nn.BatchNorm2d) and isinstance(make_norm("batch", 8, dims=1),
                                                                            nn.BatchNorm1d)
    layer, group = make_norm("layer", 48), make_norm("group", 48)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 1 and layer.num_channels == 48
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 24
    instance = make_norm("instance", 8)
    assert isinstance(instance, nn.InstanceNorm2d) and instance.affine and not instance.track_running_stats
    assert isinstance(make_norm("none", 8), nn.Identity)
    plain = make_norm("batch", 8, affine=False, eps=1e-4)
    assert plain.weight is None and plain.eps == 1e-4
    with pytest.raises(ValueError, match="unknown norm 'weight'; choose one of batch, layer, instance, group, none"):
        make_norm("weight", 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="instance norm .* vectors"):
        make_norm("instance", 8, dims=1)


def test_layer_norm_of_a_map_normalises_each_image_over_channels_and_pixels():
    x = torch.randn(3, 4, 5, 5) * 3 + 2
    out = make_norm("layer", 4)(x)
    mean, var = x.mean((1, 2, 3), keepdim=True), x.var((1, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + 1e-5))


# ---- an image's output and the rest of its batch -------------------------------------------------------------------
def image_alone_and_in_company(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    batch = torch.randn(6, 3, 8, 8)
    batch[1:] = batch[1:] * 3 + 1  # company with other statistics
    return net(batch[:1]), net(batch)[:1]


@pytest.mark.parametrize("norm", PER_IMAGE)
@pytest.mark.parametrize("training", [True, False])
def test_layer_instance_group_and_none_treat_every_image_alone(norm, training):
    net = ClassifierNet((3, 8, 8), 5, "cnn", noise=False, norm=norm).train(training)
    alone, in_company = image_alone_and_in_company(net)
    torch.testing.assert_close(alone, in_company, atol=1e-5, rtol=1e-5)
    assert not batch_dependent(net)


def test_batch_norm_in_training_mode_makes_an_image_depend_on_its_batch():
    net = ClassifierNet((3, 8, 8), 5, "cnn", noise=False, norm="batch")
    assert batch_dependent(net.train())
    alone, in_company = image_alone_and_in_company(torch.nn.Sequential(*net.features[:2]))  # conv + batch norm
    assert (alone - in_company).abs().max() > 0.1
    net.eval()  # running statistics: the image alone again
    assert not batch_dependent(net)
    alone, in_company = image_alone_and_in_company(net)
    torch.testing.assert_close(alone, in_company, atol=1e-5, rtol=1e-5)


def test_batch_norm_uses_running_statistics_in_eval_and_the_batch_in_train():
    bn = make_norm("batch", 2)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    x = torch.tensor([[1.0, 0.0], [3.0, -1.0], [5.0, 4.0], [7.0, -3.0]]).view(4, 2, 1, 1)  # (B, C, 1, 1)
    eps = bn.eps

    out = bn.eval()(x).view(4, 2)  # (x - running mean) / sqrt(running var + eps); the statistics stay
    expected = (x.view(4, 2) - torch.tensor([1.0, -2.0])) / torch.sqrt(torch.tensor([4.0, 0.25]) + eps)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(bn.running_mean, torch.tensor([1.0, -2.0]))

    out = bn.train()(x).view(4, 2)  # (x - batch mean) / sqrt(biased batch var + eps), by hand
    mean = torch.tensor([(1 + 3 + 5 + 7) / 4, (0 - 1 + 4 - 3) / 4])  # 4, 0
    var = torch.tensor([(9 + 1 + 1 + 9) / 4, (0 + 1 + 16 + 9) / 4])  # 5, 6.5
    torch.testing.assert_close(out, (x.view(4, 2) - mean) / torch.sqrt(var + eps))
    # running averages move by momentum 0.1 towards the batch's mean and unbiased variance
    torch.testing.assert_close(bn.running_mean, 0.9 * torch.tensor([1.0, -2.0]) + 0.1 * mean)
    torch.testing.assert_close(bn.running_var, 0.9 * torch.tensor([4.0, 0.25]) + 0.1 * var * 4 / 3)


def test_dcgan_init_sets_every_affine_normalisation_scale():
    torch.manual_seed(0)
    for norm in ["batch", "group", "layer", "instance"]:
        net = DCGANGenerator(8, (1, 32, 32), features=64, norm=norm)
        kinds = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)
        scales = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, kinds)])
        assert len(scales) == 64 * 4 + 64 * 2 + 64
        assert abs(scales.mean() - 1) < 0.01 and abs(scales.std() - 0.02) < 0.005


# ---- every technique with every normalisation ----------------------------------------------------------------------
def built(model):
    model.configure_model()
    return model


@pytest.fixture(scope="module")
def style(tmp_path_factory):
    return str(write_image(tmp_path_factory.mktemp("style") / "style.png", (16, 16), 1))


def forward_passes(norm: str, style: str):
    """(technique, a function running one forward pass of each of its networks) for every technique with `norm`."""
    images, z = torch.rand(2, 1, 8, 8) * 2 - 1, torch.randn(2, 4)
    labels = torch.tensor([0, 1])
    rgb16 = torch.rand(2, 3, 16, 16) * 2 - 1
    yield "DCGAN", lambda m: m.discriminator(m.generator(z)), built(
        DCGAN(latent_dim=4, g_features=4, d_features=4, norm=norm, image_shape=(1, 8, 8)))
    yield "CGAN", lambda m: m.discriminate(m.generate(z, labels), labels), built(
        CGAN(num_classes=2, embed_dim=2, latent_dim=4, g_features=4, d_features=4, norm=norm, image_shape=(1, 8, 8)))
    yield "Pix2Pix", lambda m: m.discriminator(torch.cat([rgb16, m.generator(rgb16)], 1)), built(
        Pix2Pix(g_features=4, d_features=4, receptive_field=16, norm=norm, input_channels=3, image_shape=(3, 16, 16)))
    yield "SRResNet", lambda m: m(rgb16[..., :4, :4]), built(SRResNet(channels=4, num_blocks=1, norm=norm))
    yield "SRGAN", lambda m: m.discriminator(m(rgb16[..., :8, :8])), built(  # 32 px: 2x2 maps left for instance norm
        SRGAN(channels=4, num_blocks=1, d_channels=2, norm=norm, weights="random", backbone="mobilenet_v1"))
    yield "DeepSVDD", lambda m: m(images), built(DeepSVDD(channels=[2, 2], feature_dim=3, norm=norm,
                                                          image_shape=(1, 8, 8)))
    yield "DOC", lambda m: m.classifier(m(images)), built(DOC(channels=[2, 2], feature_dim=3, norm=norm,
                                                              num_reference_classes=2, image_shape=(1, 8, 8)))
    yield "FastStyleTransfer", lambda m: m(rgb16), built(FastStyleTransfer(style=style, style_size=8, width=2,
                                                                           num_residual=1, norm=norm, weights="random"))
    generator = "mlp" if norm != "instance" else "dcgan"
    yield "SGAN", lambda m: m.discriminator(m.generator(torch.rand(2, 4))), built(
        SGAN(generator=generator, latent_dim=4, g_features=4, norm=norm, num_classes=2, image_shape=(1, 8, 8)))
    yield "Classifier", lambda m: m(images), built(Classifier(num_classes=2, norm=norm, image_shape=(1, 8, 8)))
    yield "EmbeddingNet", lambda m: m(images), EmbeddingNet((1, 8, 8), embedding_dim=3, width=2, norm=norm)
    yield "Siamese", lambda m: m.embedder(images), built(Siamese(embedding_dim=3, width=2, norm=norm,
                                                                 image_shape=(1, 8, 8)))


@pytest.mark.parametrize("norm", NORMS)
def test_every_technique_builds_and_runs_with_every_norm(norm, style):
    torch.manual_seed(0)
    for name, forward, model in forward_passes(norm, style):
        modules = list(model.modules())
        has = {"batch": nn.modules.batchnorm._BatchNorm, "instance": nn.InstanceNorm2d}.get(norm, nn.GroupNorm)
        if norm == "none":
            assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.InstanceNorm2d))
                           for m in modules), name
        else:
            assert any(isinstance(m, has) for m in modules), name
        if norm == "layer":
            assert all(m.num_groups == 1 for m in modules if isinstance(m, nn.GroupNorm)), name
        out = forward(model)
        assert torch.isfinite(out).all(), name


def test_the_mlp_generator_refuses_instance_norm_and_the_mlp_classifier_any_norm():
    with pytest.raises(ConfigError, match="mlp generator's hidden layers are vectors"):
        SGAN(norm="instance")
    with pytest.raises(ConfigError, match="applies to the cnn network"):
        Classifier(arch="mlp", norm="batch")


# ---- each technique keeps its paper's normalisation by default -----------------------------------------------------
@pytest.mark.parametrize(("cls", "default"), [
    (DCGAN, "batch"), (Pix2Pix, "batch"), (SRResNet, "batch"), (SRGAN, "batch"), (DeepSVDD, "batch"), (DOC, "none"),
    (FastStyleTransfer, "instance"), (SGAN, "batch"), (Classifier, "none"), (EmbeddingNet, "batch"),
    (EmbeddingTechnique, "batch"),
    (ClassifierNet, "none"),
])
def test_defaults_are_the_papers(cls, default):
    assert inspect.signature(cls).parameters["norm"].default == default


def test_default_networks_keep_their_layers_and_checkpoint_keys():
    """The defaults build the very layers of before the option (so existing checkpoints load)."""
    svdd = built(DeepSVDD(channels=[2, 2], feature_dim=3, image_shape=(1, 8, 8)))
    bn = [m for m in svdd.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn) == 2 and all(m.eps == 1e-4 and not m.affine for m in bn)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in built(DOC(channels=[2], num_reference_classes=2,
                                                                      image_shape=(1, 8, 8))).modules())
    keys = set(ClassifierNet((1, 8, 8), 3, "cnn").state_dict())
    assert keys == {f"features.{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias")} | {"head.weight",
                                                                                                  "head.bias"}
    g = DCGANGenerator(4, (1, 8, 8), features=4)
    assert [type(m).__name__ for m in g.net] == ["ConvTranspose2d", "BatchNorm2d", "ReLU", "ConvTranspose2d", "Tanh"]


def test_srresnet_still_reads_the_former_batch_norm_option():
    assert SRResNet(batch_norm=False).hparams.norm == "none" and "batch_norm" not in SRResNet(batch_norm=True).hparams
    with pytest.raises(ConfigError, match="contradicts norm='group'"):
        SRResNet(batch_norm=True, norm="group")
    assert [checkpoint_norm(hp) for hp in ({"norm": "group"}, {"batch_norm": False}, {})] == ["group", "none", "batch"]
