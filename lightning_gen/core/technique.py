"""The skeleton of a technique: the plumbing every technique file would otherwise repeat, written once.

- Lazy networks: `build()` creates the networks from the hyperparameters and the datamodule (image shape, number of
  classes, ...). Lightning calls it through `configure_model`, in every `fit`/`validate`/`test`/`predict` (after
  `setup`, before the optimizers are made) and in `load_from_checkpoint` (before the weights are loaded), so a
  checkpoint loads without data because the resolved shapes are stored in the hyperparameters.
- One network step for manual optimization: `with self.optimizing(opt, net) as step: step(loss)` toggles the
  optimizer (only `net`'s parameters take gradients), backpropagates through the precision plugin, averages
  `net`'s gradients over the DDP processes, clips if asked, and steps.
- Learning-rate schedules are Lightning schedulers (`epoch_schedule`), checkpointed with the optimizers; under
  manual optimization the skeleton steps them: `interval: epoch` ones at the end of every training epoch,
  `interval: step` ones after each step of their optimizer.
- `eval_mode(*nets)`, `train_mode(*nets)` and `batch_statistics(net)` (from `nn/modes.py`, re-exported here):
  how networks run outside their training step.
- `first_visit(batch_idx, n)`: which items of an evaluation batch the whole run sees for the first time, so that
  every metric counts each item once under DDP.
- `GenerativeTechnique`: the `Generative` protocol (sample, default_labels, sample_grid), the per-epoch sample grid
  and a `predict` that needs no data, written once for every generator.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.distributed import all_reduce_gradients, disable_ddp_gradient_sync, first_visit_mask
from lightning_gen.core.lightning_private import attached_trainer
from lightning_gen.core.runs import save_and_log_images
from lightning_gen.core.sampling import class_file_names, index_loader
from lightning_gen.nn.modes import batch_statistics, eval_mode, network_mode, train_mode  # noqa: F401 (re-exported)


class LinearDecay:
    """Learning-rate factor of epoch e (0-based): 1 for `constant` epochs, then a linear decay over `decay` epochs,
    `1 - max(0, e + offset - constant) / (decay + offset)`, never below 0. `offset=1` is pix2pix's schedule (the
    first decayed epoch is already below 1); `constant=0, offset=0` is the semi-supervised GAN's `1 - e / decay`.

    A class rather than a lambda so that the scheduler's state (saved in checkpoints) holds its settings."""

    def __init__(self, constant: int, decay: int, offset: int = 1) -> None:
        self.constant, self.decay, self.offset = constant, decay, offset

    def __call__(self, epoch: int) -> float:
        return max(0.0, 1.0 - max(0, epoch + self.offset - self.constant) / (self.decay + self.offset))


