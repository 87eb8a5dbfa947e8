"""Frozen ImageNet feature networks that return named activations, and the perceptual loss on them: the perceptual
side of style transfer, fast style transfer, DeepDream and SRGAN's perceptual loss.

Backbones:

- `vgg16`, `vgg19`: torchvision's VGG with its ImageNet weights; layers `conv1_1`, `relu1_1`, ..., `pool5`.
- `mobilenet_v1`: MobileNet v1 with width 0.25 (218,544 weights), ported from the Keras-applications file
  `mobilenet_2_5_224_tf_no_top.h5` (read with h5py). Layers carry their Keras names: `conv1_relu`,
  `conv_dw_1_relu`, `conv_pw_1_relu`, ..., `conv_pw_13_relu`. Convolutions pad as TensorFlow's `SAME` does (the
  extra row and column go after the image), as the weights were trained.

Images come in as the project's `(B, 3, H, W)` tensors in [-1, 1]; the network's own ImageNet input scaling
happens inside (VGG: ImageNet mean and std on [0, 1] pixels; MobileNet: [-1, 1] as it is). The network is
frozen: no gradients to its weights, batch norm with its stored statistics, whatever `train()` says.

`weights` is a file path (`$VARS` and `~` expanded), `imagenet` (the file in the torch hub cache, downloaded
there on a machine with internet) or `random` (for unit tests only: random features are not a perceptual
measure).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.core.checks import ConfigError
from lightning_gen.losses import content_loss, gram_matrix, style_loss, total_variation

Backbone = Literal["vgg16", "vgg19", "mobilenet_v1"]

# The Keras-applications MobileNet v1 (alpha 0.25, 224 px, no classifier), as `keras.applications.MobileNet` fetches it.
MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/" + MOBILENET_FILE
MOBILENET_ALPHA = 0.25
# (stride of the depthwise convolution, output channels at width 1.0) of blocks 1..13
MOBILENET_BLOCKS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]
VGG_BLOCKS = {"vgg16": [2, 2, 3, 3, 3], "vgg19": [2, 2, 4, 4, 4]}

# Layers the techniques use unless told otherwise: Gatys et al.'s for VGG; for MobileNet, one pointwise layer per
# resolution from 1/2 to 1/16 for style (conv1_relu, at full detail, made speckled images), 1/8 for content.
DEFAULT_CONTENT_LAYERS = {"vgg16": ["relu3_3"], "vgg19": ["relu4_2"], "mobilenet_v1": ["conv_pw_5_relu"]}
DEFAULT_STYLE_LAYERS = {
    "vgg16": ["relu1_2", "relu2_2", "relu3_3", "relu4_3"],
    "vgg19": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
    "mobilenet_v1": ["conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_7_relu", "conv_pw_11_relu"],
}


def vgg_layer_names(backbone: str) -> list[str]:
    """Names of torchvision's `vgg.features` children in order: conv1_1, relu1_1, conv1_2, relu1_2, pool1, ..."""
    names = []
    for block, convs in enumerate(VGG_BLOCKS[backbone], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def mobilenet_layer_names() -> list[str]:
    return ["conv1_relu"] + [f"conv_{kind}_{i}_relu" for i in range(1, 14) for kind in ("dw", "pw")]


def layer_names(backbone: str) -> list[str]:
    """Every layer `FeatureNet(backbone)` can return, in the order the image passes them."""
    if backbone in VGG_BLOCKS:
        return vgg_layer_names(backbone)
    if backbone == "mobilenet_v1":
        return mobilenet_layer_names()
    raise ConfigError(f"unknown feature network {backbone!r}; choose one of vgg16, vgg19, mobilenet_v1.")


def check_layers(backbone: str, layers: Sequence[str], what: str = "layers") -> list[str]:
    """Raise `ConfigError` listing the valid names unless every name in `layers` is a layer of `backbone`."""
    valid = layer_names(backbone)
    unknown = [name for name in layers if name not in valid]
    if unknown:
        raise ConfigError(f"{what} {unknown} are not layers of {backbone}. Its layers are: {', '.join(valid)}.")
    if not layers:
        raise ConfigError(f"{what} is empty: name at least one layer of {backbone}.")
    return list(layers)


def tf_same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Zero-pad `x` as TensorFlow's `padding='SAME'` does: output side ceil(side / stride), odd padding extra at
    the bottom and right."""
    pads = []
    for side in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(side / stride) - 1) * stride + kernel - side, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class ConvBNReLU6(nn.Module):
    """Keras MobileNet's Conv2D (no bias, SAME padding) -> BatchNormalization (eps 1e-3) -> ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, depthwise: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        groups = in_channels if depthwise else 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(self.bn(self.conv(tf_same_pad(x, self.kernel, self.stride))))


def mobilenet_v1_layers(alpha: float = MOBILENET_ALPHA) -> dict[str, nn.Module]:
    """MobileNet v1's feature layers (no classifier) keyed by their Keras names (without `_relu`)."""
    first = int(32 * alpha)
    layers: dict[str, nn.Module] = {"conv1": ConvBNReLU6(3, first, 3, 2)}
    channels = first
    for i, (stride, width) in enumerate(MOBILENET_BLOCKS, start=1):
        out = int(width * alpha)
        layers[f"conv_dw_{i}"] = ConvBNReLU6(channels, channels, 3, stride, depthwise=True)
        layers[f"conv_pw_{i}"] = ConvBNReLU6(channels, out, 1, 1)
        channels = out
    return layers


def read_keras_mobilenet(path: Path, net: nn.ModuleDict) -> dict[str, Tensor]:
    """The state dict of `net` (from `mobilenet_v1_layers`) read from a Keras MobileNet v1 HDF5 weights file.
    Keras kernels are (kh, kw, in, out) and depthwise kernels (kh, kw, in, 1); PyTorch wants (out, in, kh, kw)."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise ConfigError("reading the Keras MobileNet weights needs h5py: `pip install h5py`.") from None
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise ConfigError(f"weights file {path} is not an HDF5 file ({err}); the mobilenet_v1 backbone reads the "
                          f"Keras-applications file {MOBILENET_FILE}.") from None
    state: dict[str, Tensor] = {}
    with file:
        for name, block in net.items():
            if name not in file or name + "_bn" not in file:
                raise ConfigError(f"weights file {path} has no layer {name!r}: it is not a Keras MobileNet v1 file. "
                                  f"The mobilenet_v1 backbone reads {MOBILENET_FILE}.")
            kernel_key = "depthwise_kernel" if name.startswith("conv_dw") else "kernel"
            found = {}

            def collect(key: str, obj: object, found: dict = found) -> None:  # `conv1/kernel:0` -> found["kernel"]
                if isinstance(obj, h5py.Dataset):
                    found[key.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

            for group in (file[name], file[name + "_bn"]):
                group.visititems(collect)
            if not {"gamma", "beta", "moving_mean", "moving_variance", kernel_key} <= set(found):
                raise ConfigError(f"weights file {path}: layer {name} lacks some of its weights ({sorted(found)}); "
                                  f"it is not a Keras MobileNet v1 file. Use {MOBILENET_FILE}.")
            kernel = torch.from_numpy(found[kernel_key])
            kernel = kernel.permute(2, 3, 0, 1) if kernel_key == "depthwise_kernel" else kernel.permute(3, 2, 0, 1)
            values = {"conv.weight": kernel, "bn.weight": found["gamma"], "bn.bias": found["beta"],
                      "bn.running_mean": found["moving_mean"], "bn.running_var": found["moving_variance"]}
            for key, value in values.items():
                value = torch.as_tensor(value).float().contiguous()
                expected = block.state_dict()[key].shape
                if value.shape != expected:
                    raise ConfigError(
                        f"weights file {path}: layer {name} has {key} of shape {tuple(value.shape)}, but MobileNet v1 "
                        f"with width {MOBILENET_ALPHA} needs {tuple(expected)}. Use {MOBILENET_FILE} (alpha 0.25)."
                    )
                state[f"{name}.{key}"] = value
    return state


def resolve_weights(weights: str, backbone: str) -> Path:
    """The weights file for `weights` (a path, or `imagenet` = the torch hub cache, downloading it if missing)."""
    if weights != "imagenet":
        path = Path(os.path.expanduser(os.path.expandvars(weights)))
        if "$" in str(path):
            raise ConfigError(f"weights path {weights!r} uses an environment variable that is not set; export it "
                              "(e.g. `export LIGHTNING_GEN_DATA=/path/to/datasets`) or give the path itself.")
        if not path.is_file():
            raise ConfigError(f"weights file {path} does not exist. {how_to_get(backbone)}")
        return path
    url = imagenet_url(backbone)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as err:  # no internet, proxy, disk: all end the same way
            raise ConfigError(f"could not download the {backbone} ImageNet weights from {url} ({err}). "
                              f"{how_to_get(backbone)}") from None
    return path


def imagenet_url(backbone: str) -> str:
    if backbone == "mobilenet_v1":
        return MOBILENET_URL
    import torchvision.models as tvm

    enums = {"vgg16": tvm.VGG16_Weights, "vgg19": tvm.VGG19_Weights, "resnet18": tvm.ResNet18_Weights,
             "mobilenet_v3_large": tvm.MobileNet_V3_Large_Weights}
    return enums[backbone].IMAGENET1K_V1.url


def how_to_get(backbone: str) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if backbone == "mobilenet_v1":
        return (f"Give the path of the Keras file {MOBILENET_FILE} (offline: $LIGHTNING_GEN_DATA/weights/"
                f"{MOBILENET_FILE}), or use `weights: imagenet` on a machine with internet (saved to {cache}).")
    return (f"Use `weights: imagenet` on a machine with internet (torchvision saves the file to {cache}), copy "
            f"{Path(imagenet_url(backbone)).name} there from such a machine, or give the file's path.")


class FeatureNet(nn.Module):
    """A frozen ImageNet feature network; `net(images, layers)` returns `{layer name: (B, C, h, w) activation}`,
    running the network only as deep as the deepest requested layer.

    Args:
        backbone: `vgg16`, `vgg19` or `mobilenet_v1` (alpha 0.25, the ImageNet network available offline).
        weights: a weights file, `imagenet` (torch hub cache, downloaded there if missing), or `random`.
    """

    def __init__(self, backbone: Backbone = "mobilenet_v1", weights: str = "imagenet") -> None:
        super().__init__()
        self.backbone = backbone
        self.names = layer_names(backbone)
        if backbone == "mobilenet_v1":
            blocks = mobilenet_v1_layers()
            self.stages = nn.ModuleDict({name + "_relu": block for name, block in blocks.items()})
            self.register_buffer("mean", torch.zeros(1, 3, 1, 1), persistent=False)  # Keras 'tf' mode: [-1, 1]
            self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        else:
            from torchvision.models import vgg16, vgg19

            features = (vgg16 if backbone == "vgg16" else vgg19)(weights=None).features
            for module in features:
                if isinstance(module, nn.ReLU):
                    module.inplace = False  # a returned conv output must not be overwritten
            self.stages = nn.ModuleDict(dict(zip(self.names, features)))
            # ImageNet statistics on [0, 1] pixels, rewritten for [-1, 1] input: (x + 1) / 2 - m) / s
            mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
            self.register_buffer("mean", (2 * mean - 1).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", (2 * std).view(1, 3, 1, 1), persistent=False)
        self.weights = weights
        if weights == "random":
            for module in self.modules():  # He init keeps activations at scale through every layer
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        else:
            self.load_pretrained(resolve_weights(weights, backbone))
        self.requires_grad_(False)
        super().train(False)

    def load_pretrained(self, path: Path) -> None:
        if self.backbone == "mobilenet_v1":
            plain = nn.ModuleDict({name.removesuffix("_relu"): block for name, block in self.stages.items()})
            state = read_keras_mobilenet(path, plain)
            state = {key.replace(".", "_relu.", 1): value for key, value in state.items()}
        else:
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise ConfigError(f"cannot read weights file {path} as a PyTorch state dict ({err}). "
                                  f"{how_to_get(self.backbone)}") from None
            index_to_name = dict(enumerate(self.names))
            state = {}
            for key, value in raw.items():
                parts = key.removeprefix("features.").split(".")
                if key.startswith("features.") and parts[0].isdigit() and int(parts[0]) in index_to_name:
                    state[f"{index_to_name[int(parts[0])]}.{parts[1]}"] = value
        own = self.stages.state_dict()
        for key in own:
            if key.endswith("num_batches_tracked"):  # not in Keras files; unused by a frozen network
                state.setdefault(key, own[key])
        missing = sorted(set(own) - set(state))
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            detail = f"missing {missing[:4]}" if missing else f"shape mismatch in {wrong[:4]}"
            raise ConfigError(f"weights file {path} does not fit the {self.backbone} backbone ({detail}): it holds "
                              f"another architecture. {how_to_get(self.backbone)}")
        self.stages.load_state_dict(state)

    def train(self, mode: bool = True) -> FeatureNet:
        return self  # frozen: batch norm keeps its ImageNet statistics, whatever the caller's mode

    def forward(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        wanted = set(layers)
        last = max(self.names.index(name) for name in wanted)
        x = (images.float() - self.mean) / self.std  # (B, 3, H, W) in the network's own input scaling
        out: dict[str, Tensor] = {}
        for index, (name, stage) in enumerate(self.stages.items()):
            x = stage(x)
            if name in wanted:
                out[name] = x
            if index == last:
                break
        return out


class PerceptualLoss(nn.Module):
    """Gatys et al.'s and Johnson et al.'s image loss on a frozen `FeatureNet`:
    `content_weight * content + style_weight * style + tv_weight * total variation`, where content is the mean
    squared feature difference to a content image on `content_layers`, and style the mean squared difference of
    Gram matrices to one style image's on `style_layers`.

    Usage: `set_style(style_image)` once, then `terms = loss(images, loss.content_targets(content_images))`;
    `terms["total"]` is the weighted sum, `terms["content"|"style"|"tv"]` the unweighted terms.
    """

    def __init__(self, features: FeatureNet, content_layers: Sequence[str], style_layers: Sequence[str],
                 content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 0.0) -> None:
        super().__init__()
        self.features = features
        self.content_layers = check_layers(features.backbone, content_layers, "content_layers")
        self.style_layers = check_layers(features.backbone, style_layers, "style_layers")
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.style_grams: dict[str, Tensor] = {}

    def set_style(self, style: Tensor) -> None:
        """Compute the target Gram matrices of a `(1, 3, H, W)` style image in [-1, 1]."""
        with torch.no_grad():
            feats = self.features(style, self.style_layers)
        self.style_grams = {k: gram_matrix(v).detach() for k, v in feats.items()}

    def content_targets(self, content: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return {k: v.detach() for k, v in self.features(content, self.content_layers).items()}

    def forward(self, images: Tensor, content_targets: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.style_grams:
            raise RuntimeError("PerceptualLoss.set_style(style_image) must be called before the loss is computed.")
        feats = self.features(images, self.content_layers + self.style_layers)
        terms = {
            "content": content_loss({k: feats[k] for k in self.content_layers},
                                    {k: t.to(images.device) for k, t in content_targets.items()}),
            "style": style_loss({k: feats[k] for k in self.style_layers},
                                {k: g.to(images.device) for k, g in self.style_grams.items()}),
            "tv": total_variation(images),
        }
        terms["total"] = (self.content_weight * terms["content"] + self.style_weight * terms["style"]
                          + self.tv_weight * terms["tv"])
        return terms


def perceptual_loss(backbone: Backbone, weights: str, content_layers: list[str] | None,
                    style_layers: list[str] | None, content_weight: float, style_weight: float,
                    tv_weight: float) -> PerceptualLoss:
    """The `PerceptualLoss` of a style technique's config (default layers per backbone)."""
    return PerceptualLoss(FeatureNet(backbone, weights), content_layers or DEFAULT_CONTENT_LAYERS[backbone],
                          style_layers or DEFAULT_STYLE_LAYERS[backbone], content_weight, style_weight, tv_weight)


def check_style_config(backbone: Backbone, content_layers: list[str] | None, style_layers: list[str] | None,
                       weights: dict[str, float]) -> None:
    """A style technique's layer names and loss weights, checked before any weights file is read."""
    check_layers(backbone, content_layers or DEFAULT_CONTENT_LAYERS[backbone], "content_layers")
    check_layers(backbone, style_layers or DEFAULT_STYLE_LAYERS[backbone], "style_layers")
    negative = {k: v for k, v in weights.items() if v < 0}
    if negative:
        raise ConfigError(f"loss weights must be 0 or more; got {negative}.")


def attach_frozen(owner: nn.Module, name: str, net: nn.Module) -> None:
    """Keep `net` on `owner` as a plain attribute, not a submodule: a frozen feature network stays out of
    checkpoints (it is rebuilt from its weights file), of DDP's parameter set and of `.half()`-style conversions.
    The owner moves it to its device itself (see `on_device`)."""
    object.__setattr__(owner, name, net)


def on_device(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` moved to `device` (a no-op when it is there already)."""
    buffer = next(iter(net.buffers()), None)
    if buffer is not None and buffer.device != device:
        net.to(device)
    return net
