"""Test-only subclasses and utilities (importable by CLI subprocesses started from the project root)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from datamodules import Digits
from lightning_gen import DCGAN
from lightning_gen.core.technique import Technique


class BatchNoiseDCGAN(DCGAN):
    """DCGAN whose training noise is a fixed function of each real image, so every sample meets the same z
    whether it is processed in one process or split across several (for the DDP-vs-single-process check)."""

    def noise_like(self, real: Tensor) -> Tensor:
        flat = real.flatten(1).float()  # (B, C*H*W)
        proj = torch.randn(flat.shape[1], self.hparams.latent_dim, generator=torch.Generator().manual_seed(1234))
        return flat @ proj.to(flat.device) / math.sqrt(flat.shape[1])  # (B, latent_dim)

    def build(self) -> None:
        # BatchNorm normalises by per-process batch statistics, which differ from the global batch's by design
        # (SyncBatchNorm needs GPUs). Without it, DDP on k x B/k images must equal one process on B images.
        super().build()
        for net in (self.generator, self.discriminator):
            for name, child in list(net.named_modules()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
                    setattr(parent, name.rsplit(".", 1)[-1], torch.nn.Identity())


class InOrderDigits(Digits):
    """Digits in a fixed order: one process sees batch k as images [kB, (k+1)B); under DDP (with
    `use_distributed_sampler: false`) rank r of k sees every k-th of them, so each global batch is the same set."""

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=False, drop_last=True)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True)


def fp16_on_cpu() -> MixedPrecision:
    """Real float16 autocast with a GradScaler on CPU (Lightning maps `precision="16-mixed"` to bf16 on CPU)."""
    return MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))


class SameWeightsCheck(L.Callback):
    """Fails the run unless every process ends training with the same weights (for DDP tests)."""

    def on_train_end(self, trainer, pl_module):
        checksum = torch.stack([p.detach().double().sum() for p in pl_module.parameters()]).sum()
        everyone = trainer.strategy.all_gather(checksum)
        if not torch.allclose(everyone, everyone[0].expand_as(everyone), rtol=0, atol=1e-9):
            raise RuntimeError(f"processes ended with different weights: {everyone.tolist()}")


class DistinctUnlabeledBatches(L.Callback):
    """Fails the run unless, at every training step, the unlabeled batches of all processes, `"unlabeled"` and
    `"unlabeled_2"` (`SemiSupervised(second_unlabeled_batch=True)`), are all different batches (for DDP tests)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sums = torch.stack([batch["unlabeled"].double().sum(), batch["unlabeled_2"].double().sum()])
        everyone = trainer.strategy.all_gather(sums).flatten()  # (processes * 2,)
        if len(set(everyone.tolist())) != everyone.numel():
            raise RuntimeError(f"two unlabeled batches of step {batch_idx} are the same: {everyone.tolist()}")


class SaveTestMetrics(L.Callback):
    """Writes the metrics of a `test` (or `validate`, or `fit`: the last validation's) run, after the processes'
    sync, to `<default_root_dir>/test_metrics.json` (`validate_metrics.json`, `fit_metrics.json`)."""

    def on_test_end(self, trainer, pl_module):
        self.write(trainer, "test")

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "validate":
            self.write(trainer, "validate")

    def on_fit_end(self, trainer, pl_module):
        self.write(trainer, "fit")  # the last validation's metrics, among others

    @staticmethod
    def write(trainer, name):
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.default_root_dir) / f"{name}_metrics.json").write_text(json.dumps(metrics))


class DistinctActorSeeds(L.Callback):
    """Fails an A2C run unless every process's environments got their own seeds and start from their own states."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step > 0:  # the first update only: the environments have just been reset
            return
        seeds = torch.tensor(trainer.datamodule.actor_seeds(trainer.global_rank))
        first_obs = torch.as_tensor(pl_module._obs, dtype=torch.float64)
        all_seeds = trainer.strategy.all_gather(seeds).reshape(-1)
        all_obs = trainer.strategy.all_gather(first_obs)
        if len(set(all_seeds.tolist())) != all_seeds.numel():
            raise RuntimeError(f"processes share environment seeds: {all_seeds.tolist()}")
        if trainer.world_size > 1 and torch.equal(all_obs[0], all_obs[1]):
            raise RuntimeError("processes start from the same environment states")


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A random RGB image of (width, height) `size`."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


class SevenItems(L.LightningDataModule):
    """Seven evaluation items, the numbers 0..6, in batches of 2: under DDP on 2 processes the sampler repeats one
    item to make 8, so a naive mean is 21/8 and the mean that counts each item once is 3."""

    def val_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(7.0), batch_size=2)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(7.0), batch_size=2)


class MeanProbe(Technique):
    """A technique that only evaluates: logs the mean of the items it sees, through `first_visit` + `log_means`."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()

    def build(self) -> None:
        self.net = torch.nn.Linear(1, 1)

    def _evaluate(self, batch: Tensor, batch_idx: int, prefix: str) -> None:
        keep = self.first_visit(batch_idx, len(batch))
        self.log_means(prefix, {"mean": batch[keep].mean() if keep.any() else batch.sum() * 0}, int(keep.sum()))

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")
