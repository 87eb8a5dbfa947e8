"""ImageNet networks as trainable classifier backbones (transfer learning): the classifier's `backbone:` option.

`BackboneNet` has the interface of `ClassifierNet` (`features(x)` -> `(B, F)`, `head` -> logits) so that the
`Classifier`, its checkpoint loader and the explanations treat both alike:

    images in [-1, 1] -> ImageNetInput (grey -> RGB, resize to `input_size`, the network's own input scaling)
                      -> body (the ImageNet network without its classifier) -> (B, F, h, w) feature map
                      -> global average pooling -> (B, F) -> head: dropout, linear -> (B, num_outputs)

Every backbone ends in global average pooling then one linear layer, so class activation maps (CAM) apply to all
of them (for VGG16 this is the GAP variant of Zhou et al. 2016: the convolutional layers up to `conv5_3`, then GAP,
instead of VGG's three fully connected layers).

Backbones and their ImageNet weights (`weights:`): `vgg16`, `resnet18`, `mobilenet_v3_large` read torchvision's
files (`imagenet`: downloaded to the torch hub cache on a machine with internet, or a path to the file);
`mobilenet_v1` is the Keras MobileNet v1 (alpha 0.25) of `lightning_gen.nn.features`, read from its HDF5 file
(offline: `$LIGHTNING_GEN_DATA/weights/mobilenet_2_5_224_tf_no_top.h5`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.core.checks import ConfigError
from lightning_gen.nn.features import (
    how_to_get,
    mobilenet_v1_layers,
    read_keras_mobilenet,
    resolve_weights,
    vgg_layer_names,
)

BackboneName = Literal["vgg16", "resnet18", "mobilenet_v3_large", "mobilenet_v1"]
BACKBONES: tuple[str, ...] = ("vgg16", "resnet18", "mobilenet_v3_large", "mobilenet_v1")
# the side the ImageNet weights were trained at: images are resized to it unless `input_size` says otherwise
NATIVE_SIZE = 224


class ImageNetInput(nn.Module):
    """`(B, C, H, W)` images in [-1, 1] -> `(B, 3, S, S)` in the backbone's ImageNet input scaling: grey images
    repeated to RGB, resized (bilinear) to `size` when given, then `(x - mean) / std`."""

    def __init__(self, size: int | None, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _imagenet_scaling(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) that map [-1, 1] pixels to the network's input: torchvision's ImageNet statistics on [0, 1]
    pixels rewritten for [-1, 1] ((x + 1) / 2 - m) / s = (x - (2m - 1)) / 2s; Keras MobileNet takes [-1, 1] as is."""
    if name == "mobilenet_v1":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(2 * m - 1 for m in mean), tuple(2 * s for s in std)


def _no_inplace(net: nn.Module) -> nn.Module:
    """Turn off in-place activations: a layer's output that an explanation keeps must not be overwritten."""
    for module in net.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return net


def _torchvision_state(path, name: str) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"cannot read weights file {path} as a PyTorch state dict ({err}). {how_to_get(name)}") \
            from None


def build_body(name: str, weights: str | None) -> tuple[nn.Sequential, int]:
    """The ImageNet network `name` without its classifier, as a `Sequential` of named layers ending in its last
    feature map, and that map's number of channels. `weights`: a file, `imagenet` (torch hub cache, downloaded if
    missing), `random` (PyTorch's initialisation: the same network trained from scratch) or None (the same, when the
    weights will come from a checkpoint)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    path = resolve_weights(weights, name) if weights not in (None, "random") else None
    if name == "mobilenet_v1":
        layers = mobilenet_v1_layers()
        plain = nn.ModuleDict(layers)
        if path is not None:
            state = read_keras_mobilenet(path, plain)
            for key in plain.state_dict():
                if key.endswith("num_batches_tracked"):
                    state.setdefault(key, plain.state_dict()[key])
            plain.load_state_dict(state)
        body = nn.Sequential(OrderedDict((f"{key}_relu", block) for key, block in plain.items()))
        return body, int(1024 * 0.25)
    import torchvision.models as tvm

    full = getattr(tvm, name)(weights=None)
    if path is not None:
        state = _torchvision_state(path, name)
        try:
            full.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ConfigError(f"weights file {path} does not fit {name} ({first}): it holds another architecture. "
                              f"{how_to_get(name)}") from None
    if name == "vgg16":
        names = vgg_layer_names("vgg16")[:-1]  # up to relu5_3: the CAM paper's VGG drops pool5 and the FC layers
        body = nn.Sequential(OrderedDict(zip(names, list(full.features)[: len(names)])))
        channels = 512
    elif name == "resnet18":
        keep = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        body = nn.Sequential(OrderedDict((key, getattr(full, key)) for key in keep))
        channels = 512
    else:  # mobilenet_v3_large: its 17 feature blocks, named block0 .. block16
        body = nn.Sequential(OrderedDict((f"block{i}", block) for i, block in enumerate(full.features)))
        channels = 960
    return _no_inplace(body), channels


class BackboneNet(nn.Module):
    """An ImageNet network with a new head: `(B, C, H, W)` images in [-1, 1] -> `(B, num_outputs)` logits;
    `features(x)` is the `(B, F)` pooled feature vector. See the module docstring.

    Args:
        image_shape: `(channels, height, width)` of the input images (grey images are repeated to RGB).
        num_outputs: number of logits.
        backbone: `vgg16`, `resnet18`, `mobilenet_v3_large` or `mobilenet_v1`.
        weights: ImageNet weights: a file, `imagenet` (torch hub cache) or None (random; for loading a checkpoint).
        input_size: resize images to this square side before the network (None: keep the data's size).
        dropout: dropout before the head's linear layer.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_outputs: int, backbone: BackboneName,
                 weights: str | None = "imagenet", input_size: int | None = NATIVE_SIZE, dropout: float = 0.2) -> None:
        super().__init__()
        body, channels = build_body(backbone, weights)
        self.features = nn.Sequential(OrderedDict(
            input=ImageNetInput(input_size, *_imagenet_scaling(backbone)), body=body,
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        ))
        self.head = nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout), linear=nn.Linear(channels, num_outputs)))
        self.image_shape, self.num_outputs, self.num_features = tuple(image_shape), num_outputs, channels
        self.arch = backbone

    cam_layer = "features.body"
    """The layer whose `(B, F, h, w)` output global average pooling reduces: the layer CAM reads."""

    @property
    def last_linear(self) -> nn.Linear:
        return self.head.linear

    def initialise(self, x: Tensor) -> None:
        """Nothing to do: the body starts from ImageNet weights, the head from PyTorch's default."""

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(x)
        return self.head(features), features
