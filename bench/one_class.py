"""One-vs-rest anomaly detection, per class: DOC and Deep SVDD trained on one class's training images, AUROC on the
whole test set (the nine other classes are the anomalies), beside Deep SVDD's published figures (Ruff et al. 2018,
Table 1: one-class Deep SVDD, mean over 10 seeds). Each run is the recipe's config with `--data.target_class c`, fit
then test in one process (no validation); the table gives the seed(s), the epochs and each run's wall time.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset mnist [--classes 0 1 2] [--epochs 3]
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset mnist --seeds 0 1 2
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset cifar10 --techniques DOC --knn-baseline
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/one_class.py --dataset cifar10 --techniques DOC \
        --set=--model.input_size=128

`--seeds` runs every class once per seed: each cell is then the class's mean over the seeds, and the mean row the
mean and standard deviation over the seeds of the mean over the classes.

`--knn-baseline` (CIFAR-10) adds a column: the DOC recipe's score (its `k`, and unit-length features when it sets
`normalize`) on the frozen MobileNet's pooled features with no training at all, the floor a trained head has to beat.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from datamodules.semi_supervised import dataset_labels
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


_TEST_FEATURES: dict[tuple[str, ...], torch.Tensor] = {}  # the test set's features, the same for every class


@torch.no_grad()
def knn_baseline(config: str, target: int, extra: list[str]) -> float:
    """AUROC in % of the k-NN distance on the frozen MobileNet's pooled last-layer features, nothing trained, with
    the recipe's `k` and `normalize` (unit-length features). The test features are computed once per recipe."""
    from torchmetrics.classification import BinaryAUROC

    cli = GenCLI(args=["--config", str(ROOT / config), "--data.target_class", str(target), *QUIET, *extra],
                 run=False)
    dm, hp = cli.datamodule, cli.model.hparams
    dm.setup("test")
    encoder = MobileNetEncoder(hp.weights, hp.input_size, hp.feature_dim, hp.hidden, bias=True)  # only its trunk
    normalize = bool(hp.get("normalize", False))

    def features(images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(encoder.input_size,) * 2, mode="bilinear", align_corners=False)
        out = encoder.trunk(x, [MOBILENET_LAYER])[MOBILENET_LAYER].mean((2, 3))  # (B, 256)
        return torch.nn.functional.normalize(out, dim=1) if normalize else out

    bank = torch.cat([features(images) for images in dm.bank_dataloader()])
    key = (config, *extra)
    if key not in _TEST_FEATURES:
        _TEST_FEATURES[key] = torch.cat([features(batch[0]) for batch in dm.test_dataloader()])
    is_anomaly = (dataset_labels(dm.data.test_set) != target).long()  # the test loader's order
    auroc = BinaryAUROC()
    auroc.update(knn_distance(_TEST_FEATURES[key], bank, hp.k), is_anomaly)
    return 100 * float(auroc.compute())


def mean_std(values: list[float]) -> str:
    """`m` for one value, `m ± s` (sample standard deviation) for more."""
    m = sum(values) / len(values)
    return f"{m:.1f}" if len(values) == 1 else f"{m:.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--techniques", nargs="+", default=["DOC", "Deep SVDD"], choices=["DOC", "Deep SVDD"])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' max_epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per class and seed; with several, each cell is the mean over the seeds and "
                             "the mean row the mean ± standard deviation of the class mean over the seeds")
    parser.add_argument("--seed", type=int, default=None, help="the same as --seeds SEED")
    parser.add_argument("--knn-baseline", action="store_true", help="add the untrained MobileNet k-NN column")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "one_class"))
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="one more option for every run (repeatable), e.g. --set=--model.input_size=128")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else args.seeds
    sys.argv = sys.argv[:1]  # the recipes' options go to LightningCLI through `args=`, not the command line
    torch.set_flush_denormal(True)

    # results[name][seed][target] = (AUROC %, wall seconds, epochs)
    results: dict[str, dict[int, dict[int, tuple[float, float, int]]]] = {
        name: {seed: {} for seed in seeds} for name in args.techniques}
    baseline: dict[int, float] = {}
    total = time.perf_counter()
    for seed in seeds:
        for target in args.classes:
            for name in args.techniques:
                out = Path(args.out) / args.dataset / name.replace(" ", "_") / str(target)
                if len(seeds) > 1 or seed != 0:
                    out = out / f"seed{seed}"
                result = run(RECIPES[args.dataset][name], target, seed, args.epochs, out, args.set)
                results[name][seed][target] = result
                auroc, seconds, epochs = result
                print(f"{name} class {target} seed {seed}: AUROC {auroc:.1f} ({epochs} epochs, {seconds:.0f} s)",
                      flush=True)
            if args.knn_baseline and args.dataset == "cifar10" and target not in baseline:
                baseline[target] = knn_baseline(RECIPES[args.dataset]["DOC"], target, args.set)
                print(f"MobileNet k-NN class {target}: AUROC {baseline[target]:.1f}", flush=True)

    names = CLASSES[args.dataset]
    several = len(seeds) > 1
    cell = "AUROC, mean over seeds (s per run)" if several else "AUROC (s)"
    header = ["class", *[f"{n} {cell}" for n in args.techniques]]
    if baseline:
        header.append("MobileNet k-NN, untrained")
    header.append("Deep SVDD, published (Ruff et al. 2018)")
    epochs = {n: next(iter(results[n][seeds[0]].values()))[2] for n in args.techniques}
    print(f"\n{args.dataset}, seed{'s' if several else ''} {', '.join(map(str, seeds))}, one-vs-rest AUROC (%) on the "
          "test set; epochs per run: " + ", ".join(f"{n} {e}" for n, e in epochs.items())
          + (f"; options {' '.join(args.set)}" if args.set else ""))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for target in args.classes:
        row = [f"{target} {names[target]}" if args.dataset == "cifar10" else names[target]]
        for n in args.techniques:
            runs = [results[n][seed][target] for seed in seeds]
            aurocs, seconds = [r[0] for r in runs], sum(r[1] for r in runs) / len(runs)
            row.append(f"{sum(aurocs) / len(aurocs):.1f} ({seconds:.0f})")
        if baseline:
            row.append(f"{baseline[target]:.1f}")
        row.append(f"{PUBLISHED[args.dataset][target]:.1f}")
        print("| " + " | ".join(row) + " |")
    class_means = {n: [sum(r[0] for r in results[n][seed].values()) / len(args.classes) for seed in seeds]
                   for n in args.techniques}
    mean = ["mean" + (" ± std over seeds" if several else "")] + [mean_std(class_means[n]) for n in args.techniques]
    if baseline:
        mean.append(f"{sum(baseline.values()) / len(baseline):.1f}")
    published = [PUBLISHED[args.dataset][t] for t in args.classes]
    mean.append(f"{sum(published) / len(published):.1f}" + ("" if len(args.classes) == 10 else " (these classes)"))
    print("| " + " | ".join(mean) + " |")
    if several:
        for n in args.techniques:
            print(f"{n} class mean per seed: " + ", ".join(f"seed {seed} {m:.1f}" for seed, m in zip(seeds,
                                                                                                  class_means[n])))
    print(f"total wall time {math.ceil(time.perf_counter() - total)} s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
