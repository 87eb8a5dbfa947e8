"""Sample quality of any generative technique: Frechet distance and KID (torchmetrics) on the features of a
chosen network, plus the class accuracy of conditional samples, as a callback that runs in `validate`/`test`.

A metric is named for its feature network: on the project's MNIST classifier it is "MNIST-classifier FID"
(`val/mnist_classifier_fid`), not FID; on torchvision's ImageNet Inception v3 it is `tv_inception_fid`, which is
close to but not the same as the standard FID (that uses the 2015 TensorFlow Inception weights).

The reference is the training data: the features of its first `num_samples` images are computed once and cached
to disk. Beside every value the callback logs the real-vs-real floor (training images vs test images, same
count, same features): a generator cannot be expected to score below it.

Under DDP each process generates its share of the samples (image i on process i mod W), their features are
gathered, and every process computes the same value from all of them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import Generative, ImageData, ReferenceImages, SemiSupervisedData
from lightning_gen.metrics.features import ClassifierFeatures, FeatureNetwork, InceptionFeatures

CACHE_ENV = "LIGHTNING_GEN_CACHE"


def default_cache_dir() -> Path:
    """`$LIGHTNING_GEN_CACHE`, else `~/.cache/lightning_gen`: where reference features are kept."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_gen")


# ---- distances between two feature sets -----------------------------------------------------------------------
class _Precomputed(nn.Module):
    """Lets torchmetrics' FID/KID take features that were computed already."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two `(N, F)` feature sets (torchmetrics' FID arithmetic)."""
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), sync_on_compute=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    real: Tensor, fake: Tensor, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (polynomial-kernel MMD^2, mean and std over `subsets` random subsets drawn by `seed`) between two
    `(N, F)` feature sets."""
    size = min(subset_size, len(real), len(fake))
    metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                     sync_on_compute=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # subsets drawn with a fixed seed: every process and every run agree,
        torch.manual_seed(seed)  # and training's random stream is left as it was
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def dataset_features(
    net: FeatureNetwork, dataset: Dataset, count: int, batch_size: int, device: torch.device
) -> Tensor:
    """Features of the first `count` images of `dataset` (items `(image, ...)` or images). -> `(count, F)`."""
    loader = DataLoader(Subset(dataset, range(min(count, len(dataset)))), batch_size=batch_size)
    out = []
    for batch in loader:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        out.append(net(images.to(device)).float().cpu())
    return torch.cat(out)


# ---- the callback ---------------------------------------------------------------------------------------------
class SampleQuality(Callback):
    """Frechet distance and KID of generated images against the training data, on a feature network's
    features, in `validate`/`test` (and in fit's validation every `every_n_epochs`). For conditional models
    (those whose `default_labels(indices)` gives classes) with a classifier feature network of the same classes,
    also the accuracy of the classifier on the generated images of each requested class.

    Works with any `Generative` technique (`sample(indices) -> images in [-1, 1]`: DCGAN, CGAN, VAE, CVAE, SGAN),
    on any datamodule with real images (`ReferenceImages`: `train_set`, `test_set`; a `SemiSupervisedData`
    datamodule is compared through its unlabeled pool, `reference_set`).

    Args:
        feature_net: `classifier` (a `lightning_gen.Classifier` checkpoint, for MNIST-like data) or `inception`
            (torchvision's ImageNet Inception v3, when its weights are on this machine).
        classifier_ckpt: path of the Classifier checkpoint (feature_net: classifier).
        inception_weights: path of the Inception v3 weights file (default: the torch hub cache).
        num_samples: generated images per measurement, and real images in the reference and in the floor.
        every_n_epochs: measure in fit's validation every this many epochs (0: only in validate/test).
        batch_size: images per forward pass of the generator and the feature network.
        kid_subsets: random subsets KID averages over.
        kid_subset_size: images per KID subset (capped at `num_samples`).
        cache_dir: where reference features are cached (default: `$LIGHTNING_GEN_CACHE` or
            `~/.cache/lightning_gen`).
    """

    def __init__(
        self,
        feature_net: Literal["classifier", "inception"] = "classifier",
        classifier_ckpt: str | None = None,
        inception_weights: str | None = None,
        num_samples: int = 10000,
        every_n_epochs: int = 1,
        batch_size: int = 500,
        kid_subsets: int = 50,
        kid_subset_size: int = 1000,
        cache_dir: str | None = None,
    ) -> None:
        if feature_net not in ("classifier", "inception"):
            raise ConfigError(f"SampleQuality feature_net must be 'classifier' or 'inception', got {feature_net!r}.")
        if feature_net == "classifier" and not classifier_ckpt:
            raise ConfigError(
                "SampleQuality with feature_net: classifier needs `classifier_ckpt`, the path of a trained Classifier "
                "checkpoint (for MNIST: `lightning-gen fit --config configs/classifier/mnist.yaml`)."
            )
        if num_samples < 2 or batch_size < 1 or every_n_epochs < 0 or kid_subsets < 1 or kid_subset_size < 2:
            raise ConfigError("SampleQuality: num_samples >= 2, batch_size >= 1, every_n_epochs >= 0 and "
                              "kid_subsets >= 1, kid_subset_size >= 2 are required.")
        self.feature_net_kind = feature_net
        self.classifier_ckpt = classifier_ckpt
        self.inception_weights = inception_weights
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.net: FeatureNetwork | None = None
        self._reference: dict[str, Tensor] = {}
        self.last: dict[str, float] = {}

    def build_net(self) -> FeatureNetwork:
        if self.feature_net_kind == "classifier":
            return ClassifierFeatures(self.classifier_ckpt)
        return InceptionFeatures(self.inception_weights)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "predict":
            return
        if self.net is None:
            self.net = self.build_net()
        if not isinstance(pl_module, Generative):
            raise ConfigError(f"SampleQuality needs a generative model with `sample(indices)`; "
                              f"{type(pl_module).__name__} has none.")
        dm = trainer.datamodule
        shape = pl_module.hparams.get("image_shape") or (dm.image_shape if isinstance(dm, ImageData) else None)
        if shape is not None:
            self.net.check_images(tuple(shape))  # before any training step

    # ---- reference features (real images), cached to disk ------------------------------------------------------
    def _reference_features(self, trainer: L.Trainer, split: str) -> Tensor:
        if split in self._reference:
            return self._reference[split]
        dm = trainer.datamodule
        if dm is None:
            raise ConfigError("SampleQuality compares generated images with real ones: run it with a datamodule "
                              "(`--data ...`, or the run's config.yaml).")
        if not isinstance(dm, ReferenceImages):
            raise ConfigError(f"SampleQuality needs the datamodule's real images (`train_set` and `test_set`); "
                              f"{type(dm).__name__} has none.")
        # the training images to compare with (a semi-supervised datamodule names its unlabeled pool), and the test
        # images
        if split == "train":
            dataset = (dm.reference_set if isinstance(dm, SemiSupervisedData) else None) or dm.train_set
        else:
            dataset = dm.test_set
        if dataset is None:
            raise ConfigError(f"SampleQuality needs the datamodule's {split} images; {type(dm).__name__} has none.")
        # the key holds the images themselves (a fingerprint of a spread of them), not only the settings
        picks = torch.linspace(0, len(dataset) - 1, min(16, len(dataset))).long().tolist()
        items = [dataset[i] for i in picks]
        pixels = torch.stack([(item[0] if isinstance(item, (tuple, list)) else item).float() for item in items])
        fingerprint = hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16]
        key = "|".join(str(v) for v in (self.net.identity, type(dm).__name__, fingerprint, len(dataset), split,
                                        self.num_samples))
        path = self.cache_dir / f"features_{hashlib.sha1(key.encode()).hexdigest()[:20]}.pt"
        features = None
        if trainer.is_global_zero:
            if path.is_file():
                features = torch.load(path, map_location="cpu", weights_only=True)
            else:
                features = dataset_features(self.net, dataset, self.num_samples, self.batch_size,
                                            trainer.strategy.root_device)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save(features, tmp)
                tmp.replace(path)  # never a half-written cache file
                rank_zero_info(f"SampleQuality: cached {len(features)} {split} features at {path}")
        features = trainer.strategy.broadcast(features)
        self._reference[split] = features
        return features

    # ---- generated images, shared out over the processes ------------------------------------------------------
    @torch.no_grad()
    def _generated(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor | None]:
        """Features `(num_samples, F)` of the generated images, and for a conditional model scored by a classifier
        `(num_samples, 2)` rows of (requested class, predicted class), else None."""
        world, rank = trainer.world_size, trainer.global_rank
        per_rank = -(-self.num_samples // world)
        indices = rank + world * torch.arange(per_rank)  # image i is made by process i mod W
        valid = indices < self.num_samples
        feats, classes = [], []
        model_classes = pl_module.hparams.get("num_classes")
        scores = isinstance(self.net, ClassifierFeatures) and self.net.num_classes == model_classes
        for chunk in indices.split(self.batch_size):
            chunk = chunk.to(pl_module.device)
            features, logits = self.net.features_and_logits(pl_module.sample(chunk).float())
            feats.append(features.float())
            labels = pl_module.default_labels(chunk) if scores else None  # None: an unconditional model
            if labels is not None:
                classes.append(torch.stack([labels.long(), logits.argmax(1)], dim=1))
        features = torch.cat(feats)
        scored = torch.cat(classes) if classes else None
        if world > 1:  # (W, per_rank, ...) in process order; drop the padding past num_samples
            mask = trainer.strategy.all_gather(valid.to(pl_module.device)).reshape(-1).cpu()
            features = trainer.strategy.all_gather(features).reshape(-1, features.shape[-1]).cpu()[mask]
            if scored is not None:
                scored = trainer.strategy.all_gather(scored).reshape(-1, 2).cpu()[mask]
        return features.cpu(), None if scored is None else scored.cpu()

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Compute every metric now (same values on every process). Keys are `<name>_fid`, ... without prefix;
        for conditional models also `<name>_class_accuracy` (all requested classes) and
        `<name>_class_accuracy_<c>` (images requested as class c)."""
        self.net.to(pl_module.device).eval()
        train = self._reference_features(trainer, "train")
        fake, scored = self._generated(trainer, pl_module)
        name = self.net.name
        out = {f"{name}_fid": frechet_distance(train, fake)}
        kid = kernel_distance(train, fake, self.kid_subsets, self.kid_subset_size)
        out[f"{name}_kid"], out[f"{name}_kid_std"] = kid
        if "floor" not in self._reference:  # real vs real: training images vs test images
            test = self._reference_features(trainer, "test")
            self._reference["floor"] = torch.tensor(frechet_distance(train, test))
        out[f"{name}_fid_floor"] = float(self._reference["floor"])
        if scored is not None:
            correct = (scored[:, 0] == scored[:, 1]).float()
            out[f"{name}_class_accuracy"] = float(correct.mean())
            for c in scored[:, 0].unique().tolist():
                out[f"{name}_class_accuracy_{c}"] = float(correct[scored[:, 0] == c].mean())
        self.last = out
        return out

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        for key, value in self.measure(trainer, pl_module).items():
            pl_module.log(f"{prefix}/{key}", value, rank_zero_only=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
            due = self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0
            if not (due or (self.every_n_epochs and last_epoch)):
                return
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


__all__ = ["CACHE_ENV", "SampleQuality", "dataset_features", "default_cache_dir", "frechet_distance", "kernel_distance"]
