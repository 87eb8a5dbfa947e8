"""Triplet network: an embedding in which an image is nearer to every image of its class than to any image of
another class, by a margin (Hoffer & Ailon 2015; Schroff, Kalenichenko & Philbin 2015, FaceNet).

For an anchor a, a positive p (same class) and a negative n (another class), with d the Euclidean distance of
L2-normalised embeddings:

    loss(a, p, n) = max(0, d(a, p) - d(a, n) + margin)

averaged over the triplets whose loss is above 0 (pytorch-metric-learning's `TripletMarginLoss` with its default
`AvgNonZeroReducer`). Which triplets of a batch are used is the *mining* (batches hold P classes x K images each,
`datamodules.ClassBatches`, so every anchor has K - 1 positives):

- `all`: every triplet that violates the margin;
- `semi_hard` (FaceNet): negatives farther than the positive but within the margin, d(a,p) < d(a,n) < d(a,p) + m;
- `batch_hard` (Hermans et al. 2017): for each anchor, its farthest positive and its nearest negative;
- `none`: every triplet of the batch, violating or not.

`--model.loss` and `--model.miner` take any loss and miner of pytorch-metric-learning by class path (ArcFace,
multi-similarity, NT-Xent, ...), in place of the two above. The training log shows `train/active_triplets`, the
share of the mined triplets whose loss is above 0, and the mean same-class and different-class distances: all
three falling to 0 together is a collapsed embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import distributed as pml_distributed
from torch import Tensor

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.embedding import EmbeddingTechnique

Mining = Literal["all", "semi_hard", "batch_hard", "none"]


def make_miner(mining: Mining, margin: float) -> miners.BaseMiner | None:
    """The pytorch-metric-learning miner of a mining strategy (None: every triplet)."""
    if mining == "batch_hard":
        return miners.BatchHardMiner()
    if mining == "none":
        return None
    return miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard" if mining == "semi_hard" else "all")


def triplet_losses(embeddings: Tensor, anchors: Tensor, positives: Tensor, negatives: Tensor, margin: float) -> Tensor:
    """max(0, d(a, p) - d(a, n) + margin) of each triplet (indices into `embeddings`), Euclidean d."""
    d_ap = (embeddings[anchors] - embeddings[positives]).norm(dim=1)
    d_an = (embeddings[anchors] - embeddings[negatives]).norm(dim=1)
    return (d_ap - d_an + margin).clamp(min=0)


class Triplet(EmbeddingTechnique):
    """Triplet-loss metric learning with online mining in the batch.

    Args:
        margin: the triplet margin m (on L2-normalised embeddings distances are in [0, 2]).
        mining: which triplets of a batch the loss uses: `all`, `semi_hard`, `batch_hard` or `none`.
        loss: a pytorch-metric-learning loss used instead of the triplet loss (`class_path` + `init_args`).
        miner: a pytorch-metric-learning miner used instead of `mining`.
        **kwargs: the options of every metric-learning technique (`embedding_dim`, `width`, `lr`, ...: see
            `--model.help Triplet`).
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: Mining = "semi_hard",
        loss: losses.BaseMetricLossFunction | None = None,
        miner: miners.BaseMiner | None = None,
        **kwargs: Any,
    ) -> None:
        if margin <= 0:
            raise ConfigError(f"margin must be above 0, got {margin}.")
        super().__init__(**kwargs)
        self.loss_fn = loss if loss is not None else losses.TripletMarginLoss(margin=margin)
        self.miner = miner if miner is not None else make_miner(mining, margin)

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:  # mine and score the triplets of the global batch (every process's items)
            if not isinstance(self.loss_fn, pml_distributed.DistributedLossWrapper):
                self.loss_fn = pml_distributed.DistributedLossWrapper(self.loss_fn)
            if self.miner is not None and not isinstance(self.miner, pml_distributed.DistributedMinerWrapper):
                self.miner = pml_distributed.DistributedMinerWrapper(self.miner)

    def metric_loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        loss = self.loss_fn(embeddings, labels, indices)
        stats = {}
        if indices is not None and len(indices) == 3 and self.trainer.world_size == 1:
            with torch.no_grad():
                mined = triplet_losses(embeddings, *indices, self.hparams.margin)
                stats["active_triplets"] = (mined > 0).float().mean() if len(mined) else mined.new_zeros(())
                stats["mined_triplets"] = mined.new_tensor(float(len(mined)))
        return loss, stats


__all__ = ["Mining", "Triplet", "make_miner", "triplet_losses"]
