"""Network blocks shared by two or more techniques."""

from lightning_gen.nn.classifier import ClassifierArch, ClassifierNet, GaussianNoise
from lightning_gen.nn.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init, dcgan_layout

__all__ = [
    "ClassifierArch",
    "ClassifierNet",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GaussianNoise",
    "dcgan_init",
    "dcgan_layout",
]
