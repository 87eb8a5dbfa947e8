"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional GANs" (2015).
One training batch = one discriminator step, plus one generator step every `n_critic` batches. Under DDP each
network's gradients are averaged for its own step only (`Technique.optimizing`): plain `--strategy ddp` works."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_gen.core.checks import ConfigError, check_learning_rates, resolve_image_shape
from lightning_gen.core.cpu import FlushDenormals
from lightning_gen.core.optim import adam
from lightning_gen.core.runs import logs_this_step
from lightning_gen.core.sampling import fixed_noise
from lightning_gen.core.technique import GenerativeTechnique, eval_mode
from lightning_gen.losses import GANLoss, discriminator_loss, generator_loss
from lightning_gen.nn import DCGANDiscriminator, DCGANGenerator
from lightning_gen.nn.norm import Norm


class DCGAN(FlushDenormals, GenerativeTechnique):
    """Deep convolutional GAN for any square image size of the form b * 2^n (b in 4..7): 8, 28, 32, 64, ...

    Args:
        latent_dim: length of the noise vector z ~ N(0, I).
        g_features: channels of the generator's last hidden layer (ngf); earlier layers double it.
        d_features: channels of the discriminator's first layer (ndf); later layers double it.
        loss: adversarial loss on logits: `bce` (non-saturating), `lsgan` (least squares) or `hinge`.
        label_smoothing: one-sided label smoothing: real targets become 1 - label_smoothing (bce, lsgan).
        n_critic: discriminator steps per generator step (one discriminator step per batch).
        norm: normalisation in both networks: `batch` (the paper's), `layer`, `instance`, `group` or `none` (see
            `lightning_gen.nn.norm`). Batch norm normalises each batch's real and fake images by their own
            statistics in training, and by running averages in eval mode (sample grids, `predict`).
        d_norm: the discriminator's normalisation when it differs from the generator's (None: `norm`).
        d_spectral_norm: spectral normalisation of every discriminator convolution (Miyato et al. 2018).
        d_dropout: dropout after every discriminator LeakyReLU (0: none, the paper's).
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
        norm: Norm = "batch",
        d_norm: Norm | None = None,
        d_spectral_norm: bool = False,
        d_dropout: float = 0.0,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        image_shape: tuple[int, int, int] | None = None,
        num_samples: int = 64,
        sample_seed: int = 0,
        flush_denormal: bool = True,
    ) -> None:
        super().__init__()
        check_learning_rates(lr_g=lr_g, lr_d=lr_d)
        if n_critic < 1:
            raise ConfigError(f"n_critic must be 1 or more (discriminator steps per generator step), got {n_critic}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        if loss == "hinge" and label_smoothing:
            raise ConfigError("label_smoothing has no meaning for the hinge loss; set it to 0 or use bce/lsgan.")
        if not 0.0 <= d_dropout < 1.0:
            raise ConfigError(f"d_dropout must be in [0, 1), got {d_dropout}.")
        if min(latent_dim, g_features, d_features, num_samples) < 1:
            raise ConfigError("latent_dim, g_features, d_features and num_samples must be positive.")
        self.save_hyperparameters()
        self.automatic_optimization = False

    def build(self) -> None:
        hp = self.hparams
        hp.image_shape = resolve_image_shape(hp.image_shape, self.datamodule, type(self).__name__)
        self.generator = DCGANGenerator(hp.latent_dim, hp.image_shape, hp.g_features, norm=hp.norm)
        self.discriminator = DCGANDiscriminator(hp.image_shape, hp.d_features, **self.discriminator_options())

    def discriminator_options(self) -> dict[str, Any]:
        """The `DCGANDiscriminator` options this technique's hyperparameters choose (older checkpoints lack some)."""
        hp = self.hparams
        return {"norm": hp.get("d_norm") or hp.norm, "spectral_norm": bool(hp.get("d_spectral_norm", False)),
                "dropout": float(hp.get("d_dropout", 0.0))}

    # ---- the two networks; the conditional GAN passes labels through these -------------------------------------
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:  # (B, latent) -> (B, C, H, W) in [-1, 1]
        return self.generator(z)  # DCGAN ignores labels

    def discriminate(self, images: Tensor, labels: Tensor | None = None) -> Tensor:  # -> (B,) real/fake logits
        return self.discriminator(images)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:  # (B, latent_dim) -> (B, C, H, W)
        return self.generate(z, labels)

    def unpack(self, batch: Any, batch_idx: int) -> tuple[Tensor, Tensor | None]:
        return (batch[0] if isinstance(batch, (list, tuple)) else batch), None  # (images in [-1, 1], no labels)

    def noise_like(self, real: Tensor) -> Tensor:  # fresh training noise: (B, C, H, W) -> (B, latent_dim)
        return torch.randn(real.shape[0], self.hparams.latent_dim, device=real.device)

    # ---- training ------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        hp = self.hparams
        real, labels = self.unpack(batch, batch_idx)  # (B, C, H, W) in [-1, 1], (B,) classes or None
        opt_g, opt_d = self.optimizers()
        train_g = (self.trainer.fit_loop.epoch_loop.total_batch_idx + 1) % hp.n_critic == 0
        with torch.set_grad_enabled(train_g):
            fake = self.generate(self.noise_like(real), labels)  # (B, C, H, W); kept for the generator step

        with self.optimizing(opt_d, self.discriminator) as step:  # D: real vs detached fake, of the same classes
            real_logits, fake_logits = self.discriminate(real, labels), self.discriminate(fake.detach(), labels)
            d_loss = discriminator_loss(real_logits, fake_logits, hp.loss, hp.label_smoothing)
            step(d_loss)
        if logged := logs_this_step(self.trainer):
            self.log("train/d_loss", d_loss.detach(), prog_bar=True)
            self.log_dict({"train/d_real": real_logits.detach().float().mean(),
                           "train/d_fake": fake_logits.detach().float().mean(),
                           "train/lr_g": opt_g.param_groups[0]["lr"], "train/lr_d": opt_d.param_groups[0]["lr"]})
        if train_g:
            with self.optimizing(opt_g, self.generator) as step:  # G: the updated D judges the same fakes
                g_loss = generator_loss(self.discriminate(fake, labels), hp.loss)
                step(g_loss)
            if logged:
                self.log("train/g_loss", g_loss.detach(), prog_bar=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self, net.parameters(), lr=lr, betas=self.hparams.betas)
                for net, lr in ((self.generator, self.hparams.lr_g), (self.discriminator, self.hparams.lr_d))]

    # ---- sampling: image i always from the noise of seed `sample_seed + i` ------------------------------------------
    def generator_inputs(self, indices: Tensor) -> tuple[Tensor, Tensor | None]:  # (B,) -> fixed z, classes
        z = fixed_noise(indices, self.hparams.latent_dim, self.hparams.sample_seed, self.device)  # (B, latent_dim)
        return z, self.default_labels(indices)

    @torch.no_grad()
    def sample(self, indices: Tensor) -> Tensor:  # (B,) -> (B, C, H, W), generator in eval mode
        with eval_mode(self.generator):
            return self.generate(*self.generator_inputs(indices))

    # ---- evaluation: how well D separates held-out real images from fresh fakes (each image counted once) ----------
    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> None:
        real, labels = self.unpack(batch, -1)
        keep = self.first_visit(batch_idx, real.shape[0])  # DDP's repeated images out
        real, labels = real[keep], (labels[keep] if labels is not None else None)
        fake = self.generate(self.noise_like(real), labels)
        real_logits, fake_logits = self.discriminate(real, labels), self.discriminate(fake, labels)
        self.log_means(prefix, {
            "d_loss": discriminator_loss(real_logits, fake_logits, self.hparams.loss),
            "g_loss": generator_loss(fake_logits, self.hparams.loss),
            "d_accuracy": 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()),
        }, weight=len(real))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")
