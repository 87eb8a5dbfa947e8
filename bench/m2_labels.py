"""Semi-supervised VAE on MNIST (Kingma et al. 2014): test accuracy vs number of labels for M2, M1+M2 and an M1 +
logistic-regression baseline, over several seeds, beside the semi-supervised GAN at the same labels.

M1 (configs/m2vae/m1_mnist.yaml, a VAE with 50 latent dimensions, no labels) is trained once per bench run for
`--m1-epochs` epochs and shared by every M1+M2 and M1 + logistic-regression run; its wall time is reported apart.
For every (labels, seed): M2 (configs/m2vae/mnist_100.yaml) and M1+M2 (configs/m2vae/m1m2_mnist_100.yaml) are
trained with `--data.num_labeled <labels> --data.seed <seed> --seed_everything <seed>`, so they see the labeled
images, and the 1,000 held-out validation images, of the SGAN bench (bench/sgan_labels.py) with the same seed. Each
run trains exactly `--m2-epochs` / `--m1m2-epochs` epochs (no wall-time cap, so the same command gives the same
figures on any machine; the wall time is printed beside them); the 10,000 MNIST test images are scored once, after
the last epoch. `m1_logreg` fits a multinomial logistic regression (scikit-learn) on the M1 latent means of the
labeled images alone. Prints one row per run, a mean +- std table with the SGAN's figures and the paper's (labelled
as published), and writes both as CSV under `--out`.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/m2_labels.py [--labels 100 600 1000 3000] [--seeds 0 1 2]
        [--methods m1m2 m2 m1_logreg] [--m1-epochs 10] [--m1m2-epochs 45] [--m2-epochs 10] [--out bench/out/m2_labels]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import time
from pathlib import Path

from common import QUIET, ROOT, cli, evaluate
from lightning_gen.core.checkpoints import load_checkpoint

CONFIGS = {"m2": ROOT / "configs" / "m2vae" / "mnist_100.yaml",
           "m1m2": ROOT / "configs" / "m2vae" / "m1m2_mnist_100.yaml"}
M1_CONFIG = ROOT / "configs" / "m2vae" / "m1_mnist.yaml"
PUBLISHED = {  # Kingma et al. 2014, Table 1: MNIST test error (%), published
    100: {"M1+TSVM": 11.82, "M2": 11.97, "M1+M2": 3.33},
    600: {"M1+TSVM": 5.72, "M2": 4.94, "M1+M2": 2.59},
    1000: {"M1+TSVM": 4.24, "M2": 3.60, "M1+M2": 2.40},
    3000: {"M1+TSVM": 3.49, "M2": 3.92, "M1+M2": 2.18},
}


def train_m1(out: Path, epochs: int, accelerator: str, extra: list[str]) -> tuple[Path, float]:
    folder = out / "m1"
    if folder.exists():
        shutil.rmtree(folder)
    start = time.perf_counter()
    cli("fit", "--config", str(M1_CONFIG), "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir",
        str(folder), "--trainer.accelerator", accelerator, *QUIET, *extra, capture=False)
    wall = time.perf_counter() - start
    return next(folder.glob("**/checkpoints/last.ckpt")), wall


def run(method: str, labels: int, seed: int, out: Path, epochs: int, m1: Path | None, accelerator: str,
        extra: list[str]) -> dict:
    folder = out / f"{method}_{labels}_seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    config = CONFIGS[method]
    args = ["--seed_everything", str(seed), "--data.num_labeled", str(labels), "--data.seed", str(seed),
            "--trainer.default_root_dir", str(folder), "--trainer.max_epochs", str(epochs),
            "--trainer.accelerator", accelerator, *QUIET,
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(folder)]
    if m1 is not None:
        args += ["--model.m1_ckpt", str(m1)]
    start = time.perf_counter()
    cli("fit", "--config", str(config), *args, *extra, capture=False)
    wall = time.perf_counter() - start
    ckpt = next(folder.glob("**/checkpoints/last.ckpt"))
    done = load_checkpoint(ckpt)["epoch"] + 1
    metrics = evaluate("test", ckpt.parent.parent / "config.yaml", ckpt, "--trainer.accelerator", accelerator)
    trajectory = epoch_accuracies(folder)
    return {"method": method, "labels": labels, "seed": seed, "epochs": done, "minutes": wall / 60,
            "accuracy": metrics["test/accuracy"], "trajectory": trajectory}


def m1_logreg(labels: int, seed: int, m1: Path) -> dict:
    """Logistic regression on the M1 latent means of the labeled images (the same split as the other runs)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from datamodules import MNIST, SemiSupervised
    from lightning_gen.m2vae import load_latent_encoder

    start = time.perf_counter()
    dm = SemiSupervised(MNIST(batch_size=100), num_labeled=labels, seed=seed, num_validation=1000)
    dm.setup("fit")
    model, _ = load_latent_encoder(str(m1))

    def encode(dataset) -> tuple:
        loader = torch.utils.data.DataLoader(dataset, batch_size=1000)
        feats, ys = [], []
        with torch.no_grad():
            for x, y in loader:
                feats.append(model.encode(x.float().clamp(-1, 1))[0])
                ys.append(y)
        return torch.cat(feats).numpy(), torch.cat(ys).numpy()

    x_l, y_l = encode(dm.labeled_set)
    x_t, y_t = encode(dm.test_set)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(x_l, y_l)
    return {"method": "m1_logreg", "labels": labels, "seed": seed, "epochs": 0,
            "minutes": (time.perf_counter() - start) / 60, "accuracy": float(clf.score(x_t, y_t)), "trajectory": []}


