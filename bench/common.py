"""What the benchmark scripts share: the CLI as a subprocess, and the metrics table it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lightning_gen.cli"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def cli(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """`lightning-gen ARGS` from the project root; raises if it fails."""
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=capture, text=True, check=True)


def printed_metrics(stdout: str) -> dict[str, float]:
    """The `<stage>/<name>  value` rows of the table Lightning prints after validate/test."""
    metrics = {}
    for line in stdout.splitlines():
        parts = line.replace("│", " ").split()
        if len(parts) == 2 and "/" in parts[0]:
            try:
                metrics[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return metrics


def evaluate(stage: str, config: Path, ckpt: Path, *extra: str) -> dict[str, float]:
    """Run `validate` or `test` on a checkpoint and return the metrics it printed."""
    return printed_metrics(cli(stage, "--config", str(config), "--ckpt_path", str(ckpt), *extra, *QUIET).stdout)
