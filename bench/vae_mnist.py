"""VAE on real MNIST within a CPU time budget: trains `configs/vae/mnist.yaml` for `--minutes`, then runs `test` on
the 10,000 test images (each binarized once, by a fixed per-image draw) and prints a table: seed, epochs, training
wall time, negative ELBO (reconstruction and KL apart) and the k-sample importance-weighted NLL, in nats, with the
evaluation's wall time. Then (unless --no-pictures) short runs of the 2-D VAE and the CVAE for the README pictures.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/vae_mnist.py [--minutes 25] [--k 5000] [--seed 0]
        [--train-k 5] [--top-latent-dim 16] [--max-epochs 100] [--threads 1] [--no-pictures] [--out bench/out/vae_iwae]

`--train-k K` trains on the K-sample importance-weighted bound (the IWAE; no KL warm-up), `--top-latent-dim D` adds
a second stochastic layer of D units above the first (Burda et al.'s two-layer model); both are options of the
recipe, so the row is the recipe with those flags.

Published reference points (not measured here): a one-stochastic-layer VAE reaches about 86.8 nats and a
two-layer IWAE about 82.9 nats (Burda et al. 2015, k=5000, thousands of GPU epochs).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from lightning_gen.core.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lightning_gen.core.cli"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def fit(config: str, out: Path, seed: int, minutes: float, extra: list[str]) -> float:
    """Train `config` into `out` for at most `minutes` of wall time; returns the wall time in seconds."""
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    subprocess.run([*CLI, "fit", "--config", str(ROOT / config), "--seed_everything", str(seed),
                    "--trainer.max_time", f"00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
                    "--trainer.default_root_dir", str(out), "--trainer.logger", "false", *QUIET, *extra],
                   check=True, cwd=ROOT)
    return time.perf_counter() - start


def test(out: Path, k: int, extra: list[str]) -> tuple[dict[str, float], float]:
    """`test` from the run's last checkpoint with k importance samples; returns the metrics and the wall time."""
    logs = out / "test_logs"
    start = time.perf_counter()
    subprocess.run([*CLI, "test", "--config", str(out / "config.yaml"), "--ckpt_path",
                    str(out / "checkpoints" / "last.ckpt"), "--model.test_iw_samples", str(k),
                    "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(logs), *QUIET, *extra],
                   check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    (path,) = logs.rglob("metrics.csv")
    metrics = {key: float(v) for row in csv.DictReader(path.open()) for key, v in row.items() if v and key != "step"}
    return metrics, seconds


def epochs_done(out: Path, batches_per_epoch: int) -> float:
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    return ckpt["global_step"] / batches_per_epoch


def copy_picture(out: Path, key: str, dest: str) -> None:
    grids = sorted((out / "samples").glob(f"{key}_epoch*.png"))
    if grids:
        shutil.copy(grids[-1], ROOT / dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=25.0, help="training wall-time budget of the main VAE")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-k", type=int, default=1, help="importance samples of the training objective "
                        "(1: the ELBO, the VAE; K > 1: the IWAE bound, trained without KL warm-up)")
    parser.add_argument("--top-latent-dim", type=int, default=0,
                        help="units of a second stochastic layer above the first (0: one stochastic layer)")
    parser.add_argument("--max-epochs", type=int, default=-1,
                        help="stop the main VAE after this many epochs if the budget lasts longer (-1: no cap)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads of every run (0: torch's default)")
    parser.add_argument("--picture-minutes", type=float, default=4.0, help="budget of each picture run (2-D VAE, CVAE)")
    parser.add_argument("--no-pictures", action="store_true")
    parser.add_argument("--pictures-only", action="store_true", help="skip the main VAE (rerun the picture runs)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "vae_mnist"))
    args = parser.parse_args()
    out = Path(args.out)
    batches = 54_000 // args.batch_size  # MNIST's 60,000 less the 10% validation split, drop_last
    data = ["--data.batch_size", str(args.batch_size)]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the training and test subprocesses
    model = ["--model.train_iw_samples", str(args.train_k), "--trainer.max_epochs", str(args.max_epochs)]
    if args.top_latent_dim:
        model += ["--model.top_latent_dim", str(args.top_latent_dim)]
    if args.train_k > 1:
        model += ["--model.kl_warmup_epochs", "0"]  # the bound has no separate KL term to warm up
    name = "VAE" if args.train_k == 1 else f"IWAE (k = {args.train_k})"
    name += f", latent 32 + {args.top_latent_dim}" if args.top_latent_dim else ", latent 32"

    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    if not args.pictures_only:
        train_s = fit("configs/vae/mnist.yaml", out / "vae", args.seed, args.minutes, data + model)
        metrics, test_s = test(out / "vae", args.k, [])
        if not args.no_pictures:
            copy_picture(out / "vae", "samples", "docs/img/vae_mnist_samples.png")
            copy_picture(out / "vae", "reconstructions", "docs/img/vae_mnist_reconstructions.png")
            copy_picture(out / "vae", "interpolation", "docs/img/vae_mnist_interpolation.png")
        rows.append((name, args.seed, epochs_done(out / "vae", batches), train_s, metrics, test_s))
    if not args.no_pictures:
        for name, config, key in (("VAE, latent 2", "configs/vae/mnist_2d.yaml", "manifold"),
                                  ("CVAE, latent 16", "configs/cvae/mnist.yaml", "class_samples")):
            folder = out / Path(config).parent.name / Path(config).stem
            seconds = fit(config, folder, args.seed, args.picture_minutes, data)
            copy_picture(folder, key, f"docs/img/{Path(config).parent.name}_mnist_{key}.png")
            small, small_s = test(folder, 0, [])  # pictures only: the ELBO, no importance sampling
            rows.append((name, args.seed, epochs_done(folder, batches), seconds, small, small_s))

    print(f"\nMNIST test set (10,000 images, fixed binarization), {torch.get_num_threads()} CPU threads")
    print("| model | seed | epochs | training wall time | -ELBO (nats) | recon | KL | k | IW NLL (nats) "
          "| test wall time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, seed, ep, seconds, m, t in rows:
        k = next((int(key.split("nll_iw")[1]) for key in m if "nll_iw" in key), 0)
        nll = f"{m[f'test/nll_iw{k}']:.2f}" if k else "-"
        print(f"| {name} | {seed} | {ep:.1f} | {seconds / 60:.1f} min | {m['test/nelbo']:.2f} | "
              f"{m['test/recon']:.2f} | {m['test/kl']:.2f} | {k or '-'} | {nll} | {t / 60:.1f} min |")


if __name__ == "__main__":
    main()
