"""Checks a technique runs in `setup()`, before any training step."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work, found before training. The message names the problem and the fix."""



def resolve_image_shape(
    model_shape: tuple[int, int, int] | list[int] | None, datamodule: Any, technique: str
) -> tuple[int, int, int]:
    """The image shape a technique builds its networks for: the datamodule's `image_shape`, which must agree
    with the model's `image_shape` when both are given. Raises `ConfigError` naming the fix."""
    data_shape = getattr(datamodule, "image_shape", None) if datamodule is not None else None
    if data_shape is not None:
        data_shape = tuple(int(v) for v in data_shape)
        if len(data_shape) != 3:
            raise ConfigError(f"{type(datamodule).__name__}.image_shape must be (channels, height, width), got {data_shape}.")
    if model_shape is not None:
        model_shape = tuple(int(v) for v in model_shape)
    if data_shape and model_shape and data_shape != model_shape:
        raise ConfigError(
            f"{technique} was built for images of shape {model_shape} but {type(datamodule).__name__} gives "
            f"{data_shape}. Drop `--model.image_shape`, or resize the data (`--data.image_size`) to match."
        )
    shape = data_shape or model_shape
    if shape is None:
        where = f"{type(datamodule).__name__} has no `image_shape` attribute" if datamodule is not None else "no datamodule"
        raise ConfigError(
            f"{technique} does not know the image shape ({where}). Give `--model.image_shape [C, H, W]`, or load a "
            "trained checkpoint with `--ckpt_path`."
        )
    return shape  # type: ignore[return-value]
