"""Labeled texts (movie reviews) as padded word indices, for a sentiment classifier (`TextClassifier`).

Two sources, both read as UTF-8 (`read_utf8`), nothing written next to them:

- the official IMDB layout (`aclImdb`): `<path>/train/pos/*.txt`, `<path>/train/neg/*.txt`, `<path>/test/pos/*.txt`,
  `<path>/test/neg/*.txt`, one review per file (`<id>_<rating>.txt`); `pos` is class 1, `neg` class 0. The training
  folders are split into train and validation; the test folders are the test split.
- a TSV of `id<TAB>score<TAB>text` lines (Windows or Unix line ends), such as the Rotten Tomatoes snippets of Hutto &
  Gilbert (2014): class 1 when the score is above 0, class 0 below, lines scored exactly 0 left out; one seeded split
  into train, validation and test.

Words come from `tokenize` (lower case, runs of letters and digits with an optional apostrophe suffix). The vocabulary
is `["<pad>", "<unk>", *words]`: the most frequent words of the training split (at least `min_count` times; ties in
alphabetical order), `vocab_size` entries at most. Every other word maps to `<unk>` (1); index 0 pads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from datamodules.base import DataError, SplitLoaders, data_root
from datamodules.text import read_utf8

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1
CLASS_FOLDERS = ("neg", "pos")  # class 0, class 1
SOURCES = ("aclimdb", "tsv")

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    """The words of `text`: lower-cased, HTML line breaks (`<br />`, common in IMDB reviews) made spaces, then every
    run of letters a-z and digits, with an apostrophe suffix kept on its word (`don't`, `film's`); everything else
    (punctuation, accented and non-Latin letters) separates words and is dropped.

    >>> tokenize("It's GREAT!<br /><br />10/10, isn't it?")
    ["it's", 'great', '10', '10', "isn't", 'it']
    """
    return _WORD.findall(_HTML_BREAK.sub(" ", text).lower())


def build_vocabulary(texts: Iterable[list[str]], vocab_size: int, min_count: int = 1) -> list[str]:
    """`[PAD, UNK, *words]`: the words of the tokenized `texts` that occur at least `min_count` times, most frequent
    first, ties in alphabetical order, cut to `vocab_size` entries in all."""
    counts = Counter(word for words in texts for word in words)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *ranked[: max(0, vocab_size - 2)]]


def encode(words: list[str], index: dict[str, int], max_length: int) -> Tensor:
    """(L,) int64 indices of the first `max_length` words (unknown words -> UNK_INDEX); a text without words is one
    `<unk>`, so every item has at least one token."""
    ids = [index.get(w, UNK_INDEX) for w in words[:max_length]]
    return torch.tensor(ids or [UNK_INDEX], dtype=torch.int64)


def pad_batch(items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """A batch of `(tokens (L_i,), label)` items -> `(tokens (B, L) int64 padded with 0 to the longest, labels (B,)
    int64)`."""
    tokens = pad_sequence([t for t, _ in items], batch_first=True, padding_value=PAD_INDEX)  # (B, L)
    return tokens, torch.tensor([int(y) for _, y in items], dtype=torch.int64)


def text_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0) -> DataLoader:
    """`make_loader`'s DataLoader (persistent workers, pinned memory with CUDA) with `pad_batch` as collate."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(), collate_fn=pad_batch)


class EncodedTexts(Dataset):
    """`(tokens (L,) int64, label)` items.

    Args:
        tokens: one index tensor per text.
        labels: one class per text.
    """

    def __init__(self, tokens: list[Tensor], labels: list[int]) -> None:
        self.tokens, self.labels = tokens, labels

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.tokens[i], self.labels[i]


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """The texts and labels of a `id<TAB>score<TAB>text` file: label 1 for a score above 0, 0 below; lines scored
    exactly 0 and blank lines are left out. Raises `DataError` naming the line of a malformed row."""
    texts, labels = [], []
    for number, line in enumerate(read_utf8(path, "TSV file").split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise DataError(f"{path}, line {number}: expected 3 tab-separated columns `id<TAB>score<TAB>text`, found "
                            f"{len(fields)}. Fix the line, or give --data.format aclimdb for an aclImdb folder.")
        try:
            score = float(fields[1])
        except ValueError:
            raise DataError(f"{path}, line {number}: the score {fields[1][:40]!r} (column 2) is not a number. Fix "
                            "the line: columns are `id<TAB>score<TAB>text`.") from None
        if score != score:  # NaN
            raise DataError(f"{path}, line {number}: the score is NaN. Give a number (column 2).")
        if score != 0:
            texts.append(fields[2])
            labels.append(int(score > 0))
    return texts, labels


def read_aclimdb_split(root: Path, split: str) -> tuple[list[str], list[int]]:
    """The reviews of `<root>/<split>/neg` (class 0) and `<root>/<split>/pos` (class 1), files in sorted order."""
    texts, labels = [], []
    for label, name in enumerate(CLASS_FOLDERS):
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: the aclImdb layout has train/pos, train/neg, test/pos and test/neg "
                            f"folders of .txt reviews. Give --data.path the aclImdb folder itself.")
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise DataError(f"{folder} holds no .txt reviews. Give --data.path a complete aclImdb folder.")
        texts += [read_utf8(f, "review") for f in files]
        labels += [label] * len(files)
    return texts, labels


