"""Image classifier networks, shared by the supervised `Classifier`, the semi-supervised GAN's discriminator
and the sample-quality metric's feature network (so "the same network" means the same code).

Every network is `features` (images -> a `(B, F)` feature vector) then `head` (a linear layer to the logits).
By default none uses batch normalisation: a semi-supervised discriminator sees labeled, unlabeled and generated batches
whose statistics differ, and batch statistics would let it tell them apart by the company an image keeps
(and would make evaluation depend on the batch). Regularisation is Gaussian noise and dropout, active only in
training mode.

- `mlp`: Salimans et al. (2016)'s MNIST discriminator: 1000-500-250-250-250 ReLU units, weight-normalised
  linear layers with data-dependent initialisation (the hidden layers' scales then stay fixed), Gaussian noise on
  the input (std 0.3, pixels in [0, 1]) and on every hidden layer (std 0.5).
- `cnn`: a small all-convolutional network for 28x28 and 32x32 images (any size works): 3x3 convolutions with
  LeakyReLU(0.2), two stride-2 downsamplings, dropout, global average pooling to 128 features. `norm` adds a
  normalisation after each convolution (`lightning_gen.nn.norm`; `none` by default, for the reason above: the
  supervised `Classifier` may choose one, the semi-supervised discriminator keeps none).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from lightning_gen.core.checkpoints import load_checkpoint
from lightning_gen.core.checks import ConfigError
from lightning_gen.nn.modes import train_mode
from lightning_gen.nn.norm import Norm, make_norm

ClassifierArch = Literal["cnn", "mlp"]


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.std > 0:
            return x + self.std * torch.randn_like(x)
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


def _weight_normed_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """A weight-normalised linear layer whose direction vectors start as N(0, 0.1) entries, as Salimans et al.'s.
    The size of the direction vectors sets Adam's effective step on the direction: PyTorch's default init makes them
    about 5 times shorter, and training noisier."""
    linear = nn.Linear(fan_in, fan_out)
    nn.init.normal_(linear.weight, 0.0, 0.1)
    nn.init.zeros_(linear.bias)
    return weight_norm(linear)


class ToUnitRange(nn.Module):
    """[-1, 1] -> [0, 1], so the `mlp` network's input noise (std 0.3) is relative to the pixel range that
    Salimans et al. used."""

    def forward(self, x: Tensor) -> Tensor:
        return x.add(1.0).mul(0.5)


def _mlp_features(image_shape: tuple[int, int, int], noise: bool) -> tuple[nn.Sequential, int]:
    widths = [math.prod(image_shape), 1000, 500, 250, 250, 250]
    layers: list[nn.Module] = [nn.Flatten(), ToUnitRange()]  # (B, C, H, W) in [-1, 1] -> (B, C*H*W) in [0, 1]
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        linear = _weight_normed_linear(fan_in, fan_out)
        # hidden layers keep the scale the data-dependent initialisation gives them (Salimans et al. train only the
        # last layer's): otherwise the network can grow its activations until the fixed-size noise no longer matters
        linear.parametrizations.weight.original0.requires_grad_(False)
        layers += [GaussianNoise((0.5 if len(layers) > 2 else 0.3) if noise else 0.0), linear, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), widths[-1]  # the head adds the last noise layer


@torch.no_grad()
def data_dependent_init(net: ClassifierNet, x: Tensor) -> None:
    """Salimans & Kingma (2016)'s initialisation of weight-normalised layers: run `x` through `net`'s layers
    in order and set each weight-normalised linear layer's scale and bias so that its outputs on `x` have mean 0
    and standard deviation 1 per unit. Without it, the default initialisation shrinks the activations layer by
    layer and the fixed-size Gaussian noise of the `mlp` network drowns them.

    The Gaussian noise is on while measuring, as in Salimans et al.'s code (which initialises in training mode):
    each layer's noisy output is standardised, so the noise keeps its share of each unit's variance, and since
    the hidden layers' scales then stay fixed, it keeps that share for the whole run (measured without the noise,
    the signal would start larger relative to the noise: a weaker regulariser)."""
    def leaves(module: nn.Module):  # layers in the order `forward` applies them
        if isinstance(module, nn.Sequential):
            for child in module:
                yield from leaves(child)
        else:
            yield module

    modules = [*leaves(net.features), *leaves(net.head)]
    h = x
    with train_mode(net):
        for m in modules:
            if isinstance(m, nn.Linear) and parametrize.is_parametrized(m, "weight"):
                out = m(h)
                mean, std = out.mean(0), out.std(0).clamp_min(1e-6)
                m.parametrizations.weight.original0.div_(std.view(-1, 1))  # the scale g, one per output unit
                m.bias.copy_((m.bias - mean) / std)
            h = m(h)


def _cnn_features(image_shape: tuple[int, int, int], dropout: float, norm: Norm = "none") -> tuple[nn.Sequential, int]:
    channels = image_shape[0]

    def conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:  # no layer at all for `none`: old keys
        normalise = [] if norm == "none" else [make_norm(norm, c_out)]
        return [nn.Conv2d(c_in, c_out, 3, stride, 1), *normalise, nn.LeakyReLU(0.2, inplace=True)]

    layers = [
        *conv(channels, 32), *conv(32, 32, 2), nn.Dropout(dropout),  # (B, C, H, W) -> (B, 32, H/2, W/2)
        *conv(32, 64), *conv(64, 64, 2), nn.Dropout(dropout),  # -> (B, 64, H/4, W/4)
        *conv(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # -> (B, 128)
    ]
    return nn.Sequential(*layers), 128


class ClassifierNet(nn.Module):
    """`(B, C, H, W)` images in [-1, 1] -> `(B, num_outputs)` logits; `features(x)` gives the `(B, F)` vector
    before the last linear layer.

    Args:
        image_shape: `(channels, height, width)` of the input images.
        num_outputs: number of logits (N classes, or N + 1 for a semi-supervised discriminator).
        arch: `cnn` or `mlp` (see the module docstring).
        noise: the regularisers (Gaussian noise of `mlp`, dropout of `cnn`) on or off.
        norm: the `cnn`'s normalisation after each convolution (`none`: as the semi-supervised discriminator).
    """

    def __init__(
        self, image_shape: tuple[int, int, int], num_outputs: int, arch: ClassifierArch = "cnn", noise: bool = True,
        norm: Norm = "none",
    ) -> None:
        super().__init__()
        if norm != "none" and arch != "cnn":
            raise ConfigError(f"norm={norm!r} applies to the cnn network; the {arch} network has none (Salimans et "
                              "al.'s weight normalisation instead). Use arch cnn or norm none.")
        if arch == "mlp":
            self.features, self.num_features = _mlp_features(tuple(image_shape), noise)
            self.head = nn.Sequential(GaussianNoise(0.5 if noise else 0.0),
                                      _weight_normed_linear(self.num_features, num_outputs))
        elif arch == "cnn":
            self.features, self.num_features = _cnn_features(tuple(image_shape), 0.3 if noise else 0.0, norm)
            self.head = nn.Linear(self.num_features, num_outputs)
        else:
            raise ValueError(f"unknown classifier arch {arch!r}; choose cnn or mlp")
        self.image_shape = tuple(image_shape)
        self.num_outputs = num_outputs
        self.arch = arch
        # the layer whose (B, 128, h, w) output global average pooling reduces (CAM reads it); the mlp has none
        self.cam_layer = f"features.{len(self.features) - 3}" if arch == "cnn" else None

    @property
    def last_linear(self) -> nn.Linear:
        """The linear layer that turns the features into logits."""
        return self.head if isinstance(self.head, nn.Linear) else self.head[-1]

    def initialise(self, x: Tensor) -> None:
        """Data-dependent initialisation from a batch `x` (for `mlp`; the `cnn` needs none). Call before the first
        optimizer step; under DDP average the parameters afterwards."""
        if self.arch == "mlp":
            data_dependent_init(self, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, F) -> (B, num_outputs)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the features they come from, in one pass: `(B, num_outputs)`, `(B, F)`."""
        features = self.features(x)
        return self.head(features), features


