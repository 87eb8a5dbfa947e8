"""One-vs-rest anomaly detection data: train on the images of one class of a labeled datamodule, evaluate on its whole
validation and test splits with the other classes as anomalies; optionally beside a reference set, another labeled
dataset whose classes a one-class technique (DOC) learns to tell apart."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from datamodules.base import DataError, ImageDataModule, data_root, make_loader
from datamodules.folder import ImageFolder
from datamodules.semi_supervised import ImagesOnly, dataset_labels
from datamodules.torchvision_sets import TorchvisionData

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: RGB -> grey, as PIL's convert("L")


def dataset_identity(dm: ImageDataModule) -> tuple[str, ...]:
    """What names the dataset behind a datamodule, whatever its split or class selection: a torchvision set's name, an
    image folder's resolved root (the train root; CIFAR-10 classes taken from one folder are the same dataset), else
    the datamodule's class (`Digits`)."""
    if isinstance(dm, TorchvisionData):
        return ("torchvision", dm.dataset)
    if isinstance(dm, ImageFolder):
        return ("folder", str(data_root(dm.root).expanduser().resolve()))
    if isinstance(dm, OneClass):
        return dataset_identity(dm.data)
    return (type(dm).__name__,)


def conform(image: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """A `(C, H, W)` image in [-1, 1] given `shape`'s channels (grey -> RGB repeats it; RGB -> grey by BT.601 luma)
    and size (antialiased bilinear resize), so that a reference set of another dataset goes through the same network
    as the target images."""
    channels, height, width = shape
    if image.shape[0] != channels:
        if channels == 1:
            image = (image * image.new_tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True)  # (3, H, W) -> (1, H, W)
        else:
            image = image.expand(channels, -1, -1)  # (1, H, W) -> (C, H, W)
    if tuple(image.shape[-2:]) != (height, width):
        image = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True,
                              align_corners=False)[0].clamp(-1, 1)
    return image.contiguous()


class Conformed(Dataset):
    """`(image, label)` items of `dataset` with each image `conform`ed to `shape`.

    Args:
        dataset: `(image, label)` items.
        shape: `(channels, height, width)` of the items given back.
    """

    def __init__(self, dataset: Dataset, shape: tuple[int, int, int]) -> None:
        self.dataset, self.shape = dataset, tuple(int(v) for v in shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.dataset[i][:2]
        return conform(image, self.shape), int(label)


class AnomalyLabels(Dataset):
    """`(image, is_anomaly, class, index)` items of a labeled `dataset`: `is_anomaly` is 1 for every class but
    `target_class`; `index` is the item's position (the row of `predict`'s score file).

    Args:
        dataset: `(image, label)` items.
        target_class: the normal class.
    """

    def __init__(self, dataset: Dataset, target_class: int) -> None:
        self.dataset, self.target_class = dataset, target_class

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, int]:
        image, label = self.dataset[i][:2]
        return image, int(int(label) != self.target_class), int(label), i


