"""Few-shot tasks as data, for meta-learning (MAML): N-way K-shot classification tasks drawn from any labeled image
datamodule.

A task is `(support_x, support_y, query_x, query_y)`: N classes drawn at random (their order gives the labels
0..N-1, new in every task), K support images and `queries` query images of each. A batch is a meta-batch of T tasks,
each tensor with a leading task dimension: `(T, N*K, C, H, W)`, `(T, N*K)`, `(T, N*Q, C, H, W)`, `(T, N*Q)`.

- **Disjoint classes.** The classes of the wrapped datamodule (all its labeled images: training, validation and
  test splits pooled) are partitioned by `split_seed` into meta-train, meta-val (`val_classes`) and meta-test
  (`test_classes`) classes, given as counts or as fractions. Meta-validation and meta-test measure classes the
  meta-learner never trained on. On Omniglot the classes are the characters (the two minimal background splits:
  242), so the meta-test characters are held out of training and validation.
- **Rotations** (`rotations: true`, Santoro et al. 2016, Finn et al. 2017): each meta-train class turned by 90, 180
  and 270 degrees is three more classes. Only meta-train classes are turned, after the partition, so no turned copy
  of a meta-val or meta-test class is ever trained on. (Turn Omniglot's own `rotations` off: that one turns its
  training characters before this partition.)
- **Lake's one-shot runs** (`test_set: lake_runs`, Omniglot only): the meta-test set is Lake et al.'s 20 runs of
  20-way 1-shot classification on the evaluation alphabets (20 tasks of 20 support and 20 query images).
- **Deterministic tasks.** Task i of a split is a function of (`seed`, the split, i) alone: the validation and test
  tasks are the same in every run and every process count, and DDP shards them by index (each process its own
  tasks). Training task ids run on from epoch to epoch (epoch e draws tasks e*M .. (e+1)*M - 1 of the training
  stream), and process r of W takes every W-th of them: the W processes together see exactly the meta-batches one
  process would, each split across them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler

from datamodules.base import DataError, ImageDataModule, StartMethod, check_start_method, make_loader
from datamodules.omniglot import Omniglot, OneShotRuns
from datamodules.semi_supervised import dataset_labels

Task = tuple[Tensor, Tensor, Tensor, Tensor]
SPLITS = {"train": 0, "val": 1, "test": 2}


class TaskMaker:
    """Makes task `index` of a split (`train`, `val`, `test`) from the seed alone (subclasses implement `make`)."""

    def make(self, split: str, index: int) -> Task:
        raise NotImplementedError


class TaskSet(Dataset):
    """Tasks 0..length-1 of one split of a `TaskMaker` (any index is allowed: the training sampler runs past
    `length` from epoch to epoch)."""

    def __init__(self, maker: TaskMaker, split: str, length: int) -> None:
        self.maker, self.split, self.length = maker, split, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Task:
        return self.maker.make(self.split, int(index))


class TaskSampler(DistributedSampler):
    """Training task ids: epoch e covers ids e*M .. (e+1)*M - 1 (M = `tasks_per_epoch`, over all processes) and
    process r of W takes ids r, r + W, ... of them. A `DistributedSampler` (Lightning calls `set_epoch`, and keeps it
    instead of sharding its output again)."""

    def __init__(self, tasks_per_epoch: int) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(range(tasks_per_epoch), num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=False)
        self.tasks_per_epoch = tasks_per_epoch

    def __len__(self) -> int:
        return self.tasks_per_epoch // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        first = self.epoch * self.tasks_per_epoch
        return iter(range(first + self.rank, first + self.tasks_per_epoch, self.num_replicas))


def task_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of task `index` of `split`: depends on nothing else."""
    return np.random.default_rng([seed, SPLITS[split], index])


