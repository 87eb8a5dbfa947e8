"""Any folder of images: `root/<class>/<image>` (torchvision's ImageFolder layout) or a flat `root/<image>`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from datamodules.base import DataError, ImageDataModule, data_root, to_signed_tensor


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder` (torchvision's image extensions), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def scan_image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """List `(path, class index)` for the images under `root`; raise `DataError` naming the fix if there are none."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist. Set `--data.root` to a folder of images (one sub-folder per "
            "class, or images directly inside)."
        )

    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    found = [d.name for d in subdirs if images_in(d)]
    if found:
        names = found
        if classes is not None:
            unknown = sorted(set(classes) - set(found))
            if unknown:
                raise DataError(f"classes {unknown} are not sub-folders of {root}; it has {found}.")
            names = [c for c in found if c in classes]
        samples = [(p, i) for i, name in enumerate(names) for p in images_in(root / name)]
    else:
        if classes is not None:
            raise DataError(f"{root} has no class sub-folders, so `classes` cannot select any; remove it.")
        names = [root.name]
        samples = [(p, 0) for p in images_in(root)]
    if not samples:
        raise DataError(
            f"no images found under {root} (looked for {', '.join(IMG_EXTENSIONS)} files in it and in its "
            "sub-folders). Point `--data.root` at a folder of images."
        )
    return samples, names


def check_images(samples: list[tuple[Path, int]], image_size: int | None) -> tuple[int, int]:
    """Decode every image once; raise `DataError` for a corrupt file, or (without `image_size`) for sizes that
    differ from the first image's. Returns the `(height, width)` of the first image."""
    first: tuple[int, int] | None = None
    for path, _ in samples:
        try:
            with Image.open(path) as im:
                im.load()
                size = (im.height, im.width)
        except Exception as err:  # PIL raises many types for bad files
            raise DataError(f"cannot read image {path}: {err}. Remove or replace the file.") from None
        if first is None:
            first = size
        elif image_size is None and size != first:
            raise DataError(
                f"image {path} is {size[0]}x{size[1]} but {samples[0][0]} is {first[0]}x{first[1]}. Set "
                "`--data.image_size` to resize every image to one size."
            )
    assert first is not None
    return first


class _Files(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], transform: Any) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        with Image.open(path) as im:
            return self.transform(im), label


class ImageFolder(ImageDataModule):
    """Images from a folder: `root/<class>/*.png|jpg|...` (torchvision's ImageFolder layout) or `root/*.png`.

    Every image is decoded once in `setup()` (with `verify: true`), so a corrupt file or a stray size is
    reported before training, not in the middle of it. With `image_size` every image is resized (shorter side)
    and centre-cropped to that side; without it, all images must have the same size.

    Args:
        root: the folder (`$VARS` and `~` are expanded, e.g. `$LIGHTNING_GEN_DATA/cifar10/train`).
        classes: use only these class sub-folders (e.g. `[bird]` for CIFAR-10 birds); default all.
        test_root: a folder of the same layout for `test`; default: the validation split.
        channels: 1 for greyscale, 3 for RGB.
        verify: decode every image in `setup()` to catch corrupt files and mismatched sizes early.
    """

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
        self.class_names: list[str] = []

    def _samples(self, root: str) -> list[tuple[Path, int]]:
        samples, names = scan_image_folder(data_root(root), self.classes)
        if self.verify:
            height, width = check_images(samples, self.image_size)
        else:
            with Image.open(samples[0][0]) as im:
                height, width = im.height, im.width
        if not self.class_names:
            self.class_names = names
            self.num_classes = len(names)
            side = self.image_size
            self.image_shape = (self.channels, side or height, side or width)
        return samples

    def _load(self) -> tuple[Dataset, Dataset | None]:
        transform = to_signed_tensor(self.image_size, channels=self.channels)
        train = _Files(self._samples(self.root), transform)
        test = _Files(self._samples(self.test_root), transform) if self.test_root else None
        return train, test
