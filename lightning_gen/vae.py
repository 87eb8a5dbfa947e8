"""VAE (Kingma & Welling, "Auto-Encoding Variational Bayes", 2013) and conditional VAE (Sohn, Lee & Yan, "Learning
Structured Output Representation using Deep Conditional Generative Models", 2015).

q(z|x) is a diagonal Gaussian from a convolutional encoder; z = mu + sigma * eps (reparameterization); p(x|z) is a
factorised Bernoulli (on binarized images, MNIST-style) or Gaussian (natural images) from a transposed-conv decoder.
Training minimises recon + beta * KL per image, with the KL in closed form. `validate`/`test` report the negative
ELBO and, with `*_iw_samples > 0`, the importance-weighted bound of Burda et al. (2015), in nats per image, each
image counted once under DDP. The CVAE conditions both networks on the class label.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from lightning_gen.core.checks import (
    ConfigError,
    check_bernoulli_range,
    check_labels,
    check_learning_rates,
    check_sample_classes,
    resolve_image_shape,
    resolve_num_classes,
)
from lightning_gen.core.lightning_private import attached_trainer
from lightning_gen.core.optim import adam
from lightning_gen.core.runs import logs_this_step, save_and_log_images
from lightning_gen.core.sampling import class_of_index, fixed_noise
from lightning_gen.core.technique import GenerativeTechnique, eval_mode
from lightning_gen.losses import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_log_likelihood,
    importance_weighted_bound,
    log_normal_diag,
    log_standard_normal,
)
from lightning_gen.nn import DCGANDiscriminator, DCGANGenerator

Likelihood = Literal["bernoulli", "gaussian"]


class MLPDecoder(nn.Module):
    """(B, in_dim) -> (B, C, H, W) through two hidden ReLU layers of `hidden` units: the decoder of the VAE/IWAE
    papers' MNIST models, and a fast one to evaluate thousands of importance samples per image on a CPU."""

    def __init__(self, in_dim: int, image_shape: tuple[int, int, int], hidden: int, tanh: bool) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        size = image_shape[0] * image_shape[1] * image_shape[2]
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, size)]
        self.net = nn.Sequential(*layers, *([nn.Tanh()] if tanh else []))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)  # (B, in_dim) -> (B, C, H, W)


class GaussianLayer(nn.Module):
    """(..., in_dim) -> mean and log-variance of a diagonal Gaussian over `out_dim` units, through two tanh layers of
    `hidden` units: a stochastic layer of Burda et al.'s two-layer VAE/IWAE, for q(z2 | z1) and p(z1 | z2)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2 * out_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a sample of q(z|x) that gradients flow through."""
    eps = torch.randn_like(mu) if eps is None else eps
    return mu + torch.exp(0.5 * logvar) * eps


def binarize_fixed(probs: Tensor) -> Tensor:
    """One Bernoulli draw per pixel whose randomness depends only on the image itself (a hash of its 8-bit
    pixels): an evaluation image is binarized the same way in every run, batch size and process count.
    (B, C, H, W) in [0, 1] -> (B, C, H, W) in {0, 1}."""
    out = torch.empty_like(probs)
    pixels = probs.detach().mul(255).round().to(torch.uint8).cpu()
    for i in range(probs.shape[0]):
        seed = int.from_bytes(hashlib.blake2b(pixels[i].numpy().tobytes(), digest_size=8).digest(), "little") >> 1
        noise = torch.rand(probs.shape[1:], generator=torch.Generator().manual_seed(seed))
        out[i] = (noise.to(probs.device) < probs[i]).to(probs.dtype)
    return out


