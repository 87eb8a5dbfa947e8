"""CPU speed settings shared by the GANs."""

from __future__ import annotations

import torch


class FlushDenormals:
    """Mixin for a LightningModule with a `flush_denormal` hyperparameter: on CPU, flush denormal floats to zero
    while fitting. A saturating discriminator produces them and they slow CPU kernels down several-fold; the
    results are unchanged. Subclasses that override `on_fit_start`/`on_fit_end` call `super()`."""

    _flushing_denormals: bool = False

    def on_fit_start(self) -> None:
        if self.hparams.flush_denormal and self.device.type == "cpu":
            self._flushing_denormals = torch.set_flush_denormal(True)

    def on_fit_end(self) -> None:
        if self._flushing_denormals:
            torch.set_flush_denormal(False)
            self._flushing_denormals = False
