"""Every image datamodule's loaders with worker processes, under every start method (`fork`, `forkserver`, `spawn`),
and everything a worker receives (datasets, transforms) picklable with plain `pickle`.

`spawn` and `forkserver` workers receive the dataset pickled: a lambda or a local function anywhere in it fails
there (`Can't pickle local object ...`) and nowhere else, and `spawn` is the default on macOS and Windows. A spawned
worker costs seconds (it imports torch, torchvision and lightning), so the spawned loaders start all at once in one
fixture and each test then draws its batch; `fork` workers cost a fraction of a second each.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules import MNIST, Digits, ImageFolder, PairedImages, SemiSupervised, SuperResolution
from datamodules.files import ImageFiles
from tests.conftest import shared_data


def write_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """`n` random RGB PNGs of (width, height) `size`, the last one 16-bit greyscale and the one before RGBA, so the
    reader's conversions run in the workers too."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        if i == n - 1:
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)  # 16-bit greyscale
        elif i == n - 2:
            image = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 128, np.uint8)]), "RGBA")
        else:
            image = Image.fromarray(pixels)
        image.save(folder / f"{i}.png")
    return folder


# ---- one builder per image datamodule (test-made folders where no real data is needed) -------------------------------
def digits(tmp: Path, **loader) -> Digits:
    return Digits(batch_size=4, **loader)


def mnist(tmp: Path, **loader) -> MNIST:
    return MNIST(root=str(shared_data("MNIST", "raw").parent.parent), batch_size=4, **loader)


def mnist_resized(tmp: Path, **loader) -> MNIST:  # torchvision's MNIST dataset with a transforms.v2 pipeline
    return MNIST(root=str(shared_data("MNIST", "raw").parent.parent), image_size=16, batch_size=4, **loader)


def image_folder(tmp: Path, **loader) -> ImageFolder:
    for c in ("cat", "dog"):
        write_images(tmp / "images" / c, 4, (12, 10), seed=len(c))
    return ImageFolder(root=str(tmp / "images"), channels=1, image_size=8, batch_size=2, val_fraction=0.25, **loader)


def cifar10_folder(tmp: Path, **loader) -> ImageFolder:  # configs/dcgan/cifar10_birds.yaml's data
    root = shared_data("cifar10")
    return ImageFolder(root=str(root / "train"), classes=["bird"], test_root=str(root / "test"), verify=False,
                       batch_size=4, **loader)


def facades(tmp: Path, **loader) -> PairedImages:
    return PairedImages(root=str(shared_data("facades")), direction="BtoA", load_size=36, crop_size=32, verify=False,
                        batch_size=2, **loader)


def paired_folders(tmp: Path, **loader) -> PairedImages:
    for side in ("A", "B"):
        write_images(tmp / "pairs" / "train" / side, 4, (20, 20), seed=1)
    return PairedImages(root=str(tmp / "pairs"), layout="folders", load_size=18, crop_size=16, batch_size=2,
                        predict_root=str(tmp / "pairs" / "train" / "A"), **loader)


def super_resolution(tmp: Path, **loader) -> SuperResolution:
    hr = write_images(tmp / "hr", 3, (40, 36))
    return SuperResolution(root=str(hr), scale=4, crop_size=16, batch_size=2, crops_per_epoch=4,
                           val_roots=[str(hr)], test_roots=[str(hr)], predict_root=str(hr), **loader)


def semi_supervised(tmp: Path, **loader) -> SemiSupervised:
    return SemiSupervised(Digits(batch_size=8, **loader), num_labeled=20, labeled_batch_size=4)


CASES = {
    "Digits": digits,
    "MNIST": mnist,
    "MNIST-resized": mnist_resized,
    "ImageFolder": image_folder,
    "CIFAR10-folder": cifar10_folder,
    "PairedImages-aligned": facades,
    "PairedImages-folders": paired_folders,
    "SuperResolution": super_resolution,
    "SemiSupervised": semi_supervised,
}
# spawned: every datamodule (the variants MNIST-resized and PairedImages-folders add no class of their own to what
# the workers receive; the fork and pickle tests cover them); forkserver: one (its workers cost what spawned ones do)
STARTED = [("spawn", name) for name in CASES if name not in ("MNIST-resized", "PairedImages-folders")]
STARTED += [("forkserver", "ImageFolder")]


def train_loaders(dm) -> dict[str, DataLoader]:
    loaders = dm.train_dataloader()
    return loaders if isinstance(loaders, dict) else {"train": loaders}


