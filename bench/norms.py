"""Normalisation against batch size: the CIFAR-10 classifier (`Classifier`, the small `cnn`) trained with each
`norm` (batch, layer, instance, group, none) at batch sizes 2, 8, 32 and 128, for the same number of training
images seen, then scored on the 10,000 CIFAR-10 test images.

The data is `datamodules.ImageFolder` on `$LIGHTNING_GEN_DATA/cifar10/{train,test}` (its 45,000-image training split;
the 5,000 held-out images are not used), decoded once and kept in memory (as 8-bit pixels) for all the runs. Each run
is a `Classifier` trained by a Lightning `Trainer` for `images // batch_size` optimizer steps without validation, then
`Trainer.test` on the test images in eval mode (batch norm with its running statistics; the test batch size does not
change any accuracy). Every run uses the same seed (`--seed`): the same initial weights for a given norm and the
same order of training images. Dropout is off (`noise=False`) so that the normalisation is the only difference.

Learning rate: Adam, scaled with the square root of the batch size from `--base-lr` at `--base-batch`
(lr = base_lr * sqrt(B / base_batch): 2.5e-4, 5e-4, 1e-3, 2e-3 for B = 2, 8, 32, 128 with the defaults), which keeps
the variance of the gradient noise per step about constant as B changes. Wu & He (ECCV 2018) use SGD with the linear
scaling rule of Goyal et al.; `--lr-rule linear` gives lr = base_lr * B / base_batch instead.

Time: 20 runs of 20,480 images (the default) are about half an hour on 2 CPU cores; on a machine shared with other
jobs use `--threads 1` (two threads that must wait for each other's core slow every step down many times).

Prints one row per run (norm, batch size, lr, seed, images seen, steps, wall time of the fit, test accuracy), then
the norm x batch-size table of test accuracies, and writes `results.csv` in `--out` (rewritten after every run).

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/norms.py [--images 20480] [--norms batch group ...]
        [--batch-sizes 2 8 32 128] [--seed 0] [--base-lr 1e-3] [--base-batch 32] [--lr-rule sqrt]
        [--threads 2] [--accelerator cpu] [--out bench/out/norms]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from common import ROOT
from datamodules import ImageFolder
from datamodules.base import make_loader
from lightning_gen import Classifier

NORMS = ["batch", "layer", "instance", "group", "none"]
TEST_BATCH = 500  # evaluation batches: eval mode treats every image alone, so any size gives the same accuracy


class DecodedImages(Dataset):
    """A decoded image dataset kept as 8-bit pixels: items `(image in [-1, 1], label)` as the original's."""

    def __init__(self, dataset: Dataset, what: str) -> None:
        start = time.perf_counter()
        loader = DataLoader(dataset, batch_size=500)
        pixels, labels = [], []
        for images, targets in loader:  # (B, 3, 32, 32) in [-1, 1] -> uint8 0..255
            pixels.append(((images + 1) * 127.5).round().to(torch.uint8))
            labels.append(targets)
        self.pixels, self.labels = torch.cat(pixels), torch.cat(labels)
        print(f"decoded {len(self.labels)} {what} images in {time.perf_counter() - start:.0f} s", flush=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.pixels[index].float() / 127.5 - 1, self.labels[index]


def learning_rate(batch_size: int, base_lr: float, base_batch: int, rule: str) -> float:
    ratio = batch_size / base_batch
    return base_lr * (math.sqrt(ratio) if rule == "sqrt" else ratio)


def run(norm: str, batch_size: int, train: Dataset, test: Dataset, args: argparse.Namespace) -> dict:
    steps = args.images // batch_size
    lr = learning_rate(batch_size, args.base_lr, args.base_batch, args.lr_rule)
    L.seed_everything(args.seed, verbose=False)
    model = Classifier(arch="cnn", norm=norm, noise=False, lr=lr, num_classes=10, image_shape=(3, 32, 32),
                       data_name="cifar10")
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
                        accelerator=args.accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1000,
                        default_root_dir=args.out)
    order = torch.Generator().manual_seed(args.seed)  # the same image order for every run of a batch size
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True, generator=order)
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    wall = time.perf_counter() - start
    accuracy = trainer.test(model, dataloaders=make_loader(test, TEST_BATCH), verbose=False)[0]["test/accuracy"]
    return {"norm": norm, "batch_size": batch_size, "lr": f"{lr:.6g}", "seed": args.seed,
            "images": trainer.global_step * batch_size, "steps": trainer.global_step, "fit_seconds": round(wall, 1),
            "test_accuracy": round(100 * accuracy, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20480, help="training images seen by every run")
    parser.add_argument("--norms", nargs="+", choices=NORMS, default=NORMS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[2, 8, 32, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-lr", type=float, default=1e-3, help="Adam learning rate at --base-batch")
    parser.add_argument("--base-batch", type=int, default=32)
    parser.add_argument("--lr-rule", choices=["sqrt", "linear"], default="sqrt",
                        help="how the learning rate scales with the batch size")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "norms")
    args = parser.parse_args()
    if "LIGHTNING_GEN_DATA" not in os.environ:
        parser.error("set LIGHTNING_GEN_DATA to the folder holding cifar10/{train,test}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = ImageFolder(root="$LIGHTNING_GEN_DATA/cifar10/train", test_root="$LIGHTNING_GEN_DATA/cifar10/test",
                       verify=False)
    data.setup("fit")
    train, test = DecodedImages(data.train_set, "training"), DecodedImages(data.test_set, "test")

    rows = []
    print(f"{'norm':9} {'batch':>5} {'lr':>8} {'seed':>4} {'images':>7} {'steps':>6} {'fit s':>7} {'test acc %':>10}",
          flush=True)
    for batch_size in args.batch_sizes:
        for norm in args.norms:
            row = run(norm, batch_size, train, test, args)
            rows.append(row)
            print(f"{norm:9} {batch_size:5d} {row['lr']:>8} {args.seed:4d} {row['images']:7d} {row['steps']:6d} "
                  f"{row['fit_seconds']:7.1f} {row['test_accuracy']:10.2f}", flush=True)
            with (args.out / "results.csv").open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    rule = f"sqrt(B/{args.base_batch})" if args.lr_rule == "sqrt" else f"(B/{args.base_batch})"
    print(f"\nCIFAR-10 test accuracy (%), {args.images} training images seen per run, seed {args.seed}, "
          f"Adam lr {args.base_lr:g} x {rule}")
    print(f"{'norm':9}" + "".join(f" {'B=' + str(b):>8}" for b in args.batch_sizes))
    for norm in args.norms:
        cells = {r["batch_size"]: r["test_accuracy"] for r in rows if r["norm"] == norm}
        print(f"{norm:9}" + "".join(f" {cells[b]:8.2f}" for b in args.batch_sizes))
    print(f"\ntotal fit time {sum(r['fit_seconds'] for r in rows) / 60:.1f} min; results in {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
