"""The quick start as a user runs it, measured: trains configs/quickstart.yaml (the conditional GAN on the embedded
16x16 digits, no download), times it, and scores its samples with a classifier of the same digits
(configs/classifier/digits.yaml, trained first unless its checkpoint exists): class accuracy of `--samples` generated
images (the share the classifier gives the class they were made for), overall and per class, and the
digits-classifier FID beside its real-vs-real floor. Copies the last grid to docs/img/quickstart.png.

    python bench/quickstart.py [--seed 0] [--samples 1000] [--out bench/out/quickstart] [-- fit options]
"""

from __future__ import annotations

import argparse
import shutil
import time

from common import QUIET, ROOT, cli, evaluate, fresh_folder, parse_with_fit_options, sample_quality, trained

CONFIG = ROOT / "configs" / "quickstart.yaml"
CLASSIFIER_CONFIG = ROOT / "configs" / "classifier" / "digits.yaml"
CLASSIFIER = ROOT / "checkpoints" / "digits_classifier" / "last.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1000, help="generated images scored (100 per class)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "quickstart"))
    parser.add_argument("--grid", default=str(ROOT / "docs" / "img" / "quickstart.png"),
                        help="where to copy the last grid ('' for nowhere)")
    args, extra = parse_with_fit_options(parser)
    out = fresh_folder(args.out)
    classifier = evaluate("test", CLASSIFIER_CONFIG, trained(CLASSIFIER, CLASSIFIER_CONFIG))["test/accuracy"]

    start = time.perf_counter()  # the whole command, start-up included, as the user waits for it
    cli("fit", "--config", str(CONFIG), "--seed_everything", str(args.seed), "--trainer.default_root_dir", str(out),
        *QUIET, *extra)
    minutes = (time.perf_counter() - start) / 60
    grid = sorted((out / "samples").glob("samples_epoch*.png"))[-1]
    if args.grid:
        shutil.copy(grid, args.grid)
    m = sample_quality(out / "config.yaml", out / "checkpoints" / "last.ckpt", CLASSIFIER, args.samples)
    prefix = "val/digits_classifier"  # SampleQuality names the metrics after the classifier's data
    per_class = {int(k.rsplit("_", 1)[1]): v for k, v in m.items() if k.startswith(f"{prefix}_class_accuracy_")}
    worst = min(per_class, key=per_class.get)
    print(f"\ndigits classifier: {100 * classifier:.2f}% test accuracy; fit options: {' '.join(extra) or '(recipe)'}")
    print("| seed | epochs | wall time (whole command) | class accuracy | lowest class | digits-classifier FID | "
          "floor |")
    print("|---|---|---|---|---|---|---|")
    epochs = int(grid.stem.rsplit("epoch", 1)[1]) + 1  # samples_epoch0059.png: after 60 epochs
    print(f"| {args.seed} | {epochs} | {minutes:.2f} min | "
          f"{100 * m[f'{prefix}_class_accuracy']:.1f}% | {100 * per_class[worst]:.0f}% (digit {worst}) | "
          f"{m[f'{prefix}_fid']:.2f} | {m[f'{prefix}_fid_floor']:.2f} |")


if __name__ == "__main__":
    main()
