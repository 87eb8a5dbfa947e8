"""Semi-supervised GAN: Salimans et al., "Improved Techniques for Training GANs" (2016); Odena,
"Semi-Supervised Learning with Generative Adversarial Networks" (2016).

The discriminator is an (N+1)-class classifier: N real classes plus "fake". Each batch of `SemiSupervised`
data gives a labeled batch and an unlabeled batch; the discriminator is trained with the supervised loss on the
labeled batch plus the unsupervised real-vs-fake loss on the unlabeled and generated batches, and the generator
with feature matching (or the non-saturating loss). The discriminator is a `ClassifierNet`, the very network of
the supervised `Classifier`, with one more output (or, with `fake_logit: zero`, the same N outputs and a fake
logit fixed at 0, Salimans et al.'s parametrisation). `test` reports the classification accuracy on the test set.

Batch statistics: the discriminator has no batch normalisation (see `lightning_gen.nn.classifier`), so its output
for an image never depends on which batch the image came in (labeled, unlabeled or fake) and evaluation is
per-image. The generator's batch norm only ever sees generated batches, and is in eval mode (running statistics)
for sample grids and `predict`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from lightning_gen.core.checks import (
    ConfigError,
    check_labels,
    check_learning_rates,
    resolve_image_shape,
    resolve_num_classes,
)
from lightning_gen.core.distributed import average_parameters
from lightning_gen.core.evaluation import evaluate_accuracy
from lightning_gen.core.optim import adam
from lightning_gen.core.protocols import SemiSupervisedData
from lightning_gen.core.runs import logs_this_step
from lightning_gen.core.sampling import fixed_noise
from lightning_gen.core.technique import GenerativeTechnique, LinearDecay, epoch_schedule, eval_mode
from lightning_gen.losses import (
    feature_matching_loss,
    sgan_generator_loss,
    sgan_supervised_loss,
    sgan_unsupervised_loss,
)
from lightning_gen.nn import ClassifierArch, ClassifierNet, DCGANGenerator
from lightning_gen.nn.norm import Norm, make_norm


class MLPGenerator(nn.Module):
    """Salimans et al.'s MNIST generator: z -> 500 -> 500 (softplus, batch norm) -> C*H*W (tanh, weight norm). `norm`
    replaces the batch norm (`batch`, `layer`, `group` or `none`: the hidden layers are vectors, with no pixels for
    instance norm)."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], hidden: int = 500,
                 norm: Norm = "batch") -> None:
        super().__init__()
        out = image_shape[0] * image_shape[1] * image_shape[2]
        bias = norm == "none"  # the other normalisations have their own shift
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden, bias=bias), make_norm(norm, hidden, dims=1), nn.Softplus(),
            nn.Linear(hidden, hidden, bias=bias), make_norm(norm, hidden, dims=1), nn.Softplus(),
            nn.utils.parametrizations.weight_norm(nn.Linear(hidden, out)), nn.Tanh(),
        )
        self.image_shape = tuple(image_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)  # (B, latent_dim) -> (B, C, H, W)


