"""Network blocks shared by two or more techniques."""

from lightning_gen.nn.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init, dcgan_layout

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "dcgan_init", "dcgan_layout"]
