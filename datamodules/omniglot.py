"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): handwritten characters of 50 alphabets, 20 drawers each, read
from the zip files as published (no extraction).

- Training: the background images. By default the two *minimal* background splits
  (`images_background_small1.zip`, `images_background_small2.zip`: 5 alphabets each, Greek and Latin in both, the
  same files: 242 distinct characters); the full `images_background.zip` (964 characters) is read the same way when
  it is in the folder and named in `background`. Each character is a class. `val_characters` of them (chosen by
  `split_seed`) are held out for validation, so validation measures characters the network never saw.
- Test: Lake et al.'s one-shot classification benchmark, `all_runs.zip`: 20 runs, each 20 training images (one
  per character, of the evaluation alphabets, never in the background set) and 20 test images of the same
  characters by another drawer; `runNN/class_labels.txt` pairs each test image with its training image. Test
  batches are `(images, labels, run, is_support)`: within a run, a test image's label is the index of the training
  image it must be matched with.

Images are 105x105 black strokes on white. They are inverted (strokes bright, background 0, as the papers feed
them) and resized to `image_size` (default 28, as Vinyals et al. 2016 and most few-shot work; Koch et al. use
105), then scaled to [-1, 1].
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

from datamodules.base import DataError, ImageDataModule, data_root
from datamodules.images import read_image

MINIMAL = ["images_background_small1.zip", "images_background_small2.zip"]
RUNS = "all_runs.zip"
_DECODED: dict[tuple, tuple[Dataset, Dataset, list[str]]] = {}  # the last set of files decoded, by path, time, size


class OneShotRuns(Dataset):
    """Items `(image, label, run, is_support)` of Lake's one-shot runs (see the module's docstring)."""

    def __init__(self, images: Tensor, labels: Tensor, runs: Tensor, support: Tensor) -> None:
        self.images, self.labels, self.runs, self.support = images, labels, runs, support

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, bool]:
        return self.images[i], int(self.labels[i]), int(self.runs[i]), bool(self.support[i])


