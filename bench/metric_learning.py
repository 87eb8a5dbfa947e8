"""Metric learning: contrastive (Siamese) vs triplet (semi-hard, batch-hard) vs a supervised classifier's
penultimate features, on classes never seen in training, and the Omniglot 20-way one-shot accuracy.

- `mnist` / `cifar10`: trained on classes 0-4 (`configs/<technique>/mnist.yaml`: `ClassBatches` with
  `train_classes: [0..4]`), scored on the test images of classes 5-9 (precision@1, MAP@R, 5-NN accuracy,
  leave-one-out: Musgrave et al. 2020). The classifier baseline is `Classifier` (the project's small CNN) trained on
  the same images of classes 0-4 with cross-entropy; its penultimate features (`Classifier.features`) are scored
  the same way.
- `omniglot`: trained on the two minimal background splits (222 characters, each also turned by 90, 180 and 270
  degrees as new classes; 20 more held out for validation),
  tested on Lake et al.'s 20 runs of 20-way one-shot classification (`configs/<technique>/omniglot.yaml`).

Every run trains a fixed number of epochs (`--epochs`, per task), so the same command gives the same figures on
any machine; the wall time is printed beside them. One row per run, and the table is also written to
`<out>/results.csv`.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/metric_learning.py [--tasks omniglot mnist cifar10]
        [--methods contrastive verification semi_hard batch_hard all_triplets classifier] [--seed 0]
        [--epochs omniglot=15 mnist=5 cifar10=5] [--out bench/out/metric_learning] [--set=--data.data.rotations=false]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import torch

from common import QUIET, ROOT, cli, evaluate
from datamodules import MNIST, ClassBatches, ImageFolder
from lightning_gen.classifier import load_classifier
from lightning_gen.metrics.retrieval import retrieval_metrics

METHODS = {  # method: (technique config folder, extra options)
    "contrastive": ("siamese", ["--model.head", "distance"]),
    "verification": ("siamese", ["--model.head", "verification"]),
    "semi_hard": ("triplet", ["--model.mining", "semi_hard"]),
    "batch_hard": ("triplet", ["--model.mining", "batch_hard"]),
    "all_triplets": ("triplet", ["--model.mining", "all"]),
    "classifier": ("classifier", []),
}
EPOCHS = {"omniglot": 15, "mnist": 5, "cifar10": 5}
DATA = {"mnist": lambda batch_size: MNIST(batch_size=batch_size),
        "cifar10": lambda batch_size: ImageFolder(root="$LIGHTNING_GEN_DATA/cifar10/train", verify=False,
                                                  test_root="$LIGHTNING_GEN_DATA/cifar10/test", batch_size=batch_size)}


def classifier_features(ckpt: Path, task: str) -> dict[str, float]:
    """The classifier's penultimate features of the test images of classes 5-9, scored like the embeddings."""
    data = ClassBatches(DATA[task](batch_size=500), eval_classes=[5, 6, 7, 8, 9])
    data.setup("test")
    model = load_classifier(str(ckpt))
    features, labels = [], []
    with torch.no_grad():
        for images, batch_labels in data.test_dataloader():
            features.append(model.features(images))
            labels.append(batch_labels)
    metrics = retrieval_metrics(torch.cat(features), torch.cat(labels), k=5)
    return {f"test/{k}": v for k, v in metrics.items() if k != "queries"}


def run(task: str, method: str, seed: int, epochs: int, out: Path, options: list[str]) -> dict:
    folder = out / f"{task}_{method}_seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    technique, extra = METHODS[method]
    extra = [*extra, *options]
    common = ["--seed_everything", str(seed), "--trainer.default_root_dir", str(folder), *QUIET]
    if technique == "classifier":
        config = ROOT / "configs" / "classifier" / f"{task}_0to4.yaml"
    else:
        config = ROOT / "configs" / technique / f"{'mnist' if task == 'cifar10' else task}.yaml"
        if task == "cifar10":
            extra = [*extra, "--data.data", "datamodules.ImageFolder", "--data.data.root",
                     "$LIGHTNING_GEN_DATA/cifar10/train", "--data.data.test_root", "$LIGHTNING_GEN_DATA/cifar10/test",
                     "--data.data.verify", "false", "--data.data.batch_size", "500"]
    start = time.perf_counter()
    cli("fit", "--config", str(config), *common, "--trainer.max_epochs", str(epochs), *extra, capture=False)
    wall = time.perf_counter() - start
    ckpt = folder / "checkpoints" / "last.ckpt"
    if technique == "classifier":
        metrics = classifier_features(ckpt, task)
    else:
        metrics = evaluate("test", config, ckpt, *common, *extra)
    return {"task": task, "method": method, "seed": seed, "epochs": epochs, "minutes": wall / 60, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["omniglot", "mnist"], choices=["omniglot", "mnist", "cifar10"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", nargs="*", default=[], help="per task, e.g. omniglot=30 mnist=5")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "metric_learning")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION",
                        help="an option for every fit and test, e.g. --set=--data.data.rotations=false")
    args = parser.parse_args()
    epochs = {**EPOCHS, **{k: int(v) for k, v in (item.split("=") for item in args.epochs)}}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in args.tasks:
        for method in args.methods:
            if task == "omniglot" and method == "classifier":
                continue  # 222 classes of 18 images: the one-shot rows compare the metric losses
            rows.append(run(task, method, args.seed, epochs[task], args.out, args.set))
            print_table(rows)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for row in rows for k in row}))
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'task':9} {'method':13} {'seed':>4} {'epochs':>6} {'minutes':>7} {'P@1':>7} {'MAP@R':>7} {'5-NN':>7} "
          f"{'one-shot':>8}")
    for row in rows:
        cells = [row.get(f"test/{k}") for k in ("precision_at_1", "map_at_r", "knn_accuracy", "one_shot_accuracy")]
        shown = " ".join(f"{100 * v:7.2f}" if v is not None else f"{'':>7}" for v in cells[:3])
        shot = f"{100 * cells[3]:8.2f}" if cells[3] is not None else ""
        print(f"{row['task']:9} {row['method']:13} {row['seed']:>4} {row['epochs']:>6} {row['minutes']:>7.1f} "
              f"{shown} {shot}", flush=True)


if __name__ == "__main__":
    main()
