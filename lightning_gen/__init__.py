"""lightning_gen: generative deep-learning techniques as Lightning modules. One technique per module."""

from lightning_gen.a2c import A2C
from lightning_gen.cgan import CGAN
from lightning_gen.classifier import Classifier
from lightning_gen.dcgan import DCGAN
from lightning_gen.deepdream import DeepDream
from lightning_gen.fast_style import FastStyleTransfer
from lightning_gen.pix2pix import Pix2Pix
from lightning_gen.sgan import SGAN
from lightning_gen.srcnn import SRCNN
from lightning_gen.srgan import SRGAN
from lightning_gen.srresnet import SRResNet
from lightning_gen.style_transfer import StyleTransfer
from lightning_gen.vae import CVAE, VAE

__all__ = [
    "A2C", "CGAN", "CVAE", "Classifier", "DCGAN", "DeepDream", "FastStyleTransfer", "Pix2Pix", "SGAN", "SRCNN",
    "SRGAN", "SRResNet", "StyleTransfer", "VAE",
]
__version__ = "0.1.0"