class Characters(Dataset):
    """Items `(image, class)`; images already scaled to [-1, 1]; `targets` holds the classes."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.targets[i])


def _decode(archive: zipfile.ZipFile, member: str, size: int) -> Tensor:
    """One Omniglot PNG from a zip -> (1, size, size) in [-1, 1], strokes bright."""
    pixels = read_image(f"{archive.filename}:{member}", "L", data=archive.read(member))
    image = 1.0 - torch.frombuffer(bytearray(pixels.tobytes()), dtype=torch.uint8).float().view(
        1, pixels.height, pixels.width) / 255.0
    if image.shape[-1] != size:
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return image * 2 - 1


def _open(root: Path, name: str, option: str) -> zipfile.ZipFile:
    path = root / name
    if not path.is_file():
        present = sorted(p.name for p in root.glob("*.zip")) if root.is_dir() else []
        raise DataError(f"{path} is missing: Omniglot needs the zip files as published (`{name}`; the folder holds "
                        f"{present or 'no zip files'}). Point Omniglot's `root` at the folder that holds them "
                        f"(`{option}`, or `--data.data.root` when it is wrapped in `ClassBatches`).")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise DataError(f"{path} is not a readable zip file ({err}). Copy it again.") from None


class Omniglot(ImageDataModule):
    """Omniglot characters for metric and few-shot learning (see the module's docstring).

    Args:
        root: the folder of the zip files (default `$LIGHTNING_GEN_DATA/omniglot`).
        background: the background zip files to train on (default the two minimal splits).
        val_characters: characters held out of training for validation (0: no validation).
        image_size: side the 105x105 images are resized to.
        rotations: add each training character turned by 90, 180 and 270 degrees as three new classes (Santoro et
            al. 2016, Vinyals et al. 2016 and most few-shot work since): 4x the training classes.
        **kwargs: `batch_size` (evaluation batches; training batches come from `ClassBatches`), `split_seed`,
            `num_workers`, ...
    """

    def __init__(
        self,
        root: str = "$LIGHTNING_GEN_DATA/omniglot",
        background: list[str] | None = None,
        val_characters: int = 20,
        image_size: int = 28,
        rotations: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.rotations = rotations
        if val_characters < 0:
            raise DataError(f"val_characters must be 0 or more, got {val_characters}.")
        self.root = root
        self.background = list(background or MINIMAL)
        self.val_characters = val_characters
        self.image_shape = (1, image_size, image_size)
        self.character_names: list[str] = []

    def _load(self) -> tuple[Dataset, Dataset | None]:
        root = data_root(self.root)
        files = [root / name for name in [*self.background, RUNS]]
        key = (tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else (str(f),) for f in files),
               self.image_size)
        if key not in _DECODED:  # decoding 5,640 PNGs takes seconds: once per process and set of files
            _DECODED.clear()
            _DECODED[key] = self._decode_all(root)
        characters, runs, self.character_names = _DECODED[key]
        self.num_classes = len(self.character_names)
        return characters, runs

    def _decode_all(self, root: Path) -> tuple[Characters, OneShotRuns, list[str]]:
        members: dict[str, tuple[zipfile.ZipFile, str]] = {}  # "alphabet/character/file.png" -> where it is
        archives = [_open(root, name, "--data.root") for name in self.background]
        for archive in archives:
            for member in archive.namelist():
                parts = member.split("/")
                if member.endswith(".png") and len(parts) == 4:  # split/alphabet/character/file: same file in both
                    members.setdefault("/".join(parts[1:]), (archive, member))
        if not members:
            raise DataError(f"{', '.join(self.background)} under {root} hold no `<split>/<alphabet>/<character>/"
                            "*.png` images: these are not Omniglot's background zips.")
        keys = sorted(members)
        names = sorted({key.rsplit("/", 1)[0] for key in keys})
        index = {name: i for i, name in enumerate(names)}
        images = torch.stack([_decode(*members[key], self.image_size) for key in keys])
        targets = torch.as_tensor([index[key.rsplit("/", 1)[0]] for key in keys])
        return Characters(images, targets), self._runs(root), names

    def _runs(self, root: Path) -> Dataset:
        archive = _open(root, RUNS, "--data.root")
        images, labels, runs, support = [], [], [], []
        run_names = sorted({m.split("/")[0] for m in archive.namelist() if m.endswith("class_labels.txt")})
        for r, run in enumerate(run_names):
            pairs = [line.split() for line in archive.read(f"{run}/class_labels.txt").decode().splitlines()
                     if line.strip()]
            training = sorted({train for _, train in pairs})
            for j, train in enumerate(training):
                images.append(_decode(archive, train, self.image_size))
                labels.append(j), runs.append(r), support.append(True)
            for test, train in pairs:
                images.append(_decode(archive, test, self.image_size))
                labels.append(training.index(train)), runs.append(r), support.append(False)
        return OneShotRuns(torch.stack(images), torch.as_tensor(labels), torch.as_tensor(runs),
                           torch.as_tensor(support))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        characters, runs = self._load()
        generator = torch.Generator().manual_seed(self.split_seed)
        held_out = torch.randperm(self.num_classes, generator=generator)[: self.val_characters]
        is_val = torch.isin(characters.targets, held_out)
        if int((~is_val).sum()) == 0:
            raise DataError(f"val_characters={self.val_characters} leaves no character to train on: use fewer than "
                            f"{self.num_classes}.")
        self.train_set = Subset(characters, torch.nonzero(~is_val).flatten().tolist())
        if self.rotations:  # quarter turns as new classes: class c turned k times is class c + k * num_classes
            kept = torch.nonzero(~is_val).flatten()
            images, targets = characters.images[kept], characters.targets[kept]
            self.train_set = Characters(
                torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)]),
                torch.cat([targets + k * self.num_classes for k in range(4)]),
            )
            self.num_classes *= 4
        self.val_set = Subset(characters, torch.nonzero(is_val).flatten().tolist()) if self.val_characters else None
        self.test_set = runs

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set, train=False) if self.val_set is not None else []


__all__ = ["Characters", "OneShotRuns", "Omniglot"]
