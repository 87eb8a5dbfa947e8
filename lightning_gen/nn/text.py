"""Recurrent networks over token indices: the character-level language model of `CharLSTM`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

RecurrentCell = Literal["lstm", "gru"]
State = tuple[Tensor, ...]
"""A recurrent state: `(h, c)` for an LSTM, `(h,)` for a GRU, each `(num_layers, B, hidden)`."""


class CharRNN(nn.Module):
    """Embedding -> `num_layers` stacked LSTM or GRU layers (dropout between them and after the last) -> a linear
    layer to one logit per token. `forward(x (B, T), state)` -> (logits (B, T, vocab_size), the state after x)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, num_layers: int,
                 cell: RecurrentCell = "lstm", dropout: float = 0.0) -> None:
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embedding_dim, hidden, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        h = self.embedding(x)  # (B, T) -> (B, T, E)
        if cpu_float16_autocast(h):  # oneDNN has no float16 LSTM/GRU on most CPUs: run it in float32
            with torch.autocast("cpu", enabled=False):
                h, new = self.recurrent(h.float(), None if state is None else tuple(s.float() for s in state))
        else:
            h, new = self.recurrent(h, state)
        return self.head(self.dropout(h)), new  # (B, T, V), state

    def recurrent(self, h: Tensor, state: State | None) -> tuple[Tensor, State]:
        if self.cell == "gru":
            out, new = self.rnn(h, None if state is None else state[0])
            return out, (new,)
        out, new = self.rnn(h, state)
        return out, tuple(new)


def cpu_float16_autocast(x: Tensor) -> bool:
    """Whether `x` is on the CPU inside a float16 autocast region (`--trainer.precision 16-mixed` on a CPU)."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == \
        torch.float16


__all__ = ["CharRNN", "RecurrentCell", "State"]
