"""Batches for metric learning from any labeled datamodule: P classes x K images each.

Mining (triplets, pairs) needs every batch to hold several images of each of its classes; a shuffled batch of 32
MNIST digits has about three of each, a shuffled batch of 32 of Omniglot's 242 characters rarely two of one.
`ClassBatches` wraps a labeled datamodule (MNIST, CIFAR10, Digits, an ImageFolder with class folders, Omniglot)
and draws each training batch as P classes at random, then K images of each at random (Hermans, Beyer & Leibe 2017).
Pairs for a Siamese network are the pairs of such a batch.

`train_classes` / `eval_classes` keep only some classes for training and for validation and test: training on
digits 0-4 and evaluating on 5-9 measures how the embedding does on classes it never saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Subset

from datamodules.base import DataError, ImageDataModule, make_loader
from datamodules.semi_supervised import dataset_labels


class ClassBatchSampler(DistributedSampler):
    """Positions of `num_batches` batches of P classes x K images per process, over items with classes `labels`.

    Global batch b draws P distinct classes and K distinct images of each, from a stream that depends only on
    `seed`, the epoch and b; process r takes the global batches r, r + W, r + 2W, ..., so under DDP the processes
    never share a batch and together see the batches one process would see in W times the steps. A
    `DistributedSampler`, so that Lightning keeps it instead of sharding its output again."""

    def __init__(self, labels: Tensor, classes_per_batch: int, samples_per_class: int, num_batches: int,
                 seed: int = 0) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(range(len(labels)), num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=True, seed=seed)
        self.classes_per_batch, self.samples_per_class = classes_per_batch, samples_per_class
        self.num_batches = num_batches
        self.members = [torch.nonzero(labels == c).flatten() for c in labels.unique()]

    def __len__(self) -> int:
        return self.num_batches * self.classes_per_batch * self.samples_per_class

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # Lightning calls set_epoch
        batches = []
        for b in range(self.num_batches * self.num_replicas):
            classes = torch.randperm(len(self.members), generator=generator)[: self.classes_per_batch]
            k = self.samples_per_class
            batch = [self.members[c][torch.randperm(len(self.members[c]), generator=generator)[:k]]
                     for c in classes.tolist()]
            if b % self.num_replicas == self.rank:
                batches.append(torch.cat(batch))
        return iter(torch.cat(batches).tolist())


def keep_classes(dataset: Dataset, classes: list[int] | None) -> Dataset:
    """The items of `dataset` whose class is in `classes` (all items when None)."""
    if classes is None:
        return dataset
    labels = dataset_labels(dataset)
    keep = torch.isin(labels, torch.as_tensor(classes, dtype=labels.dtype))
    return Subset(dataset, torch.nonzero(keep).flatten().tolist())


class ClassBatches(ImageDataModule):
    """A labeled datamodule's images in P x K training batches, for metric learning.

    Args:
        data: the labeled datamodule (MNIST, CIFAR10, Digits, an ImageFolder with class folders, Omniglot, ...).
            Its `batch_size` is the evaluation batch size; its validation and test sets are used as they are
            (restricted to `eval_classes`).
        classes_per_batch: P, the classes of a training batch.
        samples_per_class: K, the images of each class in a training batch (at least 2: a class needs a pair).
        train_classes: train on these classes only (default: all).
        eval_classes: validate and test on these classes only (default: all); give the classes left out of
            `train_classes` to measure the embedding on classes it never saw. (A test set of one-shot episodes,
            such as Omniglot's, holds classes of its own: leave it out there.)
        batches_per_epoch: training batches per epoch (default: as many as cover the training images once).
        seed: seed of the batches (with the epoch); `seed_everything` sets it when left out.
    """

    def __init__(
        self,
        data: ImageDataModule,
        classes_per_batch: int = 8,
        samples_per_class: int = 4,
        train_classes: list[int] | None = None,
        eval_classes: list[int] | None = None,
        batches_per_epoch: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(batch_size=data.batch_size, num_workers=data.num_workers, drop_last=True,
                         multiprocessing_context=data.multiprocessing_context)
        if classes_per_batch < 2:
            raise DataError(f"classes_per_batch must be 2 or more (a batch needs negatives), got {classes_per_batch}.")
        if samples_per_class < 2:
            raise DataError(f"samples_per_class must be 2 or more (a class needs a pair), got {samples_per_class}.")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise DataError(f"batches_per_epoch must be 1 or more, got {batches_per_epoch}.")
        self.data = data
        self.classes_per_batch, self.samples_per_class = classes_per_batch, samples_per_class
        self.train_classes, self.eval_classes = train_classes, eval_classes
        self.batches_per_epoch, self.seed = batches_per_epoch, seed
        self.image_shape, self.num_classes = data.image_shape, data.num_classes
        self.train_labels: Tensor | None = None

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.data.setup(stage)
        self.image_shape, self.num_classes = self.data.image_shape, self.data.num_classes
        for option, classes in (("train_classes", self.train_classes), ("eval_classes", self.eval_classes)):
            unknown = sorted(set(classes or []) - set(range(self.num_classes or 0)))
            if unknown:
                raise DataError(f"{option} {unknown} are not classes of {type(self.data).__name__}, whose classes "
                                f"are 0..{(self.num_classes or 1) - 1}.")
        self.train_set = keep_classes(self.data.train_set, self.train_classes)
        self.train_labels = dataset_labels(self.train_set)
        counts = torch.bincount(self.train_labels)
        counts = counts[counts > 0]
        name = type(self.data).__name__
        if len(counts) < self.classes_per_batch:
            raise DataError(f"classes_per_batch={self.classes_per_batch} is more than the {len(counts)} classes "
                            f"{name} trains on. Use at most {len(counts)}.")
        fewest = int(counts.min())
        if fewest < self.samples_per_class:
            raise DataError(f"samples_per_class={self.samples_per_class} is more than the {fewest} training images "
                            f"of {name}'s smallest class. Use at most {fewest}.")
        self.val_set = keep_classes(self.data.val_set, self.eval_classes)
        self.test_set = keep_classes(self.data.test_set, self.eval_classes)

    def num_batches(self) -> int:
        """Training batches per process and epoch."""
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return max(1, len(self.train_set) // (self.classes_per_batch * self.samples_per_class * world))

    def train_dataloader(self) -> Any:
        seed = self.seed if self.seed is not None else int(torch.empty((), dtype=torch.int64).random_(2**31).item())
        sampler = ClassBatchSampler(self.train_labels, self.classes_per_batch, self.samples_per_class,
                                    self.num_batches(), seed)
        return make_loader(self.train_set, batch_size=self.classes_per_batch * self.samples_per_class,
                           sampler=sampler, drop_last=True, num_workers=self.num_workers,
                           multiprocessing_context=self.multiprocessing_context)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set, train=False) if self.val_set is not None else []

    def predict_dataloader(self) -> Any:
        return self.test_dataloader()


__all__ = ["ClassBatchSampler", "ClassBatches", "keep_classes"]
