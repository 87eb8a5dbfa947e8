"""Reproducible sampling shared by the generative techniques: fixed noise per image index, and the index loader
that drives `predict` without any data."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader


def fixed_noise(indices: Tensor, dim: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """N(0, I) noise where row i depends only on `seed + indices[i]`, so image i of a grid or of `predict` is the
    same whatever the batch size or number of processes. (B,) -> (B, dim)."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(seed + int(i))) for i in indices.tolist()]
    return torch.stack(rows).to(device)


def index_loader(count: int, batch_size: int = 64) -> DataLoader:
    """Batches of the indices 0..count-1: the `predict_dataloader` of a technique that needs no data."""
    return DataLoader(torch.arange(count), batch_size=batch_size)


def class_of_index(indices: Tensor, num_classes: int, sample_classes: list[int] | None = None) -> Tensor:
    """The class a conditional generator makes image i in: `sample_classes[i % len]` (default: every class in
    turn). (B,) -> (B,) on the indices' device."""
    classes = sample_classes or list(range(num_classes))
    return torch.as_tensor(classes, device=indices.device)[indices.long() % len(classes)]


def class_file_names(indices: Tensor, classes: Tensor) -> list[str]:
    """`predict` file names of generated images that carry their class: `00042_class3.png`."""
    return [f"{int(i):05d}_class{int(c)}.png" for i, c in zip(indices.tolist(), classes.tolist())]
