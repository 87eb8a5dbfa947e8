"""Every private Lightning attribute the project touches, in one place, each with the reason.

Lightning offers no public API for these; if a Lightning release renames one, `tests/test_lightning_private.py`
fails on that accessor (it runs each one against the installed Lightning), so the fix is made here, once.
Nothing else in the project reads a Lightning attribute whose name starts with an underscore
(`tests/test_layout.py` checks), with the exceptions listed at the end of this file.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer `module` is attached to, or None.

    Why private: `LightningModule.trainer` raises when no trainer is attached (a module built by hand, or by
    `load_from_checkpoint`), and Lightning has no public "is attached" test; `_trainer` is what that property reads.
    """
    return module._trainer


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether the trainer writes this training step's logged values to its loggers (every `log_every_n_steps`
    batches, and at the last batch).

    Why private: the cadence rule lives in the logger connector (`trainer._logger_connector.should_update_logs`);
    the techniques skip building per-step logs that nobody would see (see `core.runs.logs_this_step`).
    """
    return bool(trainer._logger_connector.should_update_logs)


def started_wandb_run(logger: WandbLogger) -> Any | None:
    """The logger's W&B run if it has started, else None (without starting one).

    Why private: `WandbLogger.experiment` starts a run when there is none; `_experiment` is where it keeps it.
    """
    return logger._experiment


# Private Lightning methods the project overrides or calls as a subclass, each checked by
# tests/test_lightning_private.py:
#   LightningCLI._parse_ckpt_path      core.cli.GenCLI: `--ckpt_path last`, and explicit `--model.*` options win
#                                      over the checkpoint's hyperparameters
#   LightningCLI._instantiate_trainer  core.cli.GenCLI: a Rich progress bar unless the user chose another
#   Callback._generate_state_key       callbacks.ema.EMA.state_key: Lightning's documented way to key the state
#                                      of a callback that can be used more than once in a run
# Lightning attributes read by name that are public but undocumented in the API reference; listed so a reader
# knows they are load-bearing:
#   trainer.fit_loop.epoch_loop.total_batch_idx   (dcgan.DCGAN.training_step: the generator cadence of n_critic)
#   trainer.val_dataloaders / trainer.test_dataloaders  (core.distributed.first_visit_mask: the DDP sampler)
#   trainer.lr_scheduler_configs                  (core.technique.Technique: schedulers stepped by interval)
#   trainer.fit_loop.epoch_loop.batch_progress.current.processed  (datamodules.char_text.StreamLoader: the
#                                                 batches of the epoch done, saved so a resumed run continues)
