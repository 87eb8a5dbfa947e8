"""How networks run outside their training step: eval mode, training mode, and pix2pix's test-time mode. Each
context manager restores every submodule's own mode afterwards (a frozen feature network stays in eval mode)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def network_mode(*nets: nn.Module, training: bool) -> Iterator[None]:
    """Run `nets` in training or eval mode and restore each one's own mode afterwards."""
    modes = [(m, m.training) for net in nets for m in net.modules()]  # each submodule's own mode (frozen parts)
    for net in nets:
        net.train(training)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def eval_mode(*nets: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Run `nets` in eval mode (dropout off, batch norm with its running statistics), then restore their modes."""
    return network_mode(*nets, training=False)


def train_mode(*nets: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Run `nets` in training mode (dropout and noise on), then restore their modes."""
    return network_mode(*nets, training=True)


@contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """Run `net` as in training (dropout on, batch norm normalising with the batch's own statistics) without
    changing its running statistics (pix2pix's test-time mode)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        with train_mode(net):
            yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
