"""Every private Lightning attribute the project touches, in one place, each with the reason.

Lightning offers no public API for these; if a Lightning release renames one, `tests/test_lightning_private.py`
fails on that accessor (it runs each one against the installed Lightning), so the fix is made here, once.
Nothing else in the project reads a Lightning attribute whose name starts with an underscore.
"""

from __future__ import annotations

import lightning as L


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


# Lightning attributes read by name that are public but undocumented in the API reference; listed so a reader
# knows they are load-bearing:
#   trainer.fit_loop.epoch_loop.total_batch_idx   (core.technique: the generator cadence of n_critic)
#   trainer.val_dataloaders / trainer.test_dataloaders  (core.distributed.first_visit_mask: the DDP sampler)
