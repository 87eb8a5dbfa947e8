"""Evaluation steps shared by techniques: the class accuracy of anything that outputs class logits (the supervised
`Classifier`, the semi-supervised GAN's discriminator), each evaluation image counted once under DDP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from lightning_gen.core.checks import check_labels

if TYPE_CHECKING:
    from lightning_gen.core.technique import Technique


def evaluate_accuracy(
    module: Technique, batch: tuple[Tensor, Tensor], batch_idx: int, metric: torchmetrics.Metric, prefix: str
) -> None:
    """Log `<prefix>/loss` (cross-entropy) and `<prefix>/accuracy` of `module(images)` (class logits) on a labeled
    batch. The images DDP's sampler repeats to even out the processes are left out of both (`first_visit`), so each
    evaluation image counts once and the figures equal one process's."""
    images, labels = batch[0], batch[1]
    logits = module(images)  # (B, C, H, W) -> (B, N)
    if batch_idx == 0:
        check_labels(labels, logits.shape[1], type(module).__name__)
    keep = module.first_visit(batch_idx, images.shape[0])  # (B,) bool
    logits, labels = logits[keep], labels[keep]
    metric.update(logits, labels)
    module.log_means(prefix, {"loss": F.cross_entropy(logits.float(), labels)}, weight=int(keep.sum()))
    module.log(f"{prefix}/accuracy", metric, prog_bar=True)


__all__ = ["evaluate_accuracy"]