class TextClassification(SplitLoaders, L.LightningDataModule):
    """Sentiment-labeled texts (movie reviews) as padded word indices for `TextClassifier`: batches are
    `(tokens (B, L) int64, labels (B,) int64)`, each row padded with 0 to the batch's longest text.

    Reads the official IMDB `aclImdb` folder (`train|test/pos|neg/<id>_<rating>.txt`; `test_fraction` unused: its
    test folders are the test split) or a TSV of `id<TAB>score<TAB>text` lines (label = score above 0; lines scored 0
    left out; a seeded train/validation/test split). Words are `tokenize`d (lower case, letters and digits, an
    apostrophe suffix kept); the vocabulary is `<pad>`, `<unk>` and the most frequent words of the training split.

    Args:
        path: an aclImdb folder or a TSV file; `$VARS` and `~` are expanded. Default: the Rotten Tomatoes snippets
            under `$LIGHTNING_GEN_DATA`.
        format: `aclimdb`, `tsv`, or `auto` (a folder is aclImdb, a file a TSV).
        vocab_size: the vocabulary's size at most, `<pad>` and `<unk>` included (at least 2).
        max_length: words kept per text (its first ones).
        min_count: a word enters the vocabulary only if it occurs this often in the training split.
        batch_size: texts per batch (per process under DDP).
        val_fraction: share of the training data held out for validation, in (0, 1).
        test_fraction: share of a TSV's lines held out for test, in (0, 1).
        split_seed: seed of the splits (independent of the training seed, so runs share one split).
        num_workers: DataLoader worker processes (0 loads in the main process).
    """

    vocabulary: list[str] | None
    """Index -> word, from the training split; None until `setup`."""
    num_classes: int
    """2: negative (0) and positive (1)."""

    def __init__(
        self,
        path: str = "$LIGHTNING_GEN_DATA/text/movie_review_snippets/movieReviewSnippets_GroundTruth.txt",
        format: Literal["auto", "aclimdb", "tsv"] = "auto",
        vocab_size: int = 20000,
        max_length: int = 400,
        min_count: int = 1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise DataError(f"vocab_size must be at least 2 (<pad> and <unk>), got {vocab_size}. Give "
                            "--data.vocab_size 20000 or so.")
        if max_length < 1 or min_count < 1 or batch_size < 1 or num_workers < 0:
            raise DataError(f"need max_length, min_count and batch_size of at least 1 and num_workers of 0 or more; "
                            f"got {max_length}, {min_count}, {batch_size} and {num_workers}.")
        if not 0.0 < val_fraction < 1.0 or not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise DataError(f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, got {val_fraction} "
                            f"and {test_fraction}.")
        self.path, self.format = path, format
        self.vocab_size, self.max_length, self.min_count = vocab_size, max_length, min_count
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.vocabulary = None
        self.num_classes = len(CLASS_FOLDERS)
        self.train_set: EncodedTexts | None = None
        self.val_set: EncodedTexts | None = None
        self.test_set: EncodedTexts | None = None

    def source(self) -> tuple[Path, str]:
        """The resolved path and its format (`aclimdb` or `tsv`); `DataError` when it does not exist or does not fit
        the format."""
        path = data_root(self.path)
        if not path.exists():
            raise DataError(f"{path} does not exist. Give --data.path an aclImdb folder or a TSV file of "
                            "`id<TAB>score<TAB>text` lines (relative paths start at the working directory).")
        kind = self.format if self.format != "auto" else ("aclimdb" if path.is_dir() else "tsv")
        if kind == "aclimdb" and not path.is_dir():
            raise DataError(f"{path} is a file, but format aclimdb reads a folder. Give the aclImdb folder, or "
                            "--data.format tsv.")
        if kind == "tsv" and not path.is_file():
            raise DataError(f"{path} is a folder, but format tsv reads one file. Give the TSV file, or "
                            "--data.format aclimdb.")
        return path, kind

    def read_splits(self) -> dict[str, tuple[list[str], list[int]]]:
        """The raw texts and labels of the train, val and test splits."""
        path, kind = self.source()
        generator = torch.Generator().manual_seed(self.split_seed)
        if kind == "aclimdb":
            texts, labels = read_aclimdb_split(path, "train")
            order = torch.randperm(len(texts), generator=generator).tolist()
            n_val = int(round(len(texts) * self.val_fraction))
            parts = {"val": order[:n_val], "train": order[n_val:]}
            splits = {name: ([texts[i] for i in idx], [labels[i] for i in idx]) for name, idx in parts.items()}
            splits["test"] = read_aclimdb_split(path, "test")
        else:
            texts, labels = read_tsv(path)
            order = torch.randperm(len(texts), generator=generator).tolist()
            n_test = int(round(len(texts) * self.test_fraction))
            n_val = int(round(len(texts) * self.val_fraction))
            parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
            splits = {name: ([texts[i] for i in idx], [labels[i] for i in idx]) for name, idx in parts.items()}
        for name in ("train", "val", "test"):
            if not splits[name][0]:
                raise DataError(f"the {name} split of {path} is empty ({len(texts)} labeled texts to split). Give more "
                                "data, or change --data.val_fraction / --data.test_fraction.")
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self.read_splits()
        words = {name: [tokenize(t) for t in texts] for name, (texts, _) in splits.items()}
        self.vocabulary = build_vocabulary(words["train"], self.vocab_size, self.min_count)
        index = {w: i for i, w in enumerate(self.vocabulary)}
        sets = {name: EncodedTexts([encode(w, index, self.max_length) for w in words[name]], splits[name][1])
                for name in splits}
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return text_loader(dataset, self.batch_size, train, self.num_workers)


__all__ = ["EncodedTexts", "PAD", "PAD_INDEX", "TextClassification", "UNK", "UNK_INDEX", "build_vocabulary", "encode",
           "pad_batch", "read_aclimdb_split", "read_tsv", "text_loader", "tokenize"]
