"""DCGAN on real MNIST within CPU budgets: MNIST-classifier FID and KID of `--samples` generated images after each of
`--minutes` of training (one run of the longest budget, checkpointed as it passes the shorter ones), or after exactly
`--epochs` epochs, beside the real-vs-real floor. Copies the sample grid of the first budget.

1. Trains the MNIST classifier behind the FID (configs/classifier/mnist.yaml) unless its checkpoint exists.
2. Trains configs/dcgan/mnist.yaml (plus any fit options after `--`: the ablation rows of docs/techniques/dcgan.md).
3. `validate` with `SampleQuality` on each checkpoint: FID and KID against a seeded random N of the training
   images; the floor is a seeded random N of the test images against the same reference.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/dcgan_mnist.py [--minutes 6 20 | --epochs 4] [--seed 0]
        [--samples 10000] [--ema 0.995] [--out bench/out/dcgan_mnist] [--grid docs/img/dcgan_mnist.png]
        [-- --model.loss bce ...]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from common import (
    QUIET,
    ROOT,
    cli,
    ema_args,
    fresh_folder,
    max_time,
    parse_with_fit_options,
    sample_quality,
    trained,
)
from lightning_gen.core.checkpoints import load_checkpoint
from lightning_gen.dcgan import DCGAN

CLASSIFIER = ROOT / "checkpoints" / "mnist_classifier" / "last.ckpt"
CONFIG = ROOT / "configs" / "dcgan" / "mnist.yaml"


def epochs_done(state: dict) -> float:
    """Epochs trained, fractional for a checkpoint saved within an epoch (a time budget's): the batches of the
    unfinished epoch over those of a whole one."""
    progress = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    whole, within = state["epoch"], progress["current"]["completed"]
    if whole == 0:
        return float(whole + 1)  # no whole epoch to measure one by: the first, begun
    return whole + within / ((progress["total"]["completed"] - within) / whole)


def save_grid(ckpt: Path, path: Path, n: int = 64) -> None:
    model = DCGAN.load_from_checkpoint(ckpt, map_location="cpu")
    images = torch.nn.functional.interpolate(model.sample(torch.arange(n)).add(1).div(2), scale_factor=2)  # nearest
    save_image(images, path, nrow=8, padding=4, pad_value=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[6.0, 20.0],
                        help="training-time budgets (one run of the longest, checkpointed at the others)")
    parser.add_argument("--epochs", type=int, default=None, help="train exactly this many epochs instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10000, help="generated images per FID")
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="also train a bias-corrected generator EMA of this decay and report its FID")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "dcgan_mnist"))
    parser.add_argument("--grid", default=str(ROOT / "docs" / "img" / "dcgan_mnist.png"),
                        help="where to write the grid of the first budget ('' for none)")
    args, extra = parse_with_fit_options(parser)
    out = fresh_folder(args.out)
    trained(CLASSIFIER, ROOT / "configs" / "classifier" / "mnist.yaml")

    if args.epochs is not None:
        length = ["--trainer.max_epochs", str(args.epochs)]
    else:
        longest = max(args.minutes)
        length = ["--trainer.max_epochs", "1000", "--trainer.max_time",
                  max_time(longest)]
        shorter = [m for m in args.minutes if m < longest]
        if shorter:
            length += ["--trainer.callbacks+=common.SaveAtMinutes", f"--trainer.callbacks.minutes={shorter}",
                       f"--trainer.callbacks.dirpath={out / 'checkpoints'}"]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])
    start = time.perf_counter()
    ema = ema_args(args.ema) if args.ema is not None else []
    cli("fit", "--config", str(CONFIG), *ema, "--seed_everything", str(args.seed), *length,
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(out), *QUIET, *extra)
    wall = (time.perf_counter() - start) / 60

    if args.epochs is not None:
        budgets = [(f"{args.epochs} epochs", out / "checkpoints" / "last.ckpt")]
    else:
        budgets = [(f"{m:g} min", out / "checkpoints" / f"at_{m:g}min.ckpt") for m in sorted(args.minutes)[:-1]]
        budgets.append((f"{max(args.minutes):g} min", out / "checkpoints" / "last.ckpt"))
    if args.grid:
        save_grid(budgets[0][1], Path(args.grid))
    print(f"\nseed {args.seed}; fit options: {' '.join(extra) or '(the recipe)'}; whole run {wall:.1f} min; "
          f"{args.samples} generated images per FID\n")
    print("| seed | budget | epochs | generator steps | weights | MNIST-classifier FID | MNIST-classifier KID |")
    print("|---|---|---|---|---|---|---|")
    floor = float("nan")
    for name, ckpt in budgets:
        state = load_checkpoint(ckpt)
        for weights, callbacks in [("live", []), *([(f"EMA {args.ema}", ema)] if ema else [])]:
            m = sample_quality(out / "config.yaml", ckpt, CLASSIFIER, args.samples, callbacks)
            floor = m.get("val/mnist_classifier_fid_floor", floor)
            print(f"| {args.seed} | {name} | {epochs_done(state):.1f} | {state['global_step'] // 2} | {weights} | "
                  f"{m['val/mnist_classifier_fid']:.2f} | {m['val/mnist_classifier_kid']:.1f} |", flush=True)
    print(f"| real test images (floor) | - | - | - | - | {floor:.2f} | - |")


if __name__ == "__main__":
    main()
