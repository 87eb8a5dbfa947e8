"""Character-level language model: an LSTM (or GRU) that reads text one character at a time and predicts the next
(Karpathy's char-rnn; Chollet, "Deep Learning with Python", section 8.1), and writes text by sampling from its own
predictions with a temperature.

Training is truncated backpropagation through time on parallel streams of the text (`datamodules.CharText`): batch
t holds the t-th chunk of `seq_len` characters of each stream, and the recurrent state at the end of one batch is the
start of the next (detached, so the gradient flows back `seq_len` characters at most). A row whose stream begins
with the batch (`starts`) starts from a zero state. The loss is the cross-entropy of the next character, in nats;
`bpc` is the same in bits per character (nats / ln 2).

Sampling divides the logits by the temperature tau before the softmax, p_i = exp(z_i / tau) / sum_j exp(z_j / tau):
tau < 1 sharpens the distribution (safe, repetitive text), tau > 1 flattens it (inventive text, more misspellings),
tau = 0 takes the most likely character. `top_k` keeps only the k most likely characters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.char_text import decode, encode
from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.lightning_private import attached_trainer
from lightning_gen.core.optim import adam
from lightning_gen.core.runs import logs_this_step
from lightning_gen.core.sampling import index_loader
from lightning_gen.core.text import TextTechnique, TextWriter, save_and_log_text
from lightning_gen.nn.text import CharRNN, RecurrentCell, State

STATE_KEY = "char_lstm_state"


def reset_rows(state: State | None, starts: Tensor) -> State | None:
    """The carried state with the rows of `starts` (B,) bool set to zero (their stream begins), detached from the
    previous batch's graph (truncated backpropagation)."""
    if state is None:
        return None
    keep = (~starts).to(state[0].dtype).view(1, -1, 1)
    return tuple(s.detach() * keep for s in state)


def sample_next(logits: Tensor, temperature: Tensor, top_k: int | None, uniform: Tensor) -> Tensor:
    """One character per row: (B, V) logits, (B,) temperatures (0: the most likely character), (B,) uniform numbers
    in [0, 1) -> (B,) indices, drawn from softmax(logits / temperature) restricted to the `top_k` most likely
    (inverse-CDF sampling with the given numbers, so that a row's draw depends on its own random stream only)."""
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    greedy = temperature <= 0
    probs = torch.softmax(logits / temperature.clamp_min(1e-6).unsqueeze(1), dim=1)
    cdf = probs.cumsum(1)
    drawn = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(1)).squeeze(1).clamp_max(logits.shape[1] - 1)
    return torch.where(greedy, logits.argmax(1), drawn)


