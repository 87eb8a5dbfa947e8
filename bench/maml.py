"""MAML: sinusoid regression against the paper's pretrained baseline, and Omniglot few-shot classification on
characters held out of meta-training.

- `sinusoid`: for K = 5, 10, 20 support points, MAML ([configs/maml/sinusoid.yaml], one inner step of 0.01) and
  the paper's baseline, the same network trained on all tasks jointly (`--model.inner_steps 0`: the loss of the
  initial weights on the query sets) for the same number of meta-batches, both fine-tuned the same way on each test
  task's K points (gradient steps of 0.01). The table: the query MSE (100 points per task, 600 fixed test tasks)
  after 1 and 10 steps. The picture (`docs/img/maml_sinusoid.png`): one test task, K = 5, the fitted curves after
  0, 1 and 10 steps.
- `omniglot`: the recipes `configs/maml/omniglot_<recipe>.yaml` (5-way 1-shot, 5-way 5-shot, 20-way 1-shot), each
  trained for at most `--minutes` of wall time (`--trainer.max_time`), then tested on 600 tasks of the 40 held-out
  characters (mean accuracy and its 95% confidence interval); the 20-way model also on Lake et al.'s 20 runs.

Every figure is printed with its seed, meta-updates and wall time; the rows are also written to `<out>/results.csv`.

    LIGHTNING_GEN_DATA=/path/to/datasets OMP_NUM_THREADS=1 python bench/maml.py sinusoid [--shots 5 10 20]
        [--epochs 20] [--seed 0]
    LIGHTNING_GEN_DATA=/path/to/datasets OMP_NUM_THREADS=1 python bench/maml.py omniglot
        [--recipes 5way1shot 5way5shot 20way1shot] [--minutes 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import torch

from common import QUIET, ROOT, cli, evaluate
from datamodules import Sinusoid
from lightning_gen import MAML

SINUSOID = ROOT / "configs" / "maml" / "sinusoid.yaml"


def fit(config: Path, folder: Path, seed: int, *extra: str) -> tuple[Path, float, int]:
    """Train with `config` into `folder`; return (last checkpoint, minutes, meta-updates)."""
    if folder.exists():
        shutil.rmtree(folder)
    start = time.perf_counter()
    cli("fit", "--config", str(config), "--seed_everything", str(seed), "--trainer.default_root_dir", str(folder),
        *QUIET, *extra, capture=False)
    minutes = (time.perf_counter() - start) / 60
    ckpt = folder / "checkpoints" / "last.ckpt"
    return ckpt, minutes, int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def sinusoid(args: argparse.Namespace) -> list[dict]:
    rows = []
    for shots in args.shots:
        for method, extra in (("MAML", []), ("pretrained", ["--model.inner_steps", "0"])):
            data = ["--data.shots", str(shots), "--data.queries", str(shots)]
            folder = args.out / f"sinusoid_k{shots}_{method}_seed{args.seed}"
            ckpt, minutes, steps = fit(SINUSOID, folder, args.seed, "--trainer.max_epochs", str(args.epochs),
                                       *data, *extra)
            metrics = evaluate("test", SINUSOID, ckpt, *data, "--trainer.default_root_dir", str(folder))
            rows.append({"task": "sinusoid", "method": method, "shots": shots, "seed": args.seed,
                         "meta_updates": steps, "minutes": minutes, "ckpt": str(ckpt),
                         **{k: metrics[f"test/mse_step{s}"] for k, s in (("mse_step1", 1), ("mse_step10", 10))}})
            print_sinusoid(rows)
    by = {(r["method"], r["shots"]): r["ckpt"] for r in rows}
    if ("MAML", 5) in by and ("pretrained", 5) in by:
        picture(by[("MAML", 5)], by[("pretrained", 5)], ROOT / "docs" / "img" / "maml_sinusoid.png")
    return rows


def print_sinusoid(rows: list[dict]) -> None:
    print(f"\n{'method':10} {'K':>3} {'seed':>4} {'meta-updates':>12} {'minutes':>7} {'MSE 1 step':>10} "
          f"{'MSE 10 steps':>12}")
    for r in rows:
        print(f"{r['method']:10} {r['shots']:>3} {r['seed']:>4} {r['meta_updates']:>12} {r['minutes']:>7.1f} "
              f"{r['mse_step1']:>10.3f} {r['mse_step10']:>12.3f}", flush=True)


def picture(maml_ckpt: str, pretrained_ckpt: str, path: Path, task: int = 0, shots: int = 5) -> None:
    """Test task `task` with K = `shots`: the true sine, the K points, and each model's curve after 0, 1 and 10
    steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = Sinusoid(shots=shots)
    sx, sy, _, _ = data.maker.make("test", task)
    amplitude, phase = data.maker.wave("test", task)
    x = torch.linspace(-5, 5, 200)[:, None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, ckpt, name in zip(axes, (maml_ckpt, pretrained_ckpt), ("MAML", "pretrained on all tasks")):
        model = MAML.load_from_checkpoint(ckpt, map_location="cpu")
        ax.plot(x, amplitude * torch.sin(x - phase), color="black", lw=2, label="ground truth")
        ax.scatter(sx, sy, color="tab:purple", zorder=5, label=f"K = {shots} points")
        for steps, style in ((0, ":"), (1, "--"), (10, "-")):
            with torch.no_grad():
                y = model.run(model.adapt(sx, sy, steps), x)
            ax.plot(x, y, style, color="tab:red" if name == "MAML" else "tab:blue",
                    label=f"after {steps} step{'s' if steps != 1 else ''}")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"picture: {path}")


def omniglot(args: argparse.Namespace) -> list[dict]:
    rows = []
    for recipe in args.recipes:
        config = ROOT / "configs" / "maml" / f"omniglot_{recipe}.yaml"
        folder = args.out / f"omniglot_{recipe}_seed{args.seed}"
        ckpt, minutes, steps = fit(config, folder, args.seed, "--trainer.max_time", f"00:00:{args.minutes}:00")
        test_sets = ["tasks", "lake_runs"] if recipe.startswith("20way") else ["tasks"]
        for test_set in test_sets:
            metrics = evaluate("test", config, ckpt, "--data.test_set", test_set, "--trainer.default_root_dir",
                               str(folder))
            rows.append({"task": f"omniglot {recipe}", "test_set": test_set, "seed": args.seed,
                         "meta_updates": steps, "minutes": minutes, "accuracy": metrics["test/accuracy"],
                         "ci95": metrics["test/accuracy_ci95"]})
            print_omniglot(rows)
    return rows


def print_omniglot(rows: list[dict]) -> None:
    print(f"\n{'recipe':20} {'test set':10} {'seed':>4} {'meta-updates':>12} {'minutes':>7} {'accuracy':>16}")
    for r in rows:
        print(f"{r['task']:20} {r['test_set']:10} {r['seed']:>4} {r['meta_updates']:>12} {r['minutes']:>7.1f} "
              f"{100 * r['accuracy']:>8.2f} +- {100 * r['ci95']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["sinusoid", "omniglot"])
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--epochs", type=int, default=20, help="sinusoid: epochs of 500 meta-batches")
    parser.add_argument("--recipes", nargs="+", default=["5way1shot", "5way5shot", "20way1shot"],
                        choices=["5way1shot", "5way5shot", "20way1shot"])
    parser.add_argument("--minutes", type=int, default=30, help="omniglot: wall-time limit of each training run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "maml")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = sinusoid(args) if args.part == "sinusoid" else omniglot(args)
    with open(args.out / f"{args.part}_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for row in rows for k in row}))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
