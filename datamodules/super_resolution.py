"""Single-image super-resolution data: high-resolution (HR) images and their low-resolution (LR) versions made by
bicubic downsampling, as the SR benchmarks make them.

Batches are dicts of `(B, 3, h, w)` / `(B, 3, H, W)` tensors in [-1, 1], H = scale * h:
`lr` (the network's input), `hr` (the target) and `bicubic` (the LR image upsampled back by bicubic interpolation:
SRCNN's input and every table's baseline row). Evaluation batches (one whole image each) also carry `name` and
`grey` (whether the file is single-channel: such an image is read as three equal channels and scored on its grey
values, as the published evaluations score it).

The LR image comes from PIL's bicubic resize (antialiased when shrinking: its kernel widens by the scale, as
MATLAB's `imresize`, which made the published benchmarks, does); the HR image is first cropped to a multiple of the
scale ("modcrop"). Files are read by `datamodules.images.read_image` (EXIF orientation applied, 16-bit greyscale
scaled to 8 bits, transparency over white). The training crop, flips and rotations (`torchvision.transforms.v2`) are
drawn on the HR image, and the LR and bicubic images are made from that crop, so the three cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.base import DataError, StartMethod, check_start_method, data_root, make_loader, to_signed
from datamodules.folder import scan_image_folder
from datamodules.images import convert, is_greyscale, read_image, read_size


def modcrop(image: Image.Image, scale: int) -> Image.Image:
    """Crop the bottom and right so both sides are multiples of `scale`."""
    w, h = image.width - image.width % scale, image.height - image.height % scale
    return image.crop((0, 0, w, h))


def degrade(hr: Image.Image, scale: int) -> tuple[Image.Image, Image.Image]:
    """(LR, bicubic) of an HR image whose sides are multiples of `scale`: bicubic downsampling by `scale`, and the
    LR image upsampled back to the HR size by bicubic interpolation."""
    lr = hr.resize((hr.width // scale, hr.height // scale), Image.BICUBIC)
    return lr, lr.resize(hr.size, Image.BICUBIC)


def take_half(image: Image.Image, half: Literal["left", "right"] | None) -> Image.Image:
    """The left or right half of an image (pix2pix's aligned files hold A | B), or the whole image."""
    if half is None:
        return image
    mid = image.width // 2
    return image.crop((0, 0, mid, image.height) if half == "left" else (mid, 0, image.width, image.height))


def signed(image: Image.Image) -> Tensor:
    """An 8-bit PIL image as a `(C, H, W)` float tensor in [-1, 1]."""
    return to_signed(v2.functional.pil_to_tensor(image))


def hr_crops(crop_size: int, augment: bool) -> v2.Compose:
    """PIL image -> a random `crop_size` square of it; with `augment`, then a random horizontal flip, vertical flip
    and 90-degree rotation (each with probability 1/2): the 8 symmetries of the square."""
    steps: list[v2.Transform] = [v2.RandomCrop(crop_size)]
    if augment:  # a 90-degree turn of a square PIL image is an exact transpose (no resampling)
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomApply([v2.RandomRotation((90, 90))])]
    return v2.Compose(steps)


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera", "coins", "brick", "grass",
                  "gravel")


def skimage_photos() -> dict[str, Image.Image]:
    """The photographs bundled with scikit-image (`root: skimage`; the grey ones as RGB): training data that needs no
    download."""
    try:
        from skimage import data  # an optional dependency: the `sr` extra
    except ImportError:
        raise DataError("root: skimage needs scikit-image: pip install 'lightning-gen[sr]'.") from None
    return {f"skimage.data.{name}": convert(Image.fromarray(getattr(data, name)()), "RGB") for name in SKIMAGE_PHOTOS}


class RandomCrops(Dataset):
    """`length` random HR crops of `crop_size` from `images` (name -> RGB image; image i % len(images) for item i),
    with random flips and 90-degree rotations when `augment`; each crop degraded by `degrade`."""

    def __init__(self, images: dict[str, Image.Image], scale: int, crop_size: int, augment: bool, length: int) -> None:
        self.images = list(images.values())
        small = [(name, im.size) for name, im in images.items() if min(im.size) < crop_size]
        if small:
            raise DataError(f"{len(small)} training images are smaller than crop_size={crop_size} (e.g. {small[0][0]} "
                            f"is {small[0][1][0]}x{small[0][1][1]}). Lower --data.crop_size or remove them.")
        self.scale, self.crop_size, self.augment, self.length = scale, crop_size, augment, length
        self.transform = hr_crops(crop_size, augment)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        hr = self.transform(self.images[index % len(self.images)])  # (crop_size, crop_size) PIL image
        lr, bicubic = degrade(hr, self.scale)
        return {"lr": signed(lr), "hr": signed(hr), "bicubic": signed(bicubic)}


