"""Convert an image dataset into litdata shards: the `lightning-gen-shard` command (`python -m datamodules.shard`).

Sources: an image folder (`root/<class>/<image>` or flat, as `datamodules.ImageFolder` reads it), a pix2pix folder of
pairs (`root/{train,val,test}/`, layout `aligned` or `folders`, as `datamodules.PairedImages` reads it) or a torchvision
dataset of the project (`--dataset MNIST` with the folder that holds it, as `datamodules.MNIST` reads it). Every image
is read by `datamodules.images.read_image`, so the shards hold the pixels the folder datamodules would make.

The output folder gets one litdata dataset per split (`train/`, `val/`, and `test/` when the source has one), each an
`index.json` and its `chunk-*.bin` files, plus `lightning_gen.json`, which says what the shards hold (images or pairs,
their shape, the class names, how they are stored). `datamodules.StreamingImages` and `datamodules.StreamingPairs`
read that folder, or a copy of it in object storage (`s3://`, `gs://`, `azure://`).

Storage: `pixels` (default) keeps the decoded uint8 pixels, which makes reading cheap (no decoding); `files` keeps each
source file's bytes as they are (a JPEG stays that JPEG, a torchvision dataset's images are stored as PNG), which is
smaller on disk and decoded when read. Both give the same pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.transforms import v2

from datamodules.base import DataError, data_root
from datamodules.folder import check_images, scan_image_folder
from datamodules.images import mode_for, read_image, read_size
from datamodules.paired import Pair, check_sizes, load_pair, scan_pairs

FORMAT_FILE = "lightning_gen.json"
"""The file beside the split folders that says what the shards hold (written last: its presence means complete)."""
FORMAT = "lightning_gen.shards"
"""The `format` field of `FORMAT_FILE`."""
VERSION = 1
SPLITS = ("train", "val", "test")
Storage = Literal["pixels", "files"]
INSTALL = 'pip install "lightning-gen[streaming]"'


def require_litdata() -> Any:
    """The `litdata` module, or a `DataError` naming the extra that installs it."""
    try:
        import litdata
    except ImportError:
        raise DataError(f"streaming datasets need litdata: {INSTALL}.") from None
    return litdata


def is_url(root: str) -> bool:
    """Whether `root` is streamed through the cache: object storage (`s3://bucket/path`, `gs://...`, `azure://...`),
    or `local:/path`, a folder read as if it were remote (chunks copied into the cache: e.g. from a network disk)."""
    return "://" in root or root.startswith("local:")


def join(root: str, name: str) -> str:
    """`root/name` for a folder or a URL."""
    return f"{root.rstrip('/')}/{name}"


# ---- what one item holds: module-level callables, so optimize() can send them to its worker processes -----------


def encode_png(pixels: Tensor) -> bytes:
    """uint8 `(C, H, W)` pixels as PNG bytes (lossless)."""
    buffer = io.BytesIO()
    v2.functional.to_pil_image(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def resize_pixels(pixels: Tensor, image_size: int) -> Tensor:
    """uint8 `(C, H, W)` -> `(C, image_size, image_size)`: shorter side resized (antialiased), then centre-cropped."""
    return v2.functional.center_crop(v2.functional.resize(pixels, image_size, antialias=True), image_size)


class FolderItem:
    """Item `i` of an image folder: `{"image": uint8 (C, H, W) pixels or the file's bytes, "label": class index}`."""

    def __init__(self, samples: list[tuple[str, int]], channels: int, storage: Storage, image_size: int | None) -> None:
        self.samples, self.channels, self.storage, self.image_size = samples, channels, storage, image_size

    def __call__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        if self.storage == "files":
            return {"image": Path(path).read_bytes(), "label": label}
        pixels = v2.functional.pil_to_tensor(read_image(path, mode_for(self.channels)))
        if self.image_size is not None:
            pixels = resize_pixels(pixels, self.image_size)
        return {"image": pixels.contiguous(), "label": label}


class TensorItem:
    """Item `i` of in-memory uint8 images `(N, C, H, W)` (a torchvision dataset): pixels, or PNG bytes."""

    def __init__(self, images: Tensor, targets: Tensor, storage: Storage, image_size: int | None) -> None:
        self.images, self.targets, self.storage, self.image_size = images, targets, storage, image_size

    def __call__(self, index: int) -> dict[str, Any]:
        pixels = self.images[index]
        if self.image_size is not None:
            pixels = resize_pixels(pixels, self.image_size)
        image = encode_png(pixels) if self.storage == "files" else pixels.contiguous()
        return {"image": image, "label": int(self.targets[index])}


class PairItem:
    """Item `i` of a folder of pairs: `{"a", "b"}` uint8 `(C, H, W)` pixels, or the files' bytes (`aligned`: the one
    A | B file in `a`, and `b` empty)."""

    def __init__(self, pairs: list[tuple[str, str | None]], channels: tuple[int, int], storage: Storage) -> None:
        self.pairs, self.channels, self.storage = pairs, channels, storage

    def __call__(self, index: int) -> dict[str, Any]:
        first, second = self.pairs[index]
        if self.storage == "files":
            return {"a": Path(first).read_bytes(), "b": Path(second).read_bytes() if second else b""}
        a, b = load_pair((Path(first), Path(second) if second else None), self.channels)
        return {"a": a.contiguous(), "b": b.contiguous()}


# ---- the conversion ----------------------------------------------------------------------------------------------


def held_out(count: int, val_fraction: float, split_seed: int) -> tuple[list[int], list[int]]:
    """Train and validation indices of `count` items: `torch.utils.data.random_split` with the generator seeded by
    `split_seed`, the split `datamodules.ImageDataModule` makes, so the validation images are the same ones."""
    n_val = max(1, int(round(count * val_fraction)))
    if count - n_val < 1:
        raise DataError(f"{count} item(s): too few to hold out a validation split. Add images or give a val/ folder.")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return order[: count - n_val], order[count - n_val:]


def subset(count: int, limit: int | None, seed: int) -> list[int]:
    """All of `range(count)`, or `limit` of them drawn at random (seeded), in order."""
    if limit is None or limit >= count:
        return list(range(count))
    return sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


def check_output(output: Path, sources: list[Path], overwrite: bool) -> None:
    """Refuse an output folder inside a source (never write into a data root), or one that holds other files."""
    out = output.resolve()
    for source in sources:
        src = source.resolve()
        if out == src or src in out.parents:
            raise DataError(f"output folder {output} is inside the source {source}: shards are never written into a "
                            "data root. Choose an output folder outside it.")
    if out.exists() and not out.is_dir():
        raise DataError(f"output {output} is a file; give a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / FORMAT_FILE).is_file() and not any((out / s / "index.json").is_file() for s in SPLITS):
            raise DataError(f"output folder {output} is not empty and holds no shards: choose an empty or new folder.")
        if not overwrite:
            raise DataError(f"output folder {output} already holds shards. Pass --overwrite to replace them, or "
                            "choose another folder.")


def write_split(fn: Any, count: int, folder: Path, chunk_bytes: str, num_workers: int, verbose: bool) -> None:
    """One split: `fn(i)` for i < count, written by `litdata.optimize` into `folder` (emptied first)."""
    litdata = require_litdata()
    if folder.exists():
        shutil.rmtree(folder)
    start = "fork" if "fork" in multiprocessing.get_all_start_methods() else None  # spawn re-imports torch: slow
    litdata.optimize(fn=fn, inputs=list(range(count)), output_dir=str(folder), chunk_bytes=chunk_bytes,
                     num_workers=max(1, num_workers), mode="overwrite", start_method=start, verbose=verbose,
                     reorder_files=False, keep_data_ordered=True)  # ordered: the same items as the folder's split


def make_shards(
    source: str,
    output: str,
    dataset: str | None = None,
    pairs: bool = False,
    layout: Literal["aligned", "folders"] = "aligned",
    storage: Storage = "pixels",
    channels: Literal[1, 3] | None = None,
    channels_b: Literal[1, 3] = 3,
    image_size: int | None = None,
    classes: list[str] | None = None,
    test_root: str | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
    chunk_bytes: str = "64MB",
    num_workers: int = 1,
    overwrite: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Convert `source` into shards under `output`; returns the description written to `output/lightning_gen.json`.
    The options are those of `lightning-gen-shard` (see `main`): run `lightning-gen-shard --help`."""
    require_litdata()
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in (0, 1), got {val_fraction}.")
    if image_size is not None and (image_size < 1 or storage == "files" or pairs):
        raise DataError("--image-size (a positive side) resizes images when they are stored as pixels; it cannot be "
                        "used with --storage files or --pairs (resize when reading: the datamodules' image_size, "
                        "load_size and crop_size).")
    if limit is not None and limit < 2:
        raise DataError(f"--limit must be at least 2, got {limit}.")
    src, out = data_root(source), Path(output).expanduser()
    sources = [src] + ([data_root(test_root)] if test_root else [])
    check_output(out, sources, overwrite)
    splits: dict[str, tuple[Any, int]] = {}
    info: dict[str, Any] = {"format": FORMAT, "version": VERSION, "storage": storage, "source": str(source)}
    if pairs:
        info.update(kind="pairs", layout=layout, channels=[channels or 3, channels_b])
        if not src.is_dir():
            raise DataError(f"folder of pairs {src} does not exist. Give the folder holding train/ (and val/, test/).")
        found: dict[str, list[Pair]] = {}
        for name in SPLITS:
            if (src / name).is_dir():
                found[name] = scan_pairs(src / name, layout)
                width, height = check_sizes(found[name], src / name, layout)
                info["size"] = [height, width // 2 if layout == "aligned" else width]
        if "train" not in found:
            raise DataError(f"{src} has no train/ folder. Put the training pairs in {src / 'train'}.")
        if "val" not in found:
            train_idx, val_idx = held_out(len(found["train"]), val_fraction, split_seed)
            found["train"], found["val"] = [found["train"][i] for i in train_idx], [found["train"][i] for i in val_idx]
        for name, items in found.items():
            items = [items[i] for i in subset(len(items), limit, split_seed)]
            as_str = [(str(a), str(b) if b is not None else None) for a, b in items]
            splits[name] = (PairItem(as_str, tuple(info["channels"]), storage), len(items))
    elif dataset is not None:
        from datamodules.torchvision_sets import TORCHVISION_DATASETS, InMemoryImages

        if dataset not in TORCHVISION_DATASETS:
            raise DataError(f"unknown torchvision dataset {dataset!r}; choose one of {sorted(TORCHVISION_DATASETS)}.")
        cls, shape, num_classes, train_kw, test_kw = TORCHVISION_DATASETS[dataset]
        if channels is not None and channels != shape[0]:
            raise DataError(f"{dataset} has {shape[0]} channel(s); leave --channels out.")
        loaded = {}
        for name, kwargs in (("train", train_kw), ("test", test_kw)):
            try:
                loaded[name] = InMemoryImages.from_torchvision(cls(str(src), download=False, **kwargs))
            except RuntimeError as err:
                raise DataError(f"{dataset} was not found under {src} ({err}). Give the folder that holds it (for "
                                f"MNIST: the folder holding MNIST/raw/).") from None
        side = image_size
        info.update(kind="images", channels=shape[0], size=[side or shape[1], side or shape[2]],
                    classes=getattr(loaded["train"], "classes", None) or [str(i) for i in range(num_classes)])
        train_idx, val_idx = held_out(len(loaded["train"]), val_fraction, split_seed)
        parts = {"train": (loaded["train"], train_idx), "val": (loaded["train"], val_idx),
                 "test": (loaded["test"], list(range(len(loaded["test"]))))}
        for name, (data, indices) in parts.items():
            indices = [indices[i] for i in subset(len(indices), limit, split_seed)]
            splits[name] = (TensorItem(data.images[indices], data.targets[indices], storage, image_size), len(indices))
    else:
        channels = channels or 3
        samples, names = scan_image_folder(src, classes, option="SOURCE")
        train_idx, val_idx = held_out(len(samples), val_fraction, split_seed)
        parts_f = {"train": [samples[i] for i in train_idx], "val": [samples[i] for i in val_idx]}
        if test_root:
            parts_f["test"] = scan_image_folder(data_root(test_root), classes, option="--test-root")[0]
        parts_f = {name: [items[i] for i in subset(len(items), limit, split_seed)] for name, items in parts_f.items()}
        shapes = set()  # the headers of the files stored (nothing decoded)
        for name, items in parts_f.items():
            if storage == "files":  # the bytes are stored as they are: every size is recorded
                shapes |= {read_size(p)[::-1] for p, _ in items}
            else:  # one size, unless --image-size resizes them
                shapes.add(check_images(items, image_size, decode=False, channels=channels, where=f"{source} ({name})"))
        if image_size is None and len(shapes) > 1:
            raise DataError(f"the images have different sizes ({sorted(shapes)[:4]}): give --image-size to store them "
                            "at one size (with --storage pixels).")
        height, width = (image_size, image_size) if image_size else shapes.pop()
        info.update(kind="images", channels=channels, size=[height, width], classes=names)
        for name, items in parts_f.items():
            as_str = [(str(p), label) for p, label in items]
            splits[name] = (FolderItem(as_str, channels, storage, image_size), len(as_str))
    out.mkdir(parents=True, exist_ok=True)
    (out / FORMAT_FILE).unlink(missing_ok=True)  # written last: a half-written folder has none
    for name in SPLITS:
        if name not in splits and (out / name).exists():
            shutil.rmtree(out / name)  # a split of shards this run replaces
    for name, (fn, count) in splits.items():
        if verbose:
            print(f"{name}: {count} item(s) -> {out / name}", file=sys.stderr, flush=True)
        write_split(fn, count, out / name, chunk_bytes, num_workers, verbose)
    info["splits"] = {name: count for name, (_, count) in splits.items()}
    (out / FORMAT_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-gen-shard",
        description="Convert an image folder, a folder of pix2pix pairs or a torchvision dataset into litdata shards "
                    "(one folder per split: train/, val/, and test/ when the source has one; plus lightning_gen.json) "
                    "that datamodules.StreamingImages and datamodules.StreamingPairs read, from that folder or from a "
                    "copy of it in object storage (s3://, gs://, azure://).",
        epilog="examples:\n"
               "  lightning-gen-shard $LIGHTNING_GEN_DATA/cifar10/train shards/cifar10 "
               "--test-root $LIGHTNING_GEN_DATA/cifar10/test\n"
               "  lightning-gen-shard $LIGHTNING_GEN_DATA shards/mnist --dataset MNIST\n"
               "  lightning-gen-shard $LIGHTNING_GEN_DATA/facades shards/facades --pairs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="the image folder (class sub-folders or images directly inside); with --pairs, the "
                                  "folder holding train/ (and val/, test/); with --dataset, the folder holding the "
                                  "torchvision dataset (for MNIST: the folder holding MNIST/raw/). $VARS and ~ expand.")
    p.add_argument("output", help="the folder to write the shards to (created; never inside SOURCE).")
    p.add_argument("--dataset", default=None,
                   help="SOURCE holds this torchvision dataset (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN): "
                        "its train set -> train/ and val/, its test set -> test/.")
    p.add_argument("--pairs", action="store_true", help="SOURCE is a folder of image pairs for pix2pix "
                                                        "(datamodules.PairedImages' layouts).")
    p.add_argument("--layout", choices=["aligned", "folders"], default="aligned",
                   help="with --pairs: 'aligned', one file per pair, A on the left and B on the right (pix2pix's "
                        "datasets), or 'folders', A/ and B/ sub-folders with files of the same names (default: "
                        "%(default)s).")
    p.add_argument("--storage", choices=["pixels", "files"], default="pixels",
                   help="'pixels': decoded uint8 pixels, fast to read, larger; 'files': each file's bytes as they are "
                        "(a torchvision dataset's images as PNG), smaller, decoded when read. Same pixels either way "
                        "(default: %(default)s).")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="1 (greyscale) or 3 (RGB): how images are read (default: 3; a torchvision dataset's own; with "
                        "--pairs, the A images).")
    p.add_argument("--channels-b", type=int, choices=[1, 3], default=3, help="with --pairs: channels of the B images "
                                                                             "(default: %(default)s).")
    p.add_argument("--image-size", type=int, default=None,
                   help="store every image resized (shorter side) and centre-cropped to this side (with --storage "
                        "pixels; default: the images' own size, which must then be one size).")
    p.add_argument("--classes", nargs="+", default=None, help="only these class sub-folders of SOURCE (default: all).")
    p.add_argument("--test-root", default=None, help="an image folder of the same layout for the test/ split "
                                                     "(default: none; the datamodules then test on val/).")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training images held out as val/ when the source has no validation split, drawn "
                        "as datamodules.ImageDataModule draws it (default: %(default)s).")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that hold-out and of --limit's draw "
                                                             "(default: %(default)s).")
    p.add_argument("--limit", type=int, default=None, help="at most this many items per split, drawn at random: a "
                                                           "small copy for a quick try (default: all).")
    p.add_argument("--chunk-bytes", default="64MB", help="size of each shard file (chunk), e.g. 64MB, 256MB: larger "
                                                         "chunks mean fewer requests to object storage "
                                                         "(default: %(default)s).")
    p.add_argument("--num-workers", type=int, default=1, help="processes that read and write in parallel "
                                                              "(default: %(default)s).")
    p.add_argument("--overwrite", action="store_true", help="replace the shards already in OUTPUT.")
    p.add_argument("--quiet", action="store_true", help="no progress bars.")
    return p


def main(argv: list[str] | None = None) -> int:
    """The `lightning-gen-shard` command: returns the exit status (a `DataError` is printed, status 2)."""
    args = parser().parse_args(argv)
    try:
        info = make_shards(
            args.source, args.output, dataset=args.dataset, pairs=args.pairs, layout=args.layout, storage=args.storage,
            channels=args.channels, channels_b=args.channels_b, image_size=args.image_size, classes=args.classes,
            test_root=args.test_root, val_fraction=args.val_fraction, split_seed=args.split_seed, limit=args.limit,
            chunk_bytes=args.chunk_bytes, num_workers=args.num_workers, overwrite=args.overwrite,
            verbose=not args.quiet,
        )
    except DataError as err:
        print(f"lightning-gen-shard: error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {count}" for name, count in info["splits"].items())
    print(f"wrote {info['kind']} shards ({counts}) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
