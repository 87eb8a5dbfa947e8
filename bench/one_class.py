"""One-vs-rest anomaly detection, per class: DOC and Deep SVDD trained on one class's training images, AUROC on the
whole test set (the nine other classes are the anomalies), beside Deep SVDD's published figures (Ruff et al. 2018,
Table 1: one-class Deep SVDD, mean over 10 seeds). Each run is the recipe's config with `--data.target_class c`, fit
then test in one process (no validation); the table gives the seed, the epochs and each run's wall time.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset mnist [--classes 0 1 2] [--epochs 3]
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset cifar10 --knn-baseline
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset cifar10 --techniques DOC \
        --set=--model.input_size=128

`--knn-baseline` (CIFAR-10) adds a column: the k-NN score on the frozen MobileNet's pooled features with no training
at all, the floor a trained head has to beat.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from lightning_gen.core.cli import GenCLI
from lightning_gen.losses import knn_distance
from lightning_gen.one_class import MOBILENET_LAYER, MobileNetEncoder

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "mnist": {"DOC": "configs/one_class/mnist.yaml", "Deep SVDD": "configs/deep_svdd/mnist.yaml"},
    "cifar10": {"DOC": "configs/one_class/cifar10_mobilenet.yaml",
                "Deep SVDD": "configs/deep_svdd/cifar10_mobilenet.yaml"},
}
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
# Ruff et al. (ICML 2018), Table 1, one-class Deep SVDD (LeNet-type networks, autoencoder pretraining, 10 seeds)
PUBLISHED = {
    "mnist": [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5],
    "cifar10": [61.7, 65.9, 50.8, 59.1, 60.9, 65.7, 67.7, 67.3, 75.9, 73.1],
}
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--trainer.limit_val_batches", "0",
         "--trainer.num_sanity_val_steps", "0"]


def run(config: str, target: int, seed: int, epochs: int | None, out: Path,
        extra: list[str]) -> tuple[float, float, int]:
    """Fit the recipe on class `target` and test it: (test AUROC in %, wall seconds, epochs)."""
    args = ["--config", str(ROOT / config), "--data.target_class", str(target), "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(out), *QUIET, *extra]
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    start = time.perf_counter()
    cli = GenCLI(args=args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (metrics,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return 100 * metrics["test/auroc"], time.perf_counter() - start, cli.trainer.max_epochs


@torch.no_grad()
def knn_baseline(config: str, target: int, extra: list[str], k: int = 1) -> float:
    """AUROC in % of the k-NN distance on the frozen MobileNet's pooled last-layer features, nothing trained."""
    from torchmetrics.classification import BinaryAUROC

    cli = GenCLI(args=["--config", str(ROOT / config), "--data.target_class", str(target), *QUIET, *extra],
                 run=False)
    dm, hp = cli.datamodule, cli.model.hparams
    dm.setup("test")
    encoder = MobileNetEncoder(hp.weights, hp.input_size, hp.feature_dim, hp.hidden, bias=True)  # only its trunk

    def features(images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(encoder.input_size,) * 2, mode="bilinear", align_corners=False)
        return encoder.trunk(x, [MOBILENET_LAYER])[MOBILENET_LAYER].mean((2, 3))  # (B, 256)

    bank = torch.cat([features(images) for images in dm.bank_dataloader()])
    auroc = BinaryAUROC()
    for batch in dm.test_dataloader():
        auroc.update(knn_distance(features(batch[0]), bank, k), batch[1])
    return 100 * float(auroc.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--techniques", nargs="+", default=["DOC", "Deep SVDD"], choices=["DOC", "Deep SVDD"])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' max_epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knn-baseline", action="store_true", help="add the untrained MobileNet k-NN column")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "one_class"))
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="one more option for every run (repeatable), e.g. --set=--model.input_size=128")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the recipes' options go to LightningCLI through `args=`, not the command line
    torch.set_flush_denormal(True)

    results: dict[str, dict[int, tuple[float, float, int]]] = {name: {} for name in args.techniques}
    baseline: dict[int, float] = {}
    total = time.perf_counter()
    for target in args.classes:
        for name in args.techniques:
            out = Path(args.out) / args.dataset / name.replace(" ", "_") / str(target)
            results[name][target] = run(RECIPES[args.dataset][name], target, args.seed, args.epochs, out, args.set)
            auroc, seconds, epochs = results[name][target]
            print(f"{name} class {target}: AUROC {auroc:.1f} ({epochs} epochs, {seconds:.0f} s)", flush=True)
        if args.knn_baseline and args.dataset == "cifar10":
            baseline[target] = knn_baseline(RECIPES[args.dataset]["DOC"], target, args.set)
            print(f"MobileNet k-NN class {target}: AUROC {baseline[target]:.1f}", flush=True)

    names = CLASSES[args.dataset]
    header = ["class", *[f"{n} AUROC (s)" for n in args.techniques]]
    if baseline:
        header.append("MobileNet k-NN, untrained")
    header.append("Deep SVDD, published (Ruff et al. 2018)")
    print(f"\n{args.dataset}, seed {args.seed}, one-vs-rest AUROC (%) on the test set; epochs per run: "
          + ", ".join(f"{n} {next(iter(results[n].values()))[2]}" for n in args.techniques if results[n])
          + (f"; options {' '.join(args.set)}" if args.set else ""))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for target in args.classes:
        row = [f"{target} {names[target]}" if args.dataset == "cifar10" else names[target]]
        row += [f"{results[n][target][0]:.1f} ({results[n][target][1]:.0f})" for n in args.techniques]
        if baseline:
            row.append(f"{baseline[target]:.1f}")
        row.append(f"{PUBLISHED[args.dataset][target]:.1f}")
        print("| " + " | ".join(row) + " |")
    mean = ["mean"] + [f"{sum(r[0] for r in results[n].values()) / len(results[n]):.1f}" for n in args.techniques]
    if baseline:
        mean.append(f"{sum(baseline.values()) / len(baseline):.1f}")
    published = [PUBLISHED[args.dataset][t] for t in args.classes]
    mean.append(f"{sum(published) / len(published):.1f}" + ("" if len(args.classes) == 10 else " (these classes)"))
    print("| " + " | ".join(mean) + " |")
    print(f"total wall time {math.ceil(time.perf_counter() - total)} s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
