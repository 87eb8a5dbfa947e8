"""Reading speed: the streaming datamodule (litdata shards) vs the image-folder datamodule on CIFAR-10's 50,000
training JPEGs, same batch size, workers and shuffling. Prints a table (seed, epochs, wall time) and writes a CSV.

    python bench/streaming.py [--limit 2000] [--batch-size 256] [--num-workers 2] [--repeats 3]
                              [--storage pixels files]

First the folder is converted into shards under `--out` (timed; once per `--storage`). Then, `--repeats` times, each
reader in turn builds a new loader and makes two passes over the training images: the first `cold` (the streaming
cache empty, worker processes starting) and the second `warm`; the table gives the median of the repeats. The
readers:

- `folder`: `datamodules.ImageFolder` (one JPEG decoded per image);
- `shards`: `datamodules.StreamingImages` reading the local shard folder in place;
- `shards via cache`: the same shards read as `local:<folder>`, so every chunk is first copied into an empty cache
  folder, as when streaming from object storage (cold), then read from the cache (warm).

Nothing trains: a pass is the loader's iteration alone (batches made and collated), so the figure is what the data
side can feed. The OS page cache is not dropped: after the conversion the JPEGs have just been read, so the folder's
`cold` pass reads them from memory too (the comparison favours the folder, if anything).
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import shutil
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from datamodules import ImageFolder, StreamingImages
from datamodules.base import make_loader
from datamodules.shard import make_shards

ROOT = Path(__file__).resolve().parents[1]


def one_pass(loader) -> tuple[int, float]:
    """Images and seconds of one full iteration of `loader`."""
    start, images = time.perf_counter(), 0
    for batch, _ in loader:
        images += len(batch)
    return images, time.perf_counter() - start


@functools.cache
def folder_images(root: str, limit: int | None):
    """The training split of `ImageFolder` (its setup reads 50,000 headers: done once, untimed)."""
    dm = ImageFolder(root=root, verify=False, val_fraction=0.1)
    dm.setup("fit")
    data = dm.train_set
    if limit is not None and limit < len(data):  # a random subset, as the shards' --limit draws
        data = Subset(data, torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit])
    return data


def folder_loader(args):
    data = folder_images(args.root, args.limit)
    # its workers are kept between passes (persistent), as a training run keeps them
    return make_loader(data, args.batch_size, shuffle=True, drop_last=True, num_workers=args.num_workers)


def shard_loader(args, root: str, cache: Path | None):
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)  # cold: an empty cache
    dm = StreamingImages(root=root, cache_dir=None if cache is None else str(cache), batch_size=args.batch_size,
                         num_workers=args.num_workers, seed=args.seed)
    dm.setup("fit")
    return dm.train_dataloader()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.path.join(os.environ.get("LIGHTNING_GEN_DATA", "data"), "cifar10", "train"),
                   help="the image folder (default: $LIGHTNING_GEN_DATA/cifar10/train)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "streaming"), help="shards, cache and CSV go here")
    p.add_argument("--limit", type=int, default=None, help="use this many training images (a smoke run)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="repeats of every reader's two passes, interleaved; the "
                                                          "table shows the medians")
    p.add_argument("--storage", nargs="+", choices=["pixels", "files"], default=["pixels", "files"],
                   help="how the shards store images: decoded pixels, or the JPEG files as they are")
    p.add_argument("--chunk-bytes", default="16MB", help="shard chunk size")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the streaming loader")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    readers = [("folder", "jpeg", lambda: folder_loader(args))]
    convert_s: dict[str, float] = {}
    for storage in args.storage:  # convert once per storage, timed
        shards = out / (f"shards_{storage}" + ("" if args.limit is None else f"_limit{args.limit}"))
        start = time.perf_counter()
        make_shards(args.root, str(shards), storage=storage, limit=args.limit, val_fraction=0.1,
                    chunk_bytes=args.chunk_bytes, num_workers=args.num_workers, overwrite=True, verbose=False)
        convert_s[storage] = time.perf_counter() - start
        print(f"converted {args.root} ({storage}) in {convert_s[storage]:.1f} s", flush=True)
        cache = out / f"cache_{storage}"
        readers += [("shards", storage, lambda shards=shards: shard_loader(args, str(shards), None)),
                    ("shards via cache", storage,
                     lambda shards=shards, cache=cache: shard_loader(args, f"local:{shards}", cache))]
    runs: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for repeat in range(args.repeats):
        for reader, storage, make in readers:  # interleaved: each repeat runs every reader once
            loader = make()
            for name in ("cold", "warm"):
                images, seconds = one_pass(loader)
                runs.setdefault((reader, storage, name), []).append((images, seconds))
                print(f"repeat {repeat}: {reader:>16} {storage:>6} {name}: {images} images in {seconds:.2f} s",
                      flush=True)
            del loader
    rows = []
    for (reader, storage, name), measured in runs.items():
        images = measured[0][0]
        seconds = statistics.median(s for _, s in measured)
        rows.append({"reader": reader, "storage": storage, "pass": name, "seed": args.seed,
                     "epoch": 1 if name == "cold" else 2, "repeats": len(measured), "images": images,
                     "wall_s": round(seconds, 2), "images_per_s": round(images / seconds, 1),
                     "convert_s": round(convert_s[storage], 1) if storage in convert_s and name == "cold" else "",
                     "batch_size": args.batch_size, "num_workers": args.num_workers})
    folder_speed = {r["pass"]: r["images_per_s"] for r in rows if r["reader"] == "folder"}
    for row in rows:
        row["vs_folder"] = round(row["images_per_s"] / folder_speed[row["pass"]], 2)
    name = "streaming.csv" if args.limit is None else f"streaming_limit{args.limit}.csv"
    with open(out / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nbatch size {args.batch_size}, {args.num_workers} workers, seed {args.seed}, "
          f"{'all' if args.limit is None else args.limit} training images; epoch 1 = cold pass, 2 = warm; "
          f"median wall time of {args.repeats} repeat(s)")
    print("| reader | storage | pass | epoch | images | wall (s) | images/s | vs folder | conversion (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['reader']} | {r['storage']} | {r['pass']} | {r['epoch']} | {r['images']} | {r['wall_s']} | "
              f"{r['images_per_s']} | {r['vs_folder']} | {r['convert_s']} |")
    print(f"\nwrote {out / name}")


if __name__ == "__main__":
    main()
