"""Siamese network: one embedding network applied to both images of a pair, trained so that the distance of a pair
says whether its two images show the same class (Bromley et al. 1993; Hadsell, Chopra & LeCun 2006; Koch, Zemel &
Salakhutdinov 2015).

Two heads:

- `distance` (Hadsell et al.'s contrastive loss, in pytorch-metric-learning's form): with d the Euclidean distance
  of the L2-normalised embeddings of a pair,

      same class:       max(0, d - pos_margin)       (pos_margin = 0: pull together)
      different class:  max(0, neg_margin - d)       (push apart up to the margin)

  each part averaged over its pairs with a loss above 0, the two parts added (`ContrastiveLoss` with its default
  `AvgNonZeroReducer`). Every pair of the batch is used (P classes x K images: K(K-1)/2 same-class pairs per
  class); a miner can choose among them.
- `verification` (Koch et al.'s one-shot network): the logit that a pair is of the same class is a learned
  weighted L1 distance of the two embeddings, `b - w . |e1 - e2|` with `w >= 0` (Koch et al. leave the sign of `w`
  free: see `nn.embedding.VerificationHead`), trained with binary cross-entropy on all same-class pairs of the
  batch and as many different-class pairs drawn at random. At evaluation the nearest item is the one with the
  largest logit.

`--model.loss` takes any pytorch-metric-learning loss by class path in place of the contrastive loss.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import distributed as pml_distributed
from torch import Tensor

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.embedding import EmbeddingTechnique
from lightning_gen.nn.embedding import VerificationHead

Head = Literal["distance", "verification"]


def contrastive_pairs(labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs `(i, j, same)` of a batch for the verification head: every same-class pair i < j, and as many
    different-class pairs drawn without replacement (all of them when there are fewer)."""
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    same = labels[i] == labels[j]
    positive, negative = torch.nonzero(same).flatten(), torch.nonzero(~same).flatten()
    order = torch.randperm(len(negative), generator=generator, device="cpu").to(labels.device)
    chosen = torch.cat([positive, negative[order[: max(len(positive), 1)]]])
    return i[chosen], j[chosen], same[chosen]


class Siamese(EmbeddingTechnique):
    """Siamese metric learning: contrastive loss on pairs, or Koch et al.'s verification head.

    Args:
        head: `distance` (contrastive loss on the embeddings' distance) or `verification` (Koch et al.'s learned
            weighted L1 distance and binary cross-entropy).
        margin: the contrastive loss's negative margin (on L2-normalised embeddings distances are in [0, 2]).
        loss: a pytorch-metric-learning loss used instead of the contrastive loss (`head: distance` only).
        miner: a pytorch-metric-learning pair miner choosing the pairs of the loss (`head: distance` only).
        **kwargs: the options of every metric-learning technique (`embedding_dim`, `width`, `lr`, ...: see
            `--model.help Siamese`).
    """

    def __init__(
        self,
        head: Head = "distance",
        margin: float = 1.0,
        loss: losses.BaseMetricLossFunction | None = None,
        miner: miners.BaseMiner | None = None,
        **kwargs: Any,
    ) -> None:
        if margin <= 0:
            raise ConfigError(f"margin must be above 0, got {margin}.")
        if head == "verification" and (loss is not None or miner is not None):
            raise ConfigError("`loss` and `miner` apply to head: distance; the verification head trains with binary "
                              "cross-entropy on its own pairs. Leave them out, or use head: distance.")
        super().__init__(**kwargs)
        self.loss_fn = loss if loss is not None else losses.ContrastiveLoss(pos_margin=0.0, neg_margin=margin)
        self.miner = miner

    def build(self) -> None:
        super().build()
        if self.hparams.head == "verification":
            self.verifier = VerificationHead(self.hparams.embedding_dim)

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1 and self.hparams.head == "distance":  # pairs of the global batch
            if not isinstance(self.loss_fn, pml_distributed.DistributedLossWrapper):
                self.loss_fn = pml_distributed.DistributedLossWrapper(self.loss_fn)
            if self.miner is not None and not isinstance(self.miner, pml_distributed.DistributedMinerWrapper):
                self.miner = pml_distributed.DistributedMinerWrapper(self.miner)

    def metric_loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.hparams.head == "verification":
            i, j, same = contrastive_pairs(labels)
            logits = self.verifier(embeddings[i], embeddings[j]).float()
            loss = F.binary_cross_entropy_with_logits(logits, same.float())
            return loss, {"pair_accuracy": ((logits > 0) == same).float().mean()}
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss_fn(embeddings, labels, indices), {}

    def distance(self, queries: Tensor, references: Tensor) -> Tensor:
        if self.hparams.head == "verification":  # the likelier "same class", the nearer
            return -self.verifier.pairwise(queries.float(), references.float())
        return super().distance(queries, references)


__all__ = ["Head", "Siamese", "contrastive_pairs"]
