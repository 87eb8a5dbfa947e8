"""The technique skeleton (lightning_gen.core.technique): lazy networks, the network step, schedules, modes, and
evaluation that counts each item once under DDP."""

import json

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.technique import LinearDecay, Technique, batch_statistics, epoch_schedule, eval_mode
from tests.conftest import QUIET, run_cli
from tests.helpers import fp16_on_cpu


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


class TwoNets(Technique):
    """Two linear networks with their own optimizers (manual optimization) and a linear-decay schedule."""

    def __init__(self, clip_norm: float = 0.0, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.builds = 0
        self.grads_seen: list[tuple[bool, bool]] = []
        self.lrs: list[float] = []

    def build(self) -> None:
        self.builds += 1
        self.a, self.b = nn.Linear(4, 1), nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt_a, opt_b = self.optimizers()
        self.lrs.append(opt_a.param_groups[0]["lr"])
        with self.optimizing(opt_a, self.a, clip_norm=self.hparams.clip_norm) as step:
            loss = (self.a(x) + self.b(x)).pow(2).mean() * 100  # both networks in the graph, only `a` steps
            self.grads_seen.append((self.b.weight.requires_grad, self.a.weight.requires_grad))
            step(loss)
        self.last_grad_norm = self.a.weight.grad.norm().item()
        with self.optimizing(opt_b, self.b) as step:
            step(self.b(x).pow(2).mean())

    def configure_optimizers(self):
        opt_a = torch.optim.SGD(self.a.parameters(), lr=self.hparams.lr)
        opt_b = torch.optim.SGD(self.b.parameters(), lr=self.hparams.lr)
        return [opt_a, opt_b], [epoch_schedule(opt_a, LinearDecay(1, 3)), epoch_schedule(opt_b, LinearDecay(1, 3))]

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)


def test_linear_decay_closed_form():
    # pix2pix: constant 2 epochs, then lr * (1 - k / (decay + 1)) for the k-th decayed epoch
    assert [LinearDecay(2, 3)(e) for e in range(6)] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    # SGAN: 1 - e / decay from the first epoch
    assert [LinearDecay(0, 4, offset=0)(e) for e in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_networks_are_built_once_and_only_the_stepped_network_takes_gradients(tmp_path):
    model = TwoNets()
    assert not model.networks_built
    quiet_trainer(tmp_path, max_epochs=2).fit(model)
    assert model.builds == 1  # configure_model is idempotent
    quiet_trainer(tmp_path).fit(model)  # a second run on the same module keeps its networks
    assert model.builds == 1
    assert all(grads == (False, True) for grads in model.grads_seen)  # inside the block only `a` requires grad
    assert model.b.weight.requires_grad  # and the toggle is undone after it


def test_schedules_step_per_epoch_under_manual_optimization_and_resume(tmp_path):
    model = TwoNets()
    trainer = quiet_trainer(tmp_path, max_epochs=3, enable_checkpointing=True)
    trainer.fit(model)
    assert model.lrs == pytest.approx([0.1, 0.1, 0.075, 0.075, 0.05, 0.05])  # 2 batches an epoch
    ckpt = trainer.checkpoint_callback.best_model_path
    resumed = TwoNets()
    quiet_trainer(tmp_path, max_epochs=4).fit(resumed, ckpt_path=ckpt)
    assert resumed.lrs == pytest.approx([0.025, 0.025])  # epoch 3 of the schedule, not epoch 0


class StepScheduled(TwoNets):
    def configure_optimizers(self):
        opt_a = torch.optim.SGD(self.a.parameters(), lr=self.hparams.lr)
        opt_b = torch.optim.SGD(self.b.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt_a, LinearDecay(0, 4, offset=0))
        return [opt_a, opt_b], [{"scheduler": schedule, "interval": "step"}]


def test_step_schedulers_step_after_each_step_of_their_optimizer_only(tmp_path):
    model = StepScheduled()
    quiet_trainer(tmp_path, max_epochs=2).fit(model)
    assert model.lrs == pytest.approx([0.1, 0.075, 0.05, 0.025])  # not stepped by opt_b, nor at the epoch's end


def test_clip_norm_clips_and_refuses_a_gradient_scaler(tmp_path):
    model = TwoNets(clip_norm=0.01)
    quiet_trainer(tmp_path).fit(model)
    assert model.last_grad_norm <= 0.01 + 1e-6
    with pytest.raises(ConfigError, match="bf16-mixed"):
        quiet_trainer(tmp_path, plugins=[fp16_on_cpu()]).fit(TwoNets(clip_norm=0.01))


def test_load_from_checkpoint_builds_networks_before_loading_weights(tmp_path):
    model = TwoNets()
    trainer = quiet_trainer(tmp_path)
    trainer.fit(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = TwoNets.load_from_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(loaded.a.weight, model.a.weight)


def test_eval_mode_and_batch_statistics_restore_modes_and_statistics():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    other = nn.Linear(3, 3).eval()
    with eval_mode(net, other):
        assert not net.training and not net[1].training
    assert net.training and not other.training
    net.eval()
    before = net[1].running_mean.clone(), int(net[1].num_batches_tracked)
    with batch_statistics(net):
        assert net.training
        out = net(torch.randn(16, 3) * 5 + 3)
    assert not net.training
    assert torch.equal(net[1].running_mean, before[0]) and int(net[1].num_batches_tracked) == before[1]
    assert out.abs().mean() < 3  # normalised with the batch's own statistics, not the (zero, one) running ones


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_ddp_evaluation_counts_each_item_once(tmp_path, subcommand):
    # 7 items on 2 processes: DistributedSampler repeats item 0; the mean over items must be 3 (not 21 / 8)
    args = [subcommand, "--model", "tests.helpers.MeanProbe", "--data", "tests.helpers.SevenItems",
            "--trainer.logger", "false", "--trainer.default_root_dir", "out", "--trainer.accelerator", "cpu",
            "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.callbacks+=tests.helpers.SaveTestMetrics",
            *QUIET]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    prefix = "test" if subcommand == "test" else "val"
    metrics = json.loads((tmp_path / "out" / f"{subcommand}_metrics.json").read_text())
    assert metrics[f"{prefix}/mean"] == pytest.approx(3.0)
