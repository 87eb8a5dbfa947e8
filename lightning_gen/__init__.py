"""lightning_gen: generative deep-learning techniques as Lightning modules. One technique per module."""

from lightning_gen.dcgan import DCGAN
from lightning_gen.vae import CVAE, VAE

__all__ = ["CVAE", "DCGAN", "VAE"]
__version__ = "0.1.0"