# ---- a trained classifier's network, read from its checkpoint ------------------------------------------------
def classifier_checkpoint(path: str) -> dict[str, Any]:
    """The contents of a `lightning_gen.Classifier` checkpoint (tensors on the CPU), after checking that it is one.
    Raises `ConfigError` naming the fix when the file is missing or holds no classifier network."""
    if not Path(path).is_file():
        raise ConfigError(
            f"classifier checkpoint {path} does not exist. Train one first (for MNIST: "
            "`lightning-gen fit --config configs/classifier/mnist.yaml`) and give the path to its .ckpt file."
        )
    ckpt = load_checkpoint(path)
    hparams = ckpt.get("hyper_parameters", {})
    if "arch" not in hparams or not any(k.startswith("net.") for k in ckpt.get("state_dict", {})):
        raise ConfigError(f"{path} is not a lightning_gen Classifier checkpoint (no classifier network in it).")
    return ckpt


def classifier_net(hp: dict[str, Any], num_outputs: int | None = None) -> nn.Module:
    """The untrained network a Classifier's hyperparameters describe: a `ClassifierNet` (`arch`, `noise`) or, with
    `backbone`, a `BackboneNet` without its ImageNet weights (they come from the checkpoint)."""
    shape, outputs = tuple(hp["image_shape"]), int(num_outputs or hp["num_classes"])
    if hp.get("backbone"):
        from lightning_gen.nn.backbones import BackboneNet

        return BackboneNet(shape, outputs, hp["backbone"], None, hp.get("input_size"), hp.get("dropout", 0.2))
    return ClassifierNet(shape, outputs, hp["arch"], hp.get("noise", True), hp.get("norm", "none"))


