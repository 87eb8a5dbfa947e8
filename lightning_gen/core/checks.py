"""Checks a technique runs in `setup()`, before any training step."""

from __future__ import annotations

import math
from typing import Any

from lightning_gen.core.protocols import ImageData, LabeledData


class ConfigError(ValueError):
    """A setting that cannot work, found before training. The message names the problem and the fix."""


def check_learning_rates(**rates: float) -> None:
    """Raise `ConfigError` for a learning rate (`lr=...`, `lr_g=...`) that is negative or not a finite number (0 is
    allowed: it freezes that network, e.g. to train a discriminator against a fixed generator). Every technique with
    a learning-rate argument calls it first thing in its constructor, so a bad rate is refused before anything is
    built or read (and not later by the optimizer, after the model summary)."""
    for name, value in rates.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a learning rate of 0 or more, got {value}. Give `--model.{name}` a "
                              "positive number such as 1e-4 (0 freezes that network).")


def resolve_image_shape(
    model_shape: tuple[int, int, int] | list[int] | None, datamodule: Any, technique: str
) -> tuple[int, int, int]:
    """The image shape a technique builds its networks for: the datamodule's `image_shape`, which must agree
    with the model's `image_shape` when both are given. Raises `ConfigError` naming the fix."""
    data_shape = datamodule.image_shape if isinstance(datamodule, ImageData) else None
    if data_shape is not None:
        data_shape = tuple(int(v) for v in data_shape)
        if len(data_shape) != 3:
            raise ConfigError(f"{type(datamodule).__name__}.image_shape must be (channels, height, width), got "
                              f"{data_shape}.")
    if model_shape is not None:
        model_shape = tuple(int(v) for v in model_shape)
    if data_shape and model_shape and data_shape != model_shape:
        raise ConfigError(
            f"{technique} was built for images of shape {model_shape} (`--model.image_shape`, or the shape of the "
            f"checkpoint it loads) but {type(datamodule).__name__} gives {data_shape}. Resize the data to match "
            "(`--data.image_size`), or leave out `--model.image_shape` / start a new run without `--ckpt_path`."
        )
    shape = data_shape or model_shape
    if shape is None:
        where = (f"{type(datamodule).__name__} has no `image_shape` attribute" if datamodule is not None
                 else "no datamodule")
        raise ConfigError(
            f"{technique} does not know the image shape ({where}). Give `--model.image_shape [C, H, W]`, or load a "
            "trained checkpoint with `--ckpt_path`."
        )
    return shape  # type: ignore[return-value]


LABELED_DATA_HINT = "a labeled datamodule (MNIST, Digits, an ImageFolder with one sub-folder per class)"


def resolve_num_classes(model_classes: int | None, datamodule: Any, technique: str, alternative: str = "") -> int:
    """The number of classes a class-using technique builds for: the model's `num_classes`, else the datamodule's,
    which must agree when both are given (a datamodule that does not say is trusted to match; its labels are then
    checked on the first batch). Raises `ConfigError` naming the fix for data without labels (a single class), an
    unknown count, or a disagreement. `alternative` adds a hint (", or the unconditional DCGAN")."""
    data_classes = datamodule.num_classes if isinstance(datamodule, LabeledData) else None
    name = type(datamodule).__name__ if datamodule is not None else "no datamodule"
    if data_classes is not None and data_classes < 2:  # e.g. a flat image folder: one "class"
        raise ConfigError(
            f"{technique} needs labeled data with 2 or more classes, but {name} has no class labels "
            f"(num_classes={data_classes}). Use {LABELED_DATA_HINT}{alternative}."
        )
    num_classes = model_classes or data_classes
    if not num_classes or num_classes < 2:
        raise ConfigError(f"{technique} needs the number of classes: give `--model.num_classes`, or use "
                          f"{LABELED_DATA_HINT}.")
    if data_classes and data_classes != num_classes:
        raise ConfigError(f"{technique} has num_classes={num_classes} but {name} has {data_classes}. Drop "
                          "`--model.num_classes`, or use matching data.")
    return int(num_classes)


def check_bernoulli_range(images: Any, what: str = "Bernoulli likelihood") -> None:
    """Refuse images a Bernoulli likelihood cannot model: pixel values outside [0, 1], i.e. images outside [-1, 1]
    (one host sync: run it on the first batch of a loop)."""
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.001 or hi > 1.001:
        raise ConfigError(
            f"the {what} needs pixel values in [0, 1], i.e. images in [-1, 1] from the datamodule, but this batch "
            f"spans [{lo:.3g}, {hi:.3g}]. Scale the data to [-1, 1], or use `--model.likelihood gaussian`."
        )


def check_labels(labels: Any, num_classes: int, technique: str) -> None:
    """Raise `ConfigError` when a batch's labels fall outside 0..num_classes-1 (costs one host sync: call it on a
    loop's first batch)."""
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ConfigError(
            f"{technique}: labels range over [{low}, {high}] but the model has {num_classes} classes "
            f"(0..{num_classes - 1}). Give `--model.num_classes` to match the data, or fix the dataset's labels."
        )


def check_sample_classes(classes: list[int] | None, num_classes: int | None) -> None:
    """Raise `ConfigError` when a conditional model's `sample_classes` name a class it does not have."""
    if classes is not None and num_classes is not None and any(not 0 <= c < num_classes for c in classes):
        raise ConfigError(f"sample_classes {list(classes)} must lie in 0..{num_classes - 1} (the model has "
                          f"{num_classes} classes).")
