"""Characters of a text as parallel streams, for a recurrent language model trained with truncated backpropagation
through time (`CharLSTM`).

The text (one UTF-8 file, or every text file under a folder joined by newlines, in sorted order) is split by position:
the first `1 - val_fraction` for training, the rest for validation (and `test`). The vocabulary is the training
split's characters, sorted, after the unknown symbol `UNKNOWN` (index 0), which every character the training split
lacks maps to.

Each split is cut into S = `batch_size` x world size streams of equal length, laid end to end: stream s is the s-th
S-th of the split. Batch t holds, for each of this process's `batch_size` streams (process r has streams
r*batch_size ... (r+1)*batch_size - 1), the characters t*T ... (t+1)*T - 1 of the stream as inputs and the same shifted
by one as targets (T = `seq_len`): consecutive batches continue the same streams, so the model can carry its state
from one batch to the next. A batch is `(inputs (B, T) int64, targets (B, T) int64, starts (B,) bool)`, `starts`
marking the rows whose stream begins with this batch (the model resets their state).

Every training epoch shifts the streams' start by an offset in [0, T) drawn from `(split_seed, epoch)`, so the cut
between chunks moves from epoch to epoch; validation always starts at 0. The loaders are resumable: a checkpoint holds
the epoch and the number of batches done, and a resumed run continues with the next chunk of the same streams.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from datamodules.base import DataError, data_root
from datamodules.text import read_utf8, text_files

UNKNOWN = "\ufffd"
"""The vocabulary's entry 0: the character every character unseen in the training split maps to."""


def build_vocabulary(text: str) -> list[str]:
    """`[UNKNOWN, *sorted characters of text]` (UNKNOWN once, even if the text holds it)."""
    return [UNKNOWN, *sorted(set(text) - {UNKNOWN})]


def encode(text: str, vocabulary: list[str]) -> Tensor:
    """(len(text),) int64 indices of the characters in `vocabulary`; unknown characters -> 0."""
    index = {ch: i for i, ch in enumerate(vocabulary)}
    return torch.tensor([index.get(ch, 0) for ch in text], dtype=torch.int64)


def decode(indices: Tensor | list[int], vocabulary: list[str]) -> str:
    """The text of `indices` (1-D)."""
    values = indices.tolist() if isinstance(indices, Tensor) else indices
    return "".join(vocabulary[i] for i in values)


