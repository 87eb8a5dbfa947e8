"""Any folder of images: `root/<class>/<image>` (torchvision's ImageFolder layout) or a flat `root/<image>`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from datamodules.base import DataError, ImageDataModule, data_root, to_signed_tensor
from datamodules.images import Mode, is_greyscale, mode_for, read_image, read_size


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder` (torchvision's image extensions), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def scan_image_folder(
    root: Path, classes: list[str] | None = None, option: str = "--data.root", labels: bool = True
) -> tuple[list[tuple[Path, int]], list[str]]:
    """List `(path, class index)` for the images under `root`; raise `DataError` naming the fix if there are none,
    or (with `labels`: the sub-folders are classes) if a class sub-folder, of those `classes` selects, holds no
    images: dropping it would shift the class indices of the folders after it. Without `labels` an empty sub-folder
    is skipped. `option` is the option that gave `root` (`--data.test_roots`), named in the messages."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist. Set `{option}` to a folder of images (one sub-folder per "
            "class, or images directly inside)."
        )

    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    found = [d.name for d in subdirs if images_in(d)]
    if found:
        names = [d.name for d in subdirs]
        if classes is not None:
            unknown = sorted(set(classes) - set(names))
            if unknown:
                raise DataError(f"classes {unknown} are not sub-folders of {root}; it has {names}.")
            names = [c for c in names if c in classes]
        empty = [name for name in names if name not in found] if labels else []
        if empty:
            more = f" (and {len(empty) - 1} more: {', '.join(empty[1:4])})" if len(empty) > 1 else ""
            fix = ("leave it out of `--data.classes`" if classes is not None else
                   "remove the folder (or select the classes to use with `--data.classes`)")
            raise DataError(
                f"class folder {root / empty[0]} is empty{more}: it holds no images "
                f"({', '.join(IMG_EXTENSIONS)}), and dropping it would change the class indices of the folders "
                f"after it. Put its images in it, or {fix}."
            )
        names = [name for name in names if name in found]
        samples = [(p, i) for i, name in enumerate(names) for p in images_in(root / name)]
    else:
        if classes is not None:
            raise DataError(f"{root} has no class sub-folders, so `classes` cannot select any; remove it.")
        names = [root.name]
        samples = [(p, 0) for p in images_in(root)]
    if not samples:
        raise DataError(
            f"no images found under {root} (looked for {', '.join(IMG_EXTENSIONS)} files in it and in its "
            f"sub-folders). Point `{option}` at a folder of images."
        )
    return samples, names


def check_images(samples: list[tuple[Path, int]], image_size: int | None, decode: bool = True,
                 channels: int | None = None, where: str = "") -> tuple[int, int]:
    """Read every image once: decoded (`read_image`, with `decode`) or its header only (`read_size`). Raise
    `DataError` for a corrupt file, or (without `image_size`) for sizes that differ from the first image's.
    With `channels`, say in one line how many images have another number of channels and what is done with them
    (grey images in an RGB folder, colour ones read as grey). Returns the `(height, width)` of the first image."""
    first: tuple[int, int] | None = None
    other = 0
    for path, _ in samples:
        width, height = read_image(path, "L").size if decode else read_size(path)
        if channels is not None:
            other += is_greyscale(path) != (channels == 1)
        size = (height, width)
        if first is None:
            first = size
        elif image_size is None and size != first:
            raise DataError(
                f"image {path} is {size[0]}x{size[1]} but {samples[0][0]} is {first[0]}x{first[1]}. Set "
                "`--data.image_size` to resize every image to one size."
            )
    assert first is not None
    if other and channels == 3:
        rank_zero_info(f"{other} of {len(samples)} images in {where} are greyscale: each is used as RGB, its grey "
                       "value in all three channels (`--data.channels 1` reads every image as grey).")
    elif other:
        rank_zero_info(f"{other} of {len(samples)} images in {where} are in colour: they are converted to greyscale "
                       "(`--data.channels 3` keeps the colour).")
    return first


class FolderImages(Dataset):
    """`(image, label)` items of `(path, label)` samples: each file read by `read_image` in `mode`, then `transform`.

    Args:
        samples: `(path, class index)` pairs (`samples` is also what `dataset_labels` reads the labels from).
        transform: PIL image -> tensor (a module-level, picklable transform, such as `to_signed_tensor`).
        mode: `RGB` or `L`, the mode the files are read in.
    """

    def __init__(self, samples: list[tuple[Path, int]], transform: Any, mode: Mode = "RGB") -> None:
        self.samples, self.transform, self.mode = samples, transform, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(read_image(path, self.mode)), label


class ImageFolder(ImageDataModule):
    """Images from a folder: `root/<class>/*.png|jpg|...` (torchvision's ImageFolder layout) or `root/*.png`.

    Every image is decoded once in `setup()` (with `verify: true`), so a corrupt file or a stray size is
    reported before training, not in the middle of it; with `verify: false` and no `image_size`, the sizes are still
    checked, from the files' headers. Files are read by `datamodules.images.read_image` (EXIF orientation applied,
    16-bit greyscale scaled to 8 bits, transparency over white). With `image_size` every image is resized (shorter side)
    and centre-cropped to that side; without it, all images must have the same size.

    Args:
        root: the folder (`$VARS` and `~` are expanded, e.g. `$LIGHTNING_GEN_DATA/cifar10/train`).
        classes: use only these class sub-folders (e.g. `[bird]` for CIFAR-10 birds); default all.
        test_root: a folder of the same layout for `test`; default: the validation split.
        channels: 1 for greyscale, 3 for RGB.
        verify: decode every image in `setup()` to catch corrupt files and mismatched sizes early.
    """

    class_names: list[str]
    """The class of each label, in label order: the sub-folders' names (the folder's own name when flat)."""

    def __init__(
        self,
        root: str,
        classes: list[str] | None = None,
        test_root: str | None = None,
        channels: Literal[1, 3] = 3,
        verify: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.classes = classes
        self.test_root = test_root
        self.channels = channels
        self.verify = verify
        self.class_names = []

    def _samples(self, root: str, option: str = "--data.root") -> list[tuple[Path, int]]:
        samples, names = scan_image_folder(data_root(root), self.classes, option)
        if self.verify or self.image_size is None:  # without verify, the sizes are checked from the headers
            height, width = check_images(samples, self.image_size, self.verify, self.channels, root)
        else:
            width, height = read_size(samples[0][0])
        if not self.class_names:
            self.class_names = names
            self.num_classes = len(names)
            side = self.image_size
            self.image_shape = (self.channels, side or height, side or width)
        return samples

    def _load(self) -> tuple[Dataset, Dataset | None]:
        transform, mode = to_signed_tensor(self.image_size, channels=self.channels), mode_for(self.channels)
        train = FolderImages(self._samples(self.root), transform, mode)
        test = (FolderImages(self._samples(self.test_root, "--data.test_root"), transform, mode) if self.test_root
                else None)
        return train, test
