"""MNIST-classifier FID of DCGAN, DCGAN + generator EMA and CGAN samples at equal training time, and the class
accuracy of CGAN samples.

1. Trains the MNIST classifier (configs/classifier/mnist.yaml) unless its checkpoint exists, and tests it.
2. Trains DCGAN (configs/dcgan/mnist.yaml with the CGAN recipe's batch size 128 and learning rate 2e-4, the paper's,
   so that only the conditioning differs; with an EMA callback) and CGAN (configs/cgan/mnist.yaml) for the same
   wall-time budget each (`--minutes`, Lightning's `max_time`).
3. Evaluates each final checkpoint with `validate` + `SampleQuality` on `--samples` generated images: DCGAN with its
   live weights and with its EMA weights (the same run, so the same training time), CGAN with its EMA weights and
   with its live weights, plus the real-vs-real floor (training vs test images).

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/cgan_mnist.py [--minutes 10] [--samples 10000] [--seed 0]
        [--evaluate-only]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import QUIET, ROOT, cli, ema_args, evaluate, max_time, sample_quality, trained
from lightning_gen.core.checkpoints import load_checkpoint

CLASSIFIER = ROOT / "checkpoints" / "mnist_classifier" / "last.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget of each GAN")
    parser.add_argument("--samples", type=int, default=10000, help="generated images per FID")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema-decay", type=float, default=0.999, help="decay of the generator EMA")
    parser.add_argument("--bias-correction", action="store_true",
                        help="bias-corrected EMA (usable from the first updates; see lightning_gen.callbacks.EMA)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "cgan_mnist"))
    parser.add_argument("--grid", default=str(ROOT / "docs" / "img" / "cgan_mnist.png"),
                        help="where to copy CGAN's grid")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training: measure the checkpoints already in --out again")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and not args.evaluate_only:
        shutil.rmtree(out)

    trained(CLASSIFIER, ROOT / "configs" / "classifier" / "mnist.yaml")
    classifier = evaluate("test", ROOT / "configs" / "classifier" / "mnist.yaml", CLASSIFIER)
    print(f"MNIST classifier test accuracy: {100 * classifier['test/accuracy']:.2f}%", flush=True)

    budget = max_time(args.minutes)
    ema = ema_args(args.ema_decay, args.bias_correction)
    ema_name = f"EMA {args.ema_decay}{' bias-corrected' if args.bias_correction else ''}"
    runs = {}
    for name, config, extra in [
        ("dcgan", ROOT / "configs" / "dcgan" / "mnist.yaml",
         ["--data.batch_size", "128", "--model.lr_g", "0.0002", "--model.lr_d", "0.0002",
          "--trainer.callbacks+=lightning_gen.callbacks.EMA", "--trainer.callbacks.decay=0.999"]),
        ("cgan", ROOT / "configs" / "cgan" / "mnist.yaml",
         ["--trainer.callbacks=[]", "--trainer.callbacks+=lightning_gen.callbacks.EMA",
          "--trainer.callbacks.decay=0.999"]),
    ]:
        folder = out / name
        start = time.perf_counter()
        if not args.evaluate_only:
            cli("fit", "--config", str(config), *extra, "--seed_everything", str(args.seed), "--trainer.max_epochs",
                "1000", "--trainer.max_time", budget, "--trainer.limit_val_batches", "0",
                "--trainer.default_root_dir", str(folder), *QUIET)
        ckpt = load_checkpoint(folder / "checkpoints" / "last.ckpt")
        minutes = float("nan") if args.evaluate_only else (time.perf_counter() - start) / 60  # not trained here
        runs[name] = {"config": config, "folder": folder, "minutes": minutes,
                      "epochs": ckpt["epoch"] + 1, "steps": ckpt["global_step"]}
        print(f"{name}: {runs[name]['epochs']} epochs, {runs[name]['steps']} optimizer steps, "
              f"{runs[name]['minutes']:.1f} min", flush=True)
    grids = sorted((out / "cgan" / "samples").glob("samples_epoch*.png"))  # the live generator's
    if grids and not args.evaluate_only:
        shutil.copy(grids[-1], args.grid)

    print(f"\nseed {args.seed}, {args.samples} generated images per row (fewer if the test set is smaller: the same N "
          "for all three sets), reference: a seeded random N of the training images; floor: a seeded random N of the "
          "test images vs the same reference\n")
    print("| model | weights | epochs | train time (min) | MNIST-classifier FID | KID | class accuracy (%) | "
          "lowest class (%) |")
    print("|---|---|---|---|---|---|---|---|")
    floor = None
    for name, use_ema in [("dcgan", False), ("dcgan", True), ("cgan", False), ("cgan", True)]:
        run = runs[name]
        m = sample_quality(run["config"], run["folder"] / "checkpoints" / "last.ckpt", CLASSIFIER, args.samples,
                           ema if use_ema else [])
        floor = m.get("val/mnist_classifier_fid_floor", floor)
        acc = m.get("val/mnist_classifier_class_accuracy")
        per_class = {k.rsplit("_", 1)[1]: v for k, v in m.items()
                     if k.startswith("val/mnist_classifier_class_accuracy_")}
        worst = min(per_class, key=per_class.get) if per_class else None
        print(f"| {name.upper()} | {ema_name if use_ema else 'live'} | {run['epochs']} | {run['minutes']:.1f} | "
              f"{m['val/mnist_classifier_fid']:.3f} | {m['val/mnist_classifier_kid']:.1f} | "
              f"{'-' if acc is None else f'{100 * acc:.2f}'} | "
              f"{'-' if worst is None else f'{100 * per_class[worst]:.1f} (digit {worst})'} |", flush=True)
    print(f"| real test images (floor) | - | - | - | {floor:.3f} | - | - | - |")


if __name__ == "__main__":
    main()
