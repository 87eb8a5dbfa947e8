"""Count-based character language models: the baselines a neural language model's loss is read against.

Both give the cross-entropy, in nats per character, of an evaluation text under a model estimated on a training
text, over a vocabulary of `vocab_size` symbols (characters the training text lacks keep a small probability):

- `unigram_nats`: each character's training frequency, add-one (Laplace) smoothed. What a model that ignores the
  context reaches.
- `KneserNey` / `kneser_ney_nats`: the interpolated Kneser-Ney n-gram model (Chen & Goodman 1998, eq. 17-18), with
  one absolute discount per order, D = n1 / (n1 + 2 n2) (Ney et al. 1994; n_r = the number of n-grams seen r times).
  The highest order counts n-grams; the lower orders count *continuations* (in how many distinct contexts a shorter
  n-gram appears), and the first order is interpolated with the uniform distribution.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict


def unigram_nats(train: str, evaluation: str, vocab_size: int) -> float:
    """Cross-entropy of `evaluation` under add-one smoothed character frequencies of `train`, nats per character."""
    counts = Counter(train)
    total = len(train) + vocab_size
    return -sum(math.log((counts[ch] + 1) / total) for ch in evaluation) / len(evaluation)


def _discount(counts: dict[str, int]) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 + n2 else 0.75


class KneserNey:
    """Interpolated Kneser-Ney over the characters of `train`, of order `order` (the context is `order - 1`
    characters), over `vocab_size` symbols. `prob(ch, context)` is P(ch | the last order - 1 characters of context)."""

    def __init__(self, train: str, order: int = 5, vocab_size: int | None = None) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.order = order
        self.vocab_size = vocab_size or len(set(train))
        if self.vocab_size < len(set(train)):
            raise ValueError(f"vocab_size={vocab_size} is smaller than the {len(set(train))} characters of the text")
        # counts[k][g] for k-grams g: raw counts at the highest order, continuation counts below it
        self.counts: list[dict[str, int]] = [{} for _ in range(order + 1)]
        self.counts[order] = Counter(train[i:i + order] for i in range(len(train) - order + 1))
        for k in range(order - 1, 0, -1):
            distinct = set(train[i:i + k + 1] for i in range(len(train) - k))  # the (k+1)-grams seen
            self.counts[k] = Counter(g[1:] for g in distinct)
        # per context h: the total of its counts and the number of distinct characters after it
        self.totals: list[dict[str, int]] = [defaultdict(int) for _ in range(order + 1)]
        self.types: list[dict[str, int]] = [defaultdict(int) for _ in range(order + 1)]
        for k in range(1, order + 1):
            for gram, c in self.counts[k].items():
                self.totals[k][gram[:-1]] += c
                self.types[k][gram[:-1]] += 1
        self.discounts = [0.0] + [_discount(self.counts[k]) for k in range(1, order + 1)]

    def prob(self, ch: str, context: str) -> float:
        """P(ch | context): the interpolated estimate from the longest usable context down to the uniform one."""
        context = context[-(self.order - 1):] if self.order > 1 else ""
        p = 1.0 / self.vocab_size
        for k in range(1, len(context) + 2):  # order k uses the last k - 1 characters
            h = context[len(context) - (k - 1):] if k > 1 else ""
            total = self.totals[k].get(h, 0)
            if total == 0:  # an unseen context says nothing: keep the lower order's estimate
                continue
            d = self.discounts[k]
            p = max(self.counts[k].get(h + ch, 0) - d, 0.0) / total + d * self.types[k][h] / total * p
        return p

    def nats(self, evaluation: str) -> float:
        """Cross-entropy of `evaluation` in nats per character; character i is predicted from the ones before it in
        `evaluation` (the first `order - 1` from shorter contexts)."""
        n = self.order - 1
        return -sum(math.log(self.prob(ch, evaluation[max(0, i - n):i])) for i, ch in enumerate(evaluation)) / len(
            evaluation)


def kneser_ney_nats(train: str, evaluation: str, order: int = 5, vocab_size: int | None = None) -> float:
    """Cross-entropy of `evaluation` under the interpolated Kneser-Ney model of `train`, nats per character."""
    return KneserNey(train, order, vocab_size).nats(evaluation)


__all__ = ["KneserNey", "kneser_ney_nats", "unigram_nats"]