class VAE(GenerativeTechnique):
    """Variational autoencoder with a convolutional encoder and decoder whose depth follows the image size.

    Args:
        latent_dim: size of z (2 to 128 are sensible; 2 also draws the 2-D manifold grid).
        likelihood: p(x|z): `bernoulli` (pixels in [0, 1], binarized with `binarize`; MNIST-like data) or
            `gaussian` (a learned per-channel scale around the decoder's mean; natural images in [-1, 1]).
        binarize: with `bernoulli`, binarize training images afresh at every step (dynamic binarization) and
            evaluation images once, by a fixed draw per image. Off: grey levels are the Bernoulli targets.
        beta: weight of the KL term (1 is the ELBO; beta-VAE otherwise).
        kl_warmup_epochs: raise the KL weight linearly from 0 to `beta` over this many epochs (0: no warm-up).
        enc_features: channels of the encoder's first convolution; later layers double it.
        decoder: `conv` (transposed convolutions, the mirror of the encoder) or `mlp` (two hidden layers of
            `16 * dec_features` units; cheaper per importance sample, as in the VAE/IWAE papers).
        dec_features: channels of the conv decoder's last hidden layer (earlier layers double it); the mlp
            decoder's hidden layers have 16 times as many units.
        lr: Adam learning rate.
        top_latent_dim: units of a second stochastic layer z2 above z (0: one stochastic layer). The model is then
            Burda et al.'s two-layer one: p(z2) p(z | z2) p(x | z) with q(z | x) q(z2 | z), both new conditionals
            diagonal Gaussians from two tanh layers of `top_hidden` units; its KL terms are estimated from the
            samples (no closed form). Not with the CVAE.
        top_hidden: hidden units of the two networks of the second stochastic layer.
        train_iw_samples: importance samples k of the training objective: 1 trains on the ELBO (the VAE); k > 1 on
            Burda et al.'s k-sample bound (the IWAE), which weights each sample by its importance weight and is
            tighter the larger k (one decoder pass per sample: k times the decoding cost). Needs `beta` 1 and no KL
            warm-up (the bound has no separate KL term to weight).
        val_iw_samples: importance samples k for the bound reported in `validate` (0: only the ELBO).
        test_iw_samples: importance samples k for the bound reported in `test` (use 1000 or more for a
            reported NLL; 1 gives a single-sample ELBO).
        iw_chunk: most (image, sample) pairs decoded at once while computing the bound (bounds memory).
        image_shape: (channels, height, width); taken from the datamodule when not given. Stored in the
            checkpoint, so `predict` needs no data.
        num_samples: images in the per-epoch sample grid and written by `predict`.
        sample_seed: seed of the fixed noise behind the sample grids and `predict`.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        likelihood: Likelihood = "bernoulli",
        binarize: bool = True,
        beta: float = 1.0,
        kl_warmup_epochs: float = 0.0,
        enc_features: int = 32,
        decoder: Literal["conv", "mlp"] = "conv",
        dec_features: int = 32,
        lr: float = 1e-3,
        top_latent_dim: int = 0,
        top_hidden: int = 100,
        train_iw_samples: int = 1,
        val_iw_samples: int = 0,
        test_iw_samples: int = 1000,
        iw_chunk: int = 8192,
        image_shape: tuple[int, int, int] | None = None,
        num_samples: int = 64,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be 1 or more, got {latent_dim}.")
        if top_latent_dim < 0 or top_hidden < 1:
            raise ConfigError(f"top_latent_dim must be 0 (one stochastic layer) or more and top_hidden positive, got "
                              f"{top_latent_dim} and {top_hidden}.")
        if beta < 0:
            raise ConfigError(f"beta must be 0 or more (the KL weight), got {beta}.")
        if kl_warmup_epochs < 0:
            raise ConfigError(f"kl_warmup_epochs must be 0 or more, got {kl_warmup_epochs}.")
        if min(enc_features, dec_features, num_samples, iw_chunk) < 1 or min(val_iw_samples, test_iw_samples) < 0:
            raise ConfigError("enc_features, dec_features, num_samples and iw_chunk must be positive; "
                              "val_iw_samples and test_iw_samples 0 or more.")
        if train_iw_samples < 1:
            raise ConfigError(f"train_iw_samples must be 1 (the ELBO) or more (the IWAE bound), got "
                              f"{train_iw_samples}.")
        if train_iw_samples > 1 and (beta != 1.0 or kl_warmup_epochs > 0):
            raise ConfigError("train_iw_samples > 1 trains on the importance-weighted bound, which has no KL term to "
                              "weight: set beta to 1 and kl_warmup_epochs to 0, or train_iw_samples to 1.")
        self.save_hyperparameters()
        self.images_seen = nn.ModuleDict({"val": SumMetric(), "test": SumMetric()})  # evaluation images, once each
        self._picture_batch: tuple[Tensor, Tensor | None] | None = None

    # ---- networks ------------------------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """Classes the networks are conditioned on (0 for the plain VAE)."""
        return 0

    def resolve_data(self) -> None:
        """The image shape (the CVAE: and the classes) from the datamodule, checked against the model's own and
        stored in the hyperparameters. Runs in `build` and again in every `setup`, so a later datamodule that does
        not fit the trained networks is refused."""
        self.hparams.image_shape = resolve_image_shape(self.hparams.image_shape, self.datamodule, type(self).__name__)

    def setup(self, stage: str) -> None:
        self.resolve_data()

    def build(self) -> None:
        self.resolve_data()
        hp = self.hparams
        channels, height, width = hp.image_shape
        cond = self.num_labels
        # encoder: (B, C + cond, H, W) -> (B, 2 * latent_dim): mean and log-variance
        self.encoder = DCGANDiscriminator((channels + cond, height, width), hp.enc_features, out_dim=2 * hp.latent_dim)
        # decoder: (B, latent_dim + cond) -> (B, C, H, W): Bernoulli logits, or the Gaussian's mean in [-1, 1]
        tanh = hp.likelihood == "gaussian"
        if hp.decoder == "mlp":
            self.decoder = MLPDecoder(hp.latent_dim + cond, hp.image_shape, 16 * hp.dec_features, tanh)
        else:
            self.decoder = DCGANGenerator(hp.latent_dim + cond, hp.image_shape, hp.dec_features, tanh=tanh)
        if hp.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(channels, 1, 1))  # per-channel log sigma
        if self.top_latent_dim:  # the second stochastic layer: q(z2 | z) and p(z | z2)
            self.top_encoder = GaussianLayer(hp.latent_dim, self.top_latent_dim, hp.top_hidden)
            self.top_prior = GaussianLayer(self.top_latent_dim, hp.latent_dim, hp.top_hidden)

    @property
    def top_latent_dim(self) -> int:
        """Units of the second stochastic layer (0: one stochastic layer; checkpoints from before it have none)."""
        return self.hparams.get("top_latent_dim", 0)

    def condition(self, labels: Tensor | None) -> Tensor | None:
        """(B,) class labels -> (B, num_labels) one-hot, or None for the plain VAE."""
        return None

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) in [-1, 1] -> mean and log-variance of q(z|x), each (B, latent_dim)."""
        onehot = self.condition(labels)
        if onehot is not None:  # one constant image plane per class
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:]).to(x.dtype)], dim=1)
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W): Bernoulli logits or Gaussian means."""
        onehot = self.condition(labels)
        if onehot is not None:
            z = torch.cat([z, onehot.to(z.dtype)], dim=1)
        return self.decoder(z)

    def log_likelihood(self, decoded: Tensor, target: Tensor) -> Tensor:
        """log p(x|z) per image in nats: (B, C, H, W) -> (B,)."""
        if self.hparams.likelihood == "bernoulli":
            return bernoulli_log_likelihood(decoded, target)
        return gaussian_log_likelihood(decoded, target, self.log_scale.clamp(min=-7.0))

    def to_images(self, decoded: Tensor) -> Tensor:
        """Decoder output -> displayable images in [-1, 1] (Bernoulli: the pixel probabilities)."""
        return decoded.float().sigmoid() * 2 - 1 if self.hparams.likelihood == "bernoulli" else decoded.float()

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W) images in [-1, 1]."""
        return self.to_images(self.decode(z, labels))

    # ---- data ----------------------------------------------------------------------------------------------
    def targets(self, images: Tensor, fixed: bool) -> Tensor:
        """What the likelihood models: for `bernoulli`, pixels in [0, 1], binarized (dynamically when training,
        by a fixed per-image draw when evaluating) when `binarize` is on; for `gaussian`, the images as they are."""
        if self.hparams.likelihood == "gaussian":
            return images
        probs = images.float().add(1).div(2).clamp(0, 1)
        if not self.hparams.binarize:
            return probs
        return binarize_fixed(probs) if fixed else torch.bernoulli(probs)

    def check_pixel_range(self, images: Tensor) -> None:
        """Refuse data a Bernoulli likelihood cannot model (run on the first batch of each loop: one host sync)."""
        if self.hparams.likelihood != "bernoulli":
            return
        check_bernoulli_range(images)

    def split_batch(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """(images, labels) or images -> images (B, C, H, W), labels (B,) or None."""
        if isinstance(batch, (list, tuple)):
            return batch[0], (batch[1] if len(batch) > 1 else None)
        return batch, None

    # ---- training ------------------------------------------------------------------------------------------
    def kl_weight(self, batch_idx: int) -> float:
        """beta, ramped up linearly over the first `kl_warmup_epochs` epochs."""
        hp = self.hparams
        if hp.kl_warmup_epochs <= 0:
            return hp.beta
        batches = self.trainer.num_training_batches if attached_trainer(self) is not None else 1
        batches = int(batches) if 0 < batches < float("inf") else 1
        progress = (self.current_epoch + batch_idx / batches) / hp.kl_warmup_epochs
        return hp.beta * min(1.0, progress)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = self.split_batch(batch)
        if batch_idx == 0:
            self.check_pixel_range(images)
        target = self.targets(images, fixed=False)  # (B, C, H, W)
        mu, logvar = self.encode(self.as_input(target), labels)  # (B, latent_dim) each
        kl = gaussian_kl(mu, logvar)  # (B,) nats
        beta = self.kl_weight(batch_idx)
        k = self.hparams.get("train_iw_samples", 1)
        if k > 1:  # IWAE: minus the k-sample bound (the logged recon and KL are the first sample's)
            log_w, log_px = self.log_importance_weights(target, labels, mu, logvar, k)  # (k, B) each
            recon, kl = -log_px[0], (log_px[0] - log_w[0] if self.top_latent_dim else kl)
            loss = -importance_weighted_bound(log_w).mean()
        else:  # the ELBO with one reparameterized sample
            recon, kl = self.single_sample_terms(target, labels, mu, logvar, kl)  # (B,) nats each
            loss = (recon + beta * kl).mean()
        if logs_this_step(self.trainer):
            self.log_dict({"train/loss": loss.detach(), "train/nelbo": (recon + kl).mean().detach(),
                           "train/recon": recon.mean().detach(), "train/kl": kl.mean().detach()}, prog_bar=True)
            self.log("train/beta", beta)
        return loss

    def single_sample_terms(self, target: Tensor, labels: Tensor | None, mu: Tensor, logvar: Tensor,
                            kl: Tensor) -> tuple[Tensor, Tensor]:
        """-log p(x | z) and the KL term of the ELBO from one reparameterized z ~ q(z | x): with one stochastic layer
        the closed-form `kl` (given); with two, log q(z, z2 | x) - log p(z, z2) of the same draw. (B,) each."""
        if not self.top_latent_dim:
            return -self.log_likelihood(self.decode(reparameterize(mu, logvar), labels), target), kl
        log_w, log_px = self.log_importance_weights(target, labels, mu, logvar, 1)  # (1, B) each
        return -log_px[0], log_px[0] - log_w[0]

    def latent_log_ratio(self, z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """log p(z) - log q(z | x) of draws z of q(z | x) = N(mu, exp(logvar)); with a second stochastic layer,
        log p(z2) p(z | z2) - log q(z | x) q(z2 | z) with one draw z2 ~ q(z2 | z) per z. (n, B, D) -> (n, B)."""
        log_q = log_normal_diag(z, mu, logvar)
        if not self.top_latent_dim:
            return log_standard_normal(z) - log_q
        mu2, logvar2 = self.top_encoder(z)  # q(z2 | z): (n, B, D2) each
        z2 = reparameterize(mu2, logvar2)
        prior_mu, prior_logvar = self.top_prior(z2)  # p(z | z2): (n, B, D) each
        return (log_standard_normal(z2) + log_normal_diag(z, prior_mu, prior_logvar)
                - log_q - log_normal_diag(z2, mu2, logvar2))

    def as_input(self, target: Tensor) -> Tensor:
        """The encoder's input for a likelihood target: back to [-1, 1] for Bernoulli targets."""
        return target if self.hparams.likelihood == "gaussian" else target * 2 - 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self, self.parameters(), lr=self.hparams.lr)

    # ---- evaluation: negative ELBO and the importance-weighted bound, nats per image --------------------------
    def log_importance_weights(self, target: Tensor, labels: Tensor | None, mu: Tensor, logvar: Tensor,
                               n: int) -> tuple[Tensor, Tensor]:
        """n reparameterized draws z ~ q(z | x) per image, decoded in one pass: their log importance weights
        log p(x | z) + log p(z) - log q(z | x) (two stochastic layers: `latent_log_ratio`), and the log p(x | z) term
        alone. (B, C, H, W), (B, D) -> (n, B) each."""
        b = target.shape[0]
        z = reparameterize(mu.expand(n, -1, -1), logvar.expand(n, -1, -1))  # (n, B, D)
        flat_labels = labels.repeat(n) if labels is not None else None
        decoded = self.decode(z.reshape(n * b, -1), flat_labels)  # (n * B, C, H, W)
        log_px = self.log_likelihood(decoded, target.repeat(n, 1, 1, 1)).view(n, b)
        return log_px + self.latent_log_ratio(z, mu, logvar), log_px

    @torch.no_grad()
    def iw_log_likelihood(self, target: Tensor, labels: Tensor | None, k: int) -> Tensor:
        """Burda et al.'s bound on log p(x) with k importance samples, decoded in chunks of at most `iw_chunk`
        (image, sample) pairs. (B, C, H, W) -> (B,)."""
        mu, logvar = self.encode(self.as_input(target), labels)  # (B, D)
        per_pass = max(1, self.hparams.iw_chunk // target.shape[0])
        log_w = [self.log_importance_weights(target, labels, mu, logvar, min(per_pass, k - start))[0]
                 for start in range(0, k, per_pass)]  # (n, B) each
        return importance_weighted_bound(torch.cat(log_w))

    def _evaluate(self, batch: Any, batch_idx: int, prefix: str, k: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx:
            raise ConfigError(f"{type(self).__name__} evaluates one {prefix} set; the datamodule gives several "
                              "loaders.")
        images, labels = self.split_batch(batch)
        if batch_idx == 0:
            self.check_pixel_range(images)
        keep = self.first_visit(batch_idx, images.shape[0], dataloader_idx)  # DDP's repeated images out
        seen = int(keep.sum())
        if not seen:  # a batch of repeats only: evaluate one image anyway, with weight 0 (every process logs alike)
            keep[0] = True
        images, labels = images[keep], (labels[keep] if labels is not None else None)
        target = self.targets(images, fixed=True)
        mu, logvar = self.encode(self.as_input(target), labels)
        recon, kl = self.single_sample_terms(target, labels, mu, logvar, gaussian_kl(mu, logvar))  # (B,) each
        values = {"recon": recon.mean(), "kl": kl.mean()}
        if k > 0:
            values[f"nll_iw{k}"] = -self.iw_log_likelihood(target, labels, k).mean()
        self.log_means(prefix, {"nelbo": (recon + kl).mean()}, weight=seen, prog_bar=True)
        self.log_means(prefix, values, weight=seen)
        self.images_seen[prefix].update(seen)
        self.log(f"{prefix}/images", self.images_seen[prefix], metric_attribute=f"images_seen.{prefix}")
        if prefix == "val" and batch_idx == 0:
            self._picture_batch = (images[:32].detach(), None if labels is None else labels[:32].detach())

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, batch_idx, "val", self.hparams.val_iw_samples, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, batch_idx, "test", self.hparams.test_iw_samples, dataloader_idx)

    # ---- pictures: reconstructions, samples, the 2-D manifold, interpolations --------------------------------
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self._picture_batch is None:
            return
        images, labels = self._picture_batch
        for key, grid, nrow in self.pictures(images, labels):
            save_and_log_images(self.trainer, key, grid, nrow=nrow)

    @torch.no_grad()
    def pictures(self, images: Tensor, labels: Tensor | None) -> list[tuple[str, Tensor, int]]:
        """(key, images, images per row) for each picture the run saves besides the per-epoch sample grid;
        everything decoded from means, networks in eval mode."""
        with eval_mode(self):
            out = self._pictures(images, labels)
        return [(key, grid, nrow or None) for key, grid, nrow in out]

    def _pictures(self, images: Tensor, labels: Tensor | None) -> list[tuple[str, Tensor, int]]:
        out = []
        n = min(8, images.shape[0])
        rows = images.shape[0] // n
        target = self.targets(images[: rows * n], fixed=True)
        lab = None if labels is None else labels[: rows * n]
        mu, _ = self.encode(self.as_input(target), lab)
        recon = self(mu, lab)
        pairs = torch.stack([self.as_input(target).float().view(rows, n, *images.shape[1:]),
                             recon.view(rows, n, *images.shape[1:])], dim=1)  # (rows, 2, n, C, H, W)
        out.append(("reconstructions", pairs.flatten(0, 2), n))  # each input row is followed by its reconstruction
        if self.hparams.latent_dim == 2 and not self.top_latent_dim:
            out.append(("manifold", self.manifold(), 15))
        steps = 10  # interpolate between consecutive pairs of encoded images
        pairs_n = min(4, mu.shape[0] // 2)
        if pairs_n:
            t = torch.linspace(0, 1, steps, device=mu.device)[None, :, None]  # (1, steps, 1)
            a, b = mu[0 : 2 * pairs_n : 2, None], mu[1 : 2 * pairs_n : 2, None]  # (P, 1, D)
            path = (1 - t) * a + t * b  # (P, steps, D)
            path_labels = None
            if lab is not None:  # the CVAE keeps the first image's class along the path
                path_labels = lab[0 : 2 * pairs_n : 2].repeat_interleave(steps)
            out.append(("interpolation", self(path.flatten(0, 1), path_labels), steps))
        out.extend(self.extra_pictures())
        return out

    def extra_pictures(self) -> list[tuple[str, Tensor, int]]:
        """More pictures (the CVAE's one row per class)."""
        return []

    def manifold(self, n: int = 15) -> Tensor:
        """The classic 2-D latent grid: z on an n x n grid of N(0, 1) quantiles (5% to 95%). -> (n*n, C, H, W)."""
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n)).to(self.device)
        zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
        z = torch.stack([zx.flatten(), zy.flatten()], dim=1)
        labels = self.default_labels(torch.zeros(n * n, dtype=torch.long))  # the CVAE's: one class throughout
        return self(z, labels)

    # ---- sampling (and data-free `predict`, by GenerativeTechnique): image i always from the same z -------------
    @torch.no_grad()
    def sample(self, indices: Tensor) -> Tensor:
        """Decoded means of the fixed noise of `indices`, decoder in eval mode (two stochastic layers: the noise is
        z2, decoded through the mean of p(z | z2)). (B,) -> (B, C, H, W)."""
        if self.top_latent_dim:
            z, _ = self.top_prior(fixed_noise(indices, self.top_latent_dim, self.hparams.sample_seed, self.device))
        else:
            z = fixed_noise(indices, self.hparams.latent_dim, self.hparams.sample_seed, self.device)
        with eval_mode(self.decoder):
            return self(z, self.default_labels(indices))


class CVAE(VAE):
    """Conditional VAE: the encoder sees the image and its class (one image plane per class), the decoder z and
    the one-hot class, so sampling can ask for a class. Image i of the sample grid and of `predict` is of class
    `sample_classes[i % len]`; the `class_samples` picture has one row per class.

    Args:
        num_classes: number of classes; taken from the datamodule's `num_classes` when not given.
        sample_classes: the classes `predict` generates, in turn (image i gets `sample_classes[i % len]`);
            default: every class in turn.
        **kwargs: every VAE option (see `--model.help VAE`).
    """

    def __init__(self, num_classes: int | None = None, sample_classes: list[int] | None = None, **kwargs: Any) -> None:
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"num_classes must be 2 or more, got {num_classes}.")
        if sample_classes is not None and not sample_classes:
            raise ConfigError("sample_classes must name at least one class (or be left out for all classes).")
        if kwargs.get("top_latent_dim"):
            raise ConfigError("the CVAE has one stochastic layer: leave top_latent_dim at 0 (the second stochastic "
                              "layer is a VAE option).")
        super().__init__(**kwargs)
        check_sample_classes(sample_classes, num_classes)

    @property
    def num_labels(self) -> int:
        return self.hparams.num_classes or 0

    def resolve_data(self) -> None:
        super().resolve_data()
        self.hparams.num_classes = resolve_num_classes(self.hparams.num_classes, self.datamodule, "CVAE",
                                                       ", or the unconditional `--model VAE`")
        check_sample_classes(self.hparams.sample_classes, self.hparams.num_classes)

    def condition(self, labels: Tensor | None) -> Tensor:
        if labels is None:
            raise ConfigError("CVAE batches need labels: the datamodule must yield (images, labels).")
        labels = labels.long()
        n = self.hparams.num_classes
        if labels.numel():
            check_labels(labels, n, "CVAE")
        return nn.functional.one_hot(labels, n).float()

    def default_labels(self, indices: Tensor) -> Tensor:
        return class_of_index(indices.to(self.device), self.hparams.num_classes, self.hparams.sample_classes)

    def extra_pictures(self) -> list[tuple[str, Tensor, int]]:
        """One row per class, the same z down each column."""
        n, cols = self.hparams.num_classes, 10
        z = fixed_noise(torch.arange(cols), self.hparams.latent_dim, self.hparams.sample_seed, self.device)
        labels = torch.arange(n, device=self.device).repeat_interleave(cols)
        return [("class_samples", self(z.repeat(n, 1), labels), cols)]
