"""Semi-supervised splits of any labeled datamodule: `num_labeled` labeled images (the same number per class,
chosen by seed) plus the rest of the training images without their labels."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler, Subset, TensorDataset

from datamodules.base import DataError, ImageDataModule, make_loader


def dataset_labels(dataset: Dataset) -> Tensor:
    """The label of every item of `dataset` as a `(N,)` long tensor, read from `targets` / tensors where the
    dataset (or the one a `Subset` / `ConcatDataset` views) has them, else by loading each item."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([dataset_labels(d) for d in dataset.datasets])
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].long().reshape(-1)
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    samples = getattr(dataset, "samples", None)  # torchvision / our ImageFolder: (path, class) pairs
    if samples is not None and samples and isinstance(samples[0], (tuple, list)):
        return torch.as_tensor([int(s[1]) for s in samples], dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def largest_num_labeled(labels: Tensor, num_classes: int, held_out: int = 0, min_left: int = 0) -> int:
    """The largest `num_labeled` (a multiple of `num_classes`, possibly 0) that `stratified_indices` accepts on
    `labels` when `held_out` more images of every class must remain (validation) and at least `min_left` images in all
    must remain after both (one unlabeled batch): the number the messages suggest, so that it works when given."""
    counts = torch.bincount(labels.clamp(0, num_classes), minlength=num_classes + 1)[:num_classes]
    per_class = min(int(counts.min()) - held_out, (len(labels) - held_out * num_classes - min_left) // num_classes)
    return max(0, per_class) * num_classes


def _fewest(labels: Tensor, num_classes: int) -> str:
    counts = torch.bincount(labels.clamp(0, num_classes), minlength=num_classes + 1)[:num_classes]
    c = int(counts.argmin())
    return f"class {c} has {int(counts[c])} training images"


def _check_even_split(num_labeled: int, num_classes: int, most: int) -> None:
    """Raise `DataError` suggesting a working multiple of `num_classes` (at most `most`) when `num_labeled` is not."""
    if num_labeled < num_classes or num_labeled % num_classes:
        example = max(num_classes, min(num_labeled // num_classes * num_classes, most))
        raise DataError(
            f"num_labeled={num_labeled} cannot be split evenly over {num_classes} classes. Use a multiple of "
            f"{num_classes} (for example {example})."
        )


def stratified_indices(labels: Tensor, num_labeled: int, num_classes: int, seed: int) -> Tensor:
    """`num_labeled // num_classes` positions of each class, drawn at random by `seed`, sorted. Raises
    `DataError` naming the fix when `num_labeled` cannot be split evenly or a class has too few images; the value it
    suggests is one that works (`largest_num_labeled`)."""
    most = largest_num_labeled(labels, num_classes)
    _check_even_split(num_labeled, num_classes, most)
    if num_labeled > most:
        total = f"is more than the {len(labels)} training images" if num_labeled > len(labels) else "is too many"
        raise DataError(
            f"num_labeled={num_labeled} {total}: it takes {num_labeled // num_classes} of each class, and "
            f"{_fewest(labels, num_classes)}. Use at most {most}."
        )
    per_class = num_labeled // num_classes
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def check_split_sizes(labels: Tensor, num_classes: int, num_labeled: int, num_validation: int, batch_size: int) -> None:
    """Raise `DataError` naming a value that works when `num_labeled` labeled and `num_validation` validation images
    (the same number of each class) and one batch of `batch_size` unlabeled images do not fit in `labels`."""
    if num_validation % num_classes:
        raise DataError(
            f"num_validation={num_validation} cannot be split evenly over {num_classes} classes. Use a multiple of "
            f"{num_classes} (for example {num_validation // num_classes * num_classes})."
        )
    held_out = num_validation // num_classes
    most = largest_num_labeled(labels, num_classes, held_out, batch_size)
    if most < num_classes:  # not even one labeled image of each class fits beside the validation images
        per_class = -(-num_labeled // num_classes)
        if num_labeled <= largest_num_labeled(labels, num_classes, 0, batch_size):
            room = largest_num_labeled(labels, num_classes, per_class, batch_size)  # validation that fits beside
            fix = f"--data.num_validation {room}" + (" (no validation)" if not room else "")
        else:
            fix = (f"for example --data.num_labeled {num_classes} --data.num_validation "
                   f"{largest_num_labeled(labels, num_classes, 1, batch_size)}")
        raise DataError(
            f"num_validation={num_validation} leaves no room for num_labeled={num_labeled} labeled images and one "
            f"unlabeled batch of {batch_size} ({_fewest(labels, num_classes)}, {len(labels)} in all). Use {fix}."
        )
    _check_even_split(num_labeled, num_classes, most)
    if num_labeled > most:
        total = f"is more than the {len(labels)} training images" if num_labeled > len(labels) else "is too many"
        validation = (f", of which {held_out} per class are held out for validation (num_validation={num_validation})"
                      if held_out else "")
        raise DataError(
            f"num_labeled={num_labeled} {total}: it takes {num_labeled // num_classes} of each class, and "
            f"{_fewest(labels, num_classes)}{validation}, and one batch of {batch_size} must stay unlabeled. Use at "
            f"most {most}" + (", or lower --data.num_validation." if held_out else ".")
        )


class ImagesOnly(Dataset):
    """A view of a labeled dataset that yields only the images: the unlabeled pool cannot leak its labels."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        item = self.dataset[index]
        return item[0] if isinstance(item, (tuple, list)) else item


class PermutationStream(DistributedSampler):
    """Positions in a labeled set of `size` images for `num_batches` batches of `batch_size` per process, cut from
    one stream of back-to-back random permutations of the set (Salimans et al.'s scheme): every labeled image
    appears once before any appears again. With `batch_size == size` (100 labels, batches of 100) every batch holds
    the whole labeled set, each class equally often; independent draws would give one class 5 images and another
    15. Under DDP process r takes global batches r, r + W, r + 2W, ... of a stream that depends only on `seed` and
    the epoch, so the processes never share a batch. It is a `DistributedSampler` so that Lightning keeps it
    instead of sharding its output again."""

    def __init__(self, size: int, batch_size: int, num_batches: int, seed: int = 0) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            range(size), num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0, shuffle=True, seed=seed,
        )
        self.size, self.batch_size, self.num_batches = size, batch_size, num_batches

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # Lightning calls set_epoch
        total = len(self) * self.num_replicas
        stream = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(-(-total // self.size))])
        batches = stream[:total].view(-1, self.batch_size)  # the global batches, in order
        return iter(batches[self.rank :: self.num_replicas].flatten().tolist())


def shuffled_shard(size: int, seed: int) -> DistributedSampler:
    """A fresh random order of `size` items each epoch (seeded by `seed` and the epoch), this process's share of it
    under DDP: a shuffling `DistributedSampler` with a seed of its own, which Lightning keeps as it is. Two loaders
    over one dataset, each with its own sampler seed, give independent batches on every process (Lightning's own
    distributed samplers all share one seed, so two of them would give the same batches)."""
    distributed = dist.is_available() and dist.is_initialized()
    return DistributedSampler(range(size), num_replicas=dist.get_world_size() if distributed else 1,
                              rank=dist.get_rank() if distributed else 0, shuffle=True, seed=seed)


class SemiSupervised(ImageDataModule):
    """Wraps a labeled datamodule for semi-supervised learning.

    The training pool is the wrapped datamodule's training and validation images together. `num_labeled` of them
    (the same number per class, chosen by `seed`) keep their labels; `num_validation` others (also the same number
    per class) are held out, with their labels, for validation; the rest become the unlabeled pool, which yields
    images only. Validation never sees a test image and training never sees a validation image, so settings can
    be chosen on validation and the test set scored once, at the end; `test` uses the wrapped datamodule's full
    labeled test set.

    Training batches are dicts: `{"labeled": (images, labels), "unlabeled": images}`; one epoch is one pass over
    the unlabeled pool, with the labeled set reshuffled and repeated alongside. With `second_unlabeled_batch` they
    also hold `"unlabeled_2"`: a second unlabeled batch from an independent pass over the pool (Salimans et al.'s
    semi-supervised GAN trains its generator against it). With `with_unlabeled: false`
    batches are plain `(images, labels)` from the labeled set (the supervised-only baseline), with the same
    number of batches per epoch.

    Args:
        data: the labeled datamodule to split (MNIST, CIFAR10, Digits, an ImageFolder with class folders, ...).
            Its `batch_size` is the unlabeled batch size.
        num_labeled: labeled training images in all; must be a multiple of the number of classes.
        seed: seed of the choice of labeled images (runs with the same seed share the same labels).
        labeled_batch_size: labeled images per batch (default: the wrapped datamodule's batch size).
        with_unlabeled: include the unlabeled pool in the training batches.
        num_validation: labeled images held out of the training pool for validation (a multiple of the number of
            classes; 0: no validation). They are not in the unlabeled pool either.
        second_unlabeled_batch: add a second unlabeled batch, `"unlabeled_2"`, from an independently shuffled pass
            over the unlabeled pool (a technique that takes two steps per batch can give each step its own images).

    The DataLoader workers (`num_workers`, `multiprocessing_context`) are the wrapped datamodule's.
    """

    num_labeled: int
    """Labeled training images in all (`num_labeled // num_classes` per class)."""
    labeled_indices: Tensor | None
    """Positions of the labeled images in the training pool (wrapped train + val), sorted; after `setup`."""
    labeled_set: Dataset | None
    """The labeled pool: `(image, label)` items; after `setup`."""
    unlabeled_set: Dataset | None
    """The unlabeled pool: images only (their labels cannot leak); after `setup`."""
    validation_indices: Tensor | None
    """Positions of the held-out validation images in the training pool, sorted; after `setup`."""

    def __init__(
        self,
        data: ImageDataModule,
        num_labeled: int = 100,
        seed: int = 0,
        labeled_batch_size: int | None = None,
        with_unlabeled: bool = True,
        num_validation: int = 1000,
        second_unlabeled_batch: bool = False,
    ) -> None:
        super().__init__(batch_size=data.batch_size, num_workers=data.num_workers, drop_last=True,
                         multiprocessing_context=getattr(data, "multiprocessing_context", None))
        if num_labeled < 1:
            raise DataError(f"num_labeled must be positive, got {num_labeled}.")
        if labeled_batch_size is not None and labeled_batch_size < 1:
            raise DataError(f"labeled_batch_size must be positive, got {labeled_batch_size}.")
        if num_validation < 0:
            raise DataError(f"num_validation must be 0 or more, got {num_validation}.")
        self.data = data
        self.num_labeled = num_labeled
        self.seed = seed
        self.labeled_batch_size = labeled_batch_size or data.batch_size
        self.with_unlabeled = with_unlabeled
        self.num_validation = num_validation
        self.second_unlabeled_batch = second_unlabeled_batch
        self.image_shape = data.image_shape  # known now for torchvision sets; image folders know them after setup
        self.num_classes = data.num_classes
        self.labeled_indices = None
        self.validation_indices = None
        self.labeled_set = None
        self.unlabeled_set = None

    @property
    def reference_set(self) -> Dataset | None:
        """The unlabeled pool: what sample-quality metrics compare generated images with (images only)."""
        return self.unlabeled_set

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.labeled_set is not None:
            return
        self.data.setup(stage)
        self.image_shape, self.num_classes = self.data.image_shape, self.data.num_classes
        if not self.num_classes or self.num_classes < 2:
            raise DataError(
                f"{type(self.data).__name__} has no class labels (num_classes={self.num_classes}), so it cannot be "
                "split into labeled and unlabeled images. Use a labeled datamodule (MNIST, CIFAR10, Digits, an "
                "ImageFolder with one sub-folder per class)."
            )
        pool = ConcatDataset([self.data.train_set, self.data.val_set])
        labels = dataset_labels(pool)
        check_split_sizes(labels, self.num_classes, self.num_labeled, self.num_validation, self.batch_size)
        self.labeled_indices = stratified_indices(labels, self.num_labeled, self.num_classes, self.seed)
        taken = torch.zeros(len(pool), dtype=torch.bool)
        taken[self.labeled_indices] = True
        if self.num_validation:  # drawn from what the labeled set left, with a stream of its own
            rest = torch.nonzero(~taken).flatten()
            picked = stratified_indices(labels[rest], self.num_validation, self.num_classes, self.seed + 1)
            self.validation_indices = rest[picked]
            taken[self.validation_indices] = True
            self.val_set = Subset(pool, self.validation_indices.tolist())
        self.labeled_set = Subset(pool, self.labeled_indices.tolist())
        self.unlabeled_set = ImagesOnly(Subset(pool, torch.nonzero(~taken).flatten().tolist()))
        self.train_set = self.labeled_set
        self.test_set = self.data.test_set
        if len(self.unlabeled_set) < self.batch_size:
            raise DataError(
                f"only {len(self.unlabeled_set)} unlabeled images remain after taking {self.num_labeled} labeled "
                f"ones, fewer than one batch of {self.batch_size}. Lower num_labeled or the batch size."
            )

    def batches_per_epoch(self) -> int:
        """Training batches per process: as many as the unlabeled loader gives (Lightning shards it under DDP)."""
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return math.ceil(len(self.unlabeled_set) / world) // self.batch_size

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set, train=False) if self.val_set is not None else []

    def train_dataloader(self) -> Any:
        # the stream's seed comes from the global generator, so `seed_everything` makes it reproducible
        seed = int(torch.empty((), dtype=torch.int64).random_(2**31).item())
        labeled = make_loader(
            self.labeled_set,
            batch_size=self.labeled_batch_size,
            sampler=PermutationStream(len(self.labeled_set), self.labeled_batch_size, self.batches_per_epoch(), seed),
            drop_last=True,
            num_workers=self.num_workers,
            multiprocessing_context=self.multiprocessing_context,
        )
        if not self.with_unlabeled:
            return labeled
        loaders = {"labeled": labeled, "unlabeled": self._loader(self.unlabeled_set, train=True)}
        if self.second_unlabeled_batch:  # its own sampler seed, so its batches are independent of "unlabeled"
            loaders["unlabeled_2"] = make_loader(
                self.unlabeled_set, batch_size=self.batch_size, drop_last=True,
                sampler=shuffled_shard(len(self.unlabeled_set), int(torch.randint(2**31, ()).item())),
                num_workers=self.num_workers, multiprocessing_context=self.multiprocessing_context,
            )
        return loaders


__all__ = ["ImagesOnly", "PermutationStream", "SemiSupervised", "check_split_sizes", "dataset_labels",
           "largest_num_labeled", "shuffled_shard", "stratified_indices"]