class OneClass(ImageDataModule):
    """One-vs-rest anomaly detection on a labeled datamodule (Ruff et al. 2018's protocol): training sees only the
    images of `target_class` from the wrapped datamodule's training split; validation and test see its whole
    validation and test splits, every other class being an anomaly.

    Training batches are dicts `{"target": images}`, plus `"reference": (images, labels)` when a `reference`
    datamodule is given: a different labeled dataset, its images converted to the target's channels and size, whose
    classes DOC's descriptiveness loss learns. An epoch ends with the shorter of the two training loaders (usually one
    pass over the target images). Evaluation batches are `(images, is_anomaly, class, index)`; `predict` reads the
    test split.

    Args:
        data: the labeled datamodule (MNIST, CIFAR-10 as an ImageFolder, Digits, ...). Its `batch_size` is the
            target batch size; its workers load every split.
        target_class: the normal class, 0..num_classes-1; every other class is an anomaly.
        reference: a labeled datamodule of another dataset (CIFAR-10 for MNIST targets, MNIST for CIFAR-10 targets);
            none for techniques that train on the target class alone (Deep SVDD).
        reference_batch_size: reference images per training batch (default: the target batch size).
    """

    target_class: int
    """The normal class; every other class of `data` is an anomaly."""
    num_reference_classes: int | None
    """Classes of the reference set (None: no reference set)."""
    reference_images: Dataset | None
    """Reference items `(image, label)` in the target's image shape; after `setup`."""

    def __init__(
        self,
        data: ImageDataModule,
        target_class: int = 0,
        reference: ImageDataModule | None = None,
        reference_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=data.batch_size, num_workers=data.num_workers, drop_last=data.drop_last,
                         multiprocessing_context=data.multiprocessing_context)
        if reference_batch_size is not None and reference_batch_size < 1:
            raise DataError(f"reference_batch_size must be at least 1, got {reference_batch_size}.")
        self.data = data
        self.target_class = target_class
        self.reference = reference
        self.reference_batch_size = reference_batch_size or data.batch_size
        self.image_shape = data.image_shape
        self.num_classes = data.num_classes
        self.num_reference_classes = reference.num_classes if reference is not None else None
        self.reference_images = None
        self._check_target_class()
        if reference is not None and (reference is data or dataset_identity(reference) == dataset_identity(data)):
            raise DataError(
                f"the reference set is the target dataset itself ({'/'.join(dataset_identity(data))}): its other "
                "classes are the anomalies the test scores, so training on them would leak them. Give "
                "`--data.reference` another dataset (CIFAR-10 for MNIST targets, MNIST for CIFAR-10 targets)."
            )

    def _check_target_class(self) -> None:
        n = self.data.num_classes
        if self.target_class < 0 or (n is not None and self.target_class >= n):
            known = f"0..{n - 1}" if n else "0 or more"
            raise DataError(f"target_class={self.target_class} is not a class of {type(self.data).__name__}: its "
                            f"classes are {known}. Give `--data.target_class` one of them.")

    @property
    def bank_set(self) -> Dataset | None:
        """The target class's training images (images only): what a k-NN score compares test images with."""
        return self.train_set

    def prepare_data(self) -> None:
        self.data.prepare_data()
        if self.reference is not None:
            self.reference.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.data.setup(stage)
        self.image_shape, self.num_classes = self.data.image_shape, self.data.num_classes
        if not self.num_classes or self.num_classes < 2:
            raise DataError(f"{type(self.data).__name__} has no class labels (num_classes={self.num_classes}), so no "
                            "class can be the normal one. Use a labeled datamodule (MNIST, Digits, an ImageFolder "
                            "with one sub-folder per class).")
        self._check_target_class()
        labels = dataset_labels(self.data.train_set)
        members = torch.nonzero(labels == self.target_class).flatten()
        if len(members) < 2 or (self.drop_last and len(members) < self.batch_size):
            raise DataError(f"{type(self.data).__name__} has {len(members)} training images of class "
                            f"{self.target_class}, fewer than one batch of {self.batch_size}. Lower the batch size.")
        self.train_set = ImagesOnly(Subset(self.data.train_set, members.tolist()))
        self.val_set = AnomalyLabels(self.data.val_set, self.target_class)
        self.test_set = AnomalyLabels(self.data.test_set, self.target_class)
        if self.reference is not None and stage in ("fit", None):  # only training reads it
            self.reference.setup(stage)
            self.num_reference_classes = self.reference.num_classes
            self.reference_images = Conformed(self.reference.train_set, self.image_shape)

    def _sized_loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        return make_loader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and self.drop_last,
                           num_workers=self.num_workers, multiprocessing_context=self.multiprocessing_context)

    def train_dataloader(self) -> Any:
        loaders = {"target": self._loader(self.train_set, train=True)}
        if self.reference_images is not None:
            loaders["reference"] = self._sized_loader(self.reference_images, self.reference_batch_size, train=True)
        return CombinedLoader(loaders, mode="min_size")

    def bank_dataloader(self, dataset: Dataset | None = None) -> DataLoader:
        """The target training images (or `dataset`) in order, whole batches and the last partial one."""
        return self._sized_loader(self.bank_set if dataset is None else dataset, self.batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


__all__ = ["AnomalyLabels", "Conformed", "OneClass", "conform", "dataset_identity"]
