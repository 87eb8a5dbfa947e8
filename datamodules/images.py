"""The one image reader of the datamodules: every file they decode goes through `read_image`, so every image is
upright (EXIF orientation applied), in the mode asked for, and a broken file is reported the same way everywhere.

- 16-bit greyscale (`I;16*`, and PIL's 32-bit `I` mode, which 16-bit PNGs and TIFFs open as) is scaled to 8 bits
  (value / 257, rounded), not clipped to 255 as `Image.convert("L")` does (a 16-bit photo would come out white).
- Transparency (`RGBA`, `LA`, `PA`, a palette or a colour with a transparent entry) is composited over a white
  background, instead of dropped (which shows whatever colour the transparent pixels happen to hold, often black).
- `read_size` gives the size `read_image` will return, from the file's header alone: checking a folder's sizes
  costs no decoding.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from datamodules.base import DataError

Mode = Literal["RGB", "L"]
"""What `read_image` returns: `RGB` (3 channels) or `L` (1 channel, greyscale), 8 bits each."""

BACKGROUND = 255
"""Grey level (0-255) of the background that transparent pixels are composited over: white."""

_ORIENTATION = 0x0112  # the EXIF tag
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # 16-bit (or 32-bit int holding 16-bit) greyscale
_GREY_MODES = {"1", "L", "LA", "La", "F", *_HIGH_DEPTH}  # one grey channel (a palette image counts as colour)


def mode_for(channels: int) -> Mode:
    """The `read_image` mode of `channels` channels: 1 -> `L`, 3 -> `RGB`."""
    if channels not in (1, 3):
        raise DataError(f"images have 1 (greyscale) or 3 (RGB) channels, not {channels}.")
    return "L" if channels == 1 else "RGB"


def _unreadable(path: Path, err: Exception) -> DataError:
    if isinstance(err, FileNotFoundError):
        return DataError(f"image {path} does not exist. Check the path (relative paths start at the working "
                         "directory).")
    return DataError(f"cannot read image {path} as an image ({type(err).__name__}: {err}): the file is damaged, "
                     "truncated or not an image. Remove or replace it.")


def _to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit (`I;16*`, `I`) or float (`F`, taken as 0-255) greyscale image as 8-bit `L`, scaled, not clipped."""
    pixels = np.asarray(image)
    if image.mode == "F":
        eight = np.clip(np.rint(pixels), 0, 255)
    else:  # 0..65535 -> 0..255: v / 257 rounded (65535 -> 255, 257 * v -> v)
        eight = np.rint(np.clip(pixels.astype(np.float64), 0, 65535) / 257.0)
    return Image.fromarray(eight.astype(np.uint8), mode="L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def convert(image: Image.Image, mode: Mode) -> Image.Image:
    """`image` in `mode`: high bit depths scaled to 8 bits, transparency composited over white, palettes expanded."""
    if image.mode in _HIGH_DEPTH or image.mode == "F":
        image = _to_8_bits(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")  # palettes and transparent colour entries too
        flat = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
        flat.alpha_composite(rgba)
        image = flat.convert("RGB")
    if image.mode == mode:
        return image
    return image.convert(mode)  # RGB <-> L (ITU-R 601-2 luma), P, 1, CMYK, YCbCr, ...


def read_image(path: str | Path, mode: Mode = "RGB", data: bytes | None = None) -> Image.Image:
    """Decode the image file at `path` as an upright 8-bit PIL image in `mode` (`RGB` or `L`).

    The EXIF orientation is applied (a phone photo stored sideways comes out upright), 16-bit greyscale is scaled
    to 8 bits, and transparency is composited over white (see the module's docstring). The whole file is decoded
    here, so a truncated file fails now, not later. With `data`, those bytes are decoded (a file read from a zip
    archive) and `path` only names them in messages (e.g. `archive.zip:folder/file.png`).

    Raises:
        DataError: naming the file and the fix, when it is missing, damaged, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            image = ImageOps.exif_transpose(im)  # a copy, upright
            return convert(image, mode)
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for bad files (OSError, SyntaxError, ValueError, ...)
        raise _unreadable(path, err) from None


def is_greyscale(path: str | Path) -> bool:
    """Whether the image file at `path` holds a single grey channel (8- or 16-bit, with or without transparency),
    read from its header only. Evaluation scores such images on their grey values.

    Raises:
        DataError: naming the file and the fix, when it is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.mode in _GREY_MODES
    except Exception as err:
        raise _unreadable(path, err) from None


def read_size(path: str | Path) -> tuple[int, int]:
    """`(width, height)` of the image `read_image(path)` returns (EXIF quarter turns applied), read from the file's
    header only: nothing is decoded, so a folder of thousands of images is checked in a moment.

    Raises:
        DataError: naming the file and the fix, when it is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:  # lazy: reads the header, decodes no pixels
            width, height = im.size
            if im.format != "PNG" or "exif" in im.info:  # a PNG's getexif() would decode the file to find it
                if im.getexif().get(_ORIENTATION) in _QUARTER_TURNS:
                    width, height = height, width
    except Exception as err:
        raise _unreadable(path, err) from None
    return width, height


__all__ = ["BACKGROUND", "Mode", "convert", "is_greyscale", "mode_for", "read_image", "read_size"]
