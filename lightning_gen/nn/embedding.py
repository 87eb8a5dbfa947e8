"""Embedding networks for metric learning: images -> vectors whose distances mean something.

`EmbeddingNet` is the four-block convolutional network used throughout few-shot learning (Vinyals et al. 2016,
Snell et al. 2017: 3x3 convolution, batch norm, ReLU, 2x2 max-pooling), with as many blocks as the image size
allows (down to 4x4, at most `max_blocks`), then a linear layer to `embedding_dim`. Embeddings are L2-normalised
by default, which is what pytorch-metric-learning's distances assume (`LpDistance(normalize_embeddings=True)`)
and keeps a margin meaningful. `norm` replaces the batch norm (`lightning_gen.nn.norm`): with batch norm in training
mode an image's embedding depends on the rest of its batch.

`VerificationHead` is Koch, Zemel & Salakhutdinov's (2015) Siamese head: the logit that two images show the same
class is a learned weighted L1 distance of their embeddings, `b - w . |e1 - e2|` (here with `w >= 0`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.nn.norm import Norm, make_norm


def conv_block(in_channels: int, out_channels: int, norm: Norm = "batch") -> nn.Sequential:
    """3x3 convolution (a bias only without normalisation), `norm`, ReLU, 2x2 max-pooling."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm == "none"),
        make_norm(norm, out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class EmbeddingNet(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, embedding_dim) embeddings.

    Args:
        image_shape: (channels, height, width) of the images.
        embedding_dim: size of the embedding (2 draws the embedding itself as a picture).
        width: channels of every convolutional block (64 in the few-shot papers).
        normalize: L2-normalise the embeddings (on the unit sphere).
        max_blocks: most convolution blocks; fewer when the images are small (each halves the side, down to 4).
        norm: normalisation in every block: `batch` (the few-shot papers'), `layer`, `instance`, `group` or `none`.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        embedding_dim: int = 64,
        width: int = 64,
        normalize: bool = True,
        max_blocks: int = 4,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        blocks, side, c_in = [], min(height, width_px), channels
        while len(blocks) < max_blocks and side >= 8:
            blocks.append(conv_block(c_in, width, norm))
            c_in, side = width, side // 2
        if not blocks:  # tiny images: one block without pooling below 4
            blocks.append(nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)))
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *image_shape)).numel()
        self.project = nn.Linear(flat, embedding_dim)
        self.normalize = normalize

    def forward(self, images: Tensor) -> Tensor:
        embedding = self.project(self.features(images).flatten(1))
        return F.normalize(embedding, dim=1) if self.normalize else embedding


class VerificationHead(nn.Module):
    """Koch et al.'s same-or-different logit of two embeddings, `b - w . |e1 - e2|` with `w >= 0` (its sigmoid is the
    probability of "same class"): a learned weighted L1 distance. Koch et al. leave the weights' sign free; kept
    non-negative (`w = softplus(v)`) the logit falls with every coordinate's difference, so the ranking it gives is a
    distance that carries over to classes never seen in training (free weights learned mixed signs on normalised
    embeddings and ranked unseen classes at chance)."""

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.raw_weight = nn.Parameter(torch.zeros(embedding_dim))  # softplus(0) = log 2: every coordinate alike
        self.bias = nn.Parameter(torch.ones(()))

    def weight(self) -> Tensor:
        return F.softplus(self.raw_weight)

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        """(B, D), (B, D) -> (B,) logits."""
        return self.bias - ((first - second).abs() * self.weight()).sum(1)

    def pairwise(self, queries: Tensor, references: Tensor, chunk: int = 64) -> Tensor:
        """(Q, D), (R, D) -> (Q, R) logits of every query with every reference, a few queries at a time."""
        weight = self.weight()
        rows = [self.bias - ((q[:, None, :] - references[None]).abs() * weight).sum(2) for q in queries.split(chunk)]
        return torch.cat(rows) if rows else queries.new_zeros(0, len(references))
