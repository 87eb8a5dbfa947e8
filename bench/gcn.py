"""GCN against the MLP baseline on Cora and CiteSeer (Planetoid public split): test accuracy, mean ± standard deviation
over seeds, beside Kipf & Welling's published GCN figures (ICLR 2017, Table 2: 81.5 and 70.3, their mean over 100
runs with random weight initialisations). Each run is a recipe of configs/gcn/ (the paper's hyperparameters: at most
200 epochs, early stopping when the validation loss has not decreased for 10 epochs), fit then test of the final
model (as the paper's code does) in this process; the table gives the seeds, the epochs trained and the wall time.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/gcn.py
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/gcn.py --datasets Cora --seeds 0 1 2
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/gcn.py --picture docs/img/gcn_cora_tsne.png

`--picture PATH` also saves the t-SNE picture of the hidden layer of every Cora node from the GCN run of the first
seed. Each run also reports the test accuracy of the checkpoint with the lowest validation loss (the recipes keep it).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from lightning_gen.core.cli import GenCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"Cora": "configs/gcn/cora.yaml", "CiteSeer": "configs/gcn/citeseer.yaml"}
PUBLISHED = {"Cora": 81.5, "CiteSeer": 70.3}  # Kipf & Welling 2017, Table 2, GCN (this paper)
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--checkpoint.overwrite", "true"]


def run(dataset: str, arch: str, seed: int, out: Path, picture: bool) -> dict[str, float]:
    """Fit the recipe with `arch` and `seed`, then test: test accuracy (%) of the final model and of the best
    validation-loss checkpoint, epochs trained and wall seconds (fit and test)."""
    args = ["--config", str(ROOT / CONFIGS[dataset]), "--data.name", dataset, "--model.arch", arch,
            "--seed_everything", str(seed), "--trainer.default_root_dir", str(out), *QUIET,
            "--model.picture_nodes", "5000" if picture else "0"]
    start = time.perf_counter()
    cli = GenCLI(args=args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    epochs = cli.trainer.current_epoch
    (final,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    seconds = time.perf_counter() - start
    best_path = cli.trainer.checkpoint_callback.best_model_path
    cli.model.hparams.picture_nodes = 0
    (best,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best_path, verbose=False)
    return {"final": 100 * final["test/accuracy"], "best": 100 * best["test/accuracy"], "epochs": epochs,
            "seconds": seconds}


def mean_std(values: list[float]) -> str:
    m = statistics.mean(values)
    return f"{m:.1f}" if len(values) == 1 else f"{m:.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer"], choices=sorted(CONFIGS))
    parser.add_argument("--archs", nargs="+", default=["gcn", "mlp"], choices=["gcn", "mlp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "gcn"))
    parser.add_argument("--picture", default=None, help="save the Cora GCN t-SNE picture (first seed) here")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the recipes' options go to LightningCLI through `args=`, not the command line
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    total = time.perf_counter()
    for dataset in args.datasets:
        for arch in args.archs:
            for seed in args.seeds:
                out = Path(args.out) / dataset / arch / f"seed{seed}"
                shutil.rmtree(out, ignore_errors=True)
                picture = args.picture is not None and dataset == "Cora" and arch == "gcn" and seed == args.seeds[0]
                result = run(dataset, arch, seed, out, picture)
                results.setdefault((dataset, arch), []).append(result)
                print(f"{dataset} {arch} seed {seed}: test accuracy {result['final']:.1f} (best-val checkpoint "
                      f"{result['best']:.1f}), {result['epochs']} epochs, {result['seconds']:.1f} s", flush=True)
                if picture:
                    (found,) = (out / "samples").glob("test_embedding_epoch*.png")
                    Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(found, args.picture)
                    print(f"picture: {args.picture}", flush=True)

    seeds = ", ".join(map(str, args.seeds))
    print(f"\nTest accuracy (%) on the Planetoid public split, mean ± std over seeds {seeds}; final model (early "
          "stopped) and the checkpoint with the lowest validation loss. Epochs: min-max over the seeds; seconds "
          "per run (fit and test): median (min-max), torch threads "
          f"{torch.get_num_threads()}.")
    print("| dataset | model | test accuracy | best-val checkpoint | epochs | s per run | GCN, published "
          "(Kipf & Welling 2017) |")
    print("|---|---|---|---|---|---|---|")
    for (dataset, arch), runs in results.items():
        epochs = [r["epochs"] for r in runs]
        name = "GCN" if arch == "gcn" else "MLP (no graph)"
        seconds = [r["seconds"] for r in runs]
        spread = f"{statistics.median(seconds):.0f} ({min(seconds):.0f}-{max(seconds):.0f})"
        published = f"{PUBLISHED[dataset]:.1f}" if arch == "gcn" else ""
        print(f"| {dataset} | {name} | {mean_std([r['final'] for r in runs])} | {mean_std([r['best'] for r in runs])} "
              f"| {min(epochs)}-{max(epochs)} | {spread} | {published} |")
    print(f"total wall time {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