class TextStreams(IterableDataset):
    """The batches of one split for one process (see the module docstring). `epoch` and `skip` (batches of the epoch
    already done, from a checkpoint) are set by `StreamLoader` before each pass.

    Args:
        data: (N,) character indices of the split.
        batch_size: streams per process.
        seq_len: characters per chunk.
        rank, world_size: this process and the number of processes.
        shift_seed: seed of the per-epoch offset; None for no offset (evaluation).
    """

    def __init__(self, data: Tensor, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 shift_seed: int | None = None) -> None:
        self.data, self.batch_size, self.seq_len = data, batch_size, seq_len
        self.rank, self.world_size, self.shift_seed = rank, world_size, shift_seed
        self.stream_length = (len(data) - 1) // (batch_size * world_size)  # +1: the last target
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        # with an offset up to T - 1 the streams lose up to T - 1 characters: one chunk fewer
        usable = self.stream_length - (self.seq_len - 1 if self.shift_seed is not None else 0)
        return max(0, usable // self.seq_len)

    def offset(self, epoch: int) -> int:
        if self.shift_seed is None:
            return 0
        generator = torch.Generator().manual_seed(self.shift_seed * 1_000_003 + epoch)
        return int(torch.randint(self.seq_len, (1,), generator=generator))

    def __iter__(self):
        T, L_s = self.seq_len, self.stream_length
        first = (self.rank * self.batch_size + torch.arange(self.batch_size)) * L_s + self.offset(self.epoch)
        steps = torch.arange(T + 1)
        skip, self.skip = self.skip, 0
        for t in range(skip, len(self)):
            window = self.data[(first + t * T).unsqueeze(1) + steps]  # (B, T + 1)
            starts = torch.full((self.batch_size,), t == 0)
            yield window[:, :-1].contiguous(), window[:, 1:].contiguous(), starts


class StreamLoader(DataLoader):
    """A DataLoader of `TextStreams` (one batch per item) that Lightning checkpoints and restores: `state_dict()`
    is the epoch and the batches of it done so far, read from the trainer when a checkpoint is written;
    `load_state_dict` makes the next pass skip those batches, so a resumed run continues the same streams."""

    def __init__(self, dataset: TextStreams, trainer: Any = None) -> None:
        super().__init__(dataset, batch_size=None)
        self.trainer = trainer

    def __iter__(self):
        if self.trainer is not None:
            self.dataset.epoch = self.trainer.current_epoch
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed if self.trainer is not None else 0
        return {"epoch": self.trainer.current_epoch if self.trainer is not None else 0, "batches_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state.get("batches_done", 0))
        self.dataset.epoch = int(state.get("epoch", 0))
        self.dataset.skip = done if done < len(self.dataset) else 0  # a finished epoch: the next starts at 0


class CharText(L.LightningDataModule):
    """A UTF-8 text as character streams for a language model (`CharLSTM`), with a 90/10 split by position.

    Args:
        path: a UTF-8 text file, or a folder whose text files (`.txt`, `.text`, `.md`, sorted, joined by newlines)
            make the text; `$VARS` and `~` are expanded. Default: Tiny Shakespeare under `$LIGHTNING_GEN_DATA`.
        seq_len: characters per chunk: how far back the gradient flows (truncated backpropagation through time).
        batch_size: parallel streams per process.
        val_fraction: the share of the text, at its end, held out for validation and `test`.
        split_seed: seed of the per-epoch offset of the training streams.
    """

    def __init__(self, path: str = "$LIGHTNING_GEN_DATA/text/tinyshakespeare/input.txt", seq_len: int = 128,
                 batch_size: int = 64, val_fraction: float = 0.1, split_seed: int = 0) -> None:
        super().__init__()
        if seq_len < 1:
            raise DataError(f"seq_len must be at least 1, got {seq_len}.")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        self.path, self.seq_len, self.batch_size = path, seq_len, batch_size
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.vocabulary: list[str] | None = None
        self.train_text: str | None = None
        self.val_text: str | None = None
        self.train_data: Tensor | None = None
        self.val_data: Tensor | None = None

    def read(self) -> str:
        files = text_files(self.path, "text")
        return "\n".join(read_utf8(f) for f in files)

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:
            text = self.read()
            n_train = int(round(len(text) * (1 - self.val_fraction)))
            self.train_text, self.val_text = text[:n_train], text[n_train:]
            self.vocabulary = build_vocabulary(self.train_text)
            if len(self.vocabulary) < 3:  # the unknown symbol and at least two characters
                raise DataError(f"the training text of {data_root(self.path)} has {len(self.vocabulary) - 1} distinct "
                                "character(s): a language model needs at least 2. Give a longer or richer text.")
            self.train_data = encode(self.train_text, self.vocabulary)
            self.val_data = encode(self.val_text, self.vocabulary)
        for name, data, shifted in (("training", self.train_data, True), ("validation", self.val_data, False)):
            if len(self.streams(data, shifted)) == 0:
                raise DataError(
                    f"the {name} split has {len(data):,} characters: too few for {self._streams()} streams of at "
                    f"least seq_len={self.seq_len} (+1) characters each. Lower --data.seq_len or --data.batch_size, or "
                    "change --data.val_fraction."
                )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _streams(self) -> str:
        rank, world = self._world()
        return f"{self.batch_size} x {world}" if world > 1 else str(self.batch_size)

    def streams(self, data: Tensor, shifted: bool) -> TextStreams:
        rank, world = self._world()
        return TextStreams(data, self.batch_size, self.seq_len, rank, world,
                           self.split_seed if shifted else None)

    def train_dataloader(self) -> StreamLoader:
        return StreamLoader(self.streams(self.train_data, shifted=True), self.trainer)

    def val_dataloader(self) -> StreamLoader:
        return StreamLoader(self.streams(self.val_data, shifted=False))

    def test_dataloader(self) -> StreamLoader:
        return self.val_dataloader()


__all__ = ["CharText", "StreamLoader", "TextStreams", "UNKNOWN", "build_vocabulary", "decode", "encode"]