class WholeImages(Dataset):
    """Every image of a folder, whole (modcropped to the scale; only its `half` if given), for evaluation; batch
    size 1."""

    def __init__(self, files: list[Path], scale: int, half: Literal["left", "right"] | None = None) -> None:
        self.files, self.scale, self.half = files, scale, half
        self.grey = [is_greyscale(path) for path in files]
        for path in files:  # from the headers: nothing decoded yet
            width, height = read_size(path)
            width = width // 2 if half else width
            if min(width, height) < scale:
                raise DataError(f"image {path} ({width}x{height}{', the half used' if half else ''}) is smaller than "
                                f"the scale {scale}.")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        hr = modcrop(take_half(read_image(self.files[index], "RGB"), self.half), self.scale)
        lr, bicubic = degrade(hr, self.scale)
        return {"lr": signed(lr), "hr": signed(hr), "bicubic": signed(bicubic), "name": self.files[index].stem + ".png",
                "grey": self.grey[index]}


class LowResImages(Dataset):
    """Images to upscale (`predict`): each is the LR input as it is; `bicubic` is its bicubic upsampling."""

    def __init__(self, files: list[Path], scale: int) -> None:
        self.files, self.scale = files, scale

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lr = read_image(self.files[index], "RGB")
        bicubic = lr.resize((lr.width * self.scale, lr.height * self.scale), Image.BICUBIC)
        return {"lr": signed(lr), "bicubic": signed(bicubic), "name": self.files[index].stem + ".png"}


