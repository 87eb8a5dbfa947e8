"""Where a run keeps its files, and how images reach disk and the loggers.

A run's folder is the one Lightning's ModelCheckpoint uses, minus `checkpoints/`:
`<logger save_dir>/<logger name>/<logger version>/` (for W&B: `runs/<project>/<run id>/`), or
`default_root_dir` when there is no logger. It holds `checkpoints/`, `config.yaml` and `samples/`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor

from lightning_gen.core.lightning_private import should_update_logs


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run (same rule as ModelCheckpoint's default `dirpath`, without `checkpoints`)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


def predictions_folder(trainer: L.Trainer, output_dir: str | None = None) -> Path:
    """Where `predict` writes: `output_dir` if given, else `predictions/` in the run folder of the checkpoint it
    loaded (beside its `checkpoints/`), else `<default_root_dir>/predictions`."""
    if output_dir:
        return Path(output_dir)
    ckpt = trainer.ckpt_path
    if ckpt and Path(ckpt).parent.name == "checkpoints":
        return Path(ckpt).parent.parent / "predictions"
    return Path(trainer.default_root_dir) / "predictions"


class ColumnWriter(BasePredictionWriter):
    """Base of the writers of `predict` outputs that are columns of numbers (embeddings, anomaly scores): gathers
    the `{name: (B, ...) tensor}` dicts `predict_step` returned into one tensor per name, in input order, and hands
    them to `save(columns, path)` with the path `predictions/<stem><suffix>` in the run's folder
    (`<stem>_rank<R><suffix>` per process under DDP).

    Args:
        output_dir: folder for the file. Default: `predictions/` beside the checkpoint's `checkpoints/` folder,
            else `<default_root_dir>/predictions`.
    """

    stem, suffix = "predictions", ".pt"

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def save(self, columns: dict[str, Tensor], path: Path) -> None:
        raise NotImplementedError

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not outputs:
            return
        columns = {key: torch.cat([out[key].detach().cpu() for out in outputs]) for key in outputs[0]}
        folder = predictions_folder(trainer, self.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rank = "" if trainer.world_size == 1 else f"_rank{trainer.global_rank}"
        path = folder / f"{self.stem}{rank}{self.suffix}"
        self.save(columns, path)
        rank_zero_info(f"predict: wrote {len(next(iter(columns.values())))} rows to {path}")


def image_grid(images: Tensor, nrow: int | None = None, min_side: int = 32) -> Tensor:
    """Tile `(B, C, H, W)` images in [-1, 1] into one `(3, H', W')` grid in [0, 1].

    Small images (side below `min_side`) are enlarged by an integer nearest-neighbour factor so the grid is
    readable (8x8 digits become 32x32 tiles).
    """
    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    factor = max(1, math.ceil(min_side / max(images.shape[-2:])))
    if factor > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    return torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


@rank_zero_only
def save_and_log_images(trainer: L.Trainer, key: str, images: Tensor, nrow: int | None = None) -> Path:
    """Save a grid of `images` as `<run dir>/samples/<key>_epoch<NNNN>.png` and send it to every logger that
    takes images (W&B, TensorBoard). Returns the PNG's path."""
    grid = image_grid(images, nrow)
    folder = run_dir(trainer) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key.replace('/', '_')}_epoch{trainer.current_epoch:04d}.png"
    torchvision.utils.save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)
    return path


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether this training step's values are seen: a progress bar is on screen (it shows every step's values),
    or the trainer writes this step to its loggers (every `log_every_n_steps` batches and at a stop, every step
    under `fast_dev_run`).

    Each `self.log` costs about 0.35 ms (Lightning moves its stored result to the value's device on every call),
    a tenth of a launch-bound GPU step at batch size 1, so the techniques skip their per-step training logs when
    nobody would see them: in runs without a progress bar (batch jobs, benchmarks), between logging steps.
    """
    if trainer.fast_dev_run:
        return True
    bar = trainer.progress_bar_callback
    if bar is not None and bar.is_enabled:
        return True
    return should_update_logs(trainer)
