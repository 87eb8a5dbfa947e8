"""Semi-supervised MNIST: test accuracy vs number of labels, supervised-only vs the semi-supervised GAN, with the
same labeled images and the same network (Salimans et al.'s noisy MLP), over several seeds.

For every (labels, seed): the supervised `Classifier` (configs/classifier/mnist_100.yaml) and the `SGAN`
(configs/sgan/mnist_100.yaml) are trained with `--data.num_labeled <labels> --data.seed <seed>` (so both see the
same labeled images) and `--seed_everything <seed>`, then tested on the 10,000 MNIST test images. Each SGAN run
trains `--sgan-epochs` epochs or until `--sgan-minutes` of wall time have passed (Lightning's `max_time`),
whichever comes first; the supervised runs train for `--sup-epochs` epochs (of 599 batches each). Prints one row
per run and a mean +- std table.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/sgan_labels.py [--labels 100 1000] [--seeds 0 1 2]
        [--sgan-minutes 30] [--sgan-epochs 100] [--sup-epochs 10] [--accelerator gpu] [--sgan-args '...']
        [--out bench/out/sgan_labels]
"""

from __future__ import annotations

import argparse
import csv
import shlex
import shutil
import statistics
import time
from pathlib import Path

import torch

from common import QUIET, ROOT, cli, evaluate


def run(method: str, labels: int, seed: int, out: Path, sgan_minutes: float, sgan_epochs: int, sup_epochs: int,
        accelerator: str, extra: list[str]) -> dict:
    folder = out / f"{method}_{labels}_seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    common = ["--seed_everything", str(seed), "--data.num_labeled", str(labels), "--data.seed", str(seed),
              "--trainer.default_root_dir", str(folder), *QUIET,
              # the test accuracy after every epoch (validation here is the test set), for the trajectory column
              "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(folder),
              "--trainer.accelerator", accelerator]
    if method == "sgan":
        config = ROOT / "configs" / "sgan" / "mnist_100.yaml"
        limits = ["--trainer.max_epochs", str(sgan_epochs),
                  "--trainer.max_time", time.strftime("00:%H:%M:%S", time.gmtime(sgan_minutes * 60))]  # a cap
    else:
        config = ROOT / "configs" / "classifier" / "mnist_100.yaml"
        limits = ["--trainer.max_epochs", str(sup_epochs)]
    start = time.perf_counter()
    cli("fit", "--config", str(config), *common, *limits, *extra, capture=False)
    wall = time.perf_counter() - start
    ckpt = next(folder.glob("**/checkpoints/last.ckpt"))  # the run folder is the logger's version folder
    epochs = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] + 1
    metrics = evaluate("test", ckpt.parent.parent / "config.yaml", ckpt, "--trainer.accelerator", accelerator)
    row = {"method": method, "labels": labels, "seed": seed, "epochs": epochs, "minutes": wall / 60,
           "accuracy": metrics["test/accuracy"]}
    trajectory = epoch_accuracies(folder)
    marks = " ".join(f"{e}:{100 * trajectory[e - 1]:.1f}" for e in (10, 20, 30, 40, 50) if e <= len(trajectory))
    print(f"| {method} | {labels} | {seed} | {epochs} | {wall / 60:.1f} | {marks} | {100 * row['accuracy']:.2f} |",
          flush=True)
    if len(trajectory) > 1:
        print(f"  {method} seed {seed}, test accuracy (%) after each epoch: "
              + " ".join(f"{100 * a:.2f}" for a in trajectory), flush=True)
    return row


def epoch_accuracies(folder: Path) -> list[float]:
    """`val/accuracy` after each epoch, from the run's CSV log."""
    rows = [r for path in sorted(folder.glob("lightning_logs/version_*/metrics.csv"))
            for r in csv.DictReader(path.open())]
    return [float(r["val/accuracy"]) for r in rows if r.get("val/accuracy")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, nargs="+", default=[100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["supervised", "sgan"], choices=["supervised", "sgan"])
    parser.add_argument("--sgan-minutes", type=float, default=30.0, help="wall-time cap of each SGAN run")
    parser.add_argument("--sgan-epochs", type=int, default=100, help="epochs of each SGAN run (if the cap allows)")
    parser.add_argument("--sup-epochs", type=int, default=10, help="epochs of each supervised-only run")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator of every run (cpu, gpu)")
    parser.add_argument("--sgan-args", default="", help="extra CLI arguments of the SGAN runs, one string "
                        "(e.g. '--trainer.callbacks.decay 0.999 --trainer.callbacks.bias_correction false')")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "sgan_labels"))
    args = parser.parse_args()
    out = Path(args.out)
    print("| method | labels | seed | epochs | wall time (min) | test accuracy (%) after epoch e (e:acc) | "
          "final test accuracy (%) |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = [run(m, n, s, out, args.sgan_minutes, args.sgan_epochs, args.sup_epochs, args.accelerator,
                shlex.split(args.sgan_args) if m == "sgan" else [])
            for n in args.labels for s in args.seeds for m in args.methods]
    print("\n| labels | method | seeds | test accuracy (%), mean +- std | min | max | wall time per run (min) |")
    print("|---|---|---|---|---|---|---|")
    for n in args.labels:
        for m in args.methods:
            acc = [100 * r["accuracy"] for r in rows if r["labels"] == n and r["method"] == m]
            minutes = [r["minutes"] for r in rows if r["labels"] == n and r["method"] == m]
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            print(f"| {n} | {m} | {len(acc)} | {statistics.mean(acc):.2f} +- {std:.2f} | {min(acc):.2f} | "
                  f"{max(acc):.2f} | {statistics.mean(minutes):.1f} |")


if __name__ == "__main__":
    main()
