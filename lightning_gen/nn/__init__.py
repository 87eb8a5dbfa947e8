"""Network blocks shared by two or more techniques."""

from lightning_gen.nn.classifier import (
    ClassifierArch,
    ClassifierNet,
    GaussianNoise,
    classifier_checkpoint,
    classifier_net_from_checkpoint,
)
from lightning_gen.nn.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init, dcgan_layout
from lightning_gen.nn.features import FeatureNet, PerceptualLoss
from lightning_gen.nn.norm import Norm, batch_dependent, make_norm
from lightning_gen.nn.pix2pix import PatchGAN, UNet, unet_depth

__all__ = [
    "ClassifierArch",
    "ClassifierNet",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FeatureNet",
    "GaussianNoise",
    "Norm",
    "classifier_checkpoint",
    "classifier_net_from_checkpoint",
    "PatchGAN",
    "PerceptualLoss",
    "batch_dependent",
    "UNet",
    "dcgan_init",
    "dcgan_layout",
    "make_norm",
    "unet_depth",
]