def epoch_schedule(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> dict[str, Any]:
    """A Lightning scheduler config: `optimizer`'s learning rate is its initial one times `factor(epoch)`, stepped
    once per epoch (by Lightning under automatic optimization, by `Technique` under manual optimization)."""
    return {"scheduler": LambdaLR(optimizer, factor), "interval": "epoch"}


class Technique(L.LightningModule):
    """Base class of every technique: lazy networks, the manual-optimization network step, scheduler stepping,
    DDP-exact evaluation. Subclasses implement `build()` and the algorithm."""

    def __init__(self) -> None:
        super().__init__()
        self._networks_built = False
        self._means = nn.ModuleDict()  # evaluation averages made by `log_means`, one per metric name

    # ---- where the technique runs ---------------------------------------------------------------------------------
    @property
    def datamodule(self) -> L.LightningDataModule | None:
        """The trainer's datamodule, or None (no trainer attached, as in `load_from_checkpoint`, or no datamodule)."""
        trainer = attached_trainer(self)
        return trainer.datamodule if trainer is not None else None

    @property
    def stage(self) -> str | None:
        """`fit`, `validate`, `test` or `predict` while a trainer runs this technique, else None."""
        trainer = attached_trainer(self)
        return trainer.state.fn.value if trainer is not None and trainer.state.fn is not None else None

    # ---- lazy networks ----------------------------------------------------------------------------------------------
    def build(self) -> None:
        """Create the networks (and shape-dependent metrics) from `self.hparams` and `self.datamodule`, and store
        every resolved shape in `self.hparams` so that a checkpoint rebuilds them without data. Runs once."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def configure_model(self) -> None:
        if not self._networks_built:
            self.build()
            self._networks_built = True

    @property
    def networks_built(self) -> bool:
        return self._networks_built

    # ---- one network step under manual optimization -------------------------------------------------------------
    @contextmanager
    def optimizing(
        self, optimizer: Any, network: nn.Module, clip_norm: float = 0.0
    ) -> Iterator[Callable[[Tensor], None]]:
        """`with self.optimizing(opt, net) as step: step(loss)`: inside the block only `opt`'s parameters take
        gradients (Lightning's `toggled_optimizer`); `step(loss)` zeroes them, calls `manual_backward` (so the
        precision plugin scales the loss), averages `network`'s gradients over the DDP processes (DDP's own
        all-reduce is switched off for the step: a GAN's D step leaves G unused), clips their global norm to
        `clip_norm` if positive, and steps."""
        trainer = self.trainer
        disable_ddp_gradient_sync(trainer)
        if clip_norm > 0 and getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError(f"{type(self).__name__} clips gradients, which needs unscaled gradients: use "
                              "`--trainer.precision bf16-mixed` or 32 instead of 16-mixed.")

        def step(loss: Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            all_reduce_gradients(network)
            if clip_norm > 0:
                self.clip_gradients(optimizer, gradient_clip_val=clip_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            self._step_schedulers("step", getattr(optimizer, "optimizer", optimizer))

        with self.toggled_optimizer(optimizer):
            yield step

    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Under manual optimization Lightning steps no scheduler: step those with this `interval` (`epoch`: at the end
        of every training epoch; `step`: after each step of their optimizer)."""
        if self.automatic_optimization:
            return
        with warnings.catch_warnings():  # under 16-mixed a step the scaler skipped makes torch warn; harmless
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            for config in self.trainer.lr_scheduler_configs:
                if config.interval == interval and (optimizer is None or config.scheduler.optimizer is optimizer):
                    config.scheduler.step()

    # ---- evaluation that counts each item once under DDP -------------------------------------------------------
    def first_visit(self, batch_idx: int, batch_size: int, dataloader_idx: int = 0) -> Tensor:
        """(B,) bool: True for each item of this evaluation batch that the run sees for the first time, False for
        the repeats that DDP's sampler adds so that every process gets as many items (all True outside DDP)."""
        return first_visit_mask(self.trainer, batch_idx, batch_size, self.device, dataloader_idx).bool()

    def log_means(self, prefix: str, values: dict[str, Tensor], weight: int, prog_bar: bool = False) -> None:
        """Log `<prefix>/<name>` as the mean over the epoch of `values[name]`, each batch weighted by `weight` (its
        number of items, after `first_visit`), across all processes: torchmetrics' `MeanMetric`, so the figure is
        the one a single process would give. A batch with weight 0 adds nothing."""
        for name, value in values.items():
            key = f"{prefix}/{name}"
            slot = key.replace("/", "__").replace(".", "_")
            if slot not in self._means:
                self._means[slot] = MeanMetric().to(self.device)
            metric = self._means[slot]
            if weight > 0:
                metric.update(value.detach().float(), weight)
            self.log(key, metric, prog_bar=prog_bar, on_step=False, on_epoch=True, metric_attribute=f"_means.{slot}")


class GenerativeTechnique(Technique):
    """A technique that generates images from an index (the `Generative` protocol): subclasses implement
    `sample(indices)` (and `default_labels` when conditional) and have `num_samples` in their hyperparameters.
    This class saves the per-epoch sample grid (`samples/samples_epochNNNN.png`, and to W&B) and implements a
    `predict` that needs no data: `num_samples` images, image i always from the same noise."""

    @torch.no_grad()
    def sample(self, indices: Tensor) -> Tensor:
        """(B,) indices -> (B, C, H, W) images in [-1, 1], made in eval mode; image i depends only on i."""
        raise NotImplementedError

    def default_labels(self, indices: Tensor) -> Tensor | None:
        """The class of generated image i (None: unconditional)."""
        return None

    def sample_grid(self) -> tuple[Tensor, int | None]:
        """The images of the per-epoch grid and the images per row (None: square)."""
        return self.sample(torch.arange(self.hparams.num_samples, device=self.device)), None

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.trainer.is_global_zero:
            save_and_log_images(self.trainer, "samples", *self.sample_grid())

    def predict_dataloader(self) -> DataLoader:
        return index_loader(self.hparams.num_samples)

    def predict_step(self, batch: Tensor, batch_idx: int) -> dict[str, Any]:
        """`batch` holds image indices. Conditional samples carry their class in the file name."""
        labels = self.default_labels(batch)
        out: dict[str, Any] = {"images": self.sample(batch), "index": batch}
        if labels is not None:
            out.update(names=class_file_names(batch, labels), labels=labels)
        return out
