"""Normalisation layers as a choice: one factory that every network which normalises builds its layers with.

`norm` is one of

- `batch` (Ioffe & Szegedy 2015): each channel normalised over the batch (and the pixels). In training mode with the
  batch's own statistics, so an image's output depends on the other images of its batch; in eval mode with running
  averages gathered during training. Noisy statistics at small batches (Wu & He 2018).
- `layer` (Ba, Kiros & Hinton 2016): each image normalised over all its channels and pixels (`GroupNorm(1, C)`, with
  a scale and shift per channel, as Wu & He compare it).
- `instance` (Ulyanov, Vedaldi & Lempitsky 2016): each channel of each image normalised over its own pixels
  (`InstanceNorm`, no running statistics: the same in training and eval mode).
- `group` (Wu & He 2018): each image's channels split into groups, each group normalised over its channels and
  pixels; `groups` (32 in the paper) or, when it does not divide the channels, the largest number that does below it.
- `none`: the identity.

Only `batch` mixes the images of a batch; the other four treat every image alone, the same in `train()` and `eval()`.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from lightning_gen.core.checks import ConfigError

Norm = Literal["batch", "layer", "instance", "group", "none"]
NORMS: tuple[str, ...] = get_args(Norm)
# the layer types `make_norm` returns (scale and shift in `weight` and `bias` when affine)
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                                           nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)


def group_count(channels: int, groups: int = 32) -> int:
    """The number of groups of a group norm over `channels`: the largest divisor of `channels` not above `groups`
    (32 channels, 32 -> 32; 48 -> 24; 20 -> 20; 64 with groups 16 -> 16)."""
    if channels < 1 or groups < 1:
        raise ConfigError(f"group norm needs channels >= 1 and groups >= 1; got {channels} and {groups}.")
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


def make_norm(kind: Norm, channels: int, *, dims: Literal[1, 2] = 2, affine: bool = True, groups: int = 32,
              eps: float = 1e-5) -> nn.Module:
    """A normalisation layer of `kind` (see the module docstring) for `channels` channels.

    Args:
        kind: `batch`, `layer`, `instance`, `group` or `none`.
        channels: channels of its input (C of `(B, C, H, W)`, or the features of `(B, C)` / `(B, C, L)`).
        dims: 2 for image maps `(B, C, H, W)`; 1 for vectors `(B, C)` or sequences `(B, C, L)`.
        affine: a learned scale and shift per channel after normalising.
        groups: the group norm's number of groups (at most; see `group_count`).
        eps: added to the variance.
    """
    if kind not in NORMS:
        raise ConfigError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}.")
    if dims not in (1, 2):
        raise ConfigError(f"norm dims must be 1 (vectors, sequences) or 2 (image maps), got {dims!r}.")
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=eps, affine=affine)
    if kind == "instance":
        if dims == 1:  # a (B, C) vector has no positions (and InstanceNorm1d would read it as one C x L sequence)
            raise ConfigError("instance norm normalises each channel over its pixels, and this layer's inputs are "
                              "vectors without any: choose batch, layer, group or none for it.")
        return nn.InstanceNorm2d(channels, eps=eps, affine=affine, track_running_stats=False)
    return nn.GroupNorm(1 if kind == "layer" else group_count(channels, groups), channels, eps=eps, affine=affine)


def batch_dependent(net: nn.Module) -> bool:
    """Whether `net`'s output for an image, in its current mode, depends on the other images of its batch: it has a
    batch norm that normalises with the batch's statistics (training mode, or one without running statistics)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats)
               for m in net.modules())


__all__ = ["NORMS", "NORM_TYPES", "Norm", "batch_dependent", "group_count", "make_norm"]