def count_of(value: int | float, total: int, option: str) -> int:
    """A number of classes given as a count (an int) or as a fraction of `total` (a float in [0, 1))."""
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{option}={value}: give a count of classes (an integer) or a fraction in [0, 1).")
        return int(round(value * total))
    if value < 0:
        raise DataError(f"{option} must be 0 or more, got {value}.")
    return int(value)


class TaskData(L.LightningDataModule):
    """Base of the task datamodules (`Episodes`, `Sinusoid`): the loaders of meta-batches of tasks. Subclasses set
    `self.maker` (a `TaskMaker`) in `setup`.

    Args:
        meta_batch_size: tasks per meta-batch (over all processes: under DDP each of W processes takes
            meta_batch_size / W of them, and DDP averages the meta-gradient).
        batches_per_epoch: meta-batches (meta-updates) per training epoch.
        val_tasks: validation tasks (fixed by `seed`).
        test_tasks: test tasks (fixed by `seed`).
        eval_batch_size: tasks per evaluation batch (default: `meta_batch_size`).
        seed: seed of the tasks: task i of a split depends only on it, the split and i.
        num_workers: DataLoader worker processes (0 makes the tasks in the main process).
        multiprocessing_context: how the workers start: `spawn`, `forkserver` or `fork` (default: the platform's).
    """

    ways: int | None
    shots: int
    queries: int

    def __init__(self, meta_batch_size: int = 32, batches_per_epoch: int = 100, val_tasks: int = 100,
                 test_tasks: int = 600, eval_batch_size: int | None = None, seed: int = 0, num_workers: int = 0,
                 multiprocessing_context: StartMethod | None = None) -> None:
        super().__init__()
        for name, value in (("meta_batch_size", meta_batch_size), ("batches_per_epoch", batches_per_epoch),
                            ("test_tasks", test_tasks), ("eval_batch_size", eval_batch_size or 1)):
            if value < 1:
                raise DataError(f"{name} must be 1 or more, got {value}.")
        if val_tasks < 0:
            raise DataError(f"val_tasks must be 0 or more, got {val_tasks}.")
        check_start_method(multiprocessing_context)
        self.meta_batch_size, self.batches_per_epoch = meta_batch_size, batches_per_epoch
        self.val_tasks, self.test_tasks = val_tasks, test_tasks
        self.eval_batch_size = eval_batch_size or meta_batch_size
        self.seed, self.num_workers, self.multiprocessing_context = seed, num_workers, multiprocessing_context
        self.maker: TaskMaker | None = None

    def _world(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def train_dataloader(self) -> Any:
        world = self._world()
        if self.meta_batch_size % world:
            raise DataError(f"meta_batch_size={self.meta_batch_size} cannot be split over {world} processes: use a "
                            f"multiple of {world}.")
        tasks = self.meta_batch_size * self.batches_per_epoch
        return make_loader(TaskSet(self.maker, "train", tasks), batch_size=self.meta_batch_size // world,
                           sampler=TaskSampler(tasks), drop_last=True, num_workers=self.num_workers,
                           multiprocessing_context=self.multiprocessing_context)

    def _eval_loader(self, tasks: Dataset) -> Any:
        return make_loader(tasks, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                           multiprocessing_context=self.multiprocessing_context)

    def val_dataloader(self) -> Any:
        return self._eval_loader(TaskSet(self.maker, "val", self.val_tasks)) if self.val_tasks else []

    def test_dataloader(self) -> Any:
        return self._eval_loader(TaskSet(self.maker, "test", self.test_tasks))


class EpisodeMaker(TaskMaker):
    """N-way K-shot tasks from `source`'s items: `classes[split]` is a list of (item positions, quarter turns)."""

    def __init__(self, source: Dataset, classes: dict[str, list[tuple[Tensor, int]]], ways: int, shots: int,
                 queries: dict[str, int], seed: int) -> None:
        self.source, self.classes, self.ways, self.shots = source, classes, ways, shots
        self.queries, self.seed = queries, seed

    def make(self, split: str, index: int) -> Task:
        rng = task_rng(self.seed, split, index)
        classes = self.classes[split]
        chosen = rng.choice(len(classes), self.ways, replace=False)  # their order gives the labels 0..N-1
        k, q = self.shots, self.queries[split]
        support, query = [], []
        for position in chosen:
            members, turns = classes[position]
            picked = members[torch.as_tensor(rng.choice(len(members), k + q, replace=False))]
            images = [torch.rot90(self.source[int(i)][0], turns, dims=(1, 2)) for i in picked]
            support += images[:k]
            query += images[k:]
        labels = torch.arange(self.ways)
        return (torch.stack(support), labels.repeat_interleave(k), torch.stack(query), labels.repeat_interleave(q))


class RunMaker(TaskMaker):
    """Lake's one-shot runs as tasks: run r is task r, its 20 training images the support set, its 20 test images
    the queries (labels: the support image each must be matched with)."""

    def __init__(self, runs: OneShotRuns) -> None:
        self.runs = runs

    def make(self, split: str, index: int) -> Task:
        r = self.runs
        support, query = (r.runs == index) & r.support, (r.runs == index) & ~r.support
        return r.images[support], r.labels[support], r.images[query], r.labels[query]


class Episodes(TaskData):
    """N-way K-shot classification tasks from a labeled image datamodule (see the module's docstring).

    Args:
        data: the labeled datamodule (Omniglot, MNIST, Digits, an ImageFolder with class folders, ...); its
            images of every split are pooled and its classes partitioned.
        ways: N, the classes of a task.
        shots: K, the support images of each class.
        queries: query images of each class in a training task.
        eval_queries: query images of each class in a validation or test task (default: `queries`).
        val_classes: classes held out for meta-validation: a count, or a fraction of the classes.
        test_classes: classes held out for meta-test: a count, or a fraction of the classes.
        split_seed: seed of the partition of the classes.
        rotations: add each meta-train class turned by 90, 180 and 270 degrees as three new classes.
        test_set: `tasks` (tasks of the meta-test classes) or `lake_runs` (Omniglot: Lake et al.'s 20 runs of
            20-way 1-shot classification, which need `ways: 20`, `shots: 1`).
        **kwargs: `meta_batch_size`, `batches_per_epoch`, `val_tasks`, `test_tasks`, `eval_batch_size`, `seed`,
            `num_workers` (see `TaskData`).
    """

    def __init__(
        self,
        data: ImageDataModule,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        eval_queries: int | None = None,
        val_classes: int | float = 0.1,
        test_classes: int | float = 0.2,
        split_seed: int = 0,
        rotations: bool = False,
        test_set: Literal["tasks", "lake_runs"] = "tasks",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if ways < 2:
            raise DataError(f"ways must be 2 or more, got {ways}.")
        if shots < 1 or queries < 1 or (eval_queries is not None and eval_queries < 1):
            raise DataError(f"shots, queries and eval_queries must be 1 or more, got {shots}, {queries}, "
                            f"{eval_queries}.")
        if test_set == "lake_runs" and (ways, shots) != (20, 1):
            raise DataError(f"test_set=lake_runs holds Lake et al.'s 20-way 1-shot runs, but the tasks are "
                            f"{ways}-way {shots}-shot: use `--data.ways 20 --data.shots 1`, or `--data.test_set "
                            "tasks`.")
        if isinstance(data, Omniglot) and data.rotations:
            raise DataError("Episodes partitions Omniglot's characters itself: turn Omniglot's `rotations` off "
                            "(`--data.data.rotations false`) and Episodes' on (`--data.rotations true`), which turns "
                            "only the meta-train characters.")
        self.data, self.ways, self.shots, self.queries = data, ways, shots, queries
        self.eval_queries = eval_queries or queries
        self.val_classes, self.test_classes, self.split_seed = val_classes, test_classes, split_seed
        self.rotations, self.test_set = rotations, test_set
        self.image_shape = data.image_shape
        self.class_splits: dict[str, list[int]] = {}
        """The wrapped data's classes of each split (`train`, `val`, `test`), after `setup`."""

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.maker is not None:
            return
        self.data.setup(stage)
        self.image_shape = self.data.image_shape
        name = type(self.data).__name__
        if self.test_set == "lake_runs" and not isinstance(self.data.test_set, OneShotRuns):
            raise DataError(f"test_set=lake_runs needs Omniglot (Lake et al.'s runs are its test set), not {name}. "
                            "Use `--data.test_set tasks`.")
        pooled = [s for s in (self.data.train_set, self.data.val_set, self.data.test_set)
                  if s is not None and not isinstance(s, OneShotRuns)]
        pooled = [s for i, s in enumerate(pooled) if all(s is not t for t in pooled[:i])]  # test_set may be val_set
        source = pooled[0] if len(pooled) == 1 else ConcatDataset(pooled)
        labels = dataset_labels(source)
        present = labels.unique()
        n_test = count_of(self.test_classes, len(present), "test_classes")
        n_val = count_of(self.val_classes, len(present), "val_classes")
        if n_test + n_val >= len(present):
            raise DataError(f"val_classes={self.val_classes} and test_classes={self.test_classes} hold out "
                            f"{n_val + n_test} of {name}'s {len(present)} classes, leaving none to meta-train on. "
                            "Hold out fewer.")
        order = present[torch.randperm(len(present), generator=torch.Generator().manual_seed(self.split_seed))]
        self.class_splits = {"test": order[:n_test].tolist(), "val": order[n_test:n_test + n_val].tolist(),
                             "train": order[n_test + n_val:].tolist()}
        members = {c: torch.nonzero(labels == c).flatten() for c in present.tolist()}
        queries = {"train": self.queries, "val": self.eval_queries, "test": self.eval_queries}
        classes: dict[str, list[tuple[Tensor, int]]] = {}
        for split, chosen in self.class_splits.items():
            if split == "val" and not self.val_tasks or split == "test" and self.test_set != "tasks":
                continue
            if split == "val" and not chosen:
                raise DataError(f"val_tasks={self.val_tasks} but val_classes={self.val_classes} holds out no class: "
                                "hold out classes for validation, or give `--data.val_tasks 0`.")
            self._check(split, chosen, members, queries[split], name)
            turns = range(4) if self.rotations and split == "train" else range(1)
            classes[split] = [(members[c], k) for k in turns for c in chosen]
        self.maker = EpisodeMaker(source, classes, self.ways, self.shots, queries, self.seed)
        if self.test_set == "lake_runs":
            self.runs = RunMaker(self.data.test_set)
            self.test_tasks = int(self.data.test_set.runs.max()) + 1

    def _check(self, split: str, chosen: list[int], members: dict[int, Tensor], queries: int, name: str) -> None:
        option = {"train": "the rest", "val": "val_classes", "test": "test_classes"}[split]
        if len(chosen) < self.ways:
            raise DataError(f"ways={self.ways} is more than the {len(chosen)} meta-{split} classes of {name} "
                            f"({option}). Use at most {len(chosen)} ways, or give the split more classes.")
        fewest = min(len(members[c]) for c in chosen)
        if self.shots + queries > fewest:
            raise DataError(f"shots + queries = {self.shots} + {queries} is more than the {fewest} images of the "
                            f"smallest meta-{split} class of {name}. Use shots + queries <= {fewest}.")

    def test_dataloader(self) -> Any:
        if self.test_set == "lake_runs":
            return self._eval_loader(TaskSet(self.runs, "test", self.test_tasks))
        return super().test_dataloader()


__all__ = ["EpisodeMaker", "Episodes", "RunMaker", "TaskData", "TaskMaker", "TaskSampler", "TaskSet", "task_rng"]