def check_batch(name: str, dm, batch: dict) -> None:
    """The batch has the datamodule's shapes and values in [-1, 1]."""
    if name == "SuperResolution":
        hr, lr = batch["train"]["hr"], batch["train"]["lr"]
        assert hr.shape == (2, *dm.image_shape) and lr.shape == (2, 3, 4, 4)
        images = hr
    elif name == "SemiSupervised":
        (labeled, labels), unlabeled = batch["labeled"], batch["unlabeled"]
        assert labeled.shape == (4, *dm.image_shape) and labels.shape == (4,)
        assert unlabeled.shape == (8, *dm.image_shape)
        images = unlabeled
    else:
        images, other = batch["train"]
        assert images.shape == (dm.batch_size, *dm.image_shape)
        assert other.shape == (images.shape if name.startswith("Paired") else (dm.batch_size,))
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1 and images.std() > 0


def outcome(run):
    """A fixture's entry: skip or raise what building it raised, else return it."""
    if isinstance(run, pytest.skip.Exception):
        pytest.skip(run.msg)
    if isinstance(run, BaseException):
        raise run
    return run


def shut_down(iterators: list) -> None:
    """Stop the workers of all `iterators` at once (each waits for its workers to exit)."""
    with ThreadPoolExecutor(max(1, len(iterators))) as pool:
        list(pool.map(lambda iterator: iterator._shutdown_workers(), iterators))


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The train loaders of `STARTED`, one worker each (`num_workers` and `multiprocessing_context` given to the
    datamodule's constructor), all started before any batch is drawn, so that the workers' start-up (imports)
    overlaps. Maps (method, name) -> (datamodule, {loader name: iterator}), or what building it raised (a skip for
    missing real data)."""
    runs: dict = {}
    for method, name in STARTED:
        try:
            dm = CASES[name](tmp_path_factory.mktemp(name), num_workers=1, multiprocessing_context=method)
            dm.setup("fit")
            runs[method, name] = (dm, {key: iter(loader) for key, loader in train_loaders(dm).items()})
        except (Exception, pytest.skip.Exception) as err:
            runs[method, name] = err
    yield runs
    shut_down([it for run in runs.values() if isinstance(run, tuple) for it in run[1].values()])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every case built once without workers and set up for `fit`: name -> datamodule (or what building raised)."""
    runs: dict = {}
    for name, build in CASES.items():
        try:
            runs[name] = build(tmp_path_factory.mktemp(name))
            runs[name].setup("fit")
        except (Exception, pytest.skip.Exception) as err:
            runs[name] = err
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("method, name", STARTED)
def test_train_loader_with_workers_started_by(started, method, name):
    dm, iterators = outcome(started[method, name])
    check_batch(name, dm, {key: next(iterator) for key, iterator in iterators.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_train_loader_with_forked_workers(built, name):
    dm = outcome(built[name])
    dm.num_workers, dm.multiprocessing_context = 2, "fork"
    try:
        iterators = {key: iter(loader) for key, loader in train_loaders(dm).items()}
        check_batch(name, dm, {key: next(iterator) for key, iterator in iterators.items()})
        shut_down(list(iterators.values()))
    finally:
        dm.num_workers, dm.multiprocessing_context = 0, None


# ---- picklable without a worker: catches a lambda or local function at once ----------------------------------------
def image_of(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def datasets_of(dm) -> dict[str, object]:
    """Every dataset the datamodule hands to a DataLoader, and their transforms."""
    found = {name: getattr(dm, name, None) for name in ("train_set", "val_set", "test_set", "reference_set")}
    if isinstance(dm, SemiSupervised):
        found.update(labeled_set=dm.labeled_set, unlabeled_set=dm.unlabeled_set)
    if isinstance(dm, SuperResolution):
        dm.setup("test")
        found.update({f"eval_{stage}_{i}": d for stage, sets in dm.eval_sets.items() for i, d in enumerate(sets)})
        found["predict"] = dm.predict_dataloader().dataset
    if isinstance(dm, PairedImages) and dm.predict_root:
        dm.setup("predict")
        found["predict_set"] = dm.predict_set
    for key, dataset in list(found.items()):
        inner = getattr(dataset, "dataset", dataset)  # a Subset's dataset
        for attr in ("transform", "samples"):
            if getattr(inner, attr, None) is not None:
                found[f"{key}.{attr}"] = getattr(inner, attr)
    return {key: value for key, value in found.items() if value is not None}


@pytest.mark.parametrize("name", list(CASES))
def test_datasets_and_transforms_pickle(built, name):
    found = datasets_of(dm := outcome(built[name]))
    assert "train_set" in found and "val_set" in found or "eval_validate_0" in found
    for key, value in found.items():
        copy = pickle.loads(pickle.dumps(value))  # plain pickle, as spawn and forkserver use
        if key in ("val_set", "test_set") and not isinstance(dm, SuperResolution):  # deterministic items
            original, again = image_of(value[0]), image_of(copy[0])
            assert torch.equal(original, again), key


def test_image_files_pickle(tmp_path):
    files = ImageFiles(str(write_images(tmp_path / "content", 2, (9, 7))), max_side=8)
    copy = pickle.loads(pickle.dumps(files))
    assert torch.equal(copy[0]["image"], files[0]["image"]) and copy[0]["image"].shape == (3, 6, 8)