def classifier_net_from_checkpoint(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a Classifier checkpoint (`ClassifierNet` or `BackboneNet`), rebuilt from the hyperparameters it
    saved, frozen and in eval mode, on the CPU; and those hyperparameters."""
    ckpt = classifier_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    net = classifier_net(hp)
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.eval().requires_grad_(False), dict(hp)


def explained_network(path: str) -> tuple[nn.Module, int, tuple[int, int, int], str]:
    """The network an explanation explains, from a checkpoint: a `Classifier`'s network, or an `SGAN`'s
    discriminator (whose first N logits are the real classes). Returns `(network, N, image shape, technique name)`;
    the network is frozen, in eval mode, on the CPU, and its first N outputs are the class logits. Raises
    `ConfigError` naming the fix for any other file."""
    if not Path(path).is_file():
        raise ConfigError(f"classifier checkpoint {path} does not exist. Train a classifier first (e.g. "
                          "`lightning-gen fit --config configs/classifier/mnist.yaml`) and give its .ckpt file.")
    ckpt = load_checkpoint(path)
    hp, state = ckpt.get("hyper_parameters") or {}, ckpt.get("state_dict") or {}
    technique = str(hp.get("_class_path", "")).rsplit(".", 1)[-1]
    if "arch" in hp and "image_shape" in hp and any(k.startswith("net.") for k in state) and technique != "SGAN":
        net, prefix, classes = classifier_net(hp), "net.", int(hp["num_classes"])
        technique = technique or "Classifier"
    elif technique == "SGAN" and any(k.startswith("discriminator.") for k in state):
        classes = int(hp["num_classes"])
        extra = 1 if hp.get("fake_logit") == "learned" else 0
        net, prefix = ClassifierNet(tuple(hp["image_shape"]), classes + extra, hp["arch"]), "discriminator."
    else:
        raise ConfigError(
            f"{path} is a {technique or 'non-lightning_gen'} checkpoint, not a classifier: explanations need a "
            "Classifier checkpoint (`configs/classifier/`) or an SGAN's (its discriminator's real-class logits)."
        )
    net.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
    return net.eval().requires_grad_(False), classes, tuple(int(v) for v in hp["image_shape"]), technique


__all__ = [
    "ClassifierArch",
    "ClassifierNet",
    "GaussianNoise",
    "classifier_checkpoint",
    "classifier_net",
    "classifier_net_from_checkpoint",
    "data_dependent_init",
    "explained_network",
]
