"""Sinusoid regression tasks (Finn, Abbeel & Levine 2017, section 5.1), generated on the fly.

Each task is a sine wave y = A sin(x - phi) with the amplitude A uniform in [0.1, 5] and the phase phi uniform in
[0, pi]; its K support points and its query points have x uniform in [-5, 5]. A batch is a meta-batch of T tasks:
`(support_x, support_y, query_x, query_y)` of shapes `(T, K, 1)`, `(T, K, 1)`, `(T, Q, 1)`, `(T, Q, 1)`.

Task i of a split is a function of (`seed`, the split, i) alone (`datamodules.episodes.TaskData`): the validation
and test tasks are fixed, and training draws new tasks every epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from datamodules.base import DataError
from datamodules.episodes import Task, TaskData, TaskMaker, task_rng


class SineMaker(TaskMaker):
    """Sine tasks: `shots` support points and `queries[split]` query points each."""

    def __init__(self, shots: int, queries: dict[str, int], amplitude: tuple[float, float],
                 phase: tuple[float, float], x_range: tuple[float, float], seed: int) -> None:
        self.shots, self.queries, self.seed = shots, queries, seed
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    def wave(self, split: str, index: int) -> tuple[float, float]:
        """(amplitude, phase) of task `index` of `split`."""
        rng = task_rng(self.seed, split, index)
        return float(rng.uniform(*self.amplitude)), float(rng.uniform(*self.phase))

    def make(self, split: str, index: int) -> Task:
        amplitude, phase = self.wave(split, index)
        rng = task_rng(self.seed, split, index)
        rng.uniform(size=2)  # the two draws of `wave`
        x = torch.as_tensor(rng.uniform(*self.x_range, size=(self.shots + self.queries[split], 1)),
                            dtype=torch.float32)
        y = amplitude * torch.sin(x - phase)
        k = self.shots
        return x[:k], y[:k], x[k:], y[k:]


class Sinusoid(TaskData):
    """Sinusoid regression tasks for MAML (see the module's docstring).

    Args:
        shots: K, the support points of a task.
        queries: query points of a training task (the paper: K).
        eval_queries: query points of a validation or test task (default 100: a low-noise MSE per task).
        amplitude: range of the amplitude A.
        phase: range of the phase phi.
        x_range: range of the inputs x.
        meta_batch_size: tasks per meta-batch (the paper: 25; over all processes, see `TaskData`).
        **kwargs: `batches_per_epoch`, `val_tasks`, `test_tasks`,
            `eval_batch_size`, `seed`, `num_workers` (see `TaskData`).
    """

    ways = None  # regression: no classes

    def __init__(
        self,
        shots: int = 10,
        queries: int = 10,
        eval_queries: int = 100,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        meta_batch_size: int = 25,
        **kwargs: Any,
    ) -> None:
        super().__init__(meta_batch_size=meta_batch_size, **kwargs)
        if shots < 1 or queries < 1 or eval_queries < 1:
            raise DataError(f"shots, queries and eval_queries must be 1 or more, got {shots}, {queries}, "
                            f"{eval_queries}.")
        for name, (low, high) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if not low <= high:
                raise DataError(f"{name} must be a range (low, high) with low <= high, got {(low, high)}.")
        self.shots, self.queries, self.eval_queries = shots, queries, eval_queries
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)
        self.input_shape = (1,)
        self.maker = SineMaker(shots, {"train": queries, "val": eval_queries, "test": eval_queries},
                               self.amplitude, self.phase, self.x_range, self.seed)


__all__ = ["SineMaker", "Sinusoid"]
