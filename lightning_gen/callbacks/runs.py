"""What the CLI adds to every run: checkpoints that survive interruption, the run's config in its own folder and in
W&B, PNG output for `predict`."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.preemption import (
    gather_rng_states,
    preemption_signal,
    requeue_slurm_job,
    resumable_train_data,
    set_rng_state,
    slurm_job_id,
    write_pointer,
)
from lightning_gen.core.runs import image_grid, predictions_folder, run_dir

log = logging.getLogger(__name__)

_SIGTERM, _PREEMPT, _SIGINT = 1, 2, 3  # what stops a run, as all processes agree on it (the larger wins)
RNG_KEY = "lightning_gen_rng"  # in a checkpoint: every process's random generators, in rank order
_STOP_NAMES = {_SIGTERM: "SIGTERM", _PREEMPT: "preemption signal", _SIGINT: "Ctrl-C"}


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus what a long run needs.

    - Keeps `last.ckpt` (what `fit --ckpt_path last` resumes).
    - Ctrl-C (SIGINT) or SIGTERM: the current batch (training or validation) finishes, `last.ckpt` is written,
      then the run stops. A second Ctrl-C aborts at once. Under DDP a signal to any one process stops them all at
      the same batch.
    - Preemption: the same on the cluster's warning signal (SIGUSR1, or the `requeue_signal` of Lightning's
      `SLURMEnvironment`); on SLURM the job is then requeued (unless `SLURMEnvironment(auto_requeue=False)`), and
      the requeued job resumes from that `last.ckpt` by itself (`lightning_gen.core.preemption`).
    - Resumes exactly: each checkpoint holds every process's random generators and the place in the epoch, so a
      run resumed mid-epoch continues with the next batch and the same random numbers as an uninterrupted run.
    - Records the logger's run id in each checkpoint, so a resumed run continues the same W&B run.
    - Refuses to start a new fit in a folder that already holds checkpoints unless `overwrite` is set.

    Args:
        overwrite: allow a new (not resumed) fit to write into a checkpoint folder that already holds checkpoints.
        save_last: keep `last.ckpt` up to date (see ModelCheckpoint).
        save_on_interrupt: write `last.ckpt` when the run is stopped by Ctrl-C, SIGTERM or the preemption signal.
        **kwargs: any other ModelCheckpoint option (dirpath, monitor, every_n_epochs, save_top_k, ...).
    """

    def __init__(self, overwrite: bool = False, save_last: bool = True, save_on_interrupt: bool = True, **kwargs: Any):
        super().__init__(save_last=save_last, **kwargs)
        self.overwrite = overwrite
        self.save_on_interrupt = save_on_interrupt
        self._interrupted = self._sigterm = self._saved_interrupt = self._check_val_batches = False
        self._preempted = self._requeue = False
        self._previous_sigint: Any = None
        self._preempt_signal: Any = None
        self._previous_preempt: Any = None
        self._rng_to_restore: list[dict[str, Any]] | None = None
        self._resumable: resumable_train_data | None = None

    # ---- refuse to overwrite another run ----------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_folder_is_free(trainer)
        if trainer.is_global_zero and self.dirpath and slurm_job_id() is not None:  # where a requeued job resumes
            write_pointer(trainer.default_root_dir, os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST
                                                                 + self.FILE_EXTENSION))

    def check_folder_is_free(self, trainer: L.Trainer) -> None:
        """Raise `ConfigError` when a new (not resumed) fit would write into a folder holding checkpoints."""
        taken = False
        if trainer.is_global_zero and trainer.ckpt_path is None and not self.overwrite and self.dirpath:
            folder = Path(self.dirpath)
            taken = folder.is_dir() and any(folder.glob("*.ckpt"))
        if trainer.strategy.broadcast(taken):
            raise ConfigError(
                f"{self.dirpath} already holds checkpoints of an earlier run. Resume it with `--ckpt_path last` "
                "(or a checkpoint path), start a fresh run in another folder (`--trainer.default_root_dir`, or a "
                "new logger name/version), or pass `--checkpoint.overwrite true` to write over it."
            )

    # ---- save on Ctrl-C / SIGTERM -------------------------------------------------------------------------
    # The signal handlers only set a flag. The processes agree on stopping at points every one of them reaches in
    # lockstep (the end of each training batch, of each validation batch of `fit`, of each training epoch), with a
    # collective that all of them enter there; then all save `last.ckpt` together and stop together. Lightning's
    # own SIGTERM handler is replaced for the run: under DDP it broadcasts from inside the handler (a collective
    # on the signalled process alone, which deadlocks against the next collective of the others) and its loops
    # stop the signalled process alone (`SIGTERMException` between validation batches), leaving the others behind.
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._interrupted = self._sigterm = self._saved_interrupt = self._check_val_batches = False
        self._preempted = False
        if stage == "fit":
            self._resumable = resumable_train_data(trainer, pl_module)
        if stage == "fit" and self.save_on_interrupt and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            # before Lightning's signal connector, which then leaves this signal to us: it would save from inside
            # its handler, wherever the process is in a step (Lightning issue #21406)
            self._preempt_signal, self._requeue = preemption_signal(trainer)
            if self._preempt_signal is not None:
                self._previous_preempt = signal.signal(self._preempt_signal, self._on_preempt)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
            raise KeyboardInterrupt
        self._interrupted = True
        print("\nCtrl-C: finishing this batch, then saving last.ckpt. Press Ctrl-C again to abort at once.", flush=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm = True  # nothing else here: no collective, no I/O (a handler may interrupt either)

    def _on_preempt(self, signum: int, frame: Any) -> None:
        self._preempted = True  # acted on at the end of the step, like SIGTERM

    def _take_over_sigterm(self) -> None:
        # Lightning installs its handler just before the run starts (after `setup` and `on_fit_start`), and puts
        # back the one from before the fit when the run ends
        if self.save_on_interrupt and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over_sigterm()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._take_over_sigterm()
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore[trainer.global_rank])
            self._rng_to_restore = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._put_back()
        super().teardown(trainer, pl_module, stage)

    def _put_back(self, sigint: bool = True) -> None:
        """Restore what `setup` replaced for the fit: the signal handlers and the data's `train_dataloader` (at the
        end of the fit, and when it stops on an exception, after which Lightning calls no `teardown`; there SIGINT
        is left as Lightning sets it for its shutdown)."""
        if sigint and self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        if self._preempt_signal is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self._preempt_signal, self._previous_preempt or signal.SIG_DFL)
            self._preempt_signal = self._previous_preempt = None
        if self._resumable is not None:
            self._resumable.remove()
            self._resumable = None

    def _agreed_stop(self, trainer: L.Trainer) -> int:
        """Called by every process at the same point: 0, or `_SIGTERM`/`_PREEMPT`/`_SIGINT` if any process received
        that signal (the larger wins)."""
        mine = (_SIGINT if self._interrupted else _PREEMPT if self._preempted
                else _SIGTERM if self._sigterm or trainer.received_sigterm else 0)
        if trainer.world_size == 1:
            return mine
        flag = torch.tensor(mine, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def _stop_if_interrupted(self, trainer: L.Trainer) -> None:
        stop = self._agreed_stop(trainer)
        if not stop:
            return
        everyone = " (every process)" if trainer.world_size > 1 else ""
        rank_zero_info(f"{_STOP_NAMES[stop]}: stopping at this batch{everyone}.")
        self._save_interrupted(trainer)
        if stop == _PREEMPT and self._requeue and trainer.is_global_zero:
            requeue_slurm_job()
        if stop == _SIGINT:
            raise KeyboardInterrupt  # Lightning shuts down gracefully
        raise SIGTERMException  # what Lightning raises on SIGTERM (the process exits with status 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if self.save_on_interrupt:
            self._stop_if_interrupted(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_on_interrupt:  # a signal during the epoch's end (validation metrics, sample grids)
            self._stop_if_interrupted(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_start(trainer, pl_module)
        self._check_val_batches = (self.save_on_interrupt and trainer.state.fn == "fit"
                                   and not trainer.sanity_checking and self._same_val_batches(trainer))

    @staticmethod
    def _same_val_batches(trainer: L.Trainer) -> bool:
        """Whether every process runs the same, known number of validation batches (DistributedSampler pads them
        even): only then can they agree at each validation batch. Otherwise they agree after validation."""
        counts = [int(n) if math.isfinite(n) else -1 for n in trainer.num_val_batches]
        if trainer.world_size == 1:
            return True
        same = trainer.strategy.broadcast(counts) == counts and -1 not in counts  # every process broadcasts
        return trainer.strategy.reduce_boolean_decision(same, all=True)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any,
                                **kwargs: Any) -> None:
        super().on_validation_batch_end(trainer, pl_module, *args, **kwargs)
        if self._check_val_batches:
            self._stop_if_interrupted(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # a SIGTERMException that Lightning raised itself (a signal before this callback took SIGTERM over): one
        # process can save alone; under DDP the others may not have stopped, and saving would wait for them
        if (self.save_on_interrupt and isinstance(exception, SIGTERMException) and trainer.state.fn == "fit"
                and not self._saved_interrupt):
            if trainer.world_size == 1:
                self._save_interrupted(trainer)
            else:
                log.warning(f"[rank {trainer.global_rank}] SIGTERM stopped this process outside a point where all "
                            "processes agree to stop: last.ckpt was not written.")
        self._put_back(sigint=False)

    def _save_interrupted(self, trainer: L.Trainer) -> None:
        """Writes `last.ckpt` (every process takes part), never leaving a half-written one: on a local disk it is
        written beside it under another name and renamed over it."""
        if not self.dirpath or self._saved_interrupt:
            return
        self._saved_interrupt = True
        path = os.path.join(self.dirpath, f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        local = isinstance(get_filesystem(path), LocalFileSystem)
        partial = f"{path}.partial" if local else path  # not *.ckpt: never taken for a checkpoint
        # before saving, so that the checkpoint's own state names it: a resumed run then updates this `last.ckpt`
        # rather than writing a `last-v1.ckpt` beside it
        self.last_model_path = path
        trainer.save_checkpoint(partial)  # ends with a barrier: process 0 has written it
        if local and trainer.is_global_zero:
            _rename_over(partial, path)
        rank_zero_info(f"Interrupted: saved {path}. Continue with `fit --ckpt_path last` (same config).")

    # ---- run id for resuming the same logger run; random generators for resuming exactly ---------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if trainer.loggers:
            logger = trainer.loggers[0]
            checkpoint["lightning_gen"] = {"logger": type(logger).__name__, "run_id": str(logger.version)}
        if trainer.state.fn == "fit":  # every process saves together: each one's generators, in rank order
            checkpoint[RNG_KEY] = gather_rng_states(trainer)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        states = checkpoint.get(RNG_KEY)
        if states and len(states) == trainer.world_size:
            self._rng_to_restore = states  # set when training starts, after the sanity check drew its numbers
        elif states:
            rank_zero_info(f"The checkpoint's random generators are of {len(states)} processes, this run has "
                           f"{trainer.world_size}: the resumed run draws other random numbers.")


def _rename_over(source: str, target: str) -> None:
    """Rename `source` to `target`, replacing it (a file or a link: in one step; a sharded checkpoint's folder:
    the old one is removed first)."""
    if os.path.isdir(source) and os.path.lexists(target):
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.remove(target)
    os.replace(source, target)


class SaveRunConfig(SaveConfigCallback):
    """Saves the full resolved config as `config.yaml` in the run's own folder (not the shared log root, where
    runs would collide) and sends it to W&B as the run's config. Only `fit` saves: evaluating or predicting
    from a run's checkpoint leaves that run's config as it was."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pass  # saved in on_fit_start, once the run is known not to collide with an earlier one

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.already_saved:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, RunCheckpoint):
                callback.check_folder_is_free(trainer)  # never replace the config of the run it would overwrite
        if trainer.is_global_zero:
            folder = run_dir(trainer)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config, folder / self.config_filename, skip_none=False, overwrite=True, multifile=self.multifile
            )
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)
        self.already_saved = trainer.strategy.broadcast(True)


def same_size(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack `(C, H, W)` images in [-1, 1], padding smaller ones with white (bottom and right) to the largest
    height and width."""
    height, width = max(im.shape[-2] for im in images), max(im.shape[-1] for im in images)
    pads = [(0, width - im.shape[-1], 0, height - im.shape[-2]) for im in images]
    return torch.stack([torch.nn.functional.pad(im, pad, value=1.0) for im, pad in zip(images, pads)])


class ImageWriter(BasePredictionWriter):
    """Writes the images `predict_step` returns (a dict with `images` in [-1, 1] and `index` or `names`) as PNG
    files, plus a `grid.png` of them.

    Args:
        output_dir: folder for the images. Default: `predictions/` beside the checkpoint's `checkpoints/`
            folder (i.e. in the trained run's folder), else `<default_root_dir>/predictions`.
        individual: write one PNG per image (`00000.png`, ... or the input's name).
        grid: write `grid.png` with up to `grid_max` images (per process under DDP: `grid_rank<R>.png`).
        grid_max: most images in the grid.
    """

    def __init__(self, output_dir: str | None = None, individual: bool = True, grid: bool = True, grid_max: int = 256):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.individual = individual
        self.grid = grid
        self.grid_max = grid_max
        self._grid_images: list[torch.Tensor] = []
        self.written = 0

    def folder(self, trainer: L.Trainer) -> Path:
        return predictions_folder(trainer, self.output_dir)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._grid_images, self.written = [], 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        images = prediction["images"].detach().float().cpu()
        names = prediction.get("names") or [f"{int(i):05d}.png" for i in prediction["index"]]
        if self.individual:
            for image, name in zip(images, names):
                torchvision.utils.save_image(image.clamp(-1, 1).add(1).div(2), folder / name)
            self.written += len(images)
        if self.grid:
            have = sum(len(t) for t in self._grid_images)
            self._grid_images.append(images[: max(0, self.grid_max - have)])

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = self.folder(trainer)
        if self.grid and self._grid_images:
            name = "grid.png" if trainer.world_size == 1 else f"grid_rank{trainer.global_rank}.png"
            images = [image for batch in self._grid_images for image in batch]  # sizes may differ (style, dreams)
            torchvision.utils.save_image(image_grid(same_size(images)), folder / name)
        rank_zero_info(f"predict: wrote {self.written} images{' and a grid' if self.grid else ''} to {folder}")
