"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside the package, no download."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset, random_split

from datamodules.base import DataError, ImageDataModule


class Digits(ImageDataModule):
    """The UCI optical-recognition digits from `sklearn.datasets.load_digits` (1x8x8, 10 classes).

    Pixel values 0..16 are scaled to [-1, 1]. A `test_fraction` of the images is held out (by `split_seed`)
    as the test set; validation comes from the rest. `image_size` resizes with antialiased bilinear
    interpolation (the native size is 8).

    Args:
        test_fraction: share of the 1,797 images kept for `test`, in (0, 1).
    """

    def __init__(self, test_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}.")
        self.test_fraction = test_fraction
        self.num_classes = 10
        side = self.image_size or 8
        self.image_shape = (1, side, side)

    def _load(self) -> tuple[Dataset, Dataset | None]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        if self.image_size and self.image_size != 8:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp(0, 1) * 2 - 1
        labels = torch.as_tensor(bunch.target, dtype=torch.long)
        full = TensorDataset(images, labels)
        n_test = int(round(len(full) * self.test_fraction))
        split = torch.Generator().manual_seed(self.split_seed + 1)
        trainval, test = random_split(full, [len(full) - n_test, n_test], generator=split)
        return trainval, test
