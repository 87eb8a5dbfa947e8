"""What a run needs to be stopped by a cluster and continued exactly where it stopped.

- The preemption signal: SLURM sends the job's requeue signal (`SIGUSR1` unless `SLURMEnvironment(requeue_signal=...)`
  says otherwise; `#SBATCH --signal=SIGUSR1@90` asks for it 90 s before the time limit), and `requeue_slurm_job`
  puts the job back in the queue as Lightning's own SLURM handler does (`scontrol requeue <job id>`).
  `callbacks.RunCheckpoint` acts on the signal at the end of the current step on every process, not inside the
  signal handler (Lightning's saves from the handler, in the middle of whatever the process was doing: Lightning
  issue #21406).
- Finding the checkpoint again: a requeued SLURM job runs the same command, without `--ckpt_path`; the run writes
  `slurm-<job id>.last` (the path of its `last.ckpt`) in `default_root_dir`, and the CLI resumes from it when
  `SLURM_RESTART_COUNT` says the job was requeued (`requeued_checkpoint`).
- The random numbers: `rng_state`/`set_rng_state` save and restore each process's generators (torch, CUDA, numpy,
  Python) as plain values, so a resumed run draws the same noise as an uninterrupted one.
- The place in the epoch: `make_resumable` turns a training DataLoader into one whose `state_dict` records the
  batches of the epoch done, so that Lightning restores it and the resumed epoch continues with the next batch
  instead of starting the epoch's data again (the skipped batches' indices are drawn, their images never loaded).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset


# ---- SLURM ---------------------------------------------------------------------------------------------------------
def slurm_job_id() -> str | None:
    """The SLURM job id (`<array job>_<task>` for an array task), or None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def is_requeued_slurm_job() -> bool:
    """Whether this is a SLURM job that was requeued (SLURM counts the restarts in `SLURM_RESTART_COUNT`)."""
    try:
        return slurm_job_id() is not None and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


def preemption_signal(trainer: L.Trainer) -> tuple[signal.Signals | None, bool]:
    """The signal that announces preemption, and whether to requeue the job when it comes: the SLURM environment's
    requeue signal and its `auto_requeue` under SLURM, else `SIGUSR1` and no requeue (None where there is no such
    signal, on Windows)."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if isinstance(environment, SLURMEnvironment):
        return environment.requeue_signal, bool(environment.auto_requeue)
    return getattr(signal, "SIGUSR1", None), False


def requeue_slurm_job() -> bool:
    """`scontrol requeue <this job>`, as Lightning's SLURM signal handler runs it. Returns whether it worked."""
    job_id = slurm_job_id()
    if job_id is None or not re.fullmatch(r"[0-9_]+", job_id):
        rank_zero_warn(f"Not requeued: no usable SLURM job id ({job_id!r}).")
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        rank_zero_warn(f"Requeuing SLURM job {job_id} failed: {error}. Resubmit it with `--ckpt_path last`.")
        return False
    if result.returncode != 0:
        rank_zero_warn(f"Requeuing SLURM job {job_id} failed (scontrol: {result.stderr.strip() or result.returncode})."
                       " Resubmit it with `--ckpt_path last`.")
        return False
    rank_zero_info(f"Requeued SLURM job {job_id}: it resumes from the checkpoint when it starts again.")
    return True


def pointer_path(root: str | os.PathLike, job_id: str) -> Path:
    """The file in `root` (the run's `default_root_dir`) that names the `last.ckpt` of SLURM job `job_id`."""
    return Path(root) / f"slurm-{job_id}.last"