class SGAN(GenerativeTechnique):
    """Semi-supervised GAN with an (N+1)-class discriminator. Use with `datamodules.SemiSupervised`.

    Args:
        arch: discriminator network, a `ClassifierNet`: `mlp` (Salimans et al.'s MNIST network) or `cnn`.
        generator: `mlp` (Salimans et al.'s MNIST generator) or `dcgan` (DCGAN's convolutional generator).
        latent_dim: length of the noise vector z ~ U(0, 1) (mlp) or N(0, I) (dcgan).
        g_features: channels of the DCGAN generator's last hidden layer (dcgan only).
        norm: the generator's normalisation: `batch` (Salimans et al.'s and DCGAN's), `layer`, `group`, `none`, or
            `instance` (dcgan only) (see `lightning_gen.nn.norm`). The discriminator has none (see above).
        fake_logit: `learned`: the network has N+1 outputs; `zero`: N outputs and the fake logit fixed at 0
            (the same model with one redundant degree of freedom removed, as Salimans et al. do).
        generator_loss: `feature_matching` (match the batch mean of the discriminator's last hidden features
            on real and generated images) or `nonsaturating` (-log(1 - p(fake | G(z)))).
        unsupervised_weight: weight of the unsupervised (real-vs-fake) loss against the supervised one.
        num_classes: number of real classes N; taken from the datamodule when not given.
        lr_g: Adam learning rate of the generator.
        lr_d: Adam learning rate of the discriminator.
        betas: Adam betas of both optimizers.
        lr_decay_epochs: decay both learning rates linearly to 0 over this many epochs (0: constant).
        lr_constant_epochs: epochs at the full learning rates before the decay starts.
        image_shape: (channels, height, width); taken from the datamodule when not given.
        num_samples: images in the per-epoch sample grid and written by `predict`.
        sample_seed: seed of the fixed noise behind the sample grid and `predict`.
    """

    def __init__(
        self,
        arch: ClassifierArch = "mlp",
        generator: Literal["mlp", "dcgan"] = "mlp",
        latent_dim: int = 100,
        g_features: int = 32,
        norm: Norm = "batch",
        fake_logit: Literal["learned", "zero"] = "zero",
        generator_loss: Literal["feature_matching", "nonsaturating"] = "feature_matching",
        unsupervised_weight: float = 1.0,
        num_classes: int | None = None,
        lr_g: float = 3e-3,
        lr_d: float = 3e-3,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_decay_epochs: int = 0,
        lr_constant_epochs: int = 0,
        image_shape: tuple[int, int, int] | None = None,
        num_samples: int = 100,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        check_learning_rates(lr_g=lr_g, lr_d=lr_d)
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"num_classes must be 2 or more, got {num_classes}.")
        if unsupervised_weight < 0 or lr_decay_epochs < 0 or lr_constant_epochs < 0:
            raise ConfigError("unsupervised_weight, lr_decay_epochs and lr_constant_epochs must be 0 or more.")
        if latent_dim < 1 or g_features < 1 or num_samples < 1:
            raise ConfigError("latent_dim, g_features and num_samples must be positive.")
        if norm == "instance" and generator == "mlp":
            raise ConfigError("instance norm normalises each channel over its pixels, and the mlp generator's hidden "
                              "layers are vectors: use norm batch, layer, group or none, or generator dcgan.")
        self.save_hyperparameters()
        self.automatic_optimization = False

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        hp.image_shape = resolve_image_shape(hp.image_shape, dm, "SGAN")
        hp.num_classes = resolve_num_classes(hp.num_classes, dm, "SGAN", ", wrapped in `datamodules.SemiSupervised`")
        if hp.generator == "mlp":
            self.generator = MLPGenerator(hp.latent_dim, hp.image_shape, norm=hp.norm)
        else:
            self.generator = DCGANGenerator(hp.latent_dim, hp.image_shape, hp.g_features, norm=hp.norm)
        outputs = hp.num_classes + (1 if hp.fake_logit == "learned" else 0)
        self.discriminator = ClassifierNet(hp.image_shape, outputs, hp.arch)
        self.val_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)
        self.test_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)

    def setup(self, stage: str) -> None:
        datamodule = self.datamodule
        if stage == "fit" and datamodule is not None and not isinstance(datamodule, SemiSupervisedData):
            raise ConfigError(
                f"SGAN trains on labeled + unlabeled batches: wrap {type(datamodule).__name__} in "
                "`datamodules.SemiSupervised` (see configs/sgan/mnist_100.yaml)."
            )

    # ---- the (N+1)-class discriminator ------------------------------------------------------------------------
    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (B, N+1) logits, the last being "fake", and the (B, F) features they come from."""
        logits, features = self.discriminator.forward_with_features(x)
        if self.hparams.fake_logit == "zero":
            logits = torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)
        return logits, features

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of the N real classes: (B, C, H, W) -> (B, N)."""
        return self.logits_and_features(x)[0][:, :-1]

    def noise(self, n: int) -> Tensor:
        if self.hparams.generator == "mlp":
            return torch.rand(n, self.hparams.latent_dim, device=self.device)
        return torch.randn(n, self.hparams.latent_dim, device=self.device)

    # ---- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        if not isinstance(batch, dict) or "labeled" not in batch or "unlabeled" not in batch:
            raise ConfigError("SGAN needs SemiSupervised batches ({'labeled': (x, y), 'unlabeled': x}) for training.")
        hp = self.hparams
        images, labels = batch["labeled"]
        unlabeled = batch["unlabeled"]  # images only: the unlabeled pool carries no labels
        if batch_idx == 0:
            check_labels(labels, hp.num_classes, "SGAN")
        opt_g, opt_d = self.optimizers()
        if self.global_step == 0 and batch_idx == 0:  # a fresh run (not a resumed one)
            self.discriminator.initialise(torch.cat([images, unlabeled]))  # the labeled and unlabeled batches
            average_parameters(self.discriminator)
        with torch.no_grad():  # the discriminator's step needs no generator gradients
            fake = self.generator(self.noise(unlabeled.shape[0]))  # (B, latent_dim) -> (B, C, H, W)

        # discriminator: supervised loss on the labeled batch + unsupervised loss on unlabeled and fake batches.
        # One forward pass over the three batches together: without batch statistics this equals three passes.
        with self.optimizing(opt_d, self.discriminator) as step:
            sizes = [images.shape[0], unlabeled.shape[0], fake.shape[0]]
            logits, _ = self.logits_and_features(torch.cat([images, unlabeled, fake]))  # (B_l + B_u + B_f, N+1)
            labeled_logits, real_logits, fake_logits = logits.split(sizes)
            loss_sup = sgan_supervised_loss(labeled_logits, labels)
            loss_unsup = sgan_unsupervised_loss(real_logits, fake_logits)
            d_loss = loss_sup + hp.unsupervised_weight * loss_unsup
            step(d_loss)

        # generator: fresh samples, judged by the updated discriminator beside real images for their features: the
        # second unlabeled batch where the data gives one (as Salimans et al.'s code does), else the same one
        real = batch.get("unlabeled_2", unlabeled)
        with self.optimizing(opt_g, self.generator) as step:
            fake = self.generator(self.noise(unlabeled.shape[0]))
            if hp.generator_loss == "feature_matching":
                _, features = self.logits_and_features(torch.cat([fake, real]))  # (B_f + B_u, F)
                fake_features, real_features = features.split([fake.shape[0], real.shape[0]])
                g_loss = feature_matching_loss(real_features.detach(), fake_features)
            else:
                g_loss = sgan_generator_loss(self.logits_and_features(fake)[0])
            step(g_loss)

        if not logs_this_step(self.trainer):
            return
        with torch.no_grad():
            p_fake_real = F.softmax(real_logits.float(), 1)[:, -1].mean()
            p_fake_fake = F.softmax(fake_logits.float(), 1)[:, -1].mean()
            acc = (labeled_logits[:, :-1].argmax(1) == labels).float().mean()
        self.log_dict(
            {"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach(), "train/labeled_accuracy": acc},
            prog_bar=True,
        )
        self.log_dict({
            "train/d_loss_supervised": loss_sup.detach(), "train/d_loss_unsupervised": loss_unsup.detach(),
            "train/p_fake_on_real": p_fake_real, "train/p_fake_on_fake": p_fake_fake,
            "train/lr_g": opt_g.param_groups[0]["lr"], "train/lr_d": opt_d.param_groups[0]["lr"],
        })

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_g = adam(self, self.generator.parameters(), lr=hp.lr_g, betas=hp.betas)
        trainable = [p for p in self.discriminator.parameters() if p.requires_grad]  # not the fixed mlp scales
        opt_d = adam(self, trainable, lr=hp.lr_d, betas=hp.betas)
        if not hp.lr_decay_epochs:
            return [opt_g, opt_d]
        # epoch e: 1 for the constant epochs, then max(0, 1 - (e - constant) / decay)
        decay = LinearDecay(constant=hp.get("lr_constant_epochs", 0), decay=hp.lr_decay_epochs, offset=0)
        return [opt_g, opt_d], [epoch_schedule(opt_g, decay), epoch_schedule(opt_d, decay)]

    # ---- sampling: image i always from the noise of seed `sample_seed + i` ----------------------------------------
    @torch.no_grad()
    def sample(self, indices: Tensor) -> Tensor:
        """Images from the fixed noise of `indices`, generator in eval mode. (B,) -> (B, C, H, W) in [-1, 1]."""
        z = fixed_noise(indices, self.hparams.latent_dim, self.hparams.sample_seed, self.device)
        if self.hparams.generator == "mlp":
            z = torch.special.ndtr(z)  # N(0, 1) -> U(0, 1), the training distribution
        with eval_mode(self.generator):
            return self.generator(z)

    # ---- evaluation: classification accuracy of the discriminator on the labeled test set --------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        evaluate_accuracy(self, batch, batch_idx, self.val_acc, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        evaluate_accuracy(self, batch, batch_idx, self.test_acc, "test")
