"""What every image datamodule shares: the train/val split, loaders, [-1, 1] scaling and `image_shape`."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, random_split
from torchvision import transforms as T

DATA_ENV = "LIGHTNING_GEN_DATA"


class DataError(ValueError):
    """Bad or missing data, found before training starts. The message names the problem and the fix."""


def data_root(root: str | None) -> Path:
    """Resolve a data root: the given path (with `~` and `$VARS` expanded), else `$LIGHTNING_GEN_DATA`, else `./data`."""
    if root is None:
        return Path(os.environ.get(DATA_ENV) or "data")
    expanded = os.path.expanduser(os.path.expandvars(root))
    if "$" in expanded:
        raise DataError(
            f"data root {root!r} uses an environment variable that is not set. Export it (for example "
            f"`export {DATA_ENV}=/path/to/datasets`) or give the path itself."
        )
    return Path(expanded)


def to_signed_tensor(image_size: int | None = None, channels: int | None = None) -> T.Compose:
    """PIL image -> `(C, H, W)` float tensor in [-1, 1], optionally resized (shorter side, then centre crop)."""
    steps: list = []
    if channels == 1:
        steps.append(T.Grayscale(1))
    elif channels == 3:
        steps.append(T.Lambda(lambda im: im.convert("RGB")))
    if image_size is not None:
        steps += [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(0.5, 0.5)]
    return T.Compose(steps)


class ImageDataModule(L.LightningDataModule):
    """Base of the image datamodules: batches are `(images, labels)` with images `(B, C, H, W)` in [-1, 1].

    Subclasses set `self.image_shape` and `self.num_classes` and implement `_load()`, which returns the
    train+val dataset and the test dataset (or `None`, in which case `test` uses the validation split).

    Args:
        batch_size: images per batch (per process under DDP).
        val_fraction: share of the training data held out for validation, in (0, 1).
        split_seed: seed of the train/val split (independent of the training seed, so runs share one split).
        image_size: resize every image to this square side (default: the dataset's own size).
        num_workers: DataLoader worker processes (0 loads in the main process).
        shuffle: shuffle the training set every epoch.
        drop_last: drop the last incomplete training batch (keeps BatchNorm statistics sane).
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        image_size: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        if image_size is not None and image_size < 1:
            raise DataError(f"image_size must be positive, got {image_size}.")
        if num_workers < 0:
            raise DataError(f"num_workers must be 0 or more, got {num_workers}.")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.image_size = image_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.image_shape: tuple[int, int, int] | None = None
        self.num_classes: int | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _load(self) -> tuple[Dataset, Dataset | None]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        trainval, test = self._load()
        n_val = max(1, int(round(len(trainval) * self.val_fraction)))
        n_train = len(trainval) - n_val
        if n_train < 1:
            raise DataError(f"{type(self).__name__} has {len(trainval)} images: too few to hold out a validation split.")
        split = torch.Generator().manual_seed(self.split_seed)
        self.train_set, self.val_set = random_split(trainval, [n_train, n_val], generator=split)
        self.test_set = test if test is not None else self.val_set
        if self.drop_last and n_train < self.batch_size:
            raise DataError(
                f"{type(self).__name__} has {n_train} training images, fewer than batch_size={self.batch_size}, "
                "and drop_last is on, so no batch would be made. Lower --data.batch_size."
            )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and self.shuffle,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class Ticks(IterableDataset):
    """0, 1, ..., n-1 on every process: an iterable dataset, so no distributed sampler splits it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n