def epoch_accuracies(folder: Path) -> list[float]:
    """`val/accuracy` after each epoch, from the run's CSV log."""
    rows = [r for path in sorted(folder.glob("lightning_logs/version_*/metrics.csv"))
            for r in csv.DictReader(path.open())]
    return [float(r["val/accuracy"]) for r in rows if r.get("val/accuracy")]


def sgan_figures() -> dict[int, str]:
    """The SGAN's test accuracy (%) by labels: `bench/out/sgan_labels/summary.csv` (labels, mean, std) if there, else
    the summary row of docs/techniques/sgan.md."""
    found: dict[int, str] = {}
    summary = ROOT / "bench" / "out" / "sgan_labels" / "summary.csv"
    if summary.is_file():
        for r in csv.DictReader(summary.open()):
            if r.get("method", "sgan") == "sgan":
                found[int(r["labels"])] = f"{float(r['mean']):.2f} +- {float(r['std']):.2f}"
    if not found:
        page = (ROOT / "docs" / "techniques" / "sgan.md").read_text()
        for n, mean, std in re.findall(r"^\| SGAN \(this project[^|]*\| (\d+) \| \d+ \| \**([\d.]+) \+- ([\d.]+)",
                                       page, flags=re.MULTILINE):
            found[int(n)] = f"{mean} +- {std} (docs/techniques/sgan.md)"
    return found


NAMES = {"m2": "M2", "m1m2": "M1+M2", "m1_logreg": "M1 + logistic regression"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, nargs="+", default=[100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["m1m2", "m2", "m1_logreg"], choices=list(NAMES))
    parser.add_argument("--m1-epochs", type=int, default=10, help="epochs of the M1 VAE (trained once)")
    parser.add_argument("--m1m2-epochs", type=int, default=45, help="epochs of each M1+M2 run")
    parser.add_argument("--m2-epochs", type=int, default=10, help="epochs of each M2 run")
    parser.add_argument("--m1", default=None, help="an M1 checkpoint to use instead of training one")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator of every run (cpu, gpu)")
    parser.add_argument("--smoke", action="store_true", help="a few batches per epoch: checks the script only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "m2_labels"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    smoke = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
             "--trainer.limit_test_batches", "2"] if args.smoke else []
    m1, m1_minutes = None, 0.0
    if any(m in ("m1m2", "m1_logreg") for m in args.methods):
        if args.m1:
            m1 = Path(args.m1)
        else:
            m1, seconds = train_m1(out, args.m1_epochs, args.accelerator, smoke)
            m1_minutes = seconds / 60
            print(f"M1 (VAE, 50 latent dims): {args.m1_epochs} epochs, {m1_minutes:.1f} min, {m1}", flush=True)
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print("| method | labels | seed | epochs | wall time (min) | validation accuracy (%) after epoch e (e:acc) | "
          "test accuracy (%) | test error (%) |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for n in args.labels:
        for s in args.seeds:
            for method in args.methods:
                if method == "m1_logreg":
                    row = m1_logreg(n, s, m1)
                else:
                    epochs = args.m1m2_epochs if method == "m1m2" else args.m2_epochs
                    row = run(method, n, s, out, epochs, m1 if method == "m1m2" else None, args.accelerator, smoke)
                rows.append(row)
                t = row["trajectory"]
                marks = " ".join(f"{e}:{100 * t[e - 1]:.1f}" for e in (1, 5, 10, 20, 30, 50, 100) if e <= len(t))
                print(f"| {NAMES[method]} | {n} | {s} | {row['epochs']} | {row['minutes']:.1f} | {marks} | "
                      f"{100 * row['accuracy']:.2f} | {100 - 100 * row['accuracy']:.2f} |", flush=True)
    with (out / "runs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "labels", "seed", "epochs", "minutes", "test_accuracy", "val_accuracy_per_epoch"])
        for r in rows:
            writer.writerow([r["method"], r["labels"], r["seed"], r["epochs"], f"{r['minutes']:.2f}",
                             f"{r['accuracy']:.4f}", " ".join(f"{a:.4f}" for a in r["trajectory"])])
    sgan = sgan_figures()
    print(f"\nM1: {args.m1_epochs} epochs, {m1_minutes:.1f} min (once, shared by every M1+M2 and M1 + logistic "
          "regression run)\n")
    print("| labels | method | seeds | epochs | test accuracy (%), mean +- std | test error (%), mean | "
          "wall time per run (min) |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for n in args.labels:
        for method in args.methods:
            sel = [r for r in rows if r["labels"] == n and r["method"] == method]
            acc = [100 * r["accuracy"] for r in sel]
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            mean = statistics.mean(acc)
            minutes = statistics.mean(r["minutes"] for r in sel)
            summary.append([n, method, len(acc), sel[0]["epochs"], f"{mean:.2f}", f"{std:.2f}", f"{minutes:.2f}"])
            print(f"| {n} | {NAMES[method]} (this project) | {len(acc)} | {sel[0]['epochs']} | {mean:.2f} +- "
                  f"{std:.2f} | {100 - mean:.2f} | {minutes:.1f} |")
        if n in sgan:
            print(f"| {n} | SGAN (this project, bench/sgan_labels.py) | - | - | {sgan[n]} | - | - |")
        for name, error in PUBLISHED.get(n, {}).items():
            print(f"| {n} | {name}, Kingma et al. 2014 Table 1 (published) | - | - | {100 - error:.2f} | {error:.2f} "
                  "| - |")
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["labels", "method", "seeds", "epochs", "mean", "std", "minutes"])
        writer.writerows(summary)
        writer.writerow(["m1", "m1", 1, args.m1_epochs, "", "", f"{m1_minutes:.2f}"])


if __name__ == "__main__":
    main()
