import pytest
import torch
from torch import nn

from lightning_gen.nn import DCGANDiscriminator, DCGANGenerator, dcgan_layout


@pytest.mark.parametrize(
    "side, layout", [(8, (4, 1)), (16, (4, 2)), (28, (7, 2)), (32, (4, 3)), (48, (6, 3)), (64, (4, 4)), (128, (4, 5))]
)
def test_layout_from_image_size(side, layout):
    assert dcgan_layout(side, side) == layout


@pytest.mark.parametrize("bad", [(30, 30), (6, 6), (7, 7), (27, 27), (32, 28)])
def test_unsupported_sizes_name_the_fix(bad):
    with pytest.raises(ValueError, match="image_size"):
        dcgan_layout(*bad)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_generator_and_discriminator_shapes(shape):
    g = DCGANGenerator(16, shape, features=8)
    d = DCGANDiscriminator(shape, features=8)
    z = torch.randn(5, 16)
    images = g(z)
    assert images.shape == (5, *shape)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    assert d(images).shape == (5,)
    assert DCGANDiscriminator(shape, features=8, out_dim=11)(images).shape == (5, 11)


@torch.no_grad()
def test_no_hidden_fully_connected_layers_and_paper_init():
    torch.manual_seed(0)
    g = DCGANGenerator(100, (3, 64, 64), features=64)
    d = DCGANDiscriminator((3, 64, 64), features=64)
    for net in (g, d):
        assert not any(isinstance(m, nn.Linear) for m in net.modules())
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert weights.mean().abs() < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)
    # first discriminator layer has no BatchNorm, the rest do; LeakyReLU(0.2) throughout
    assert isinstance(d.features[1], nn.LeakyReLU) and d.features[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
