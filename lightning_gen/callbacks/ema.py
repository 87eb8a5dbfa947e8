"""Exponential moving average of one sub-network's weights, on `torch.optim.swa_utils.AveragedModel`."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from lightning_gen.core.checkpoints import load_checkpoint
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import Generative, NoiseGenerator
from lightning_gen.core.runs import save_and_log_images
from lightning_gen.nn.modes import train_mode


def net_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


class EMA(Callback):
    """Exponential moving average (EMA) of the weights of one network of the technique: the generator of a GAN by
    default, or any other named sub-network (the semi-supervised GAN's `discriminator`, a Classifier's `net`).
    Lightning's `WeightAveraging` averages the whole module (a GAN's discriminator with its generator) and assumes
    automatic optimization; this averages only `attribute`.

    After every training batch: average <- decay * average + (1 - decay) * weights (torch's `AveragedModel` with
    this update). Batch-norm running statistics (`buffers`): `recompute` (for a generator fed noise, DCGAN and CGAN)
    measures them anew for the averaged weights whenever those are used, on `bn_batches` batches of fixed noise run
    through the generator in training mode (what torch's `update_bn` does with a data loader); `average` averages
    them like the weights; `copy` takes the live network's. Statistics averaged or copied belong to other weights
    and can spoil a batch-normalised generator's samples; `recompute` falls back to `average` for a network that is
    not a noise-fed generator. With `use_for_eval`, the averaged weights replace the live ones during validation, test
    and predict (so sample-quality metrics and written images come from the average), and each epoch's grid is also
    drawn with them (`samples_ema`). Checkpoints keep the live weights in the model and the average in this
    callback's state, so a resumed run continues both, and `validate`/`test`/`predict --ckpt_path` use the average.

    Args:
        decay: weight of the running average per update (0.999 averages over about the last 1000 updates).
        attribute: name of the network to average: `generator` (the default), or another, e.g. the semi-supervised
            GAN's `discriminator` (Salimans et al. evaluate with its running average) or a Classifier's `net`.
        start_step: batches after the first during which the average copies the weights instead of averaging them
            (the first batch is always copied, so a data-dependent initialisation in it is not averaged away).
        use_for_eval: use the averaged weights in validation, test, predict and the extra sample grid.
        bias_correction: average as if the EMA had started from zero and was divided by 1 - decay^n (Adam's bias
            correction): the weights after update n are the decay^age-weighted mean of all n weights so far, so a
            long average (decay 0.9999, about 10,000 updates) is usable from the start instead of being held near
            the first weights. Salimans et al.'s SGAN evaluates with such an average.
        buffers: the batch-norm running statistics of the averaged network: `recompute`, `average` or `copy`.
        bn_batches: batches of `bn_batch_size` noise vectors that `recompute` measures the statistics on.
        bn_batch_size: see `bn_batches`.
    """

    def __init__(self, decay: float = 0.999, attribute: str = "generator", start_step: int = 0,
                 use_for_eval: bool = True, bias_correction: bool = False,
                 buffers: Literal["recompute", "average", "copy"] = "recompute", bn_batches: int = 20,
                 bn_batch_size: int = 100) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}.")
        if start_step < 0:
            raise ConfigError(f"EMA start_step must be 0 or more, got {start_step}.")
        self.decay = decay
        self.attribute = attribute
        self.start_step = start_step
        self.use_for_eval = use_for_eval
        self.bias_correction = bias_correction
        self.buffers = buffers
        self.bn_batches, self.bn_batch_size = bn_batches, bn_batch_size
        self.averaged: AveragedModel | None = None
        self.num_updates = 0
        self._pending: dict | None = None  # state to restore once the averaged copy exists
        self._loaded_from: str | None = None  # the checkpoint whose average is loaded (validate/test/predict)
        self._has_average = False  # False when evaluating a checkpoint saved without this callback
        self._live: dict | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(attribute=self.attribute)  # one EMA per network can share a run

    @property
    def legacy_state_key(self) -> str:
        """The state key of release 0.1's `GeneratorEMA`, whose checkpoints this callback also reads."""
        return f"GeneratorEMA{{'attribute': '{self.attribute}'}}"

    def _state_in(self, checkpoint: dict) -> dict | None:
        states = checkpoint.get("callbacks", {})
        return states.get(self.state_key) or states.get(self.legacy_state_key)

    @property
    def ema(self) -> torch.nn.Module | None:
        """The averaged copy of the network (None before the first use)."""
        return self.averaged.module if self.averaged is not None else None

    # ---- the averaged copy --------------------------------------------------------------------------------
    def network(self, pl_module: L.LightningModule) -> torch.nn.Module:
        net = getattr(pl_module, self.attribute, None)
        if not isinstance(net, torch.nn.Module):
            children = [name for name, _ in pl_module.named_children()]
            raise ConfigError(
                f"EMA: {type(pl_module).__name__} has no network `{self.attribute}`; set `attribute` to one of "
                f"{children}."
            )
        return net

    def weight(self, updates_done: int) -> float:
        """The live weights' share in update number `updates_done` (0-based): 1 (a copy) for the first
        `start_step + 1` updates, then 1 - decay (bias-corrected if asked)."""
        averaged = updates_done - self.start_step  # weights already in the average (the copies count as one)
        if averaged <= 0:
            return 1.0
        if self.bias_correction:  # the new weights' share of a zero-started EMA over 1 - decay^(averaged + 1)
            return (1.0 - self.decay) / (1.0 - self.decay ** (averaged + 1))
        return 1.0 - self.decay

    def _average(self, averaged: list[Tensor], current: list[Tensor], _: Any) -> None:
        # AveragedModel groups tensors by dtype: integer buffers (num_batches_tracked) are copied
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, [c.to(averaged[0].dtype) for c in current], self.weight(self.num_updates))
        else:
            torch._foreach_copy_(averaged, current)

    def _ensure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = self.network(pl_module)
        if self.averaged is None:
            self.averaged = AveragedModel(net, multi_avg_fn=self._average, use_buffers=self.buffers != "copy")
            self.averaged.requires_grad_(False)
        if trainer.state.fn == "fit":
            self._has_average = True  # from the checkpoint resumed (restored below) or from the first update
        elif trainer.ckpt_path and str(trainer.ckpt_path) != self._loaded_from:  # evaluating a checkpoint
            self._loaded_from = str(trainer.ckpt_path)
            self._pending = self._state_in(load_checkpoint(trainer.ckpt_path))
            self._has_average = bool(self._pending)
            if not self._has_average:
                rank_zero_warn(f"EMA: {trainer.ckpt_path} holds no average of `{self.attribute}` (it was trained "
                               "without this callback); evaluating with the live weights.")
        if self._pending:
            self._restore(self._pending)
        self._pending = None
        self.averaged.to(pl_module.device)

    def _restore(self, state: dict[str, Any]) -> None:
        if "averaged" in state:
            self.averaged.load_state_dict(state["averaged"])
        else:  # a checkpoint of release 0.1's GeneratorEMA: the averaged network's weights alone
            self.averaged.module.load_state_dict(state["ema"])
            self.averaged.n_averaged.fill_(int(state["num_updates"]))
        self.num_updates = int(state["num_updates"])

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """One step of the running average towards `net`'s current weights."""
        self.averaged.update_parameters(net)  # copies on its first update, then calls `_average`
        self.num_updates += 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._pending:  # strategies that restore checkpoints after `on_fit_start`
            self._ensure(trainer, pl_module)
        self.update(self.network(pl_module))  # after every training batch (`decay` counts batches)

    # ---- evaluation with the averaged weights ----------------------------------------------------------------
    def _swap_in(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.use_for_eval or self._live is not None:
            return
        self._ensure(trainer, pl_module)
        if not self._has_average:
            return
        net = self.network(pl_module)
        self._live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.averaged.module.state_dict())
        if self.buffers == "recompute" and isinstance(pl_module, NoiseGenerator) and self.attribute == "generator":
            self.recompute_statistics(pl_module, net)

    @torch.no_grad()
    def recompute_statistics(self, pl_module: NoiseGenerator, net: torch.nn.Module) -> None:
        """Batch-norm running statistics of `net`'s current weights: reset, then the cumulative mean over
        `bn_batches` batches of fixed noise (indices from 10^6 on, apart from the sample grids'), training mode."""
        norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        with train_mode(net):
            for k in range(self.bn_batches if norms else 0):
                first = 10**6 + k * self.bn_batch_size
                indices = torch.arange(first, first + self.bn_batch_size, device=net_device(net))
                pl_module.generate(*pl_module.generator_inputs(indices))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def _swap_out(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._live is not None:
            self.network(pl_module).load_state_dict(self._live)
            self._live = None

    on_validation_start = on_test_start = on_predict_start = _swap_in
    on_validation_end = on_test_end = on_predict_end = _swap_out

    def on_exception(self, trainer, pl_module, exception):
        self._swap_out(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.use_for_eval and self.attribute == "generator" and isinstance(pl_module, Generative)
                and trainer.is_global_zero):
            return
        self._swap_in(trainer, pl_module)
        try:
            save_and_log_images(trainer, "samples_ema", *pl_module.sample_grid())
        finally:
            self._swap_out(trainer, pl_module)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.averaged is None:
            return {}
        return {"averaged": {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()},
                "num_updates": self.num_updates, "attribute": self.attribute}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._pending = state_dict

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._pending is None:  # a resumed fit from a checkpoint of release 0.1 (its GeneratorEMA's key)
            self._pending = checkpoint.get("callbacks", {}).get(self.legacy_state_key) or None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._live is not None:  # saved while the averaged weights are swapped in: the model keeps its live ones
            prefix = f"{self.attribute}."
            for key, value in self._live.items():
                checkpoint["state_dict"][prefix + key] = value.clone()


class GeneratorEMA(EMA):
    """Deprecated name of `EMA` (release 0.1; it averages any named network, not only generators). Same options,
    and the same checkpoint state key as before, so runs saved with it resume."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("lightning_gen.callbacks.GeneratorEMA is renamed EMA; the old name goes in the next release.",
                      DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
