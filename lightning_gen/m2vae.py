"""Semi-supervised VAE: Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with Deep Generative Models"
(NeurIPS 2014): M2, and M1+M2 (M2 trained on the latent means of a trained VAE, M1).

M2 is a generative model p(x | y, z) = p(x | y, z) p(y) p(z) with the class y a partly observed latent variable,
an inference network q(z | x, y) and a classifier q(y | x). Per image (bounds in nats, log p(y) = -log K):

    labeled (x, y):   ELBO(x, y) = E_q(z|x,y)[log p(x | y, z)] + log p(y) - KL(q(z | x, y) || p(z))
    unlabeled x:      U(x) = sum_y q(y | x) ELBO(x, y) + H(q(y | x))       (y summed out exactly)

and the paper's objective adds the classifier's log-likelihood on the labeled images with weight alpha:

    J = sum_labeled [-ELBO(x, y)] + sum_unlabeled [-U(x)] + alpha * E_labeled[-log q(y | x)],  alpha = 0.1 * N

where N is the total number of training images (labeled and unlabeled). The classification term is an
expectation (a mean over the N_l labeled images) while the bounds are sums, so per labeled image the
cross-entropy weighs `alpha / N_l = 0.1 * N / N_l` times one image's negative bound (59 for 100 labels among MNIST's
59,000 training images once 1,000 are held out for validation). A training batch of B_l labeled and B_u unlabeled
images estimates J per image as

    loss = ( sum_batch_l [-ELBO(x, y) + (alpha / N_l) * CE(x, y)] + sum_batch_u [-U(x)] ) / (B_l + B_u),

the labeled images being over-sampled (a whole labeled batch per step, as the paper mixes labeled examples into
every batch) but each keeping the paper's ratio of classification to bound.

M1+M2 (`m1_ckpt`): a trained VAE (`lightning_gen.VAE`, the paper's M1) maps each image to the mean of its q(z1 | x),
and M2 models those features with a Gaussian p(z1 | y, z2) (mean and diagonal variance from the decoder), as in the
paper. The VAE is frozen (eval mode) and stored in this model's checkpoint, so sampling and `predict` need neither
the data nor the M1 file. Every network is an MLP without batch statistics, so evaluation is per image.
"""

from __future__ import annotations

import importlib
import math
import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from lightning_gen.core.checkpoints import read_lightning_checkpoint
from lightning_gen.core.checks import (
    ConfigError,
    check_bernoulli_range,
    check_labels,
    check_learning_rates,
    resolve_image_shape,
    resolve_num_classes,
)
from lightning_gen.core.evaluation import evaluate_accuracy
from lightning_gen.core.optim import adam
from lightning_gen.core.protocols import LatentEncoder, SemiSupervisedData
from lightning_gen.core.runs import logs_this_step, save_and_log_images
from lightning_gen.core.sampling import class_of_index, fixed_noise
from lightning_gen.core.technique import GenerativeTechnique, eval_mode
from lightning_gen.losses import bernoulli_log_likelihood, gaussian_kl, log_normal_diag

Likelihood = Literal["bernoulli", "gaussian"]
M1_DEFAULT_CLASS = "lightning_gen.VAE"


# ---- the bounds, as pure functions (per image, nats) ------------------------------------------------------------
def bernoulli_features_log_likelihood(logits: Tensor, target: Tensor) -> Tensor:
    """log p(x | y, z) of a factorised Bernoulli over flat features: (B, D) logits, (B, D) targets in [0, 1] -> (B,)."""
    return bernoulli_log_likelihood(logits[:, :, None, None], target[:, :, None, None])


