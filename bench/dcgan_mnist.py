"""DCGAN on real MNIST within a CPU budget: trains `configs/dcgan/mnist.yaml`, prints a table (seed, epochs,
wall time, losses and discriminator accuracy on the held-out validation images) and copies the last sample grid.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/dcgan_mnist.py [--epochs 5] [--out bench/out/dcgan_mnist]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, evaluate
from lightning_gen.core.checkpoints import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "dcgan_mnist"))
    parser.add_argument("--grid", default=str(ROOT / "docs" / "img" / "dcgan_mnist.png"),
                        help="where to copy the last grid")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    cli = [sys.executable, "-m", "lightning_gen.core.cli"]
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    start = time.perf_counter()
    subprocess.run([*cli, "fit", "--config", str(ROOT / "configs/dcgan/mnist.yaml"), "--seed_everything",
                    str(args.seed), "--trainer.max_epochs", str(args.epochs), "--trainer.default_root_dir", str(out),
                    *quiet], check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    grid = sorted((out / "samples").glob("*.png"))[-1]
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(grid, args.grid)
    metrics = evaluate("validate", out / "config.yaml", out / "checkpoints" / "last.ckpt",
                       "--trainer.limit_val_batches", "1.0")
    nan = float("nan")
    print("\n| seed | epochs | optimizer steps | wall time (fit) | val/d_loss | val/g_loss | val/d_accuracy | grid |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.seed} | {ckpt['epoch'] + 1} | {ckpt['global_step']} | {wall / 60:.1f} min | "
          f"{metrics.get('val/d_loss', nan):.3f} | {metrics.get('val/g_loss', nan):.3f} | "
          f"{metrics.get('val/d_accuracy', nan):.3f} | {Path(args.grid).relative_to(ROOT)} |")


if __name__ == "__main__":
    main()