def write_pointer(root: str | os.PathLike, checkpoint: str | os.PathLike) -> None:
    """Record, for this SLURM job, where its `last.ckpt` is (written whole, then renamed into place)."""
    job_id = slurm_job_id()
    if job_id is None:
        return
    path = pointer_path(root, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(os.path.abspath(checkpoint) + "\n")
    os.replace(partial, path)


def requeued_checkpoint(root: str | os.PathLike) -> Path | None:
    """In a requeued SLURM job: the `last.ckpt` it wrote before, if it exists; else None."""
    job_id = slurm_job_id()
    if not is_requeued_slurm_job() or job_id is None:
        return None
    try:
        found = Path(pointer_path(root, job_id).read_text().strip())
    except OSError:
        return None
    return found if found.is_file() else None


# ---- random number generators ------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's random generators as plain values (tensors, ints, floats, tuples: a weights-only checkpoint
    holds them)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                       int(has_gauss), float(cached)),
             "python": (int(version), tuple(int(v) for v in internal), gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(trainer: L.Trainer) -> list[dict[str, Any]]:
    """Every process's `rng_state`, in global rank order (all processes must call it together)."""
    mine = rng_state()
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [mine]
    everyone: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(everyone, mine)
    return everyone


# ---- the place in the epoch -------------------------------------------------------------------------------------
class _SkipFirst:
    """A batch sampler without its first `skip` batches (their indices are drawn, so the rest is the same)."""

    def __init__(self, batches: Any, skip: int) -> None:
        self.batches, self.skip = batches, skip

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.batches)
        for _ in range(self.skip):
            if next(iterator, None) is None:
                break
        return iterator

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.skip)


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning checkpoints and restores (it has `state_dict`/`load_state_dict`): the state is the
    number of batches of the current epoch done; restored, the next pass skips that many batches of its sampler.
    `make_resumable` gives an existing loader this class; its constructor is DataLoader's."""

    _fit_trainer: L.Trainer | None = None
    _skip: int = 0
    _skipping: bool = False

    def state_dict(self) -> dict[str, int]:
        trainer = self._fit_trainer
        if trainer is None:
            return {"batches_done": 0}
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if done >= trainer.num_training_batches:  # saved at the end of the epoch: the next one starts at 0
            done = 0
        return {"epoch": int(trainer.current_epoch), "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = int(state.get("batches_done", 0))
        sampler = getattr(self, "sampler", None)
        if self._skip and "epoch" in state and hasattr(sampler, "set_epoch"):  # the interrupted epoch's order, set
            sampler.set_epoch(int(state["epoch"]))  # before workers draw their first indices

    @property
    def _index_sampler(self) -> Any:
        sampler = super()._index_sampler
        return _SkipFirst(sampler, self._skip) if self._skipping and self._skip else sampler

    def _get_iterator(self) -> Any:
        self._skipping = True
        try:
            return super()._get_iterator()
        finally:
            self._skipping, self._skip = False, 0


def make_resumable(loader: Any, trainer: L.Trainer) -> Any:
    """`loader` as a `ResumableLoader` bound to `trainer`, when it is a plain map-style DataLoader that Lightning
    cannot resume mid-epoch (no `state_dict` of its own); anything else is returned unchanged."""
    if (not isinstance(loader, DataLoader) or hasattr(loader, "state_dict")
            or isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None):
        return loader
    cls = type(loader)
    resumable = type(f"Resumable{cls.__name__}", (ResumableLoader, cls), {"_fit_trainer": trainer})
    loader.__class__ = resumable
    return loader


class resumable_train_data:  # noqa: N801  (used like a function: installed, then removed)
    """Make the training loaders of `trainer`'s fit resumable mid-epoch: the `train_dataloader` of its datamodule
    (else of its module) is wrapped for the fit and returns its loaders through `make_resumable`."""

    def __init__(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.utilities.model_helpers import is_overridden

        self.owner: Any = None
        for owner, parent in ((trainer.datamodule, L.LightningDataModule), (pl_module, L.LightningModule)):
            if owner is not None and is_overridden("train_dataloader", owner, parent):
                self.owner = owner
                break
        if self.owner is None:
            return
        original = self.owner.train_dataloader

        def train_dataloader() -> Any:
            loaders = original()
            if isinstance(loaders, dict):
                return {k: make_resumable(v, trainer) for k, v in loaders.items()}
            if isinstance(loaders, (list, tuple)):
                return type(loaders)(make_resumable(v, trainer) for v in loaders)
            return make_resumable(loaders, trainer)

        train_dataloader.__wrapped__ = original  # type: ignore[attr-defined]
        self.owner.train_dataloader = train_dataloader

    def remove(self) -> None:
        if self.owner is not None and "train_dataloader" in vars(self.owner):
            del self.owner.train_dataloader
        self.owner = None