class CharLSTM(TextTechnique):
    """Character-level language model (LSTM or GRU), trained with truncated backpropagation through time on the
    streams of `CharText`; samples text from a prompt with a temperature.

    Args:
        cell: the recurrent layer: `lstm` or `gru`.
        embedding_dim: size of the character embedding.
        hidden: units of each recurrent layer.
        num_layers: stacked recurrent layers.
        dropout: dropout between the recurrent layers and before the output layer.
        lr: Adam learning rate.
        lr_decay: multiply the learning rate by this factor after every epoch (1 keeps it constant).
        weight_decay: Adam weight decay.
        clip_norm: clip the gradients' global norm to this (0: no clipping).
        vocab_size: number of characters, the unknown symbol included; taken from the data.
        prompt: the text sampling starts from (its characters are fed first).
        temperature: sampling temperature of `predict` (0: always the most likely character).
        top_k: sample among the k most likely characters only (None: all).
        sample_length: characters to generate after the prompt.
        num_samples: texts `predict` writes; text i always comes from the same random stream.
        sample_temperatures: the temperatures of the samples logged after every validation epoch.
        sample_seed: seed of the sampling's random streams.
    """

    def __init__(
        self,
        cell: RecurrentCell = "lstm",
        embedding_dim: int = 64,
        hidden: int = 512,
        num_layers: int = 2,
        dropout: float = 0.2,
        lr: float = 2e-3,
        lr_decay: float = 1.0,
        weight_decay: float = 0.0,
        clip_norm: float = 5.0,
        vocab_size: int | None = None,
        prompt: str = "\n",
        temperature: float = 1.0,
        top_k: int | None = None,
        sample_length: int = 500,
        num_samples: int = 1,
        sample_temperatures: list[float] = [0.2, 0.5, 1.0, 1.2],  # noqa: B006 (jsonargparse needs a list default)
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        for name, value in (("embedding_dim", embedding_dim), ("hidden", hidden), ("num_layers", num_layers),
                            ("sample_length", sample_length), ("num_samples", num_samples)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
        if not 0 < lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}.")
        if clip_norm < 0:
            raise ConfigError(f"clip_norm must be 0 (off) or positive, got {clip_norm}.")
        if not prompt:
            raise ConfigError('prompt must hold at least one character (the default is a newline, "\\n").')
        if temperature < 0 or any(t < 0 for t in sample_temperatures):
            raise ConfigError("temperatures must be 0 (the most likely character) or positive, got "
                              f"{[temperature, *sample_temperatures]}.")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be at least 1 (or None for all characters), got {top_k}.")
        self.save_hyperparameters()
        self._state: dict[str, State | None] = {"train": None, "val": None, "test": None}

    def build(self) -> None:
        hp = self.hparams
        self.resolve_vocabulary()
        self.net = CharRNN(hp.vocab_size, hp.embedding_dim, hp.hidden, hp.num_layers, hp.cell, hp.dropout)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.net(x, state)  # (B, T) indices -> (B, T, V) logits, state

    # ---- truncated backpropagation through time ---------------------------------------------------------------
    def step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> tuple[Tensor, int]:
        """Mean next-character cross-entropy (nats) of one chunk, carrying `stage`'s state from the previous chunk."""
        inputs, targets, starts = batch
        state = self._state[stage]
        if state is not None and state[0].shape[1] != inputs.shape[0]:
            state = None  # another number of streams than the carried state's (a resumed run with other data)
        elif state is not None and state[0].device != inputs.device:  # restored from a checkpoint on the CPU
            state = tuple(s.to(inputs.device) for s in state)
        logits, state = self(inputs, reset_rows(state, starts))
        self._state[stage] = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return loss, targets.numel()

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.step(batch, "train")
        if logs_this_step(self.trainer):
            self.log_dict({"train/loss": loss.detach(), "train/bpc": loss.detach() / math.log(2)}, prog_bar=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> None:
        loss, count = self.step(batch, stage)  # each process has its own streams: every character counts once
        self.log_means(stage, {"loss": loss, "bpc": loss / math.log(2)}, weight=count, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        clip = self.hparams.clip_norm if gradient_clip_val is None else gradient_clip_val
        if clip:  # after the precision plugin unscaled the gradients (16-mixed)
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = adam(self, self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, clips_gradients=hp.clip_norm > 0)
        if hp.lr_decay == 1.0:
            return opt
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, hp.lr_decay)}

    # ---- sampling -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, indices: Tensor, temperatures: Tensor, prompt: str | None = None,
                 length: int | None = None) -> list[str]:
        """Text i (prompt included) for each of `indices` (B,), sampled at `temperatures` (B,); text i always comes
        from the random stream `sample_seed + i`, whatever the batch it is made in."""
        hp = self.hparams
        prompt, length = prompt if prompt is not None else hp.prompt, length or hp.sample_length
        was_training = self.net.training
        self.net.eval()
        try:
            rows = indices.tolist()
            uniform = torch.stack([torch.rand(length, generator=torch.Generator().manual_seed(hp.sample_seed + i))
                                   for i in rows])  # (B, length) on the CPU, one stream per text
            start = encode(prompt, self.vocabulary).to(self.device).expand(len(rows), -1)
            logits, state = self(start)
            temperatures = temperatures.to(self.device, torch.float32)
            out = []
            for t in range(length):
                nxt = sample_next(logits[:, -1], temperatures, hp.top_k, uniform[:, t].to(self.device))
                out.append(nxt)
                logits, state = self(nxt.unsqueeze(1), state)
            made = torch.stack(out, 1).cpu()
        finally:
            self.net.train(was_training)
        return [prompt + decode(row, self.vocabulary) for row in made]

    def on_validation_epoch_end(self) -> None:
        """Samples at `sample_temperatures`, to `samples/samples_epochNNNN.txt` and a W&B table `samples`."""
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        temps = torch.tensor(self.hparams.sample_temperatures, dtype=torch.float32)
        texts = self.generate(torch.arange(len(temps)), temps)
        save_and_log_text(self.trainer, "samples", ["temperature", "text"],
                          [[round(float(t), 4), text] for t, text in zip(temps.tolist(), texts)])

    # ---- predict: text from the prompt, no data --------------------------------------------------------------
    def predict_dataloader(self) -> Any:
        return index_loader(self.hparams.num_samples)

    def predict_step(self, batch: Tensor, batch_idx: int) -> dict[str, Any]:
        temps = torch.full((len(batch),), float(self.hparams.temperature))
        return {"index": batch, "text": self.generate(batch, temps)}

    def prediction_writer(self) -> TextWriter:
        hp = self.hparams
        top_k = f", top_k {hp.top_k}" if hp.top_k else ""
        return TextWriter(stem="samples", header=f"(temperature {hp.temperature}{top_k}, seed {hp.sample_seed})")

    # ---- checkpoints: the carried state, so a resumed run continues its streams exactly ---------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self._state["train"]
        trainer = attached_trainer(self)
        if state is not None and (trainer is None or trainer.world_size == 1):  # each process has its own streams
            checkpoint[STATE_KEY] = [s.float().cpu() for s in state]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(STATE_KEY)
        self._state = {"train": tuple(s.to(self.device) for s in saved) if saved else None, "val": None,
                       "test": None}


__all__ = ["CharLSTM", "reset_rows", "sample_next"]
