"""lightning_gen: generative deep-learning techniques as Lightning modules. One technique per module."""

from lightning_gen.dcgan import DCGAN

__all__ = ["DCGAN"]
__version__ = "0.1.0"
