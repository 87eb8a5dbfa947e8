"""Semi-supervised MNIST: test accuracy vs number of labels, supervised-only vs the semi-supervised GAN, with the
same labeled images and the same network (Salimans et al.'s noisy MLP), over several seeds.

For every (labels, seed): the supervised `Classifier` (configs/classifier/mnist_100.yaml) and the `SGAN`
(configs/sgan/mnist_100.yaml) are trained with `--data.num_labeled <labels> --data.seed <seed>` (so both see the
same labeled images and the same 1,000 held-out validation images) and `--seed_everything <seed>`. Each SGAN run
trains exactly `--sgan-epochs` epochs and each supervised run `--sup-epochs` epochs (no wall-time cap, so the same
command gives the same figures on any machine; the wall time is reported beside them). The accuracy after each
epoch is measured on the validation images, held out of MNIST's training part; the 10,000 MNIST test images are
scored once, after the last epoch. Prints one row per run and a mean +- std table.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/sgan_labels.py [--labels 100 1000] [--seeds 0 1 2]
        [--sgan-epochs 30] [--sup-epochs 10] [--accelerator gpu] [--sgan-args '...'] [--out bench/out/sgan_labels]

The longer runs of the SGAN page (120 epochs, the learning rates decaying over the last 60):

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/sgan_labels.py --methods sgan --seeds 0 1 --sgan-epochs 120 \
        --sgan-args '--model.lr_constant_epochs 60 --model.lr_decay_epochs 60' --out bench/out/sgan_long
"""

from __future__ import annotations

import argparse
import csv
import shlex
import shutil
import statistics
import time
from pathlib import Path

from common import QUIET, ROOT, cli, evaluate
from lightning_gen.core.checkpoints import load_checkpoint


def run(method: str, labels: int, seed: int, out: Path, sgan_epochs: int, sup_epochs: int, accelerator: str,
        extra: list[str], evaluate_only: bool = False) -> dict:
    folder = out / f"{method}_{labels}_seed{seed}"
    if folder.exists() and not evaluate_only:
        shutil.rmtree(folder)
    common = ["--seed_everything", str(seed), "--data.num_labeled", str(labels), "--data.seed", str(seed),
              "--trainer.default_root_dir", str(folder), *QUIET,
              # the held-out validation accuracy after every epoch, for the trajectory columns
              "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(folder),
              "--trainer.accelerator", accelerator]
    if method == "sgan":
        config = ROOT / "configs" / "sgan" / "mnist_100.yaml"
        limits = ["--trainer.max_epochs", str(sgan_epochs)]
    else:
        config = ROOT / "configs" / "classifier" / "mnist_100.yaml"
        limits = ["--trainer.max_epochs", str(sup_epochs)]
    start = time.perf_counter()
    if not evaluate_only:
        cli("fit", "--config", str(config), *common, *limits, *extra, capture=False)
    wall = float("nan") if evaluate_only else time.perf_counter() - start
    ckpt = next(folder.glob("**/checkpoints/last.ckpt"))  # the run folder is the logger's version folder
    epochs = load_checkpoint(ckpt)["epoch"] + 1
    config_used = ckpt.parent.parent / "config.yaml"
    metrics = evaluate("test", config_used, ckpt, "--trainer.accelerator", accelerator)  # the running average
    live = evaluate("test", config_used, ckpt, "--trainer.accelerator", accelerator, "--trainer.callbacks=[]")
    row = {"method": method, "labels": labels, "seed": seed, "epochs": epochs, "minutes": wall / 60,
           "accuracy": metrics["test/accuracy"], "live": live["test/accuracy"]}
    trajectory = epoch_accuracies(folder)
    shown = sorted({e for e in (1, 5, 10, 20, 30, 60, 90, 150, 300) if e <= len(trajectory)} | {len(trajectory)})
    marks = " ".join(f"{e}:{100 * trajectory[e - 1]:.1f}" for e in shown if e >= 1)
    print(f"| {method} | {labels} | {seed} | {epochs} | {wall / 60:.1f} | {marks} | {100 * row['accuracy']:.2f} | "
          f"{100 * row['live']:.2f} |", flush=True)
    if len(trajectory) > 1:
        print(f"  {method} seed {seed}, validation accuracy (%) after each epoch: "
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
    parser.add_argument("--sgan-epochs", type=int, default=30, help="epochs of each SGAN run")
    parser.add_argument("--sup-epochs", type=int, default=10, help="epochs of each supervised-only run")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator of every run (cpu, gpu)")
    parser.add_argument("--sgan-args", default="", help="extra CLI arguments of the SGAN runs, one string "
                        "(e.g. '--trainer.callbacks.decay 0.999 --trainer.callbacks.bias_correction false')")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "sgan_labels"))
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training: test the checkpoints already in --out (wall time shown as nan)")
    args = parser.parse_args()
    out = Path(args.out)
    print("| method | labels | seed | epochs | wall time (min) | validation accuracy (%) after epoch e (e:acc) | "
          "test accuracy (%), running average | test accuracy (%), live weights |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rows = [run(m, n, s, out, args.sgan_epochs, args.sup_epochs, args.accelerator,
                shlex.split(args.sgan_args) if m == "sgan" else [], args.evaluate_only)
            for n in args.labels for s in args.seeds for m in args.methods]
    print("\n| labels | method | weights | seeds | test accuracy (%), mean +- std | min | max | "
          "wall time per run (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.labels:
        for m in args.methods:
            for key, weights in (("accuracy", "running average"), ("live", "live")):
                acc = [100 * r[key] for r in rows if r["labels"] == n and r["method"] == m]
                minutes = [r["minutes"] for r in rows if r["labels"] == n and r["method"] == m]
                std = statistics.stdev(acc) if len(acc) > 1 else 0.0
                print(f"| {n} | {m} | {weights} | {len(acc)} | {statistics.mean(acc):.2f} +- {std:.2f} | "
                      f"{min(acc):.2f} | {max(acc):.2f} | {statistics.mean(minutes):.1f} |")


if __name__ == "__main__":
    main()
