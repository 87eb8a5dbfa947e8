"""What the benchmark scripts share: the CLI as a subprocess, and the metrics table it prints."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lightning_gen.core.cli"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def cli(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """`lightning-gen ARGS` from the project root; raises if it fails. The metrics table is printed wide enough for
    long metric names (Lightning's table cuts them to the terminal's width, 80 columns when captured)."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=capture, text=True, check=True, env=env)


def parse_with_fit_options(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    """Parse the bench's arguments; whatever follows `--` is returned apart, as options for `lightning-gen fit`."""
    parser.add_argument("fit_options", nargs=argparse.REMAINDER, help="after `--`: options for `lightning-gen fit`")
    args = parser.parse_args()
    return args, [a for a in args.fit_options if a != "--"]


def fresh_folder(path: str | Path) -> Path:
    """`path` emptied (a bench run's output folder: a new run replaces the last)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    return path


def trained(ckpt: Path, config: Path) -> Path:
    """`ckpt`, after training `config` (which writes it) if it does not exist yet: a feature network of a metric."""
    if not ckpt.is_file():
        cli("fit", "--config", str(config), *QUIET)
    return ckpt


def max_time(minutes: float) -> str:
    """`--trainer.max_time` for a budget in minutes: DD:HH:MM:SS."""
    return time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))


def ema_args(decay: float, bias_correction: bool = True) -> list[str]:
    """CLI options adding a generator EMA (lightning_gen.callbacks.EMA, batch-norm statistics recomputed)."""
    return ["--trainer.callbacks+=lightning_gen.callbacks.EMA", f"--trainer.callbacks.decay={decay}",
            f"--trainer.callbacks.bias_correction={str(bias_correction).lower()}"]


def sample_quality(config: Path, ckpt: Path, classifier: Path, samples: int, ema: list[str] = ()) -> dict[str, float]:
    """`validate` a generator's checkpoint with SampleQuality on `classifier`'s features (FID, KID, class accuracy):
    the live generator, or with `ema` (`ema_args` of the EMA it was trained with) the average's."""
    return evaluate("validate", config, ckpt, "--trainer.limit_val_batches", "1", "--trainer.callbacks=[]", *ema,
                    "--trainer.callbacks+=lightning_gen.metrics.SampleQuality",
                    f"--trainer.callbacks.classifier_ckpt={classifier}", f"--trainer.callbacks.num_samples={samples}")


def printed_metrics(stdout: str) -> dict[str, float]:
    """The `<stage>/<name>  value` rows of the table Lightning prints after validate/test."""
    metrics = {}
    for line in stdout.splitlines():
        parts = line.replace("│", " ").split()  # with several dataloaders a row has one column per loader
        if len(parts) >= 2 and "/" in parts[0]:
            try:
                metrics[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return metrics


def evaluate(stage: str, config: Path, ckpt: Path, *extra: str) -> dict[str, float]:
    """Run `validate` or `test` on a checkpoint and return the metrics it printed."""
    return printed_metrics(cli(stage, "--config", str(config), "--ckpt_path", str(ckpt), *extra, *QUIET).stdout)


class Clock(Callback):
    """Times batches `warmup` .. `warmup + batches - 1`, counted across epochs (a small dataset has fewer)."""

    def __init__(self, warmup: int, batches: int) -> None:
        self.warmup, self.batches, self.start, self.seconds, self.done = warmup, batches, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.done == self.warmup:
            sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.done += 1
        if self.done == self.warmup + self.batches:
            sync()
            self.seconds = time.perf_counter() - self.start
            trainer.should_stop = True


def sync() -> None:
    """Wait for queued CUDA work (if any), so that a wall-clock reading covers it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class SaveAtMinutes(Callback):
    """Saves `<dirpath>/at_<m>min.ckpt` once the training time (Lightning's `Timer`, the clock `--trainer.max_time`
    reads) passes each of `minutes`: one run gives the checkpoints of several budgets. Give it to a CLI run with
    `PYTHONPATH=bench` and `--trainer.callbacks+=common.SaveAtMinutes`."""

    def __init__(self, minutes: list[float], dirpath: str) -> None:
        self.minutes, self.dirpath, self.saved = sorted(minutes), Path(dirpath), set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from lightning.pytorch.callbacks import Timer

        timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
        elapsed = timer.time_elapsed("train") / 60
        for m in self.minutes:
            if elapsed >= m and m not in self.saved:
                self.saved.add(m)
                trainer.save_checkpoint(self.dirpath / f"at_{m:g}min.ckpt")
