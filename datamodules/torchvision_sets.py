"""torchvision's datasets by name. Adding one is one entry in `TORCHVISION_DATASETS` (plus, for a short
name such as `--data MNIST`, a three-line subclass)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets

from datamodules.base import DataError, ImageDataModule, data_root, to_signed, to_signed_tensor

# name -> (dataset class, image shape, number of classes, train kwargs, test kwargs)
TORCHVISION_DATASETS: dict[str, tuple[type, tuple[int, int, int], int, dict, dict]] = {
    "MNIST": (datasets.MNIST, (1, 28, 28), 10, {"train": True}, {"train": False}),
    "FashionMNIST": (datasets.FashionMNIST, (1, 28, 28), 10, {"train": True}, {"train": False}),
    "KMNIST": (datasets.KMNIST, (1, 28, 28), 10, {"train": True}, {"train": False}),
    "CIFAR10": (datasets.CIFAR10, (3, 32, 32), 10, {"train": True}, {"train": False}),
    "CIFAR100": (datasets.CIFAR100, (3, 32, 32), 100, {"train": True}, {"train": False}),
    "SVHN": (datasets.SVHN, (3, 32, 32), 10, {"split": "train"}, {"split": "test"}),
}


class InMemoryImages(Dataset):
    """A torchvision dataset's images as one `(N, C, H, W)` uint8 tensor, each item converted to [-1, 1] by
    `to_signed`, the arithmetic of `to_signed_tensor` (so the values are bit-identical) but without a PIL image
    per item: several times faster, which matters when a small network trains on 2 CPU cores.

    Args:
        images: `(N, C, H, W)` uint8 pixels.
        targets: `(N,)` class labels.
    """

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        self.images, self.targets = images, targets

    @classmethod
    def from_torchvision(cls, dataset: Any) -> InMemoryImages:
        """From a torchvision dataset whose `data` holds its pixels: (N, H, W) grey (MNIST), (N, H, W, C)
        (CIFAR) or (N, C, H, W) (SVHN), with labels in `targets` or `labels`."""
        images = torch.as_tensor(dataset.data)
        if images.ndim == 3:
            images = images.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        targets = getattr(dataset, "targets", None)
        if targets is None:
            targets = dataset.labels
        return cls(images.contiguous(), torch.as_tensor(targets, dtype=torch.long).reshape(-1))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return to_signed(self.images[index]), int(self.targets[index])


class TorchvisionData(ImageDataModule):
    """A torchvision dataset chosen by name, with its official train/test split.

    Args:
        dataset: which dataset (a key of `TORCHVISION_DATASETS`).
        root: folder holding the dataset as torchvision lays it out (for MNIST: `<root>/MNIST/raw/`).
            Default: `$LIGHTNING_GEN_DATA`, else `./data`. `$VARS` and `~` are expanded.
        download: download the dataset into `root` if it is missing (needs internet).
    """

    def __init__(
        self,
        dataset: Literal["MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN"] = "MNIST",
        root: str | None = None,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dataset not in TORCHVISION_DATASETS:
            raise DataError(f"unknown torchvision dataset {dataset!r}; choose one of {sorted(TORCHVISION_DATASETS)}.")
        self.dataset = dataset
        self.root = root
        self.download = download
        _, shape, self.num_classes, _, _ = TORCHVISION_DATASETS[dataset]
        self.image_shape = (shape[0], self.image_size, self.image_size) if self.image_size else shape

    def prepare_data(self) -> None:
        if self.download:
            self._make(train=True, download=True)
            self._make(train=False, download=True)

    def _make(self, train: bool, download: bool = False) -> Dataset:
        cls, shape, _, train_kw, test_kw = TORCHVISION_DATASETS[self.dataset]
        root = data_root(self.root)
        transform = to_signed_tensor(self.image_size, channels=shape[0])
        try:
            dataset = cls(str(root), transform=transform, download=download, **(train_kw if train else test_kw))
        except RuntimeError as err:
            if "not found" not in str(err).lower() and "corrupted" not in str(err).lower():
                raise
            raise DataError(
                f"{self.dataset} was not found under {root.resolve()} ({err}). Point `--data.root` (or the "
                f"LIGHTNING_GEN_DATA environment variable) at the folder that holds it, or pass "
                f"`--data.download true` to download it there."
            ) from None
        if self.image_size is None and getattr(dataset, "data", None) is not None:
            return InMemoryImages.from_torchvision(dataset)  # the same values, without PIL
        return dataset

    def _load(self) -> tuple[Dataset, Dataset | None]:
        return self._make(train=True), self._make(train=False)


class MNIST(TorchvisionData):
    """MNIST handwritten digits (LeCun et al. 1998): 60,000 train and 10,000 test images, 1x28x28, 10 classes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(dataset="MNIST", **kwargs)


class FashionMNIST(TorchvisionData):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train and 10,000 test images, 1x28x28, 10 classes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(dataset="FashionMNIST", **kwargs)


class CIFAR10(TorchvisionData):
    """CIFAR-10 (Krizhevsky 2009) in torchvision's python format: 50,000 train, 10,000 test, 3x32x32, 10 classes.

    For CIFAR-10 stored as JPEG class folders, use `ImageFolder` instead."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(dataset="CIFAR10", **kwargs)