def gaussian_features_log_likelihood(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    """log N(target; mean, diag(exp(logvar))) summed over the features: (B, D) each -> (B,)."""
    return log_normal_diag(target, mean, logvar)


def labeled_bound(log_px: Tensor, kl: Tensor, num_classes: int) -> Tensor:
    """ELBO(x, y) = log p(x | y, z) + log p(y) - KL(q(z | x, y) || p(z)) with a uniform p(y): (B,) each -> (B,)."""
    return log_px.float() - kl.float() - math.log(num_classes)


def unlabeled_bound(class_bounds: Tensor, logits: Tensor) -> Tensor:
    """U(x) = sum_y q(y | x) ELBO(x, y) + H(q(y | x)): (B, K) bounds for every class, (B, K) logits of q(y | x)
    -> (B,)."""
    log_q = F.log_softmax(logits.float(), dim=1)
    q = log_q.exp()
    return (q * class_bounds.float()).sum(1) - (q * log_q).sum(1)


def m2_loss(
    labeled_bounds: Tensor, labeled_logits: Tensor, labels: Tensor, unlabeled_bounds: Tensor, class_weight: float
) -> tuple[Tensor, Tensor]:
    """The M2 objective per image of a batch: (sum_l [-ELBO + class_weight * CE] + sum_u [-U]) / (B_l + B_u), with
    `class_weight = alpha / N_l` (see the module docstring). Returns the loss and the labeled images' mean
    cross-entropy -log q(y | x)."""
    ce = F.cross_entropy(labeled_logits.float(), labels, reduction="none")  # (B_l,)
    total = (-labeled_bounds + class_weight * ce).sum() - unlabeled_bounds.sum()
    return total / (labeled_bounds.shape[0] + unlabeled_bounds.shape[0]), ce.mean()


# ---- networks -----------------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    """in_dim -> hidden layers (softplus, as in the paper) -> out_dim (linear)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.Softplus()]
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


def load_latent_encoder(path: str, class_path: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model whose encoder gives the M1 features (a `LatentEncoder`, `lightning_gen.VAE` by default): its
    class from the checkpoint's `_class_path` (written by the CLI) or `class_path`, rebuilt from the checkpoint's
    hyperparameters with its weights. Returns the model (frozen, eval mode) and `{"class_path", "init_args"}`, what
    `m1_from_config` rebuilds it from."""
    if not os.path.isfile(path):
        raise ConfigError(f"--model.m1_ckpt {path}: no such file. Train M1 first (configs/m2vae/m1_mnist.yaml for "
                          "MNIST) and give its `<run folder>/checkpoints/last.ckpt`.")
    ckpt = read_lightning_checkpoint(path, option="--model.m1_ckpt")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    class_path = hparams.get("_class_path") or class_path or M1_DEFAULT_CLASS
    init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}
    if "image_shape" in init_args and init_args["image_shape"] is not None:
        init_args["image_shape"] = [int(v) for v in init_args["image_shape"]]
    config = {"class_path": class_path, "init_args": init_args}
    model = m1_from_config(config, f"--model.m1_ckpt {path}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as error:
        raise ConfigError(f"--model.m1_ckpt {path}: its weights do not fit a {class_path} built from its own "
                          f"hyperparameters ({str(error).splitlines()[0]}). Give a checkpoint of a VAE run.") from None
    return model, config


def m1_from_config(config: dict[str, Any], where: str = "m1_config") -> nn.Module:
    """The M1 model (untrained weights) from `{"class_path", "init_args"}`; raises `ConfigError` unless it is a
    `LatentEncoder` with a `latent_dim` and an `image_shape`."""
    module, _, name = str(config["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        model = cls(**config["init_args"])
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: cannot build the M1 model {config['class_path']} ({error}). Give the checkpoint "
                          "of a `lightning_gen.VAE` run (configs/m2vae/m1_mnist.yaml trains one).") from None
    if not isinstance(model, LatentEncoder) or model.hparams.get("image_shape") is None:
        raise ConfigError(f"{where}: {config['class_path']} is not a VAE-like model (encode, latent_dim, image_shape "
                          "known): give the checkpoint of a `lightning_gen.VAE` run.")
    model.configure_model()
    model.eval()
    model.requires_grad_(False)
    return model


class M2VAE(GenerativeTechnique):
    """Semi-supervised VAE (Kingma et al. 2014): M2 on images, or M1+M2 on a trained VAE's latent means
    (`m1_ckpt`). Use with `datamodules.SemiSupervised`. `validate`/`test` report the accuracy of q(y | x).

    Args:
        m1_ckpt: checkpoint of a trained `lightning_gen.VAE` (M1; configs/m2vae/m1_mnist.yaml trains one). Given:
            M2 models its latent means (M1+M2); not given: M2 models the images (M2 alone).
        m1_latent_dim: the M1 latent size the M2 networks are built for; checked against the checkpoint (None:
            the checkpoint's).
        m1_features: what M2 sees of an image during training: `mean` (the mean of M1's q(z1 | x)) or `sample` (a
            fresh draw from q(z1 | x) at every step). Evaluation always uses the means.
        m1_config: the M1 model's class and hyperparameters, read from `m1_ckpt` and stored in the checkpoint so
            that it loads without the M1 file. Leave unset.
        likelihood: p(x | y, z): `bernoulli` (images; pixels in [0, 1]) or `gaussian` (a mean and a diagonal
            variance per feature). None: bernoulli for images, gaussian for M1 features.
        binarize: with a Bernoulli likelihood on images, binarize each training image afresh at every step
            (evaluation images stay grey). Off: grey levels are the Bernoulli targets.
        latent_dim: size of z (50 in the paper).
        hidden: hidden layer widths of each of the three MLPs, q(z | x, y), p(x | y, z) and q(y | x) (the paper:
            one layer of 500 softplus units).
        alpha: weight of the classification term, alpha * E_labeled[-log q(y | x)], against the bounds summed over
            the N training images. None: the paper's 0.1 * N, N being all training images (labeled and
            unlabeled). Per labeled image the cross-entropy weighs alpha / N_l times its bound.
        num_classes: number of classes; taken from the datamodule when not given.
        lr: Adam learning rate (3e-4 in the paper).
        image_shape: (channels, height, width); taken from the datamodule when not given. Stored in the
            checkpoint, so `predict` needs no data.
        num_samples: images in the per-epoch sample grid and written by `predict` (image i of class i % K).
        sample_seed: seed of the fixed noise behind the sample grids and `predict`.
    """

    def __init__(
        self,
        m1_ckpt: str | None = None,
        m1_latent_dim: int | None = None,
        m1_features: Literal["mean", "sample"] = "mean",
        m1_config: dict[str, Any] | None = None,
        likelihood: Likelihood | None = None,
        binarize: bool = False,
        latent_dim: int = 50,
        hidden: list[int] | None = None,
        alpha: float | None = None,
        num_classes: int | None = None,
        lr: float = 3e-4,
        image_shape: tuple[int, int, int] | None = None,
        num_samples: int = 100,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if latent_dim < 1 or num_samples < 1 or (m1_latent_dim is not None and m1_latent_dim < 1):
            raise ConfigError("latent_dim, m1_latent_dim and num_samples must be positive.")
        if hidden is not None and any(h < 1 for h in hidden):
            raise ConfigError(f"hidden layer widths must be positive, got {hidden}.")
        if alpha is not None and alpha < 0:
            raise ConfigError(f"alpha must be 0 or more (the classification weight), got {alpha}.")
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"num_classes must be 2 or more, got {num_classes}.")
        if likelihood == "bernoulli" and (m1_ckpt or m1_config):
            raise ConfigError("a Bernoulli decoder models values in [0, 1], but M1's latent means are any real "
                              "numbers: use `--model.likelihood gaussian` (or leave it unset) with `m1_ckpt`.")
        self.save_hyperparameters()
        self.m1: nn.Module | None = None
        self._picture_batch: Tensor | None = None

    # ---- building: data, M1, networks -------------------------------------------------------------------------
    @property
    def uses_m1(self) -> bool:
        return bool(self.hparams.m1_ckpt or self.hparams.m1_config)

    @property
    def resolved_likelihood(self) -> Likelihood:
        return self.hparams.likelihood or ("gaussian" if self.uses_m1 else "bernoulli")

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        hp.image_shape = resolve_image_shape(hp.image_shape, dm, "M2VAE")
        hp.num_classes = resolve_num_classes(hp.num_classes, dm, "M2VAE", ", wrapped in `datamodules.SemiSupervised`")
        if self.uses_m1:
            self.m1 = self.load_m1()
            feature_dim = int(hp.m1_latent_dim)
        else:
            feature_dim = int(math.prod(hp.image_shape))
        k, h = hp.num_classes, list(hp.hidden if hp.hidden is not None else [500])
        out = feature_dim * (2 if self.resolved_likelihood == "gaussian" else 1)
        self.classifier = mlp(feature_dim, h, k)  # q(y|x): (B, D) -> (B, K) logits
        self.encoder = mlp(feature_dim + k, h, 2 * hp.latent_dim)  # q(z|x,y): (B, D + K) -> mean, log-variance
        self.decoder = mlp(hp.latent_dim + k, h, out)  # p(x|y,z): (B, latent + K) -> logits, or mean and log-variance
        self.val_acc = torchmetrics.Accuracy("multiclass", num_classes=k)
        self.test_acc = torchmetrics.Accuracy("multiclass", num_classes=k)

    def load_m1(self) -> nn.Module:
        """M1 from the checkpoint (first build) or from the stored `m1_config` (a loaded M2 checkpoint, whose state
        dict holds M1's weights), checked against the data's image shape and `m1_latent_dim`."""
        hp = self.hparams
        if hp.m1_config is not None:
            m1 = m1_from_config(hp.m1_config)
            where = "the stored M1 (m1_config)"
        else:
            m1, hp.m1_config = load_latent_encoder(hp.m1_ckpt)
            where = f"the M1 checkpoint {hp.m1_ckpt}"
        m1_shape = tuple(int(v) for v in m1.hparams.image_shape)
        if m1_shape != tuple(hp.image_shape):
            raise ConfigError(
                f"{where} was trained on images of shape {m1_shape}, but this data's images are "
                f"{tuple(hp.image_shape)}. Train M1 on the same data (configs/m2vae/m1_mnist.yaml for MNIST) and give "
                "its checkpoint as `--model.m1_ckpt`."
            )
        m1_latent = int(m1.hparams.latent_dim)
        if hp.m1_latent_dim is not None and int(hp.m1_latent_dim) != m1_latent:
            raise ConfigError(
                f"{where} has latent_dim={m1_latent}, but this M2 is built for m1_latent_dim={hp.m1_latent_dim}. "
                "Give the checkpoint of an M1 with that latent size, or set `--model.m1_latent_dim` to match "
                "(a new run: without `--ckpt_path`)."
            )
        hp.m1_latent_dim = m1_latent
        return m1

    def train(self, mode: bool = True) -> M2VAE:
        """M1 stays in eval mode (its batch norm uses running statistics) whatever mode the rest is in."""
        super().train(mode)
        if self.m1 is not None:
            self.m1.eval()
        return self

    def setup(self, stage: str) -> None:
        datamodule = self.datamodule
        if stage == "fit" and not isinstance(datamodule, SemiSupervisedData):
            what = f"wrap {type(datamodule).__name__} in" if datamodule is not None else "train with"
            raise ConfigError(
                f"M2VAE trains on labeled + unlabeled batches: {what} `datamodules.SemiSupervised` (see "
                "configs/m2vae/mnist_100.yaml)."
            )

    def class_weight(self) -> float:
        """alpha / N_l: the weight of one labeled image's cross-entropy against one image's negative bound, with
        alpha = 0.1 * N (N: training images, labeled and unlabeled) unless given."""
        dm = self.datamodule
        num_labeled = int(dm.num_labeled)
        alpha = self.hparams.alpha
        if alpha is None:
            alpha = 0.1 * (num_labeled + len(dm.reference_set))
        return float(alpha) / num_labeled

    def on_fit_start(self) -> None:
        self._class_weight = self.class_weight()

    # ---- features and the bound ------------------------------------------------------------------------------
    def check_pixel_range(self, images: Tensor) -> None:
        """Refuse images a Bernoulli decoder cannot model (pixels outside [0, 1], i.e. images outside [-1, 1])."""
        if self.uses_m1 or self.resolved_likelihood != "bernoulli":
            return
        check_bernoulli_range(images, "Bernoulli decoder")

    def features(self, images: Tensor, training: bool = False) -> Tensor:
        """What M2 models. Images (B, C, H, W) in [-1, 1] -> (B, D): M1's latent means (or draws from its q(z1 | x)
        when training with `m1_features: sample`), or the flat pixels, in [0, 1] for the Bernoulli likelihood
        (binarized at training steps with `binarize`)."""
        hp = self.hparams
        if self.m1 is not None:
            with torch.no_grad():
                mu, logvar = self.m1.encode(images.float().clamp(-1, 1))  # (B, C, H, W) -> (B, D) each
                if training and hp.m1_features == "sample":
                    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                return mu
        flat = images.flatten(1).float()  # (B, C*H*W)
        if self.resolved_likelihood == "gaussian":
            return flat
        probs = flat.add(1).div(2).clamp(0, 1)
        return torch.bernoulli(probs) if training and hp.binarize else probs

    def network_input(self, features: Tensor) -> Tensor:
        """The networks' view of the features: Bernoulli targets back to [-1, 1]."""
        return features * 2 - 1 if self.resolved_likelihood == "bernoulli" else features

    def forward(self, images: Tensor) -> Tensor:
        """Class logits of q(y | x): (B, C, H, W) -> (B, K)."""
        return self.classifier(self.network_input(self.features(images)))

    def onehot(self, labels: Tensor) -> Tensor:
        return F.one_hot(labels.long(), self.hparams.num_classes).float()

    def encode(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x, y): (B, D) features, (B,) labels -> mean and log-variance, each (B, latent_dim)."""
        x = torch.cat([self.network_input(features), self.onehot(labels).to(features.dtype)], dim=1)
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """p(x | y, z): (B, latent_dim), (B,) -> (B, D) Bernoulli logits, or (B, 2D) Gaussian mean and log-variance."""
        return self.decoder(torch.cat([z, self.onehot(labels).to(z.dtype)], dim=1)).float()

    def log_likelihood(self, decoded: Tensor, target: Tensor) -> Tensor:
        """log p(x | y, z) per image: (B, D) or (B, 2D) decoder output, (B, D) target -> (B,)."""
        if self.resolved_likelihood == "bernoulli":
            return bernoulli_features_log_likelihood(decoded, target)
        mean, logvar = decoded.chunk(2, dim=1)
        return gaussian_features_log_likelihood(mean, logvar.clamp(-12.0, 10.0), target)

    def bound(self, features: Tensor, labels: Tensor) -> Tensor:
        """ELBO(x, y) with one reparameterized sample of q(z | x, y): (B, D), (B,) -> (B,) nats."""
        mu, logvar = self.encode(features, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        log_px = self.log_likelihood(self.decode(z, labels), features)
        return labeled_bound(log_px, gaussian_kl(mu, logvar), self.hparams.num_classes)

    def class_bounds(self, features: Tensor) -> Tensor:
        """ELBO(x, y) for every class y, in one pass of the networks over K copies of the batch: (B, D) -> (B, K)."""
        k, b = self.hparams.num_classes, features.shape[0]
        labels = torch.arange(k, device=features.device).repeat_interleave(b)  # (K*B,): class 0 for the first B
        return self.bound(features.repeat(k, 1), labels).view(k, b).T  # (K*B, D) -> (K*B,) -> (B, K)

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if not isinstance(batch, dict) or "labeled" not in batch or "unlabeled" not in batch:
            raise ConfigError("M2VAE needs SemiSupervised batches ({'labeled': (x, y), 'unlabeled': x}) for training: "
                              "use `datamodules.SemiSupervised`.")
        images, labels = batch["labeled"]
        unlabeled = batch["unlabeled"]
        if batch_idx == 0:
            check_labels(labels, self.hparams.num_classes, "M2VAE")
            self.check_pixel_range(torch.cat([images, unlabeled]))
        f_l = self.features(images, training=True)  # (B_l, D)
        f_u = self.features(unlabeled, training=True)  # (B_u, D)
        bounds_l = self.bound(f_l, labels)  # (B_l,)
        logits = self.classifier(self.network_input(torch.cat([f_l, f_u])))  # (B_l + B_u, K)
        logits_l, logits_u = logits.split([f_l.shape[0], f_u.shape[0]])
        bounds_u = unlabeled_bound(self.class_bounds(f_u), logits_u)  # (B_u,)
        weight = self._class_weight  # set in on_fit_start
        loss, ce = m2_loss(bounds_l, logits_l, labels, bounds_u, weight)
        if logs_this_step(self.trainer):
            acc = (logits_l.argmax(1) == labels).float().mean()
            self.log_dict({"train/loss": loss.detach(), "train/labeled_accuracy": acc}, prog_bar=True)
            self.log_dict({"train/labeled_bound": bounds_l.mean().detach(),
                           "train/unlabeled_bound": bounds_u.mean().detach(), "train/classification_loss": ce.detach(),
                           "train/class_weight": weight})
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for name, p in self.named_parameters() if not name.startswith("m1.")]
        return adam(self, params, lr=self.hparams.lr)

    # ---- evaluation: accuracy of q(y | x) -----------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.check_pixel_range(batch[0])
            self._picture_batch = batch[0][:10].detach()
        evaluate_accuracy(self, batch, batch_idx, self.val_acc, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.check_pixel_range(batch[0])
        evaluate_accuracy(self, batch, batch_idx, self.test_acc, "test")

    # ---- pictures: analogies and class-conditional samples ------------------------------------------------------
    def to_images(self, decoded: Tensor) -> Tensor:
        """Decoder output (B, D or 2D) -> images (B, C, H, W) in [-1, 1]: the Bernoulli probabilities or Gaussian
        means, through M1's decoder for M1+M2."""
        if self.resolved_likelihood == "gaussian":
            decoded = decoded.chunk(2, dim=1)[0]
        else:
            decoded = decoded.sigmoid() * 2 - 1
        if self.m1 is not None:
            return self.m1(decoded).float()  # (B, latent_dim of M1) -> (B, C, H, W)
        return decoded.view(-1, *self.hparams.image_shape)

    @torch.no_grad()
    def analogies(self, images: Tensor) -> Tensor:
        """The paper's analogies: for each image, its style z (the mean of q(z | x, y) at the predicted y) decoded
        with every class. (B, C, H, W) -> (B * (K + 1), C, H, W): per row the image, then classes 0..K-1."""
        k = self.hparams.num_classes
        with eval_mode(self):
            features = self.features(images)
            predicted = self.classifier(self.network_input(features)).argmax(1)
            z, _ = self.encode(features, predicted)  # (B, latent_dim)
            classes = torch.arange(k, device=images.device).repeat(images.shape[0])  # (B*K,)
            decoded = self.to_images(self.decode(z.repeat_interleave(k, 0), classes)).view(-1, k, *images.shape[1:])
        return torch.cat([images.float()[:, None].clamp(-1, 1), decoded], dim=1).flatten(0, 1)

    @torch.no_grad()
    def class_samples(self, columns: int = 10) -> Tensor:
        """One row per class, the same z down each column: (K * columns, C, H, W)."""
        k = self.hparams.num_classes
        z = fixed_noise(torch.arange(columns), self.hparams.latent_dim, self.hparams.sample_seed, self.device)
        labels = torch.arange(k, device=self.device).repeat_interleave(columns)
        with eval_mode(self):
            return self.to_images(self.decode(z.repeat(k, 1), labels))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self._picture_batch is None:
            return
        save_and_log_images(self.trainer, "analogies", self.analogies(self._picture_batch),
                            nrow=self.hparams.num_classes + 1)
        save_and_log_images(self.trainer, "class_samples", self.class_samples(), nrow=10)

    # ---- sampling (and data-free `predict`, by GenerativeTechnique): image i always from the same z ----------------
    def default_labels(self, indices: Tensor) -> Tensor:
        return class_of_index(indices.to(self.device), self.hparams.num_classes)

    def sample_grid(self) -> tuple[Tensor, int | None]:
        """Image i of class i % K: with K per row, one class per column."""
        return self.sample(torch.arange(self.hparams.num_samples, device=self.device)), self.hparams.num_classes

    @torch.no_grad()
    def sample(self, indices: Tensor) -> Tensor:
        """Decoded means of the fixed noise of `indices`, in class `default_labels(indices)`: (B,) -> (B, C, H, W)."""
        z = fixed_noise(indices, self.hparams.latent_dim, self.hparams.sample_seed, self.device)
        with eval_mode(self):
            return self.to_images(self.decode(z, self.default_labels(indices)))


__all__ = ["M2VAE", "labeled_bound", "m2_loss", "unlabeled_bound"]
