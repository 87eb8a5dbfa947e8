"""Character-level LSTM on Tiny Shakespeare: bits per character on the held-out last 10% after a wall-clock budget,
beside count-based baselines on the same split, and samples at four temperatures.

The run is `lightning-gen fit --config configs/char_lstm/shakespeare.yaml` with `--trainer.max_time` = the budget
(it stops at the first batch past it and saves its checkpoint), then `lightning-gen validate` on that checkpoint. The
baselines see the same training text and are scored on the same held-out text: add-one smoothed character
frequencies (unigram) and interpolated Kneser-Ney n-grams (`lightning_gen/metrics/text.py`). The samples come from
the final checkpoint, 500 characters after the prompt at each temperature.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/char_lstm.py [--minutes 30] [--threads 2] [--seed 0]
        [--orders 3 5 7] [--set=--model.hidden=256] [--out bench/out/char_lstm]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import torch
import yaml

from common import CLI, QUIET, ROOT, evaluate

CONFIG = ROOT / "configs" / "char_lstm" / "shakespeare.yaml"
TEMPERATURES = [0.2, 0.5, 1.0, 1.2]
PUBLISHED = [  # nanoGPT README (Karpathy), character-level Shakespeare, validation loss in nats per character
    ("nanoGPT, 6-layer transformer (10.7 M parameters), GPU, about 3 min on an A100 (published)", 1.47),
    ("nanoGPT, small CPU configuration (4 layers, 128 wide), about 3 min (published)", 1.88),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 5, 7], help="Kneser-Ney n-gram orders")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "char_lstm")
    parser.add_argument("--set", action="append", default=[], help="extra CLI option for the run, e.g. "
                        "--set=--model.hidden=256 (one option or option=value per --set)")
    args = parser.parse_args()
    options = [part for item in args.set for part in item.split("=", 1)]
    folder = args.out / f"seed{args.seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)

    from datamodules import CharText
    from lightning_gen import CharLSTM
    from lightning_gen.metrics.text import kneser_ney_nats, unigram_nats

    data = CharText()  # the recipe's text and split (the default path: Tiny Shakespeare)
    data.setup("fit")
    vocab = len(data.vocabulary)
    rows = [("unigram, add-one smoothing", unigram_nats(data.train_text, data.val_text, vocab), None, None)]
    for order in args.orders:
        started = time.perf_counter()
        nats = kneser_ney_nats(data.train_text, data.val_text, order, vocab)
        rows.append((f"{order}-gram, interpolated Kneser-Ney", nats, None, time.perf_counter() - started))

    hours, rest = divmod(int(args.minutes * 60), 3600)
    budget = f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    fit = [*CLI, "fit", "--config", str(CONFIG), "--seed_everything", str(args.seed), "--trainer.max_time", budget,
           "--trainer.max_epochs", "1000", "--trainer.default_root_dir", str(folder), "--checkpoint.dirpath",
           str(folder / "checkpoints"), *options, *QUIET]
    started = time.perf_counter()
    with (folder / "fit.log").open("w") as log:
        if subprocess.run(fit, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"the run failed: see {folder / 'fit.log'}")
    wall = time.perf_counter() - started
    ckpt = folder / "checkpoints" / "last.ckpt"
    metrics = evaluate("validate", CONFIG, ckpt, *options)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = CharLSTM.load_from_checkpoint(ckpt, map_location="cpu")
    run_data = yaml.safe_load((folder / "config.yaml").read_text())["data"]["init_args"]  # the run's streams
    batches_per_epoch = len(CharText(**run_data).streams(data.train_data, shifted=True))
    epochs = saved["global_step"] / batches_per_epoch
    hp = model.hparams
    name = f"CharLSTM ({hp.cell}, {hp.num_layers} x {hp.hidden}), {args.minutes:g} min, {args.threads} threads"
    rows.append((name, metrics["val/loss"], epochs, wall))

    print(f"\nTiny Shakespeare, held-out last 10% ({len(data.val_text):,} characters), seed {args.seed}, "
          f"options {options or 'none'}")
    print("| model | nats per character | bits per character | epochs | wall time |")
    print("|---|---|---|---|---|")
    for label, nats, ep, seconds in rows:
        ep_text = f"{ep:.2f}" if ep is not None else "-"
        time_text = f"{seconds / 60:.1f} min" if seconds is not None and seconds >= 60 else (
            f"{seconds:.1f} s" if seconds is not None else "-")
        print(f"| {label} | {nats:.3f} | {nats / math.log(2):.3f} | {ep_text} | {time_text} |")
    for label, nats in PUBLISHED:
        print(f"| {label} | {nats:.2f} | {nats / math.log(2):.2f} | - | - |")

    torch.manual_seed(args.seed)
    texts = model.generate(torch.arange(len(TEMPERATURES)), torch.tensor(TEMPERATURES))
    samples = "\n".join(f"### temperature {t}\n{text}\n" for t, text in zip(TEMPERATURES, texts))
    (folder / "samples.md").write_text(samples, encoding="utf-8")
    print(f"\nSamples (prompt {hp.prompt!r}), also in {folder / 'samples.md'}:\n\n{samples}")


if __name__ == "__main__":
    main()
