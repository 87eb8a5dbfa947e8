"""Transfer learning on CIFAR-10: the ImageNet MobileNet v1 fine-tuned (configs/classifier/cifar10_mobilenet.yaml)
against the same network trained from scratch (`--model.weights random`) for the same wall-clock budget.

Each run is `lightning-gen fit` with `--trainer.max_time` = the budget (the run stops at the first batch past it and
saves its checkpoint), then `lightning-gen test` on the 10,000 test images. With `--side-by-side` the two runs train
at the same time, one thread each (two cores for two runs); otherwise one after the other with `--threads` threads.
The table gives the seed, the epochs reached, each run's wall time and its test accuracy.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/transfer_cifar10.py [--minutes 30] [--side-by-side]
        [--runs pretrained scratch] [--seed 0] [--out bench/out/transfer_cifar10] [--set=--model.input_size=96]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import time
from pathlib import Path

import torch

from common import CLI, QUIET, ROOT, evaluate

CONFIG = ROOT / "configs" / "classifier" / "cifar10_mobilenet.yaml"
RUNS = {"pretrained": [], "scratch": ["--model.weights", "random"]}


def fit_command(run: str, seed: int, minutes: float, folder: Path, options: list[str]) -> list[str]:
    hours, rest = divmod(int(minutes * 60), 3600)
    budget = f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return [*CLI, "fit", "--config", str(CONFIG), *RUNS[run], "--seed_everything", str(seed),
            "--trainer.max_time", budget, "--trainer.max_epochs", "1000", "--trainer.default_root_dir", str(folder),
            "--checkpoint.dirpath", str(folder / "checkpoints"), *options, *QUIET]


def epochs_reached(ckpt: Path) -> float:
    """Training epochs done, in batches: 45,000 training images (10% of 50,000 held out) / 64 per batch = 703."""
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] / 703


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per run (wall clock)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side-by-side", action="store_true", help="train the runs at once, one thread each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run when run one after the other")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "transfer_cifar10")
    parser.add_argument("--set", action="append", default=[], help="extra CLI option for every run, e.g. "
                        "--set=--model.input_size=96 (one option or option=value per --set)")
    args = parser.parse_args()
    options = [part for item in args.set for part in item.split("=", 1)]
    threads = 1 if args.side_by_side else args.threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    folders = {run: args.out / f"{run}_seed{args.seed}" for run in args.runs}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    walls: dict[str, float] = {}
    started = {}
    processes = {}
    for run in args.runs:
        started[run] = time.perf_counter()
        folders[run].mkdir(parents=True)
        log = (folders[run] / "fit.log").open("w")
        processes[run] = subprocess.Popen(fit_command(run, args.seed, args.minutes, folders[run], options), cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT)
        if not args.side_by_side:
            processes[run].wait()
            walls[run] = time.perf_counter() - started[run]
    for run, process in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"{run} failed: see {folders[run] / 'fit.log'}")
        walls.setdefault(run, time.perf_counter() - started[run])
    rows = []
    for run in args.runs:
        ckpt = folders[run] / "checkpoints" / "last.ckpt"
        metrics = evaluate("test", CONFIG, ckpt, *RUNS[run], *options)
        accuracy = round(100 * metrics["test/accuracy"], 2)
        rows.append({"run": run, "seed": args.seed, "threads": threads, "epochs": round(epochs_reached(ckpt), 2),
                     "fit_minutes": round(walls[run] / 60, 1), "test_accuracy": accuracy})
    print(f"\nCIFAR-10, MobileNet v1 (alpha 0.25), budget {args.minutes} min per run, options {options or 'none'}")
    print("| run | seed | threads | epochs | fit minutes | test accuracy (%) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['seed']} | {row['threads']} | {row['epochs']} | {row['fit_minutes']} | "
              f"{row['test_accuracy']} |")
    with (args.out / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