class SuperResolution(L.LightningDataModule):
    """Super-resolution data from any folder of high-resolution images.

    Args:
        root: folder of HR training images (directly inside, or in sub-folders; `$VARS` and `~` expanded), e.g.
            `$LIGHTNING_GEN_DATA/facades/train`, DIV2K's `DIV2K_train_HR` or a folder of ImageNet photos; or `skimage`:
            the 10 photographs bundled with scikit-image (`pip install 'lightning-gen[sr]'`).
        scale: upscaling factor: 2, 3 or 4.
        crop_size: side of the random HR training crops (a multiple of `scale`; the LR crops are crop_size/scale).
        augment: random horizontal/vertical flips and 90-degree rotations of the training crops.
        crops_per_epoch: training crops per epoch (each a fresh random crop; default: one per training image).
        half: train and validate on the `left` or `right` half of each image only (pix2pix's aligned files hold
            A | B: the photos of CMP Facades are the `left` halves); test images are always whole.
        val_roots: folders of HR images for `validate` and for fit's validation, each evaluated whole (with
            `half`), e.g. `[$LIGHTNING_GEN_DATA/facades/val]`: choose settings on these, never on the test sets.
            Without them fit runs no validation, and `validate` asks for them.
        test_roots: folders of HR images for `test`, one dataloader (and one set of metrics) each, e.g.
            `[$LIGHTNING_GEN_DATA/sr/Set5, $LIGHTNING_GEN_DATA/sr/Set14]`: score them once, at the end.
        predict_root: folder (or file) of low-resolution images that `predict` upscales.
        batch_size: training crops per batch (evaluation runs one whole image at a time).
        num_workers: DataLoader worker processes.
        multiprocessing_context: how the workers start: `spawn`, `forkserver` or `fork` (default: the platform's).
    """

    scale: int
    """The upscaling factor: HR sides are `scale` times the LR sides (models check theirs against it)."""
    image_shape: tuple[int, int, int]
    """`(3, crop_size, crop_size)`: the HR training crops (evaluation images keep their own sizes)."""
    train_set: Dataset | None
    """Training items `{"lr", "hr", "bicubic"}`, after `setup("fit")`."""
    eval_sets: dict[str, list[Dataset]]
    """Evaluation datasets per stage (`validate`, `test`), one per folder, in dataloader order."""

    def __init__(
        self,
        root: str,
        scale: Literal[2, 3, 4] = 4,
        crop_size: int = 96,
        augment: bool = True,
        crops_per_epoch: int | None = None,
        half: Literal["left", "right"] | None = None,
        val_roots: list[str] | None = None,
        test_roots: list[str] | None = None,
        predict_root: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        multiprocessing_context: StartMethod | None = None,
    ) -> None:
        super().__init__()
        check_start_method(multiprocessing_context)
        if scale not in (2, 3, 4):
            raise DataError(f"scale must be 2, 3 or 4; got {scale}.")
        if crop_size < scale or crop_size % scale:
            raise DataError(f"crop_size must be a multiple of the scale ({scale}); got {crop_size}. Try "
                            f"{max(scale, crop_size - crop_size % scale)}.")
        if batch_size < 1:  # an epoch shorter than a batch is refused in setup, where its length is known
            raise DataError(f"need batch_size >= 1; got {batch_size}.")
        self.root, self.scale, self.crop_size, self.augment = root, scale, crop_size, augment
        self.crops_per_epoch, self.half = crops_per_epoch, half
        self.val_roots, self.test_roots, self.predict_root = val_roots, test_roots, predict_root
        self.batch_size, self.num_workers = batch_size, num_workers
        self.multiprocessing_context = multiprocessing_context
        self.image_shape = (3, crop_size, crop_size)
        self.train_set = None
        self.eval_sets = {}
        self.eval_names: dict[str, list[str]] = {}

    @staticmethod
    def _files(root: str, option: str = "--data.root") -> list[Path]:
        """The images under `root` (directly inside, or in sub-folders); `option` gave it, for the messages."""
        return [p for p, _ in scan_image_folder(data_root(root), option=option, labels=False)[0]]

    def _eval(self, stage: str, roots: list[str] | None, half: Literal["left", "right"] | None = None) -> None:
        if stage in self.eval_sets:
            return
        if not roots:
            option, example = (("val_roots", "[$LIGHTNING_GEN_DATA/facades/val] (images kept out of training and "
                                "testing)") if stage == "validate" else
                               ("test_roots", "[$LIGHTNING_GEN_DATA/sr/Set5, $LIGHTNING_GEN_DATA/sr/Set14]"))
            raise DataError(f"SuperResolution needs folders of HR images to {stage} on: set --data.{option} (e.g. "
                            f"{example}).")
        option = "--data.val_roots" if stage == "validate" else "--data.test_roots"
        self.eval_sets[stage] = [WholeImages(self._files(r, option), self.scale, half) for r in roots]
        self.eval_names[stage] = [data_root(r).name for r in roots]

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            if self.root == "skimage":
                images = skimage_photos()
            else:  # decoded once and kept
                images = {str(p): read_image(p, "RGB") for p in self._files(self.root)}
            images = {name: take_half(im, self.half) for name, im in images.items()}
            self.train_set = RandomCrops(images, self.scale, self.crop_size, self.augment,
                                         self.crops_per_epoch or len(images))
            if len(self.train_set) < self.batch_size:  # drop_last would leave an epoch of no batches
                raise DataError(f"an epoch holds {len(self.train_set)} crops (crops_per_epoch; by default one per "
                                f"training image), fewer than batch_size={self.batch_size}: set a larger "
                                "--data.crops_per_epoch (e.g. 1600).")
        if stage == "validate" or (stage in ("fit", None) and self.val_roots):  # fit validates only on val_roots
            self._eval("validate", self.val_roots, self.half)
        if stage in ("test", None):
            self._eval("test", self.test_roots)

    def set_names(self, stage: str) -> list[str]:
        """Names of the evaluation sets (the folders' names, e.g. Set5, Set14), in dataloader order."""
        return self.eval_names.get(stage, [])

    def _loader(self, dataset: Dataset, batch_size: int, train: bool = False) -> DataLoader:
        return make_loader(dataset, batch_size, shuffle=train, drop_last=train, num_workers=self.num_workers,
                           multiprocessing_context=self.multiprocessing_context)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        return [self._loader(d, 1) for d in self.eval_sets[stage]]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("validate") if "validate" in self.eval_sets else []  # [] : fit skips validation

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        if not self.predict_root:
            raise DataError("predict upscales the images of --data.predict_root (a folder of low-resolution images).")
        path = data_root(self.predict_root)
        files = [path] if path.is_file() else self._files(self.predict_root, "--data.predict_root")
        return self._loader(LowResImages(files, self.scale), 1)
