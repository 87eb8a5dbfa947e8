"""Callbacks: what the CLI adds to every run (checkpoints that survive interruption, the run's config in its own
folder and in W&B, PNG output for `predict`), and the generator EMA."""

from __future__ import annotations

import copy
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_gen.checks import ConfigError
from lightning_gen.runs import image_grid, run_dir, save_and_log_images


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus what a long run needs.

    - Keeps `last.ckpt` (what `fit --ckpt_path last` resumes).
    - Ctrl-C (SIGINT) or SIGTERM: the current batch finishes, `last.ckpt` is written, then the run stops.
      A second Ctrl-C aborts at once.
    - Records the logger's run id in each checkpoint, so a resumed run continues the same W&B run.
    - Refuses to start a new fit in a folder that already holds checkpoints unless `overwrite` is set.

    Args:
        overwrite: allow a new (not resumed) fit to write into a checkpoint folder that already holds checkpoints.
        save_last: keep `last.ckpt` up to date (see ModelCheckpoint).
        save_on_interrupt: write `last.ckpt` when the run is stopped by Ctrl-C or SIGTERM.
        **kwargs: any other ModelCheckpoint option (dirpath, monitor, every_n_epochs, save_top_k, ...).
    """

    def __init__(self, overwrite: bool = False, save_last: bool = True, save_on_interrupt: bool = True, **kwargs: Any):
        super().__init__(save_last=save_last, **kwargs)
        self.overwrite = overwrite
        self.save_on_interrupt = save_on_interrupt
        self._interrupted = False
        self._interrupt_path: str | None = None
        self._previous_sigint: Any = None

    # ---- refuse to overwrite another run ----------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_folder_is_free(trainer)

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
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.save_on_interrupt and threading.current_thread() is threading.main_thread():
            self._interrupted = False
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
            raise KeyboardInterrupt
        self._interrupted = True
        print("\nCtrl-C: finishing this batch, then saving last.ckpt. Press Ctrl-C again to abort at once.", flush=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        super().teardown(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if not self.save_on_interrupt:
            return
        stop = self._interrupted or trainer.received_sigterm
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._save_interrupted(trainer)
            if self._interrupted:
                raise KeyboardInterrupt  # Lightning shuts down gracefully; SIGTERM is raised by Lightning itself

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # SIGTERM that arrived outside a training batch (validation, epoch end): Lightning stops at the next loop
        # boundary, where the state is consistent, so it can be saved. A second Ctrl-C (mid-step) is not saved.
        if self.save_on_interrupt and isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save_interrupted(trainer)

    def _save_interrupted(self, trainer: L.Trainer) -> None:
        if not self.dirpath or self.last_model_path == self._interrupt_path:
            return
        self._interrupt_path = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        trainer.save_checkpoint(self._interrupt_path)
        self.last_model_path = self._interrupt_path
        rank_zero_info(f"Interrupted: saved {self._interrupt_path}. Continue with `fit --ckpt_path last` (same config).")

    # ---- run id for resuming the same logger run ----------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if trainer.loggers:
            logger = trainer.loggers[0]
            checkpoint["lightning_gen"] = {"logger": type(logger).__name__, "run_id": str(logger.version)}


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
        if self.output_dir:
            return Path(self.output_dir)
        ckpt = trainer.ckpt_path
        if ckpt and Path(ckpt).parent.name == "checkpoints":
            return Path(ckpt).parent.parent / "predictions"
        return Path(trainer.default_root_dir) / "predictions"

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


class GeneratorEMA(Callback):
    """Exponential moving average of the generator's weights only (Lightning's `WeightAveraging` averages the
    whole module, discriminator included, and assumes automatic optimization).

    After every training batch: ema <- decay * ema + (1 - decay) * weights, for each parameter of
    `pl_module.<attribute>`; buffers (batch-norm running statistics) are copied. With `use_for_eval`, the EMA
    weights replace the live ones during validation, test and predict (so sample-quality metrics and written
    images come from the EMA generator), and each epoch's grid is also drawn with them (`samples_ema`).
    Checkpoints keep the live weights in the model and the EMA weights in this callback's state, so a resumed
    run continues both, and `validate`/`test`/`predict --ckpt_path` use the EMA weights stored there.

    Args:
        decay: weight of the running average per update (0.999 averages over about the last 1000 updates).
        attribute: name of the network to average: `generator` (the default), or another, e.g. the semi-supervised
            GAN's `discriminator` (Salimans et al. evaluate with its running average) or a Classifier's `net`.
        start_step: batches after the first during which the EMA copies the weights instead of averaging them
            (the first batch is always copied, so a data-dependent initialisation in it is not averaged away).
        use_for_eval: use the EMA weights in validation, test, predict and the extra sample grid.
        bias_correction: average as if the EMA had started from zero and was divided by 1 - decay^n (Adam's bias
            correction): the weights after update n are the decay^age-weighted mean of all n weights so far, so
            a long average (decay 0.9999, about 10,000 updates) is usable from the start instead of being held
            near the first weights. Salimans et al.'s SGAN evaluates with such an average.
    """

    def __init__(self, decay: float = 0.999, attribute: str = "generator", start_step: int = 0,
                 use_for_eval: bool = True, bias_correction: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"GeneratorEMA decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.attribute = attribute
        self.start_step = start_step
        self.use_for_eval = use_for_eval
        self.bias_correction = bias_correction
        self.ema: torch.nn.Module | None = None
        self.num_updates = 0
        self._pending: dict | None = None
        self._live: dict | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(attribute=self.attribute)  # one EMA per network can share a run

    # ---- the averaged copy --------------------------------------------------------------------------------
    def _generator(self, pl_module: L.LightningModule) -> torch.nn.Module:
        net = getattr(pl_module, self.attribute, None)
        if not isinstance(net, torch.nn.Module):
            children = [name for name, _ in pl_module.named_children()]
            raise ConfigError(
                f"GeneratorEMA: {type(pl_module).__name__} has no network `{self.attribute}`; set "
                f"`attribute` to one of {children}."
            )
        return net

    def _ensure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = self._generator(pl_module)
        if self.ema is None:
            self.ema = copy.deepcopy(net).requires_grad_(False)
        if self._pending is None and trainer.state.fn != "fit" and trainer.ckpt_path:
            state = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=False).get("callbacks", {})
            self._pending = state.get(self.state_key)
            if self._pending is None:
                rank_zero_warn(f"GeneratorEMA: {trainer.ckpt_path} holds no average of `{self.attribute}` (it was "
                               "trained without this callback); evaluating with the live weights.")
                self._pending = {}
        if self._pending:
            self.ema.load_state_dict(self._pending["ema"])
            self.num_updates = int(self._pending["num_updates"])
            self._pending = None
        self.ema.to(pl_module.device)

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """One step of the running average towards `net`'s current weights."""
        averaged = self.num_updates - self.start_step  # weights already in the average (copies count as one)
        if averaged <= 0:
            weight = 1.0  # copy first (after any data-dependent init)
        elif self.bias_correction:  # the new weights' share of a zero-started EMA over 1 - decay^(averaged + 1)
            weight = (1.0 - self.decay) / (1.0 - self.decay ** (averaged + 1))
        else:
            weight = 1.0 - self.decay
        ema_params = [p for p in self.ema.parameters()]
        live_params = [p.detach().to(ema_params[0].dtype) for p in net.parameters()]
        torch._foreach_lerp_(ema_params, live_params, weight)
        for ema_buf, live_buf in zip(self.ema.buffers(), net.buffers()):
            ema_buf.copy_(live_buf)
        self.num_updates += 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.update(self._generator(pl_module))

    # ---- evaluation with the EMA weights ------------------------------------------------------------------
    def _swap_in(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.use_for_eval or self._live is not None:
            return
        self._ensure(trainer, pl_module)
        net = self._generator(pl_module)
        self._live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.ema.state_dict())

    def _swap_out(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._live is not None:
            self._generator(pl_module).load_state_dict(self._live)
            self._live = None

    def on_validation_start(self, trainer, pl_module):
        self._swap_in(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        self._swap_out(trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self._swap_in(trainer, pl_module)

    def on_test_end(self, trainer, pl_module):
        self._swap_out(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module):
        self._swap_in(trainer, pl_module)

    def on_predict_end(self, trainer, pl_module):
        self._swap_out(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception):
        self._swap_out(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sample_grid = getattr(pl_module, "sample_grid", None)  # -> (images, images per row)
        if not (self.use_for_eval and self.attribute == "generator" and callable(sample_grid) and trainer.is_global_zero):
            return
        self._swap_in(trainer, pl_module)
        try:
            save_and_log_images(trainer, "samples_ema", *sample_grid())
        finally:
            self._swap_out(trainer, pl_module)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {}
        return {"ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}, "num_updates": self.num_updates,
                "attribute": self.attribute}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._pending = state_dict

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._live is not None:  # saved while the EMA weights are swapped in: the model keeps its live weights
            prefix = f"{self.attribute}."
            for key, value in self._live.items():
                checkpoint["state_dict"][prefix + key] = value.clone()
