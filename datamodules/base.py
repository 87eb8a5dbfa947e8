"""What every image datamodule shares: the train/val split, loaders, [-1, 1] scaling and `image_shape`.

Everything a DataLoader worker receives (datasets, transforms) is a module-level class or function, so the
loaders work under every multiprocessing start method: `fork`, `forkserver` and `spawn` (`multiprocessing_context`).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, random_split
from torchvision.transforms import v2

DATA_ENV = "LIGHTNING_GEN_DATA"

StartMethod = Literal["spawn", "forkserver", "fork"]
"""How DataLoader worker processes start (see `multiprocessing`); `None` means the platform's default."""


class DataError(ValueError):
    """Bad or missing data, found before training starts. The message names the problem and the fix."""


def data_root(root: str | None) -> Path:
    """Resolve a data root: the given path (with `~` and `$VARS` expanded), else `$LIGHTNING_GEN_DATA`, else
    `./data`."""
    if root is None:
        return Path(os.environ.get(DATA_ENV) or "data")
    expanded = os.path.expanduser(os.path.expandvars(root))
    if "$" in expanded:
        raise DataError(
            f"data root {root!r} uses an environment variable that is not set. Export it (for example "
            f"`export {DATA_ENV}=/path/to/datasets`) or give the path itself."
        )
    return Path(expanded)


def signed_steps() -> list[v2.Transform]:
    """uint8 image -> float32 in [-1, 1]: `x / 255` then `(x - 0.5) / 0.5`, the arithmetic of every datamodule."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]


def to_signed(pixels: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [-1, 1], bit-identical to `signed_steps()` (tested) without the transforms'
    dispatch, which costs more than the arithmetic on a 28x28 image."""
    return pixels.to(torch.float32).mul_(1.0 / 255).sub_(0.5).div_(0.5)


def to_signed_tensor(image_size: int | None = None, channels: int | None = None) -> v2.Compose:
    """PIL image -> `(C, H, W)` float tensor in [-1, 1], optionally resized (shorter side, then centre crop).
    A picklable `torchvision.transforms.v2` pipeline (no lambdas), so DataLoader workers can receive it under
    `spawn` and `forkserver`."""
    steps: list[v2.Transform] = []
    if channels == 1:
        steps.append(v2.Grayscale(1))
    elif channels == 3:
        steps.append(v2.RGB())
    if image_size is not None:  # on the PIL image, as before the move to transforms.v2
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    steps += [v2.ToImage(), *signed_steps()]
    return v2.Compose(steps)


def check_start_method(method: str | None) -> None:
    """Refuse a multiprocessing start method this platform lacks (e.g. `fork` on Windows), naming the ones it has."""
    available = multiprocessing.get_all_start_methods()
    if method is not None and method not in available:
        raise DataError(f"multiprocessing_context={method!r} is not available here; choose one of {available} "
                        "(or leave it unset for the platform's default).")


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    drop_last: bool = False,
    num_workers: int = 0,
    multiprocessing_context: StartMethod | None = None,
    sampler: Sampler | None = None,
) -> DataLoader:
    """The DataLoader of every datamodule here: persistent workers started by `multiprocessing_context` (ignored
    without workers), memory pinned when CUDA is there."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )


class SplitLoaders:
    """The training, validation and test loaders of a datamodule with `train_set`, `val_set` and `test_set`, each
    made by its `_loader(dataset, train)`. Put it before `LightningDataModule` among the bases."""

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class ImageDataModule(SplitLoaders, L.LightningDataModule):
    """Base of the image datamodules: batches are `(images, labels)` with images `(B, C, H, W)` in [-1, 1].

    Subclasses set `self.image_shape` and `self.num_classes` and implement `_load()`, which returns the
    train+val dataset and the test dataset (or `None`, in which case `test` uses the validation split).

    Args:
        batch_size: images per batch (per process under DDP).
        val_fraction: share of the training data held out for validation, in (0, 1).
        split_seed: seed of the train/val split (independent of the training seed, so runs share one split).
        image_size: resize every image to this square side (default: the dataset's own size).
        num_workers: DataLoader worker processes (0 loads in the main process).
        multiprocessing_context: how the workers start: `spawn`, `forkserver` or `fork` (default: the platform's
            default; `fork` is unavailable on Windows, and macOS defaults to `spawn`).
        shuffle: shuffle the training set every epoch.
        drop_last: drop the last incomplete training batch (keeps BatchNorm statistics sane).
    """

    image_shape: tuple[int, int, int] | None
    """`(channels, height, width)` of the images in a batch; `None` until known (an image folder: after `setup`)."""
    num_classes: int | None
    """Number of label classes (1 for a folder without class sub-folders); `None` until known."""
    train_set: Dataset | None
    """Training items `(image, label)`, after `setup("fit")`."""
    val_set: Dataset | None
    """Validation items `(image, label)`, after `setup`."""
    test_set: Dataset | None
    """Test items `(image, label)` (the validation split when the data has no test split), after `setup`."""

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        image_size: int | None = None,
        num_workers: int = 0,
        multiprocessing_context: StartMethod | None = None,
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
        check_start_method(multiprocessing_context)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.image_size = image_size
        self.num_workers = num_workers
        self.multiprocessing_context = multiprocessing_context
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.image_shape = None
        self.num_classes = None
        self.train_set = None
        self.val_set = None
        self.test_set = None

    @property
    def reference_set(self) -> Dataset | None:
        """The real images that sample-quality metrics (FID, KID) compare generated images with: the training set
        (`SemiSupervised`: its unlabeled pool). Items are `(image, label)` or an image alone."""
        return self.train_set

    def _load(self) -> tuple[Dataset, Dataset | None]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        trainval, test = self._load()
        n_val = max(1, int(round(len(trainval) * self.val_fraction)))
        n_train = len(trainval) - n_val
        if n_train < 1:
            raise DataError(f"{type(self).__name__} has {len(trainval)} images: too few to hold out a validation "
                            "split.")
        split = torch.Generator().manual_seed(self.split_seed)
        self.train_set, self.val_set = random_split(trainval, [n_train, n_val], generator=split)
        self.test_set = test if test is not None else self.val_set
        if self.drop_last and n_train < self.batch_size:
            raise DataError(
                f"{type(self).__name__} has {n_train} training images, fewer than batch_size={self.batch_size}, "
                "and drop_last is on, so no batch would be made. Lower --data.batch_size."
            )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return make_loader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and self.shuffle,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            multiprocessing_context=self.multiprocessing_context,
        )


class Ticks(IterableDataset):
    """0, 1, ..., n-1 on every process: an iterable dataset, so no distributed sampler splits it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n
