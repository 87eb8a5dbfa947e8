"""Sentiment classification of the Rotten Tomatoes review snippets (Hutto & Gilbert 2014, label = sign of the mean human
rating, the snippets rated 0 left out): test accuracy of the bag of embeddings, the bag of word and hashed word-pair
embeddings (fastText), the LSTM and Kim's CNN (each recipe in configs/text_classifier/, fit with early stopping on
validation accuracy, tested on its best checkpoint, capped at 10 minutes per run), beside TF-IDF + logistic
regression (scikit-learn) on the same split, its C chosen on the validation split. Context, labelled as published and
not measured here: Kim (2014) reports 76.1% for CNN-rand on Pang & Lee's sentence polarity data (MR) with 10-fold
cross-validation.

    LIGHTNING_GEN_DATA=/path/to/datasets OMP_NUM_THREADS=1 python bench/text_classifier.py
    LIGHTNING_GEN_DATA=/path/to/datasets python bench/text_classifier.py --encoders cnn --seeds 0 --max-minutes 5
    LIGHTNING_GEN_DATA=/path/to/datasets OMP_NUM_THREADS=1 python bench/text_classifier.py --encoders bigram

The table gives each network's mean test accuracy over the seeds and each seed's, the epochs run and the wall time per
run (fit and test).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from datamodules.text_classification import TextClassification, tokenize
from lightning_gen.core.cli import GenCLI

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"bag": "configs/text_classifier/snippets_bag.yaml",
           "bigram": "configs/text_classifier/snippets_bigram.yaml",
           "lstm": "configs/text_classifier/snippets_lstm.yaml", "cnn": "configs/text_classifier/snippets_cnn.yaml"}
NAMES = {"bag": "bag of embeddings", "bigram": "bag of word and bigram embeddings (fastText)", "lstm": "BiLSTM",
         "cnn": "CNN (Kim 2014, random embeddings)"}
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false"]
C_GRID = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


def run(encoder: str, seed: int, max_minutes: float, out: Path, extra: list[str]) -> tuple[float, float, int, float]:
    """Fit the recipe and test its best checkpoint: (test accuracy %, best validation accuracy %, epochs, seconds)."""
    limit = time.strftime("%H:%M:%S", time.gmtime(max_minutes * 60))
    args = ["--config", str(ROOT / RECIPES[encoder]), "--seed_everything", str(seed), "--trainer.max_time",
            f"00:{limit}", "--trainer.default_root_dir", str(out), "--checkpoint.dirpath", str(out / "checkpoints"),
            *QUIET, *extra]
    start = time.perf_counter()
    cli = GenCLI(args=args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best_val = float(cli.trainer.checkpoint_callback.best_model_score)
    (metrics,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    return 100 * metrics["test/accuracy"], 100 * best_val, cli.trainer.current_epoch, time.perf_counter() - start


def tfidf_logistic_regression(extra: list[str]) -> tuple[float, float, float, float]:
    """TF-IDF (words and word pairs, the datamodule's tokenizer, sublinear tf) + logistic regression on the cnn
    recipe's split, C chosen on the validation split: (test accuracy %, validation accuracy %, C, seconds)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    cli = GenCLI(args=["--config", str(ROOT / RECIPES["cnn"]), *QUIET, *extra], run=False)
    data: TextClassification = cli.datamodule
    splits = data.read_splits()  # the same seeded split as the networks'
    vectorizer = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2),
                                 sublinear_tf=True)
    train = vectorizer.fit_transform(splits["train"][0])
    val, test = vectorizer.transform(splits["val"][0]), vectorizer.transform(splits["test"][0])
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=5000).fit(train, splits["train"][1])
        score = model.score(val, splits["val"][1])
        if best is None or score > best[0]:
            best = (score, c, model.score(test, splits["test"][1]))
    val_accuracy, c, test_accuracy = best
    return 100 * test_accuracy, 100 * val_accuracy, c, time.perf_counter() - start


def mean_std(values: list[float]) -> str:
    m = sum(values) / len(values)
    return f"{m:.1f}" if len(values) == 1 else f"{m:.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["bag", "bigram", "lstm", "cnn"], choices=sorted(RECIPES),
                        help="recipes to run (`bigram`: the bag with hashed word pairs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="wall-time cap of each fit (Lightning max_time)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "text_classifier"))
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="one more option for every run (repeatable), e.g. --set=--data.split_seed=1")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the recipes' options go to LightningCLI through `args=`, not the command line
    torch.set_flush_denormal(True)
    total = time.perf_counter()

    baseline = tfidf_logistic_regression(args.set)
    print(f"TF-IDF + logistic regression: test {baseline[0]:.1f}, val {baseline[1]:.1f}, C {baseline[2]:g} "
          f"({baseline[3]:.0f} s)", flush=True)
    results: dict[str, list[tuple[float, float, int, float]]] = {}
    for encoder in args.encoders:
        for seed in args.seeds:
            result = run(encoder, seed, args.max_minutes, Path(args.out) / encoder / f"seed{seed}", args.set)
            results.setdefault(encoder, []).append(result)
            print(f"{encoder} seed {seed}: test {result[0]:.1f}, best val {result[1]:.1f} ({result[2]} epochs, "
                  f"{result[3]:.0f} s)", flush=True)

    seeds = ", ".join(map(str, args.seeds))
    print(f"\nMovie-review snippets (positive vs negative), test accuracy (%) on the seeded 10% test split; seeds "
          f"{seeds}; each fit capped at {args.max_minutes:g} min, early stopping on validation accuracy"
          + (f"; options {' '.join(args.set)}" if args.set else ""))
    print("| model | test accuracy, mean ± std (per seed) | epochs per seed | wall time per run (s) |")
    print("|---|---|---|---|")
    for encoder, runs in results.items():
        per_seed = " / ".join(f"{r[0]:.1f}" for r in runs)
        epochs = " / ".join(str(r[2]) for r in runs)
        seconds = " / ".join(f"{r[3]:.0f}" for r in runs)
        print(f"| {NAMES[encoder]} | {mean_std([r[0] for r in runs])} ({per_seed}) | {epochs} | {seconds} |")
    print(f"| TF-IDF (words + pairs) + logistic regression, C = {baseline[2]:g} | {baseline[0]:.1f} | - | "
          f"{baseline[3]:.0f} |")
    print("| CNN-rand, published (Kim 2014; Pang & Lee MR, 10-fold CV, not this data) | 76.1 | - | - |")
    print(f"total wall time {math.ceil(time.perf_counter() - total)} s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
