"""How good an embedding is for retrieval, computed on the embeddings of a labeled evaluation set.

The protocol of Musgrave, Belongie & Lim, "A Metric Learning Reality Check" (ECCV 2020): every item is a query
and all the *other* items are the reference set (leave one out), so the classes can be ones the network never saw
in training.

- precision@1: the share of queries whose nearest other item has the query's class.
- MAP@R: for a query whose class has R other items, the mean over i = 1..R of precision@i counted only at the ranks
  i where the i-th nearest item is of the query's class, divided by R (so that it rewards ranking *all* of the
  class first, not just one). 1.0 when the R nearest are exactly the class.
- k-NN accuracy: the share of queries whose k nearest others vote (majority; a tie goes to the class of the nearer
  items) for the query's class.

`one_shot_accuracy` is Lake et al.'s N-way one-shot task: each query is matched with the nearest of N support
items, one per class.

Distances are computed in chunks of queries, so 10,000 items need a few hundred MB, not the full 10,000^2 matrix
at once; `distance` can be any `(queries, references) -> (Q, R)` function (Euclidean by default; the Siamese
verification head passes its own).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Distance = Callable[[Tensor, Tensor], Tensor]


def euclidean(queries: Tensor, references: Tensor) -> Tensor:
    """(Q, D), (R, D) -> (Q, R) Euclidean distances."""
    return torch.cdist(queries.float(), references.float())


@torch.no_grad()
def retrieval_metrics(
    embeddings: Tensor, labels: Tensor, k: int = 5, distance: Distance = euclidean, chunk: int = 512
) -> dict[str, float]:
    """precision@1, MAP@R and k-NN accuracy of `embeddings` (N, D) with classes `labels` (N,), leave-one-out.

    Queries whose class has no other item have no answer: they count for neither metric (as in
    pytorch-metric-learning's `AccuracyCalculator`). Returns floats in [0, 1] and `queries`, the number counted."""
    n = len(embeddings)
    labels = labels.to(embeddings.device).long()
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 items, got {n}.")
    counts = torch.bincount(labels - labels.min())[labels - labels.min()] - 1  # R: same-class others of each item
    max_r = int(counts.max())
    depth = min(n - 1, max(max_r, k, 1))
    p1 = map_r = knn = 0.0
    counted = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        d = distance(embeddings[start:stop], embeddings).float()
        d[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")  # not itself
        nearest = d.topk(depth, dim=1, largest=False).indices  # (q, depth), nearest first
        same = labels[nearest] == labels[start:stop, None]  # (q, depth)
        r = counts[start:stop]
        has = r > 0
        counted += int(has.sum())
        p1 += float(same[:, 0][has].float().sum())
        ranks = torch.arange(1, depth + 1, device=d.device)
        within_r = ranks[None, :] <= r[:, None]
        hits = same & within_r
        precision_at_i = hits.float().cumsum(1) / ranks[None, :]
        ap = (precision_at_i * hits).sum(1) / r.clamp(min=1)
        map_r += float(ap[has].sum())
        votes = labels[nearest[:, :k]]
        knn += float((majority(votes) == labels[start:stop])[has].float().sum())
    if counted == 0:
        raise ValueError("no item has another item of its class: retrieval cannot be scored.")
    return {"precision_at_1": p1 / counted, "map_at_r": map_r / counted, "knn_accuracy": knn / counted,
            "queries": counted}


def majority(votes: Tensor) -> Tensor:
    """(Q, k) labels of the k nearest, nearest first -> (Q,) the most frequent; a tie goes to the label whose
    votes come first (the nearer items)."""
    k = votes.shape[1]
    agree = (votes[:, :, None] == votes[:, None, :]).sum(2)  # (Q, k): how many of the k share item j's label
    score = agree * (k + 1) - torch.arange(k, device=votes.device)  # more votes first, then nearer
    return votes.gather(1, score.argmax(1, keepdim=True)).squeeze(1)


@torch.no_grad()
def one_shot_accuracy(
    embeddings: Tensor, labels: Tensor, episodes: Tensor, support: Tensor, distance: Distance = euclidean
) -> tuple[float, Tensor]:
    """N-way one-shot accuracy over episodes (Lake et al.'s runs): in each episode, every query (`support` False)
    is given the label of its nearest support item (`support` True, one per class). Returns the mean accuracy over
    all queries and the accuracy of each episode (in the order of `episodes.unique()`)."""
    per_episode = []
    for episode in episodes.unique():
        here = episodes == episode
        queries, supports = here & ~support, here & support
        if not supports.any() or not queries.any():
            raise ValueError(f"episode {int(episode)} has no support or no query items.")
        d = distance(embeddings[queries], embeddings[supports])
        guess = labels[supports][d.argmin(1)]
        per_episode.append((guess == labels[queries]).float().mean())
    accuracy = torch.stack(per_episode)
    return float(accuracy.mean()), accuracy


__all__ = ["Distance", "euclidean", "majority", "one_shot_accuracy", "retrieval_metrics"]
