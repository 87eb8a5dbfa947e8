"""What the text techniques share: a vocabulary that travels in the checkpoint, and text that reaches disk and the
loggers.

- `TextTechnique`: the vocabulary (`list[str]`, index -> token) comes from the datamodule (`TextData`) when a run
  starts, its size is a hyperparameter (the embedding and the output layer are built from it), and the list itself
  is saved in the checkpoint (not in the hyperparameters, which W&B shows as the run's config: a word vocabulary has
  thousands of entries). A checkpoint loads, samples and predicts without the data; a resumed run or an evaluation
  on data whose vocabulary differs from the checkpoint's is refused before it runs.
- `save_and_log_text`: a table of text (samples at several temperatures) as a text file in the run folder and as a
  W&B table (TensorBoard: text).
- `TextWriter`: the texts `predict` makes, in a file in the run folder, and on the screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import TextData
from lightning_gen.core.runs import predictions_folder, run_dir
from lightning_gen.core.technique import Technique

VOCABULARY_KEY = "lightning_gen_vocabulary"


class TextTechnique(Technique):
    """A technique over token indices: `self.vocabulary` (index -> token) and `hparams.vocab_size`."""

    vocabulary: list[str] | None = None

    def resolve_vocabulary(self) -> int:
        """Take the vocabulary from the datamodule (a new run) and store its size in `hparams.vocab_size`; a model
        loaded from a checkpoint keeps its own (restored by `on_load_checkpoint`). Returns the size."""
        hp, dm = self.hparams, self.datamodule
        name = type(self).__name__
        if isinstance(dm, TextData) and dm.vocabulary is not None and self.vocabulary is None:
            self.vocabulary = list(dm.vocabulary)
            if hp.vocab_size is not None and hp.vocab_size != len(self.vocabulary):
                raise ConfigError(
                    f"{name} was given vocab_size={hp.vocab_size}, but the data's vocabulary has "
                    f"{len(self.vocabulary)} tokens. Leave --model.vocab_size unset (it is taken from the data)."
                )
            hp.vocab_size = len(self.vocabulary)
        if hp.vocab_size is None:
            raise ConfigError(
                f"{name} needs a vocabulary: give it text data (a datamodule with a `vocabulary`, such as CharText "
                "or TextClassification) or a checkpoint (`--ckpt_path`) that holds one."
            )
        if hp.vocab_size < 2:
            raise ConfigError(f"{name} needs a vocabulary of at least 2 tokens, got {hp.vocab_size}.")
        return hp.vocab_size

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[VOCABULARY_KEY] = self.vocabulary

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(VOCABULARY_KEY)
        if saved is None:
            return
        if self.vocabulary is not None and list(self.vocabulary) != list(saved):
            differ = sum(a != b for a, b in zip(self.vocabulary, saved)) + abs(len(self.vocabulary) - len(saved))
            raise ConfigError(
                f"The data's vocabulary ({len(self.vocabulary)} tokens) is not the checkpoint's ({len(saved)} tokens; "
                f"{differ} entries differ): the token indices would mean other tokens. Give the data the run was "
                "trained on, or start a new run without --ckpt_path."
            )
        self.vocabulary = list(saved)


@rank_zero_only
def save_and_log_text(trainer: L.Trainer, key: str, columns: list[str], rows: list[list[Any]],
                      file_name: str | None = None) -> Path:
    """Write `rows` to `<run dir>/samples/<key>_epoch<NNNN>.txt` (or `file_name`), each row as a header line
    `### <column>: <value>, ...` with the first columns, then the last column (the text) as it is; and log them to
    W&B as a table with `columns` (TensorBoard: as text). Returns the file's path."""
    folder = run_dir(trainer) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (file_name or f"{key.replace('/', '_')}_epoch{trainer.current_epoch:04d}.txt")
    blocks = ["### " + ", ".join(f"{c}: {v}" for c, v in zip(columns[:-1], row[:-1])) + f"\n{row[-1]}\n"
              for row in rows]
    path.write_text("\n".join(blocks), encoding="utf-8")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=[list(r) for r in rows], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
            lines += [" | ".join(str(v).replace("\n", "<br>") for v in row) for row in rows]
            logger.experiment.add_text(key, "\n".join(lines), global_step=trainer.global_step)
    return path




class TextWriter(BasePredictionWriter):
    """Writes the texts `predict` made (`predict_step` returns `{"index": (B,) tensor, "text": list[str]}`) to
    `predictions/<stem>.txt` in the run folder (`<stem>_rank<R>.txt` per process under DDP), each under a header line
    `### <index> <header>`, and prints them.

    Args:
        output_dir: folder for the file. Default: `predictions/` beside the checkpoint's `checkpoints/` folder, else
            `<default_root_dir>/predictions`.
        stem: the file's name without `.txt`.
        header: text after the index on each header line (e.g. the sampling settings).
        echo: print the texts as well.
    """

    def __init__(self, output_dir: str | None = None, stem: str = "samples", header: str = "",
                 echo: bool = True) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir, self.stem, self.header, self.echo = output_dir, stem, header, echo

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        rows = sorted((int(i), text) for out in outputs or [] for i, text in zip(out["index"].tolist(), out["text"]))
        if not rows:
            return
        blocks = [f"### {i} {self.header}".rstrip() + f"\n{text}\n" for i, text in rows]
        folder = predictions_folder(trainer, self.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rank = "" if trainer.world_size == 1 else f"_rank{trainer.global_rank}"
        path = folder / f"{self.stem}{rank}.txt"
        path.write_text("\n".join(blocks), encoding="utf-8")
        if self.echo:
            print("\n".join(blocks), flush=True)
        rank_zero_info(f"predict: wrote {len(rows)} text(s) to {path}")


__all__ = ["TextTechnique", "TextWriter", "VOCABULARY_KEY", "save_and_log_text"]
