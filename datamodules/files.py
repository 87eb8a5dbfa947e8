"""Single images named in a config: a content or style image, the inputs of DeepDream or of a trained style
network's `predict`. Paths may be a file or a folder of images; `$VARS` and `~` are expanded."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from datamodules.base import DataError, data_root, to_signed
from datamodules.folder import images_in
from datamodules.images import read_image


def image_files(path: str, what: str = "image") -> list[Path]:
    """The image at `path`, or the images directly inside the folder `path` (sorted). Raises `DataError` naming the
    fix when there is nothing there."""
    resolved = data_root(path)
    if resolved.is_dir():
        files = images_in(resolved)
        if not files:
            raise DataError(f"{what} folder {resolved} holds no images ({', '.join(IMG_EXTENSIONS)}).")
        return files
    if not resolved.is_file():
        raise DataError(f"{what} {resolved} does not exist. Give the path of an image file or of a folder of images "
                        "(relative paths start at the working directory).")
    return [resolved]


def image_file(path: str, what: str = "image") -> Path:
    """The one image file at `path` (`$VARS` and `~` expanded); a folder or a missing file raises `DataError`."""
    files = image_files(path, what)
    if data_root(path).is_dir():
        raise DataError(f"{what} {data_root(path)} is a folder; give one image file (e.g. {files[0]}).")
    return files[0]


def load_image(path: Path | str, max_side: int | None = None, multiple_of: int = 1) -> Tensor:
    """Read an image (`read_image`: upright, RGB) as a `(1, 3, H, W)` tensor in [-1, 1]. With `max_side`, resize
    (keeping the aspect) so its longer side is `max_side`; then trim to multiples of `multiple_of` pixels. Raises
    `DataError` for a file that is missing or not an image."""
    path = Path(path)
    image = read_image(path, "RGB")
    if max_side is not None:
        scale = max_side / max(image.size)
        size = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
        image = v2.functional.resize(image, list(size), antialias=True)
    x = to_signed(v2.functional.pil_to_tensor(image))  # (3, H, W) in [-1, 1]
    h, w = (x.shape[1] // multiple_of) * multiple_of, (x.shape[2] // multiple_of) * multiple_of
    if h < 1 or w < 1:
        raise DataError(f"image {path} is {x.shape[1]}x{x.shape[2]}, smaller than {multiple_of} pixels.")
    return x[:, :h, :w].unsqueeze(0).contiguous()


class ImageFiles(Dataset):
    """The images of `image_files(path)` one by one, as `{"image": (3, H, W) in [-1, 1], "name": file name}`
    (sizes may differ, so batch them one at a time). Every file is decoded once up front, so a bad one is
    reported before any work starts."""

    def __init__(self, path: str, max_side: int | None = None, what: str = "image") -> None:
        self.files = image_files(path, what)
        self.max_side = max_side
        for file in self.files:
            load_image(file, 8)  # decodes the whole file: catches truncated or non-image files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        file = self.files[index]
        return {"image": load_image(file, self.max_side)[0], "name": file.stem + ".png"}

