"""Each private Lightning attribute the project reads (lightning_gen/core/lightning_private.py), and each private
LightningCLI method it overrides (lightning_gen/core/cli.py), checked against the installed Lightning: if a release
renames one, a test here fails and names it."""

import inspect

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen.callbacks import EMA
from lightning_gen.core.lightning_private import attached_trainer, should_update_logs, started_wandb_run
from lightning_gen.core.loggers import AutoWandbLogger


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1)
        self.updates: list[bool] = []
        self.attached: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.updates.append(should_update_logs(self.trainer))
        self.attached.append(attached_trainer(self) is self.trainer)
        return self.net(batch[0]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=2)


def test_attached_trainer_and_log_cadence(tmp_path):
    model = Recorder()
    assert attached_trainer(model) is None  # no trainer: None rather than an exception
    L.Trainer(max_epochs=1, log_every_n_steps=2, logger=L.pytorch.loggers.CSVLogger(tmp_path),
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=tmp_path).fit(model)
    assert all(model.attached)
    # Lightning writes every 2nd step (steps 1, 3, 5: (step + 1) % 2 == 0) and the last one
    assert model.updates == [False, True, False, True, False, True]


def test_overridden_lightning_cli_methods_keep_their_signatures():
    # lightning_gen.core.cli.GenCLI overrides these private methods of LightningCLI
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    assert list(inspect.signature(LightningCLI._instantiate_trainer).parameters) == ["self", "config", "callbacks"]
    source = inspect.getsource(LightningCLI.instantiate_trainer)
    assert "_instantiate_trainer(" in source  # the public method still goes through the overridden one


def test_public_loop_attributes_the_project_reads(tmp_path):
    seen = {}

    class Probe(Recorder):
        def training_step(self, batch, batch_idx):
            seen.setdefault("total_batch_idx", []).append(self.trainer.fit_loop.epoch_loop.total_batch_idx)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen["val_loaders"] = self.trainer.val_dataloaders

        def val_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)

    L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0).fit(Probe())
    assert seen["total_batch_idx"] == list(range(6))
    assert isinstance(seen["val_loaders"], DataLoader)


def test_wandb_run_is_read_without_starting_one(tmp_path):
    logger = AutoWandbLogger(save_dir=str(tmp_path), mode="offline")
    assert started_wandb_run(logger) is None  # reading it did not start a run
    run = logger.experiment  # starts the (offline) run
    assert started_wandb_run(logger) is run
    assert logger.run_folder() is not None
    run.finish()


def test_callback_state_key_helper():
    assert EMA(attribute="net").state_key == "EMA{'attribute': 'net'}"
