"""The networks of the sentiment classifier (`TextClassifier`): padded word indices `(B, L)` (0 = padding) -> class
logits `(B, num_classes)`. Each gives the same logits for a text whatever padding its batch adds (tested).

- `BagOfEmbeddings`: the mean of the embeddings of the text's words, and with `ngrams` > 1 of its hashed word n-grams
  (fastText, Joulin et al. 2017) -> dropout -> linear.
- `LSTMClassifier`: embedding -> (bi)LSTM over the packed sequences (the padding never enters the recurrence) ->
  max, mean or last-state pooling over the real steps -> dropout -> linear.
- `KimCNN`: Kim (2014): embedding -> one Conv1d per filter width -> ReLU -> max over time (over the windows that start
  inside the text) -> concatenation -> dropout -> linear.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Pooling = Literal["max", "mean", "last"]


EMBEDDING_INIT = 0.25
"""Word vectors start uniform in [-0.25, 0.25] (Kim 2014's CNN-rand: the variance of his pretrained word2vec vectors),
not `nn.Embedding`'s N(0, 1): with Adam's steps of about `lr`, vectors of unit scale barely move in a few epochs."""


def word_embedding(vocab_size: int, embedding_dim: int) -> nn.Embedding:
    """(B, L) indices -> (B, L, embedding_dim); index 0 (padding) is the zero vector and gets no gradient."""
    embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
    with torch.no_grad():
        embedding.weight.uniform_(-EMBEDDING_INIT, EMBEDDING_INIT)
        embedding.weight[0].zero_()
    return embedding


def lengths_of(tokens: Tensor) -> Tensor:
    """(B, L) indices -> (B,) int64 counts of non-padding tokens (at least 1: an empty text reads one padding)."""
    return (tokens != 0).sum(1).clamp(min=1)


def valid_steps(lengths: Tensor, steps: int) -> Tensor:
    """(B,) lengths -> (B, steps) bool: True where step t < length."""
    return torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)


NGRAM_PRIME = 2_654_435_761
"""The multiplier of the n-gram hash (a prime; Knuth's multiplicative-hash constant). A word or bucket index below 2**31
times it stays below 2**63, so the hash never overflows int64."""


def hashed_ngrams(tokens: Tensor, ngrams: int, buckets: int) -> tuple[Tensor, Tensor]:
    """The word n-grams of each text, for n = 2 .. `ngrams`, hashed into `buckets` buckets from the word indices:
    `h(a, b) = (a * P + b) % buckets` for the pair of consecutive indices `a, b`, then
    `h(a, ..., y, z) = (h(a, ..., y) * P + z) % buckets`, with `P = NGRAM_PRIME`; deterministic, so a checkpoint
    hashes as training did.

    (B, L) int64 indices (0 = padding) -> ((B, K) int64 bucket indices, (B, K) bool: True where the n-gram lies inside
    the text), K = sum over n of (L - n + 1); an n-gram that touches padding is marked False."""
    real = tokens != 0  # (B, L)
    hashes, inside, ids, ok = [], [], tokens, real
    for n in range(2, ngrams + 1):
        ids = (ids[:, :-1] * NGRAM_PRIME + tokens[:, n - 1:]) % buckets  # (B, L - n + 1): n-grams starting at t
        ok = ok[:, :-1] & real[:, n - 1:]  # (B, L - n + 1)
        hashes.append(ids)
        inside.append(ok)
    if not hashes:
        return tokens.new_zeros(tokens.shape[0], 0), real.new_zeros(tokens.shape[0], 0)
    return torch.cat(hashes, 1), torch.cat(inside, 1)  # (B, K), (B, K)


class BagOfEmbeddings(nn.Module):
    """Mean of the embeddings of each text's words and, with `ngrams` > 1, of its word n-grams (n = 2 .. `ngrams`,
    hashed into `ngram_buckets` vectors of their own by `hashed_ngrams`; fastText, Joulin et al. 2017), padding left
    out -> dropout -> linear."""

    def __init__(self, vocab_size: int, embedding_dim: int, num_classes: int, dropout: float, ngrams: int = 1,
                 ngram_buckets: int = 1) -> None:
        super().__init__()
        self.embedding = word_embedding(vocab_size, embedding_dim)
        self.ngrams, self.ngram_buckets = ngrams, ngram_buckets
        if ngrams > 1:  # bucket 0 is an n-gram like any other: no padding row
            self.ngram_embedding = nn.Embedding(ngram_buckets, embedding_dim)
            with torch.no_grad():
                self.ngram_embedding.weight.uniform_(-EMBEDDING_INIT, EMBEDDING_INIT)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embedding_dim, num_classes)

    def bag(self, tokens: Tensor) -> Tensor:
        """(B, L) indices -> (B, E): the mean of the word and n-gram embeddings of each text."""
        mask = (tokens != 0).unsqueeze(2)  # (B, L, 1)
        summed = (self.embedding(tokens) * mask).sum(1)  # (B, L) -> (B, L, E) -> (B, E)
        count = lengths_of(tokens)  # (B,)
        if self.ngrams > 1:
            ids, inside = hashed_ngrams(tokens, self.ngrams, self.ngram_buckets)  # (B, K), (B, K)
            summed = summed + (self.ngram_embedding(ids) * inside.unsqueeze(2)).sum(1)  # (B, K, E) -> (B, E)
            count = count + inside.sum(1)  # (B,)
        return summed / count.unsqueeze(1).to(summed.dtype)  # (B, E)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.dropout(self.bag(tokens)))  # (B, E) -> (B, num_classes)


class LSTMClassifier(nn.Module):
    """Embedding -> (bi)LSTM on packed sequences -> pooling over the real steps -> dropout -> linear.

    `pooling`: `max` (element-wise maximum over the steps), `mean` (their average) or `last` (the final hidden state:
    of the last word going forward, of the first word going backward)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, num_layers: int, bidirectional: bool,
                 pooling: Pooling, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.embedding = word_embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        lengths = lengths_of(tokens)  # (B,)
        embedded = self.embedding(tokens)  # (B, L) -> (B, L, E)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, (h_n, _) = self.lstm(packed)  # h_n: (layers * directions, B, H), in the input's order
        if self.pooling == "last":
            pooled = torch.cat([h_n[-2], h_n[-1]], 1) if self.lstm.bidirectional else h_n[-1]  # (B, D * H)
        else:
            steps, _ = pad_packed_sequence(outputs, batch_first=True)  # (B, max length, D * H)
            mask = valid_steps(lengths, steps.shape[1]).unsqueeze(2)  # (B, T, 1)
            if self.pooling == "max":
                pooled = steps.masked_fill(~mask, float("-inf")).amax(1)  # (B, D * H)
            else:
                pooled = (steps * mask).sum(1) / lengths.unsqueeze(1).to(steps.dtype)  # (B, D * H)
        return self.head(self.dropout(pooled))  # (B, num_classes)


class KimCNN(nn.Module):
    """Kim (2014): embedding -> Conv1d of each width in `kernel_sizes` (`num_filters` each) -> ReLU -> max over time ->
    concatenation -> dropout -> linear.

    The padding embedding is zero, and only the windows that start inside the text enter the maximum (a text shorter
    than a width is read as one window filled up with zeros, as if padded to that width), so a batch's padding does not
    change a text's logits."""

    def __init__(self, vocab_size: int, embedding_dim: int, kernel_sizes: list[int], num_filters: int,
                 num_classes: int, dropout: float) -> None:
        super().__init__()
        self.embedding = word_embedding(vocab_size, embedding_dim)
        self.kernel_sizes = list(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_filters, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_filters * len(self.kernel_sizes), num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        lengths = lengths_of(tokens)  # (B,)
        widest = max(self.kernel_sizes)
        if tokens.shape[1] < widest:
            tokens = nn.functional.pad(tokens, (0, widest - tokens.shape[1]))  # (B, L) -> (B, widest)
        x = self.embedding(tokens).transpose(1, 2)  # (B, L) -> (B, E, L)
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            maps = torch.relu(conv(x))  # (B, F, L - k + 1)
            starts = (lengths - k).clamp(min=0) + 1  # windows starting inside the text (at least one)
            mask = valid_steps(starts, maps.shape[2]).unsqueeze(1)  # (B, 1, L - k + 1)
            pooled.append(maps.masked_fill(~mask, float("-inf")).amax(2))  # (B, F)
        return self.head(self.dropout(torch.cat(pooled, 1)))  # (B, F * len(kernel_sizes)) -> (B, num_classes)


__all__ = ["EMBEDDING_INIT", "NGRAM_PRIME", "BagOfEmbeddings", "KimCNN", "LSTMClassifier", "Pooling", "hashed_ngrams",
           "lengths_of", "valid_steps", "word_embedding"]
