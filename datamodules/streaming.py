"""Image datasets streamed from litdata shards: datasets larger than one disk, in a local folder or in object storage.

`lightning-gen-shard` (datamodules/shard.py) converts an image folder, a folder of pix2pix pairs or a torchvision
dataset into a shard folder: `train/`, `val/` (and `test/`), each a litdata dataset (`index.json` and chunk files), and
`lightning_gen.json`, which says what they hold. `StreamingImages` and `StreamingPairs` read such a folder, or a copy of
it at an `s3://`, `gs://` or `azure://` URL, downloading chunks into `cache_dir` as training reaches them.

Batches are those of the folder datamodules: `(images, labels)` from `StreamingImages` (as `ImageFolder`), `(inputs,
targets)` from `StreamingPairs` (as `PairedImages`), pixels in [-1, 1], and the same `image_shape`, `num_classes` and
`input_channels`, so every image technique trains from shards unchanged.

Training reads through litdata's `StreamingDataLoader`: each epoch the chunks and the items within them are shuffled
(from `seed` and the epoch), and under DDP or several nodes each process reads its own share of the chunks, so an
epoch covers the dataset once. The loader is stateful: Lightning saves its position in every checkpoint, and a run
resumed from a checkpoint written mid-epoch continues with the items it had not yet seen. Validation and test read
the shards by index with the project's usual loader (DDP's sampler splits them; evaluation counts each item once).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.base import DataError, StartMethod, check_start_method, data_root, make_loader, to_signed
from datamodules.images import mode_for, read_image
from datamodules.paired import Targets, apply_jointly, check_aligned_shape, jitter
from datamodules.shard import FORMAT, FORMAT_FILE, SPLITS, is_url, join, make_shards, require_litdata, resize_pixels

CONVERT_OPTIONS = {"source", "dataset", "layout", "storage", "channels", "channels_b", "image_size", "classes",
                   "test_root", "val_fraction", "split_seed", "limit", "chunk_bytes", "num_workers", "verbose"}
"""The options `convert` takes: those of `make_shards` (lightning-gen-shard) that choose what the shards hold."""

# ---- decoding one item: module-level callables, picklable for DataLoader workers under every start method --------


def to_pixels(value: Any, mode: str, name: str = "shard item") -> Tensor:
    """A stored image (uint8 `(C, H, W)` pixels, or an image file's bytes) as uint8 `(C, H, W)` pixels."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return v2.functional.pil_to_tensor(read_image(name, mode, data=bytes(value)))
    return torch.as_tensor(value)


class DecodeImage:
    """A shard item `{"image", "label"}` -> `(image (C, H, W) in [-1, 1], label)`, resized to `image_size` if given."""

    def __init__(self, channels: int, image_size: int | None = None) -> None:
        self.mode, self.image_size = mode_for(channels), image_size

    def __call__(self, item: dict[str, Any]) -> tuple[Tensor, int]:
        pixels = to_pixels(item["image"], self.mode)
        if self.image_size is not None:
            pixels = resize_pixels(pixels, self.image_size)
        return to_signed(pixels), int(item["label"])


class DecodePair:
    """A shard item `{"a", "b"}` -> `(input, target)` in [-1, 1]: training applies pix2pix's jitter (one crop and flip
    for both), evaluation resizes to `crop_size`; `swap` makes B the input (direction BtoA)."""

    def __init__(self, channels: tuple[int, int], aligned: bool, swap: bool, load_size: int, crop_size: int,
                 train: bool, flip: bool) -> None:
        self.channels, self.aligned, self.swap = channels, aligned, swap
        self.transform = jitter(load_size, crop_size, flip) if train else jitter(crop_size)

    def __call__(self, item: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if self.aligned and isinstance(item["a"], (bytes, bytearray, memoryview)):  # one A | B file: as load_pair
            whole = read_image("shard item", "RGB", data=bytes(item["a"]))
            width, height = whole.size
            check_aligned_shape(Path("shard item"), width, height)
            halves = [whole.crop((0, 0, width // 2, height)), whole.crop((width // 2, 0, width // 2 * 2, height))]
            a, b = [v2.functional.pil_to_tensor(half.convert("L") if c == 1 else half)
                    for half, c in zip(halves, self.channels)]
        else:
            a, b = (to_pixels(item[k], mode_for(c)) for k, c in zip("ab", self.channels))
        a, b = apply_jointly(self.transform, a, b)
        return (b, a) if self.swap else (a, b)


class ShardItems(Dataset):
    """A litdata `StreamingDataset` read by index (map-style: DDP's sampler splits it, metrics pick items from it).

    Args:
        shards: the dataset; its `transform` decodes the items.
        count: the number of items in all its chunks (under DDP, `len(shards)` is one process's share).
    """

    def __init__(self, shards: Any, count: int) -> None:
        self.shards, self.count = shards, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        index, count = int(index), self.count
        if not -count <= index < count:
            raise IndexError(f"index {index} is out of range for {count} items")
        return self.shards[index % count]


# ---- the shard folder: where it is, what it holds -------------------------------------------------------------------


def check_cache_dir(cache_dir: str | None) -> None:
    """Create `cache_dir` if needed and write a file in it; a `DataError` naming the fix when that fails."""
    if cache_dir is None:
        return
    folder = data_root(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise DataError(f"cache folder {folder} is not writable ({type(err).__name__}: {err}): the chunks streamed "
                        "from the shards are stored there. Set `--data.cache_dir` to a folder you can write to, on a "
                        "disk with room for them.") from None


def describe(files: list[str]) -> str:
    shown = ", ".join(sorted(files)[:5])
    return f"{len(files)} entr{'y' if len(files) == 1 else 'ies'}: {shown}{', ...' if len(files) > 5 else ''}"


def read_format(root: str, cache_dir: str | None, storage_options: dict | None = None) -> dict[str, Any]:
    """The `lightning_gen.json` of a shard folder (downloaded into `cache_dir` for a URL). Raises `DataError` naming
    the fix for a folder that is missing or empty, or that holds something other than lightning-gen shards."""
    make = "Make shards with `lightning-gen-shard SOURCE OUTPUT` and set `--data.root` to OUTPUT"
    if is_url(root):
        from litdata.streaming.downloader import get_downloader

        local = Path(data_root(cache_dir) if cache_dir else tempfile.mkdtemp(prefix="lightning-gen-shards-"))
        local.mkdir(parents=True, exist_ok=True)
        target = local / FORMAT_FILE
        try:
            get_downloader(root, str(local), [], storage_options).download_file(join(root, FORMAT_FILE), str(target))
        except Exception as err:  # each object store raises its own types
            raise DataError(f"cannot read {join(root, FORMAT_FILE)} ({type(err).__name__}: {err}). Check the URL and "
                            f"the credentials (`--data.storage_options`); {make}, copied there whole.") from None
        text = target.read_text()
    else:
        folder = data_root(root)
        if not folder.is_dir():
            raise DataError(f"shard folder {folder} does not exist. {make}.")
        entries = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        if not entries:
            raise DataError(f"shard folder {folder} is empty. {make}.")
        if not (folder / FORMAT_FILE).is_file():
            if "index.json" in entries:
                raise DataError(f"{folder} holds a single litdata dataset (index.json), not a lightning-gen shard "
                                f"folder (train/, val/ and {FORMAT_FILE}). Point `--data.root` at the folder that "
                                f"holds the splits, or {make[0].lower() + make[1:]}.")
            raise DataError(f"{folder} holds no litdata shards ({describe(entries)}; no {FORMAT_FILE}). If the "
                            "conversion was interrupted, run it again. Otherwise " + make[0].lower() + make[1:] + ".")
        text = (folder / FORMAT_FILE).read_text()
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{join(root, FORMAT_FILE)} is not valid JSON ({err}). {make}.") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{join(root, FORMAT_FILE)} does not describe lightning-gen shards. {make}.")
    return info


class StreamingData(L.LightningDataModule):
    """What the streaming datamodules share: the shard folder, the cache, the loaders."""

    kind: str = ""
    """What the shards must hold: `images` or `pairs`."""
    image_shape: tuple[int, int, int] | None
    num_classes: int | None
    train_set: Dataset | None
    val_set: Dataset | None
    test_set: Dataset | None

    def __init__(self, root: str, convert: dict[str, Any] | None, cache_dir: str | None, max_cache_size: str | None,
                 storage_options: dict | None, batch_size: int, num_workers: int,
                 multiprocessing_context: StartMethod | None, shuffle: bool, drop_last: bool, seed: int) -> None:
        super().__init__()
        if convert is not None:
            if not isinstance(convert, dict) or "source" not in convert:
                raise DataError("convert takes the options of lightning-gen-shard, `source` among them, e.g. "
                                "`convert: {source: $LIGHTNING_GEN_DATA, dataset: MNIST}`.")
            if is_url(root):
                raise DataError(f"convert writes shards into a local folder, not to {root}: make them with "
                                "lightning-gen-shard, copy them there, and leave convert out.")
            unknown = sorted(set(convert) - CONVERT_OPTIONS)
            if unknown:
                raise DataError(f"convert has unknown option(s) {unknown}; it takes {sorted(CONVERT_OPTIONS)} (the "
                                "options of lightning-gen-shard).")
        self.convert = convert
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}.")
        if num_workers < 0:
            raise DataError(f"num_workers must be 0 or more, got {num_workers}.")
        check_start_method(multiprocessing_context)
        self.root, self.cache_dir, self.max_cache_size = root, cache_dir, max_cache_size
        self.storage_options = storage_options
        self.batch_size, self.num_workers = batch_size, num_workers
        self.multiprocessing_context = multiprocessing_context
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.info: dict[str, Any] | None = None
        self.image_shape, self.num_classes = None, None
        self.train_set = self.val_set = self.test_set = None

    # ---- subclasses ----
    def _decoder(self, train: bool) -> Any:
        raise NotImplementedError

    def _describe(self, info: dict[str, Any]) -> None:
        """Set `image_shape` (and the like) from the shard folder's description."""
        raise NotImplementedError

    # ---- shared ----
    def _location(self) -> str:
        return self.root if is_url(self.root) else str(data_root(self.root))

    def _split_cache(self, split: str) -> str | None:
        return str(data_root(self.cache_dir) / split) if self.cache_dir is not None else None

    def _streaming(self, split: str, train: bool) -> Any:
        """The litdata `StreamingDataset` of one split, decoding items for training (`train`) or evaluation."""
        litdata = require_litdata()
        location = join(self._location(), split)
        if not is_url(location) and not (Path(location) / "index.json").is_file():
            raise DataError(f"{location} holds no litdata dataset (no index.json): the shard folder is incomplete. "
                            "Make it again with `lightning-gen-shard ... --overwrite`.")
        kwargs: dict[str, Any] = {}
        if self.max_cache_size is not None:
            kwargs["max_cache_size"] = self.max_cache_size
        if self.storage_options:
            kwargs["storage_options"] = self.storage_options
        # batch_decode=0: each item deserialized alone. litdata's default ("auto") deserializes windows of up to 256
        # items and, with shuffling, decoded about 28 items per item read here (uint8 CIFAR-10 pixels: 5x slower)
        return litdata.StreamingDataset(location, cache_dir=self._split_cache(split), shuffle=train and self.shuffle,
                                        drop_last=self.drop_last if train else None, seed=self.seed,
                                        transform=self._decoder(train), batch_decode=0, **kwargs)

    def _expected_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """The shapes of the tensors of one decoded item, from the shard folder's description."""
        raise NotImplementedError

    def _check_first(self, split: str, items: ShardItems) -> None:
        """Read item 0 of a split (before training), so shards of another kind, items of another shape than the
        description says, or a damaged chunk are reported now, not at the first batch."""
        where = join(self.root, split)
        if items.count == 0:
            raise DataError(f"the {split} split of {self.root} holds no items. Make the shards again.")
        make = f"Make the shards again with lightning-gen-shard{' --pairs' if self.kind == 'pairs' else ''}."
        try:
            first = items.shards[0]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"the items of {where} are not {self.kind} ({type(err).__name__}: {err}). {make}") \
                from None
        shapes = tuple(tuple(x.shape) for x in first if isinstance(x, Tensor))
        if shapes != self._expected_shapes():
            raise DataError(f"the items of {where} decode to tensors of shape {shapes}, but its {FORMAT_FILE} "
                            f"describes {self._expected_shapes()}. {make}")

    def prepare_data(self) -> None:
        """With `convert`, make the shards in `root` from their source when `root` holds none yet (once per node)."""
        check_cache_dir(self.cache_dir)
        if self.convert is None or (data_root(self.root) / FORMAT_FILE).is_file():
            return
        options = dict(self.convert)  # overwrite: only a conversion of ours that was interrupted (no FORMAT_FILE)
        make_shards(options.pop("source"), str(data_root(self.root)), pairs=self.kind == "pairs", overwrite=True,
                    **options)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        require_litdata()
        check_cache_dir(self.cache_dir)
        info = read_format(self.root, self.cache_dir, self.storage_options)
        if info.get("kind") != self.kind:
            other = "StreamingPairs" if info.get("kind") == "pairs" else "StreamingImages"
            raise DataError(f"the shards in {self.root} hold {info.get('kind')} (made with lightning-gen-shard"
                            f"{' --pairs' if info.get('kind') == 'pairs' else ''}), not {self.kind}: use "
                            f"`class_path: datamodules.{other}`, or make {self.kind} shards.")
        for split in ("train", "val"):
            if split not in info.get("splits", {}):
                raise DataError(f"the shards in {self.root} have no {split} split. Make them again with "
                                "lightning-gen-shard.")
        self.info = info
        self._describe(info)
        counts = info["splits"]
        splits = {s: ShardItems(self._streaming(s, train=False), counts[s]) for s in SPLITS if s in counts}
        train = ShardItems(self._streaming("train", train=True), counts["train"])
        for split, items in splits.items():
            self._check_first(split, items)
        self.train_set, self.val_set = train, splits["val"]
        self.test_set = splits.get("test", self.val_set)
        if self.drop_last and len(train) < self.batch_size:
            raise DataError(f"the shards have {len(train)} training items, fewer than batch_size={self.batch_size}, "
                            "and drop_last is on, so no batch would be made. Lower --data.batch_size.")

    def train_dataloader(self) -> Any:
        litdata = require_litdata()
        shards = self._streaming("train", train=True)  # a fresh one: the loader owns its position
        context = self.multiprocessing_context if self.num_workers > 0 else None
        return litdata.StreamingDataLoader(shards, batch_size=self.batch_size, num_workers=self.num_workers,
                                           drop_last=self.drop_last, pin_memory=torch.cuda.is_available(),
                                           persistent_workers=self.num_workers > 0, multiprocessing_context=context)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return make_loader(dataset, self.batch_size, num_workers=self.num_workers,
                           multiprocessing_context=self.multiprocessing_context)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)


class StreamingImages(StreamingData):
    """Images streamed from litdata shards (made by `lightning-gen-shard` from an image folder or a torchvision
    dataset), in a local folder or at an `s3://`, `gs://` or `azure://` URL: batches `(images, labels)` with images
    `(B, C, H, W)` in [-1, 1], as `datamodules.ImageFolder` makes them.

    Training shuffles chunks and items each epoch and, under DDP or several nodes, gives each process its own share of
    the chunks; a checkpoint holds the loader's position, so a run resumed mid-epoch continues where it stopped.

    Args:
        root: the shard folder (holding train/, val/, test/ and lightning_gen.json) or its URL; `$VARS` and `~` are
            expanded.
        convert: make the shards in `root` (a local folder) before training when it holds none yet, from these
            options of lightning-gen-shard: `source` (the image folder, or the folder holding `dataset`), and
            optionally `dataset` (e.g. MNIST), `storage`, `image_size`, `test_root`, `classes`, `limit`, ... (e.g.
            `{source: $LIGHTNING_GEN_DATA, dataset: MNIST}`). Shards already there are used as they are.
        cache_dir: where chunks streamed from a URL are kept (default: litdata's cache folder). Local shards are
            read in place.
        max_cache_size: the most the cache may hold, e.g. `100GB` (default: litdata's, a share of the free space).
        storage_options: options of the object store's client, e.g. credentials or an endpoint URL.
        image_size: resize every image (shorter side, then centre crop) to this side when read (default: as stored).
        batch_size: images per batch (per process under DDP).
        num_workers: loader worker processes (0 reads in the main process).
        multiprocessing_context: how the workers start: `spawn`, `forkserver` or `fork` (default: the platform's).
        shuffle: shuffle the training chunks and items every epoch.
        drop_last: drop the last incomplete training batch; under DDP, every process then gets as many batches.
        seed: seed of the shuffle (the same on every process; each epoch shuffles differently).
    """

    kind = "images"
    class_names: list[str]
    """The class of each label, in label order (from the shards' source)."""

    def __init__(
        self,
        root: str,
        convert: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
        image_size: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        multiprocessing_context: StartMethod | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(root, convert, cache_dir, max_cache_size, storage_options, batch_size, num_workers,
                         multiprocessing_context, shuffle, drop_last, seed)
        if image_size is not None and image_size < 1:
            raise DataError(f"image_size must be positive, got {image_size}.")
        self.image_size = image_size
        self.class_names = []

    def _describe(self, info: dict[str, Any]) -> None:
        height, width = info["size"]
        side = self.image_size
        self.image_shape = (int(info["channels"]), side or height, side or width)
        self.class_names = list(info.get("classes") or [])
        self.num_classes = len(self.class_names) or 1

    def _expected_shapes(self) -> tuple[tuple[int, int, int], ...]:
        return (self.image_shape,)

    def _decoder(self, train: bool) -> DecodeImage:
        return DecodeImage(self.image_shape[0], self.image_size)


class StreamingPairs(StreamingData):
    """Pairs of images for image-to-image translation (pix2pix) streamed from litdata shards (made by
    `lightning-gen-shard --pairs`): batches `(input, target)` of `(B, C, H, W)` tensors in [-1, 1], as
    `datamodules.PairedImages` makes them, with the same training jitter (resize to `load_size`, one random
    `crop_size` crop and flip for both images) and evaluation resize.

    Args:
        root: the shard folder (holding train/, val/, test/ and lightning_gen.json) or its URL; `$VARS` and `~` are
            expanded.
        direction: `AtoB` (input A, target B) or `BtoA`. CMP Facades stores photo | labels, so labels -> photo is
            BtoA.
        load_size: side both images are resized to before the random crop (286 in the paper).
        crop_size: side of the random crop, and the evaluation size (256 in the paper).
        flip: random horizontal flips in training.
        convert: make the shards in `root` (a local folder) before training when it holds none yet, from these
            options of lightning-gen-shard --pairs: `source` (the folder holding train/, val/, test/), and optionally
            `layout`, `storage`, `channels`, `channels_b`, `limit`, ... (e.g. `{source: $LIGHTNING_GEN_DATA/facades}`).
            Shards already there are used as they are.
        cache_dir: where chunks streamed from a URL are kept (default: litdata's cache folder).
        max_cache_size: the most the cache may hold, e.g. `100GB` (default: litdata's).
        storage_options: options of the object store's client, e.g. credentials or an endpoint URL.
        batch_size: pairs per batch (1 in the paper).
        num_workers: loader worker processes.
        multiprocessing_context: how the workers start: `spawn`, `forkserver` or `fork`.
        shuffle: shuffle the training chunks and items every epoch.
        drop_last: drop the last incomplete training batch.
        seed: seed of the shuffle.
    """

    kind = "pairs"
    input_channels: int | None
    """Channels of the input images (A, or B with `direction: BtoA`)."""

    def __init__(
        self,
        root: str,
        direction: Literal["AtoB", "BtoA"] = "AtoB",
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        convert: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        multiprocessing_context: StartMethod | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(root, convert, cache_dir, max_cache_size, storage_options, batch_size, num_workers,
                         multiprocessing_context, shuffle, drop_last, seed)
        if direction not in ("AtoB", "BtoA"):
            raise DataError(f"direction must be AtoB or BtoA, got {direction!r}.")
        if crop_size < 1 or load_size < crop_size:
            raise DataError(f"need 1 <= crop_size <= load_size; got crop_size={crop_size}, load_size={load_size}.")
        self.direction, self.load_size, self.crop_size, self.flip = direction, load_size, crop_size, flip
        self.swap = direction == "BtoA"
        self.input_channels = None
        self.channels: tuple[int, int] = (3, 3)

    @property
    def reference_set(self) -> Dataset | None:
        """The training targets alone (real images of the kind the model makes), for sample-quality metrics."""
        return Targets(self.train_set) if self.train_set is not None else None

    def _describe(self, info: dict[str, Any]) -> None:
        self.channels = tuple(int(c) for c in info["channels"])
        self.input_channels, target_channels = self.channels[::-1] if self.swap else self.channels
        self.image_shape = (target_channels, self.crop_size, self.crop_size)
        self.num_classes = None

    def _expected_shapes(self) -> tuple[tuple[int, int, int], ...]:
        return (self.input_channels, self.crop_size, self.crop_size), self.image_shape

    def _decoder(self, train: bool) -> DecodePair:
        return DecodePair(self.channels, self.info.get("layout") == "aligned", self.swap, self.load_size,
                          self.crop_size, train, self.flip)


__all__ = ["DecodeImage", "DecodePair", "ShardItems", "StreamingData", "StreamingImages", "StreamingPairs",
           "check_cache_dir", "read_format"]
