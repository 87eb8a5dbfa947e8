"""Dataset plugins: LightningDataModules whose batches are `(images in [-1, 1], labels)`.

Every image file is read by `read_image` (datamodules/images.py); every transform is `torchvision.transforms.v2`
and every dataset a module-level class, so the loaders work with workers started by `fork`, `forkserver` or
`spawn` (`--data.multiprocessing_context`).

Third-party datamodules plug in by `class_path: their_pkg.TheirData`, or by short name (`--data TheirData`)
when their package declares an entry point in the `lightning_gen.datamodules` group.
"""

from datamodules.base import DATA_ENV, DataError, ImageDataModule, data_root, make_loader
from datamodules.char_text import CharText
from datamodules.digits import Digits
from datamodules.episodes import Episodes
from datamodules.files import ImageFiles, image_files, load_image
from datamodules.folder import ImageFolder
from datamodules.gym_env import GymEnv
from datamodules.images import read_image, read_size
from datamodules.metric import ClassBatches
from datamodules.omniglot import Omniglot
from datamodules.one_class import OneClass
from datamodules.paired import PairedImages
from datamodules.planetoid import Planetoid
from datamodules.semi_supervised import SemiSupervised
from datamodules.sinusoid import Sinusoid
from datamodules.streaming import StreamingImages, StreamingPairs
from datamodules.super_resolution import SuperResolution
from datamodules.text_classification import TextClassification
from datamodules.torchvision_sets import CIFAR10, MNIST, TORCHVISION_DATASETS, FashionMNIST, TorchvisionData

ENTRY_POINT_GROUP = "lightning_gen.datamodules"


def load_plugins() -> list[type]:
    """Import every datamodule registered under the `lightning_gen.datamodules` entry-point group, so that
    LightningCLI finds them by class name. A plugin that fails to import is reported, not fatal."""
    import warnings
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded.append(ep.load())
        except Exception as err:  # a broken plugin must not break the CLI
            warnings.warn(f"datamodule plugin {ep.name!r} ({ep.value}) failed to load: {err}", stacklevel=2)
    return loaded


__all__ = [
    "CIFAR10",
    "CharText",
    "ClassBatches",
    "DATA_ENV",
    "DataError",
    "Digits",
    "Episodes",
    "GymEnv",
    "ENTRY_POINT_GROUP",
    "FashionMNIST",
    "ImageDataModule",
    "ImageFiles",
    "ImageFolder",
    "MNIST",
    "Omniglot",
    "OneClass",
    "PairedImages",
    "Planetoid",
    "SemiSupervised",
    "Sinusoid",
    "StreamingImages",
    "StreamingPairs",
    "SuperResolution",
    "TORCHVISION_DATASETS",
    "TextClassification",
    "TorchvisionData",
    "data_root",
    "image_files",
    "load_image",
    "load_plugins",
    "make_loader",
    "read_image",
    "read_size",
]
