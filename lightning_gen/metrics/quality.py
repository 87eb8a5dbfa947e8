"""Sample quality of any generative technique: Frechet distance and KID (torchmetrics) on the features of a
chosen network, plus the class accuracy of conditional samples, as a callback that runs in `validate`/`test`.

A metric is named for its feature network: on the project's MNIST classifier it is "MNIST-classifier FID"
(`val/mnist_classifier_fid`), not FID; on torchvision's ImageNet Inception v3 it is `tv_inception_fid`, which is
close to but not the same as the standard FID; that one, on the 2015 TensorFlow Inception weights (torchmetrics'
default network, `feature_net: tf_inception`), is plain `fid`.

The reference is the training data: the features of a seeded random subset of its images are computed once and
cached to disk. Beside every value the callback logs the real-vs-real floor (training images vs a seeded random
subset of the test images, same features): a generator cannot be expected to score below it. The three sets
(training reference, test floor, generated) have the same size N = min(num_samples, training images, test images),
since the Frechet distance's bias depends on N; N is logged beside the values.

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
from lightning_gen.metrics.features import (
    ClassifierFeatures,
    FeatureNetwork,
    InceptionFeatures,
    TFInceptionFeatures,
    metric_name,
)

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


def random_subset(length: int, count: int, seed: int = 0) -> list[int]:
    """`min(count, length)` distinct indices below `length`, drawn at random by `seed` (its own generator: the
    global random stream is left alone) and sorted."""
    picks = torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:count]
    return picks.sort().values.tolist()


@torch.no_grad()
def dataset_features(
    net: FeatureNetwork, dataset: Dataset, count: int, batch_size: int, device: torch.device, seed: int = 0
) -> Tensor:
    """Features of `count` images of `dataset` (items `(image, ...)` or images) drawn at random by `seed`, so that
    a dataset listed class by class is sampled across all its classes. -> `(min(count, len(dataset)), F)`."""
    subset = Subset(dataset, random_subset(len(dataset), count, seed))
    loader = DataLoader(subset, batch_size=batch_size, generator=torch.Generator().manual_seed(seed))  # its own
    # generator: iterating a loader draws a base seed, which would otherwise come from the global random stream
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
        feature_net: `classifier` (a `lightning_gen.Classifier` checkpoint, for MNIST-like data), `inception`
            (torchvision's ImageNet Inception v3, when its weights are on this machine: `tv_inception_fid`) or
            `tf_inception` (the standard FID: torchmetrics' default network, torch-fidelity's port of the 2015
            TensorFlow Inception v3, when torch-fidelity and its weights are on this machine: `fid`).
        classifier_ckpt: path of the Classifier checkpoint (feature_net: classifier).
        inception_weights: path of the chosen Inception network's weights file (default: the torch hub cache).
        num_samples: generated images per measurement, and real images in the reference and in the floor; fewer
            (the same N for all three) when the training or test set is smaller.
        every_n_epochs: measure in fit's validation every this many epochs (0: only in validate/test).
        batch_size: images per forward pass of the generator and the feature network.
        kid_subsets: random subsets KID averages over.
        kid_subset_size: images per KID subset (capped at N, the images in each set).
        cache_dir: where reference features are cached (default: `$LIGHTNING_GEN_CACHE` or
            `~/.cache/lightning_gen`).
        seed: draws the random subsets of real images (training reference: `seed`, test floor: `seed + 1`).
    """

    FEATURE_NETS = ("classifier", "inception", "tf_inception")

    def __init__(
        self,
        feature_net: Literal["classifier", "inception", "tf_inception"] = "classifier",
        classifier_ckpt: str | None = None,
        inception_weights: str | None = None,
        num_samples: int = 10000,
        every_n_epochs: int = 1,
        batch_size: int = 500,
        kid_subsets: int = 50,
        kid_subset_size: int = 1000,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        if feature_net not in self.FEATURE_NETS:
            raise ConfigError(f"SampleQuality feature_net must be 'classifier', 'inception' or 'tf_inception', got "
                              f"{feature_net!r}.")
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
        self.seed = seed
        self.net: FeatureNetwork | None = None
        self._reference: dict[str, Tensor] = {}
        self.last: dict[str, float] = {}

    def build_net(self) -> FeatureNetwork:
        if self.feature_net_kind == "classifier":
            return ClassifierFeatures(self.classifier_ckpt)
        if self.feature_net_kind == "tf_inception":
            return TFInceptionFeatures(self.inception_weights)  # torch-fidelity or its weights missing: fails here
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
    def _datasets(self, trainer: L.Trainer) -> tuple[Dataset, Dataset]:
        """The training images to compare with (a semi-supervised datamodule names its unlabeled pool) and the test
        images."""
        dm = trainer.datamodule
        if dm is None:
            raise ConfigError("SampleQuality compares generated images with real ones: run it with a datamodule "
                              "(`--data ...`, or the run's config.yaml).")
        if not isinstance(dm, ReferenceImages):
            raise ConfigError(f"SampleQuality needs the datamodule's real images (`train_set` and `test_set`); "
                              f"{type(dm).__name__} has none.")
        train = (dm.reference_set if isinstance(dm, SemiSupervisedData) else None) or dm.train_set
        for split, dataset in (("train", train), ("test", dm.test_set)):
            if dataset is None:
                raise ConfigError(f"SampleQuality needs the datamodule's {split} images; {type(dm).__name__} has "
                                  "none.")
        return train, dm.test_set

    def _real_features(self, trainer: L.Trainer) -> tuple[Tensor, Tensor]:
        """Features `(N, F)` of the training reference and of the test floor's images, random subsets of the same
        size N = min(num_samples, training images, test images)."""
        if "train" not in self._reference:
            train, test = self._datasets(trainer)
            count = min(self.num_samples, len(train), len(test))
            if count < 2:
                raise ConfigError(f"SampleQuality needs at least 2 training and 2 test images; the datamodule has "
                                  f"{len(train)} and {len(test)}.")
            if count < self.num_samples:
                rank_zero_info(
                    f"SampleQuality: the datamodule has {len(train)} training and {len(test)} test images, so the "
                    f"reference, the floor and the generated set have {count} images each, not num_samples="
                    f"{self.num_samples} (the Frechet distance's bias depends on the count: compare values measured "
                    f"with the same count, logged as `{metric_name(self.net, 'fid_n')}`)."
                )
            self._reference["train"] = self._cached_features(trainer, train, "train", count, self.seed)
            self._reference["test"] = self._cached_features(trainer, test, "test", count, self.seed + 1)
        return self._reference["train"], self._reference["test"]

    def _cached_features(self, trainer: L.Trainer, dataset: Dataset, split: str, count: int, seed: int) -> Tensor:
        dm = trainer.datamodule
        # the key holds the images themselves (a fingerprint of a spread of them), not only the settings, and the
        # subset of them measured (drawn at random by `seed`)
        picks = torch.linspace(0, len(dataset) - 1, min(16, len(dataset))).long().tolist()
        items = [dataset[i] for i in picks]
        pixels = torch.stack([(item[0] if isinstance(item, (tuple, list)) else item).float() for item in items])
        fingerprint = hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16]
        key = "|".join(str(v) for v in (self.net.identity, type(dm).__name__, fingerprint, len(dataset), split,
                                        count, f"random-subset-{seed}"))
        path = self.cache_dir / f"features_{hashlib.sha1(key.encode()).hexdigest()[:20]}.pt"
        features = None
        if trainer.is_global_zero:
            if path.is_file():
                features = torch.load(path, map_location="cpu", weights_only=True)
            else:
                features = dataset_features(self.net, dataset, count, self.batch_size, trainer.strategy.root_device,
                                            seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save(features, tmp)
                tmp.replace(path)  # never a half-written cache file
                rank_zero_info(f"SampleQuality: cached {len(features)} {split} features at {path}")
        return trainer.strategy.broadcast(features)

    # ---- generated images, shared out over the processes ------------------------------------------------------
    @torch.no_grad()
    def _generated(
        self, trainer: L.Trainer, pl_module: L.LightningModule, count: int
    ) -> tuple[Tensor, Tensor | None]:
        """Features `(count, F)` of generated images 0..count-1, and for a conditional model scored by a classifier
        `(count, 2)` rows of (requested class, predicted class), else None."""
        world, rank = trainer.world_size, trainer.global_rank
        per_rank = -(-count // world)
        indices = rank + world * torch.arange(per_rank)  # image i is made by process i mod W
        valid = indices < count
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
        if world > 1:  # (W, per_rank, ...) in process order; drop the padding past count
            mask = trainer.strategy.all_gather(valid.to(pl_module.device)).reshape(-1).cpu()
            features = trainer.strategy.all_gather(features).reshape(-1, features.shape[-1]).cpu()[mask]
            if scored is not None:
                scored = trainer.strategy.all_gather(scored).reshape(-1, 2).cpu()[mask]
        return features.cpu(), None if scored is None else scored.cpu()

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Compute every metric now (same values on every process). Keys are `<name>_fid`, ... without prefix
        (plain `fid`, ... for the standard FID's network): `_fid`, `_kid`, `_kid_std`, `_fid_floor` and `_fid_n`
        (N, the images in each of the three sets); for conditional models also `<name>_class_accuracy` (all
        requested classes) and `<name>_class_accuracy_<c>` (images requested as class c)."""
        self.net.to(pl_module.device).eval()
        train, test = self._real_features(trainer)
        count = len(train)  # N: the same for the reference, the floor and the generated images
        fake, scored = self._generated(trainer, pl_module, count)

        def key(metric: str) -> str:
            return metric_name(self.net, metric)

        out = {key("fid"): frechet_distance(train, fake)}
        out[key("kid")], out[key("kid_std")] = kernel_distance(train, fake, self.kid_subsets, self.kid_subset_size)
        if "floor" not in self._reference:  # real vs real: training images vs test images
            self._reference["floor"] = torch.tensor(frechet_distance(train, test))
        out[key("fid_floor")] = float(self._reference["floor"])
        out[key("fid_n")] = float(count)
        if scored is not None:
            correct = (scored[:, 0] == scored[:, 1]).float()
            out[key("class_accuracy")] = float(correct.mean())
            for c in scored[:, 0].unique().tolist():
                out[key(f"class_accuracy_{c}")] = float(correct[scored[:, 0] == c].mean())
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


__all__ = ["CACHE_ENV", "SampleQuality", "dataset_features", "default_cache_dir", "frechet_distance", "kernel_distance",
           "random_subset"]
