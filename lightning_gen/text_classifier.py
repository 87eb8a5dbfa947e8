"""Sentiment classification of texts (movie reviews): a bag of word (and hashed word n-gram) embeddings (fastText,
Joulin et al. 2017), an LSTM (Hochreiter & Schmidhuber 1997) or a convolutional network with several filter widths and
max-over-time pooling (Kim, "Convolutional Neural Networks for Sentence Classification", EMNLP 2014), trained with
cross-entropy and Adam on the padded word indices of `datamodules.TextClassification`.

The vocabulary comes from the data when a run starts and is saved in the checkpoint (`TextTechnique`), with the
number of words kept per text (`max_length`): `predict --model.predict_file reviews.txt` reads one review per line
with the same tokenizer and writes the class probabilities of each to `predictions/predictions.csv`, without the
training data.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.text import read_utf8
from datamodules.text_classification import encode, text_loader, tokenize
from lightning_gen.core.checks import ConfigError, check_labels, check_learning_rates, resolve_num_classes
from lightning_gen.core.evaluation import evaluate_accuracy
from lightning_gen.core.optim import adam
from lightning_gen.core.protocols import TruncatedText
from lightning_gen.core.runs import ColumnWriter, logs_this_step
from lightning_gen.core.text import TextTechnique
from lightning_gen.nn.text_classifier import BagOfEmbeddings, KimCNN, LSTMClassifier, Pooling

Encoder = Literal["bag", "lstm", "cnn"]


class ReviewLines(Dataset):
    """The non-blank lines of a UTF-8 file as `(tokens (L,) int64, line number)` items, encoded with `vocabulary`.

    Args:
        path: the file, one text per line.
        vocabulary: index -> word (the checkpoint's).
        max_length: words kept per line.
    """

    def __init__(self, path: str, vocabulary: list[str], max_length: int) -> None:
        lines = read_utf8(path, "predict_file").split("\n")
        self.numbers = [i for i, line in enumerate(lines, start=1) if line.strip()]
        self.texts = {i: lines[i - 1].strip() for i in self.numbers}
        index = {w: i for i, w in enumerate(vocabulary)}
        self.tokens = [encode(tokenize(self.texts[i]), index, max_length) for i in self.numbers]

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.tokens[i], self.numbers[i]


class TextPredictionWriter(ColumnWriter):
    """Writes `predict`'s outputs to `predictions/predictions.csv` (see `ColumnWriter`), one row per line of the
    input file, in file order: `line, text, probability_positive` for two classes; `line, text, predicted,
    probability_0, ...` for more."""

    stem, suffix = "predictions", ".csv"

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        self.texts = pl_module.predict_texts  # line number -> text, of the file read by predict_dataloader
        super().write_on_epoch_end(trainer, pl_module, predictions, batch_indices)

    def save(self, columns: dict[str, Tensor], path: Path) -> None:
        probabilities = columns["probabilities"]  # (N, num_classes)
        rows = {}
        for line, probs in zip(columns["line"].tolist(), probabilities.tolist()):
            if probabilities.shape[1] == 2:
                rows[line] = [line, self.texts[line], f"{probs[1]:.6f}"]
            else:
                rows[line] = [line, self.texts[line], max(range(len(probs)), key=probs.__getitem__),
                              *(f"{p:.6f}" for p in probs)]
        header = (["line", "text", "probability_positive"] if probabilities.shape[1] == 2 else
                  ["line", "text", "predicted", *(f"probability_{c}" for c in range(probabilities.shape[1]))])
        with path.open("w", encoding="utf-8", newline="") as file:
            out = csv.writer(file)
            out.writerow(header)
            out.writerows(rows[line] for line in sorted(rows))  # DDP's repeated items written once


class TextClassifier(TextTechnique):
    """Text classifier over word indices: `bag` (mean of the word and word n-gram embeddings), `lstm` ((bi)LSTM with
    pooling) or `cnn` (Kim 2014), then dropout and a linear layer to the class logits; cross-entropy, Adam.

    Args:
        encoder: `bag` (mean of the word and n-gram embeddings -> dropout -> linear), `lstm` (embedding -> LSTM on
            packed sequences -> pooling -> dropout -> linear) or `cnn` (embedding -> Conv1d per filter width -> ReLU ->
            max over time -> dropout -> linear).
        embedding_dim: length of the word embeddings (learned from scratch).
        ngrams: `bag` reads the word n-grams up to this length too (fastText, Joulin et al. 2017: 2 adds the word
            pairs); 1 = words only.
        ngram_buckets: `bag` with `ngrams` > 1: the n-grams are hashed from the word indices into this many embeddings
            of their own (fastText: 2,000,000 on its large corpora).
        hidden: `lstm` hidden units per direction.
        num_layers: `lstm` stacked layers (dropout between them).
        bidirectional: `lstm` reads the text both ways and concatenates the two.
        pooling: `lstm` summary of the steps: `max`, `mean` or `last` (the final hidden state).
        kernel_sizes: `cnn` filter widths, in words (Kim: 3, 4, 5).
        num_filters: `cnn` filters per width (Kim: 100).
        dropout: dropout before the linear layer (Kim: 0.5).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        num_classes: number of classes; taken from the datamodule when not given.
        vocab_size: vocabulary size; taken from the datamodule (stored in the checkpoint with the vocabulary).
        max_length: words kept per text by `predict`; taken from the datamodule (its `max_length`) when not given.
        predict_file: a UTF-8 text file, one text per line, whose class probabilities `predict` writes to
            `predictions/predictions.csv` (blank lines skipped; `line` is the line number in the file).
        predict_batch_size: lines per batch in `predict`.
    """

    def __init__(
        self,
        encoder: Encoder = "cnn",
        embedding_dim: int = 128,
        ngrams: int = 1,
        ngram_buckets: int = 100_000,
        hidden: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: Pooling = "max",
        kernel_sizes: list[int] = [3, 4, 5],  # noqa: B006 (jsonargparse needs the list; it is never mutated)
        num_filters: int = 100,
        dropout: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        num_classes: int | None = None,
        vocab_size: int | None = None,
        max_length: int | None = None,
        predict_file: str | None = None,
        predict_batch_size: int = 64,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if min(embedding_dim, hidden, num_layers, num_filters, predict_batch_size) < 1:
            sizes = (embedding_dim, hidden, num_layers, num_filters, predict_batch_size)
            raise ConfigError(f"embedding_dim, hidden, num_layers, num_filters and predict_batch_size must be 1 "
                              f"or more, got {sizes}.")
        if ngrams < 1 or not 1 <= ngram_buckets <= 2**31:
            raise ConfigError(f"ngrams must be 1 or more and ngram_buckets from 1 to 2**31 (the hash stays in int64), "
                              f"got {ngrams} and {ngram_buckets}.")
        if ngrams > 1 and encoder != "bag":
            raise ConfigError(f"ngrams {ngrams} applies to the bag of embeddings only: set --model.encoder bag, or "
                              f"--model.ngrams 1 for the {encoder} encoder.")
        if not kernel_sizes or min(kernel_sizes) < 1:
            raise ConfigError(f"kernel_sizes must list 1 or more filter widths of 1 or more, got {kernel_sizes}.")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"num_classes must be 2 or more, got {num_classes}.")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"max_length must be 1 or more, got {max_length}.")
        self.save_hyperparameters()
        self.predict_texts: dict[int, str] = {}

    @property
    def owns_predict_inputs(self) -> bool:
        """`predict` reads `predict_file`, not the datamodule (the `OwnsPredictInputs` contract)."""
        return self.hparams.predict_file is not None

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        vocab_size = self.resolve_vocabulary()
        hp.num_classes = resolve_num_classes(hp.num_classes, dm, "TextClassifier")
        if isinstance(dm, TruncatedText):
            hp.max_length = hp.max_length or dm.max_length
        if hp.encoder == "bag":
            self.net = BagOfEmbeddings(vocab_size, hp.embedding_dim, hp.num_classes, hp.dropout, hp.ngrams,
                                       hp.ngram_buckets)
        elif hp.encoder == "lstm":
            self.net = LSTMClassifier(vocab_size, hp.embedding_dim, hp.hidden, hp.num_layers, hp.bidirectional,
                                      hp.pooling, hp.num_classes, hp.dropout)
        else:
            self.net = KimCNN(vocab_size, hp.embedding_dim, list(hp.kernel_sizes), hp.num_filters, hp.num_classes,
                              hp.dropout)
        self.val_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)
        self.test_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens)  # (B, L) int64, 0 = padding -> (B, num_classes) logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        tokens, labels = batch  # (B, L), (B,)
        if batch_idx == 0:
            check_labels(labels, self.hparams.num_classes, "TextClassifier")
        logits = self(tokens)
        loss = F.cross_entropy(logits.float(), labels)
        if logs_this_step(self.trainer):
            accuracy = (logits.argmax(1) == labels).float().mean()
            self.log_dict({"train/loss": loss.detach(), "train/accuracy": accuracy}, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        evaluate_accuracy(self, batch, batch_idx, self.val_acc, "val")  # each text counted once under DDP

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        evaluate_accuracy(self, batch, batch_idx, self.test_acc, "test")

    # ---- predict: the class probabilities of each line of a file ---------------------------------------------------
    def predict_dataloader(self) -> DataLoader:
        hp = self.hparams
        if not hp.predict_file:
            raise ConfigError("TextClassifier's predict reads the texts of `--model.predict_file` (a UTF-8 file, one "
                              "text per line); set it.")
        if self.vocabulary is None or hp.max_length is None:
            raise ConfigError("TextClassifier's predict needs a trained model: give its checkpoint with --ckpt_path.")
        lines = ReviewLines(hp.predict_file, self.vocabulary, hp.max_length)
        self.predict_texts = lines.texts
        return text_loader(lines, hp.predict_batch_size)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        tokens, lines = batch
        return {"line": lines, "probabilities": self(tokens).float().softmax(1)}  # (B,), (B, num_classes)

    def prediction_writer(self) -> BasePredictionWriter:
        return TextPredictionWriter()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self, self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


__all__ = ["ReviewLines", "TextClassifier", "TextPredictionWriter"]
