"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional GANs" (2015).

One training batch = one discriminator step, plus one generator step every `n_critic` batches. Manual
optimization (two optimizers); under DDP each network's gradients are averaged for its own step only
(see `lightning_gen.distributed`), so plain `--trainer.strategy ddp` works.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_gen.checks import ConfigError, resolve_image_shape
from lightning_gen.cpu import FlushDenormals
from lightning_gen.distributed import disable_ddp_gradient_sync, step_network
from lightning_gen.losses import GANLoss, discriminator_loss, generator_loss
from lightning_gen.nn import DCGANDiscriminator, DCGANGenerator
from lightning_gen.optim import adam
from lightning_gen.runs import logs_this_step, save_and_log_images
from lightning_gen.sampling import fixed_noise, index_loader


class DCGAN(FlushDenormals, L.LightningModule):
    """Deep convolutional GAN for any square image size of the form b * 2^n (b in 4..7): 8, 28, 32, 64, ...

    Args:
        latent_dim: length of the noise vector z ~ N(0, I).
        g_features: channels of the generator's last hidden layer (ngf); earlier layers double it.
        d_features: channels of the discriminator's first layer (ndf); later layers double it.
        loss: adversarial loss on logits: `bce` (non-saturating), `lsgan` (least squares) or `hinge`.
        label_smoothing: one-sided label smoothing: real targets become 1 - label_smoothing (bce, lsgan).
        n_critic: discriminator steps per generator step (one discriminator step per batch).
        lr_g: Adam learning rate of the generator.
        lr_d: Adam learning rate of the discriminator.
        betas: Adam betas of both optimizers.
        image_shape: (channels, height, width); taken from the datamodule when not given, and checked
            against it when given. Stored in the checkpoint, so `predict` needs no data.
        num_samples: images in the per-epoch sample grid and written by `predict`.
        sample_seed: seed of the fixed noise behind the sample grid and `predict` (image i of `predict`
            always comes from the same z).
        flush_denormal: on CPU, flush denormal floats to zero while fitting (a saturated discriminator
            produces them and they slow CPU kernels down several-fold; results are unchanged).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        g_features: int = 64,
        d_features: int = 64,
        loss: GANLoss = "bce",
        label_smoothing: float = 0.0,
        n_critic: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        image_shape: tuple[int, int, int] | None = None,
        num_samples: int = 64,
        sample_seed: int = 0,
        flush_denormal: bool = True,
    ) -> None:
        super().__init__()
        if n_critic < 1:
            raise ConfigError(f"n_critic must be 1 or more (discriminator steps per generator step), got {n_critic}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        if loss == "hinge" and label_smoothing:
            raise ConfigError("label_smoothing has no meaning for the hinge loss; set it to 0 or use bce/lsgan.")
        if latent_dim < 1 or g_features < 1 or d_features < 1 or num_samples < 1:
            raise ConfigError("latent_dim, g_features, d_features and num_samples must be positive.")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator: DCGANGenerator | None = None
        self.discriminator: DCGANDiscriminator | None = None
        if image_shape is not None:
            self._build(tuple(image_shape))

    def _build(self, image_shape: tuple[int, int, int]) -> None:
        hp = self.hparams
        self.generator = DCGANGenerator(hp.latent_dim, image_shape, hp.g_features)
        self.discriminator = DCGANDiscriminator(image_shape, hp.d_features)
        self.hparams.image_shape = tuple(image_shape)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        shape = resolve_image_shape(self.hparams.image_shape, datamodule, "DCGAN")
        if self.generator is None:
            self._build(shape)

    # ---- sampling ------------------------------------------------------------------------------------------
    def noise_like(self, real: Tensor) -> Tensor:
        """Fresh training noise for a batch of real images: (B, C, H, W) -> (B, latent_dim)."""
        return torch.randn(real.shape[0], self.hparams.latent_dim, device=real.device)

    def fixed_noise(self, indices: Tensor) -> Tensor:
        """Reproducible noise: row i comes from seed `sample_seed + indices[i]`. (B,) -> (B, latent_dim)."""
        return fixed_noise(indices, self.hparams.latent_dim, self.hparams.sample_seed, self.device)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W) images in [-1, 1]."""
        return self.generate(z, labels)

    # ---- the two networks; the conditional GAN passes labels through these ----------------------------------------
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, latent_dim) [+ (B,) classes] -> (B, C, H, W). DCGAN ignores labels."""
        return self.generator(z)

    def discriminate(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C, H, W) [+ (B,) classes] -> (B,) real/fake logits. DCGAN ignores labels."""
        return self.discriminator(images)

    def unpack(self, batch: Any, batch_idx: int) -> tuple[Tensor, Tensor | None]:
        """A batch -> (images in [-1, 1], labels or None). DCGAN does not use labels."""
        return (batch[0] if isinstance(batch, (list, tuple)) else batch), None

    def default_labels(self, indices: Tensor) -> Tensor | None:
        """Class of generated image i in sample grids, metrics and `predict` (None: unconditional)."""
        return None

    # ---- training ------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        hp = self.hparams
        real, labels = self.unpack(batch, batch_idx)  # (B, C, H, W) in [-1, 1], (B,) classes or None
        opt_g, opt_d = self.optimizers()
        disable_ddp_gradient_sync(self.trainer)  # gradients are averaged per network below
        train_g = (self.trainer.fit_loop.epoch_loop.total_batch_idx + 1) % hp.n_critic == 0

        z = self.noise_like(real)
        with torch.set_grad_enabled(train_g):
            fake = self.generate(z, labels)  # (B, latent_dim) -> (B, C, H, W); kept for the generator step

        # discriminator step: real vs detached fake
        self.toggle_optimizer(opt_d)
        real_logits = self.discriminate(real, labels)
        fake_logits = self.discriminate(fake.detach(), labels)  # fakes are made for the real batch's classes
        d_loss = discriminator_loss(real_logits, fake_logits, hp.loss, hp.label_smoothing)
        step_network(self, opt_d, d_loss, self.discriminator)
        self.untoggle_optimizer(opt_d)
        logged = logs_this_step(self.trainer)
        if logged:
            self.log_dict({
                "train/d_loss": d_loss.detach(),
                "train/d_real": real_logits.detach().float().mean(),
                "train/d_fake": fake_logits.detach().float().mean(),
            }, prog_bar=True)

        # generator step: the updated discriminator judges the same fakes
        if train_g:
            self.toggle_optimizer(opt_g)
            g_loss = generator_loss(self.discriminate(fake, labels), hp.loss)
            step_network(self, opt_g, g_loss, self.generator)
            self.untoggle_optimizer(opt_g)
            if logged:
                self.log("train/g_loss", g_loss.detach(), prog_bar=True)
        if logged:
            self.log_dict({"train/lr_g": opt_g.param_groups[0]["lr"], "train/lr_d": opt_d.param_groups[0]["lr"]})

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        opt_g = adam(self, self.generator.parameters(), lr=hp.lr_g, betas=hp.betas)
        opt_d = adam(self, self.discriminator.parameters(), lr=hp.lr_d, betas=hp.betas)
        return [opt_g, opt_d]

    def on_train_epoch_end(self) -> None:
        if self.trainer.is_global_zero:
            save_and_log_images(self.trainer, "samples", *self.sample_grid())

    def sample_grid(self) -> tuple[Tensor, int | None]:
        """The `num_samples` images of the per-epoch grid and the images per row (None: square)."""
        return self.sample(torch.arange(self.hparams.num_samples, device=self.device)), None

    @torch.no_grad()
    def sample(self, indices: Tensor) -> Tensor:
        """Images from the fixed noise of `indices`, with the generator in eval mode. (B,) -> (B, C, H, W)."""
        was_training = self.generator.training
        self.generator.eval()
        images = self.generate(self.fixed_noise(indices), self.default_labels(indices))
        self.generator.train(was_training)
        return images

    # ---- evaluation: how well the discriminator separates held-out real images from fresh fakes -------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        real, labels = self.unpack(batch, -1)
        fake = self.generate(self.noise_like(real), labels)
        real_logits, fake_logits = self.discriminate(real, labels), self.discriminate(fake, labels)
        accuracy = 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
        self.log_dict(
            {
                f"{prefix}/d_loss": discriminator_loss(real_logits, fake_logits, self.hparams.loss),
                f"{prefix}/g_loss": generator_loss(fake_logits, self.hparams.loss),
                f"{prefix}/d_accuracy": accuracy,
            },
            sync_dist=True,
        )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ---- predict: `num_samples` images from the fixed noise, no data needed --------------------------------
    def predict_dataloader(self) -> DataLoader:
        return index_loader(self.hparams.num_samples)

    def predict_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        return {"images": self.generate(self.fixed_noise(batch), self.default_labels(batch)), "index": batch}
