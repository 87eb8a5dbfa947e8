"""Paired images for image-to-image translation (pix2pix): each input image A has its target image B.

Two layouts under `root/<split>/` (split: train, val, test):
- `aligned`: one file per pair, A on the left half and B on the right (pix2pix's datasets: facades, maps, ...).
- `folders`: `A/` and `B/` sub-folders holding files of the same names.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import tv_tensors
from torchvision.transforms import v2

from datamodules.base import DataError, ImageDataModule, data_root, signed_steps
from datamodules.folder import images_in
from datamodules.images import mode_for, read_image, read_size

Pair = tuple[Path, Path | None]  # (A, B) files, or (the aligned file, None)
ALIGNED_RATIO = (1.5, 2.5)
"""The width/height an aligned A | B file may have: two images side by side, each of about the same shape, so about
2:1 (pix2pix's datasets are exactly 2:1). Outside it, the file is a single image that would be cut in half."""


def check_aligned_shape(path: Path, width: int, height: int) -> None:
    """Raise `DataError` naming `path`, its ratio and the fix when an aligned A | B file is not about twice as wide as
    high (`ALIGNED_RATIO`): an ordinary photo would be cut in half and trained left half -> right half."""
    low, high = ALIGNED_RATIO
    if not low <= width / height <= high:
        raise DataError(
            f"{path} is {width}x{height} (width/height {width / height:.2f}), but an aligned pair holds A and B side "
            f"by side, so it is about twice as wide as high ({low} to {high}). It looks like a single image: put the "
            "inputs and targets in A/ and B/ sub-folders (files of the same names) and use layout: folders, or join "
            "each pair side by side."
        )


def scan_pairs(folder: Path, layout: Literal["aligned", "folders"]) -> list[Pair]:
    """The pairs of one split folder; raises `DataError` naming the fix for an empty folder or an unpaired file."""
    if layout == "aligned":
        pairs: list[Pair] = [(p, None) for p in images_in(folder)]
    else:
        if not (folder / "A").is_dir() or not (folder / "B").is_dir():
            raise DataError(f"{folder} needs the sub-folders A/ and B/ (layout: folders); it has "
                            f"{sorted(d.name for d in folder.iterdir() if d.is_dir())}. Or use layout: aligned.")
        a = {p.name: p for p in images_in(folder / "A")}
        b = {p.name: p for p in images_in(folder / "B")}
        unpaired = sorted(set(a) ^ set(b))
        if unpaired:
            sides = ["A" if name in a else "B" for name in unpaired[:5]]
            raise DataError(
                f"{len(unpaired)} unpaired file(s) in {folder}: "
                + ", ".join(f"{side}/{name}" for side, name in zip(sides, unpaired[:5]))
                + ". Every file in A/ needs a file of the same name in B/; remove or rename them."
            )
        pairs = [(a[name], b[name]) for name in sorted(a)]
    if not pairs:
        raise DataError(f"no images found in {folder} (layout: {layout}). Point `--data.root` at the folder that "
                        "holds train/ (and val/, test/).")
    return pairs


def check_sizes(pairs: list[Pair], folder: Path, layout: Literal["aligned", "folders"]) -> tuple[int, int]:
    """The `(width, height)` that the files of one split folder share, read from their headers only (nothing is
    decoded). Raises `DataError` naming the file, its size, the folder's size and the fix for an aligned file of odd
    width, an A and B of different sizes, aligned files that are not about 2:1 (`check_aligned_shape`: a folder of
    photos), or a file whose size differs from the folder's other pairs (a 300x300 photo among 512x256 aligned pairs
    would otherwise be cut into two 150x300 halves and resized without a word)."""
    sizes: dict[Path, tuple[int, int]] = {}
    for first, second in pairs:
        w, h = read_size(first)
        if second is None and w % 2:
            raise DataError(
                f"{first} is {w}x{h}: an aligned pair holds A and B side by side, so its width must be even. "
                "Is it a single image? Use layout: folders for separate A/ and B/ files."
            )
        wb, hb = read_size(second) if second is not None else (w, h)
        if (wb, hb) != (w, h):
            raise DataError(f"{first} is {w}x{h} but its pair {second} is {wb}x{hb}. The two images of a pair must "
                            "have the same size: resize one of them, or remove the pair.")
        sizes[first] = (w, h)
    (width, height), count = Counter(sizes.values()).most_common(1)[0]
    if layout == "aligned":  # the folder's usual size first: a folder of photos is not told to match one of them
        check_aligned_shape(next(path for path, size in sizes.items() if size == (width, height)), width, height)
    strays = [(path, size) for path, size in sizes.items() if size != (width, height)]
    if strays:
        path, (w, h) = strays[0]
        more = f" ({len(strays) - 1} more differ too, e.g. {strays[1][0].name})" if len(strays) > 1 else ""
        if layout == "aligned":
            what = f"aligned pairs (A | B side by side, each half {width // 2}x{height})"
            fix = f"replace it with a {width}x{height} file holding A on the left and B on the right"
        else:
            what, fix = "pairs", f"resize both of its images to {width}x{height}"
        raise DataError(
            f"{path} is {w}x{h}, but the {what} in {folder} are {width}x{height} ({count} of {len(sizes)} "
            f"files){more}. A file of another size is not a pair of this folder: remove it, or {fix}."
        )
    return width, height


def load_pair(pair: Pair, channels: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Decode a pair into uint8 `(C_a, H, W)` and `(C_b, H, W)` tensors; raises `DataError` for an unreadable file,
    an aligned file whose width cannot be halved, or A and B of different sizes."""
    first, second = pair
    if second is None:  # aligned: A | B side by side
        whole = read_image(first, "RGB")
        w, h = whole.size
        if w % 2:
            raise DataError(
                f"{first} is {w}x{h}: an aligned pair holds A and B side by side, so its width must be even. "
                "Is it a single image? Use layout: folders for separate A/ and B/ files."
            )
        check_aligned_shape(first, w, h)
        halves = [whole.crop((0, 0, w // 2, h)), whole.crop((w // 2, 0, w, h))]
        a, b = [half.convert("L") if c == 1 else half for half, c in zip(halves, channels)]
    else:
        a, b = read_image(first, mode_for(channels[0])), read_image(second, mode_for(channels[1]))
        if a.size != b.size:
            raise DataError(f"{first} is {a.size[0]}x{a.size[1]} but its pair {second} is {b.size[0]}x{b.size[1]}. "
                            "The two images of a pair must have the same size.")
    return v2.functional.pil_to_tensor(a), v2.functional.pil_to_tensor(b)


def jitter(size: int, crop: int | None = None, flip: bool = False) -> v2.Compose:
    """uint8 `(C, H, W)` images -> `(C, crop, crop)` floats in [-1, 1]: resize to `size` x `size` (bicubic), then a
    random `crop` x `crop` window (if `crop` < `size`) and a random horizontal flip (if `flip`). Called on several
    `tv_tensors.Image`s at once, it draws one window and one flip for all of them (pix2pix's joint jitter)."""
    steps: list[v2.Transform] = [v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
    if crop is not None and crop < size:
        steps.append(v2.RandomCrop(crop))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, *signed_steps()])


def apply_jointly(transform: v2.Transform, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """`transform` applied to A and B as one sample of two `tv_tensors.Image`s: the same random crop and flip for
    both (their sizes may differ in channels, not in height and width). Returns plain tensors."""
    a, b = transform(tv_tensors.Image(a), tv_tensors.Image(b))
    return a.as_subclass(Tensor), b.as_subclass(Tensor)


def joint_transform(a: Tensor, b: Tensor, size: int, crop: int | None, flip: bool) -> tuple[Tensor, Tensor]:
    """`jitter(size, crop, flip)` with one crop window and one flip for both images, so they cannot come out
    misaligned."""
    return apply_jointly(jitter(size, crop, flip), a, b)


class PairedDataset(Dataset):
    """`(input, target)` pairs in [-1, 1]: `train` applies the random jitter (one draw for both images), otherwise a
    plain resize to `crop_size`."""

    def __init__(self, pairs: list[Pair], channels: tuple[int, int], swap: bool, load_size: int, crop_size: int,
                 train: bool, flip: bool) -> None:
        self.pairs, self.channels, self.swap = pairs, channels, swap
        self.load_size, self.crop_size, self.train, self.flip = load_size, crop_size, train, flip
        self.transform = jitter(load_size, crop_size, flip) if train else jitter(crop_size)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        a, b = apply_jointly(self.transform, *load_pair(self.pairs[index], self.channels))
        return (b, a) if self.swap else (a, b)


class Targets(Dataset):
    """The target images of a `PairedDataset` alone: the real images of the kind the model makes."""

    def __init__(self, pairs: Dataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Tensor:
        return self.pairs[index][1]


class InputImages(Dataset):
    """The input images of a folder for `predict`: `{"input", "name"}` items, the input resized to `crop_size`.
    `aligned`: each file is an A | B pair and the input half (by `direction`) is used."""

    def __init__(self, files: list[Path], channels: int, crop_size: int, aligned: bool, swap: bool) -> None:
        self.files, self.channels, self.crop_size, self.aligned, self.swap = files, channels, crop_size, aligned, swap
        self.transform = jitter(crop_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        if self.aligned:
            a, b = load_pair((path, None), (self.channels, self.channels))
            image = b if self.swap else a
        else:
            image = v2.functional.pil_to_tensor(read_image(path, mode_for(self.channels)))
        return {"input": self.transform(tv_tensors.Image(image)).as_subclass(Tensor), "name": path.name}


class PairedImages(ImageDataModule):
    """Paired images for image-to-image translation: batches `(input, target)` of `(B, C, H, W)` tensors in [-1, 1].

    Splits: `train/`, `val/` (else `val_fraction` of train is held out) and `test/` (else val) under `root`.
    Training jitter (Isola et al.): resize both images to `load_size`, then one random `crop_size` crop and one
    random horizontal flip, the same for A and B. Evaluation: resize to `crop_size`. Before training, `setup()`
    reads every file's header and refuses a file whose size differs from its folder's pairs, an aligned file that is
    not about twice as wide as high (a single photo, not an A | B pair), and an unpaired file;
    with `verify: true` it also decodes every file, so a corrupt one is reported before training too.

    Args:
        root: folder holding `train/` (and `val/`, `test/`); `$VARS` and `~` are expanded
            (e.g. `$LIGHTNING_GEN_DATA/facades`).
        layout: `aligned` (one A | B file per pair) or `folders` (`A/` and `B/` with matching names).
        direction: `AtoB` (input A, target B) or `BtoA`. CMP Facades stores photo | labels, so labels -> photo
            is BtoA.
        load_size: side both images are resized to before the random crop (286 in the paper).
        crop_size: side of the random crop, and the evaluation size (256 in the paper).
        flip: random horizontal flips in training.
        channels_a: 1 (greyscale) or 3 (RGB) for the A images.
        channels_b: 1 or 3 for the B images.
        predict_root: folder of images that `predict` translates (default: the test split).
        predict_aligned: the `predict_root` images are A | B pairs: translate their input half.
        verify: decode every pair in `setup()`.
        batch_size: pairs per batch (1 in the paper).
    """

    input_channels: int
    """Channels of the input images (A, or B with `direction: BtoA`): what the generator reads."""
    image_shape: tuple[int, int, int]
    """`(channels, crop_size, crop_size)` of the target images: what the generator makes."""
    predict_set: Dataset | None
    """The `predict` inputs, `{"input", "name"}` items, after `setup("predict")`."""

    def __init__(
        self,
        root: str,
        layout: Literal["aligned", "folders"] = "aligned",
        direction: Literal["AtoB", "BtoA"] = "AtoB",
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        channels_a: Literal[1, 3] = 3,
        channels_b: Literal[1, 3] = 3,
        predict_root: str | None = None,
        predict_aligned: bool = False,
        verify: bool = True,
        batch_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("image_size") is not None:
            raise DataError("PairedImages sizes images with `load_size` (before the random crop) and `crop_size`; "
                            "remove `image_size`.")
        super().__init__(batch_size=batch_size, **kwargs)
        if layout not in ("aligned", "folders") or direction not in ("AtoB", "BtoA"):
            raise DataError(f"layout must be aligned or folders and direction AtoB or BtoA; got {layout!r}, "
                            f"{direction!r}.")
        if crop_size < 1 or load_size < crop_size:
            raise DataError(f"need 1 <= crop_size <= load_size; got crop_size={crop_size}, load_size={load_size}.")
        self.root, self.layout, self.direction = root, layout, direction
        self.load_size, self.crop_size, self.flip = load_size, crop_size, flip
        self.channels = (channels_a, channels_b)
        self.predict_root, self.predict_aligned, self.verify = predict_root, predict_aligned, verify
        self.swap = direction == "BtoA"
        self.input_channels, target_channels = self.channels[::-1] if self.swap else self.channels
        self.image_shape = (target_channels, crop_size, crop_size)  # of the images the model makes
        self.predict_set = None

    @property
    def reference_set(self) -> Dataset | None:
        """The training targets alone (real images of the kind the model makes), for sample-quality metrics."""
        return Targets(self.train_set) if self.train_set is not None else None

    def _split(self, name: str) -> list[Pair] | None:
        folder = data_root(self.root) / name
        if not folder.is_dir():
            return None
        pairs = scan_pairs(folder, self.layout)
        check_sizes(pairs, folder, self.layout)  # headers only: a stray size is refused even without verify
        if self.verify:
            for pair in pairs:
                load_pair(pair, self.channels)
        return pairs

    def _dataset(self, pairs: list[Pair], train: bool) -> PairedDataset:
        return PairedDataset(pairs, self.channels, self.swap, self.load_size, self.crop_size, train, self.flip)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.predict_set = self._predict_set()
            return
        if self.train_set is not None:
            return
        root = data_root(self.root)
        if not root.is_dir():
            raise DataError(f"paired-image folder {root} does not exist. Set `--data.root` to the folder holding "
                            "train/ (and val/, test/), e.g. `$LIGHTNING_GEN_DATA/facades`.")
        train = self._split("train")
        if train is None:
            raise DataError(f"{root} has no train/ folder. Put the training pairs in {root / 'train'}.")
        val, test = self._split("val"), self._split("test")
        if val is None:  # hold out part of train; the held-out pairs get no jitter
            n_val = max(1, round(len(train) * self.val_fraction))
            split = torch.Generator().manual_seed(self.split_seed)
            train_part, val_part = random_split(train, [len(train) - n_val, n_val], generator=split)
            train, val = [train[i] for i in train_part.indices], [train[i] for i in val_part.indices]
        self.train_set = self._dataset(train, train=True)
        self.val_set = self._dataset(val, train=False)
        self.test_set = self._dataset(test, train=False) if test is not None else self.val_set
        if self.drop_last and len(self.train_set) < self.batch_size:
            raise DataError(f"{len(self.train_set)} training pairs, fewer than batch_size={self.batch_size}, and "
                            "drop_last is on. Lower --data.batch_size.")

    def _predict_set(self) -> Dataset:
        if self.predict_root is None:  # the test split's inputs
            split = "test" if (data_root(self.root) / "test").is_dir() else "val"
            folder = data_root(self.root) / split
            aligned = self.layout == "aligned"
            if not aligned:
                folder = folder / ("B" if self.swap else "A")
        else:
            folder, aligned = data_root(self.predict_root), self.predict_aligned
        if not folder.is_dir():
            raise DataError(f"predict folder {folder} does not exist. Set `--data.predict_root` to a folder of "
                            "input images.")
        files = images_in(folder)
        if not files:
            raise DataError(f"no images found in {folder}. Set `--data.predict_root` to a folder of input images.")
        if aligned:  # headers only: a single photo among them is refused now, not halfway through
            for file in files:
                check_aligned_shape(file, *read_size(file))
        return InputImages(files, self.input_channels, self.crop_size, aligned, self.swap)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_set is None:
            self.predict_set = self._predict_set()
        return self._loader(self.predict_set, train=False)


__all__ = ["ALIGNED_RATIO", "PairedImages", "apply_jointly", "check_aligned_shape", "check_sizes", "jitter",
           "joint_transform", "load_pair", "scan_pairs"]
