"""Feature networks of the sample-quality metrics: images in [-1, 1] -> feature vectors (and class logits where the
network is a classifier). A metric is named for its network: `mnist_classifier_fid`, `tv_inception_fid`; only the
standard FID's network (the 2015 TensorFlow Inception weights, `tf_inception`) gives plain `fid`."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.core.checks import ConfigError
from lightning_gen.nn.classifier import classifier_net_from_checkpoint


class FeatureNetwork(nn.Module):
    """Images in [-1, 1] -> `(B, num_features)` features; `logits` -> `(B, N)` class logits where the network is a
    classifier (else None). `name` names the metrics; `identity` changes whenever the features would."""

    name: str = "features"
    num_features: int
    image_shape: tuple[int, int, int] | None = None  # None: any size (the network resizes)
    identity: str = ""

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        return self.features_and_logits(images)[0]

    def check_images(self, shape: tuple[int, int, int]) -> None:
        """Raise `ConfigError` when images of `shape` are not what this network takes."""
        if self.image_shape is not None and tuple(shape) != tuple(self.image_shape):
            raise ConfigError(
                f"the {self.name} feature network takes images of shape {tuple(self.image_shape)} but the model "
                f"makes {tuple(shape)}. Use a feature network trained on images like these (train a Classifier on "
                "the same data), or resize the data to match."
            )


def _file_identity(path: Path) -> str:
    stat = path.stat()
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha1(head + f"{stat.st_size}".encode()).hexdigest()[:16]


class ClassifierFeatures(FeatureNetwork):
    """The last hidden features and the logits of a `lightning_gen.Classifier` checkpoint, named for the data
    it was trained on ("mnist_classifier").

    Only the network is read: a `ClassifierNet` rebuilt from the hyperparameters the checkpoint saved (`arch`,
    `image_shape`, `num_classes`, `noise`) with its `net.*` weights. So the metrics depend on the network code in
    `lightning_gen.nn`, never on the `Classifier` technique (no technique module is imported), and the checkpoint
    loads without Lightning instantiating a training module."""

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        self.net, hp = classifier_net_from_checkpoint(checkpoint)
        self.num_features = self.net.num_features
        self.image_shape = tuple(hp["image_shape"])
        self.num_classes = int(hp["num_classes"])
        self.name = f"{str(hp.get('data_name') or 'data').lower()}_classifier"
        self.identity = f"classifier-{_file_identity(Path(checkpoint))}"

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.net.features(images)  # (B, C, H, W) -> (B, F)
        return features, self.net.head(features)  # (B, num_classes)


def _imagenet_inception(images: Tensor) -> Tensor:
    """Images in [-1, 1] -> what torchvision's ImageNet Inception v3 takes: RGB (grey repeated), 299x299 (bilinear),
    normalised with the ImageNet mean and std."""
    x = images.float().add(1).div(2)  # [-1, 1] -> [0, 1]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class InceptionFeatures(FeatureNetwork):
    """torchvision's ImageNet Inception v3 (IMAGENET1K_V1): 2048 pool features of images resized to 299x299 (grey
    images repeated to RGB), and its 1000 ImageNet logits. Built as torchvision builds it for those weights
    (`transform_input=True`: it takes ImageNet-normalised images and remaps them to the scale its weights were
    trained on), and read with `create_feature_extractor` (the flattened pool output and the `fc` logits), so the
    features are those of torchvision's own forward. Needs the weights in the torch hub cache (torchvision downloads
    them there on first use, on a machine with internet) or at `weights_path`."""

    name = "tv_inception"
    num_features = 2048

    def __init__(self, weights_path: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3
        from torchvision.models.feature_extraction import create_feature_extractor

        # the arguments torchvision's inception_v3(weights=IMAGENET1K_V1) uses, without downloading anything
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        if pretrained:
            weights = Inception_V3_Weights.IMAGENET1K_V1
            default = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            path = Path(weights_path) if weights_path else default
            if not path.is_file():
                raise ConfigError(
                    f"Inception v3 weights not found at {path}. On a machine with internet run `python -c \"import "
                    "torchvision; torchvision.models.inception_v3(weights='IMAGENET1K_V1')\"` (it saves them to the "
                    "torch hub cache), copy the file here, or give `weights_path`. Offline, use the classifier "
                    "feature network instead (`feature_net: classifier`)."
                )
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.identity = f"tv-inception-v2-{_file_identity(path)}"  # v2: transform_input (older caches differ)
        else:
            self.identity = "tv-inception-v2-random"
        nodes = {"flatten": "features", "fc": "logits"}  # the pool output, flattened, and the ImageNet logits
        # (its train-mode graph has the auxiliary head besides: this network is only ever used in eval mode)
        self.net = create_feature_extractor(net, return_nodes=nodes, suppress_diff_warning=True)
        self.net.eval().requires_grad_(False)

    def check_images(self, shape: tuple[int, int, int]) -> None:
        if shape[0] not in (1, 3):
            raise ConfigError(f"the Inception feature network takes 1- or 3-channel images, got {shape[0]} channels.")

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # always in eval mode (batch norm on its running statistics, no dropout)

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(_imagenet_inception(images))
        return out["features"], out["logits"]  # (B, 2048), (B, 1000)


# torch-fidelity's Inception v3 with the 2015 TensorFlow weights (the standard FID's network): the file name its
# `load_state_dict_from_url` keeps in the torch hub cache
TF_INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


def _torch_fidelity_available() -> bool:
    return importlib.util.find_spec("torch_fidelity") is not None


def tf_inception_weights_default() -> Path:
    """Where torch-fidelity keeps the 2015 TF-Inception weights once downloaded: the torch hub cache
    (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`)."""
    try:  # the installed torch-fidelity's own address, where there is one
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3 as url
    except ImportError:
        url = TF_INCEPTION_URL
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


class TFInceptionFeatures(FeatureNetwork):
    """The standard FID's network: the 2015 TensorFlow Inception v3 weights in torch-fidelity's port, as torchmetrics'
    `FrechetInceptionDistance()` uses them by default (its `NoTrainInceptionV3`, 2048 pool features; images as
    uint8 [0, 255], resized to 299x299 inside with torchmetrics' default antialiased bilinear resize, grey images
    repeated to RGB). Its metrics have the standard names (`fid`, `kid`). Needs torch-fidelity (`torchmetrics[image]`)
    and the weights file in the torch hub cache (torch-fidelity downloads it there on first use, on a machine with
    internet) or at `weights_path`; without them it raises `ConfigError` and downloads nothing."""

    name = "tf_inception"
    metric_prefix = ""  # the standard FID: `fid`, `kid`, `fid_floor`
    num_features = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        path = Path(weights_path) if weights_path else tf_inception_weights_default()
        missing = []
        if not _torch_fidelity_available():
            missing.append("torch-fidelity is not installed")
        if not path.is_file():
            missing.append(f"its weights are not at {path}")
        if missing:
            raise ConfigError(
                f"feature_net tf_inception (the standard FID's 2015 TensorFlow Inception v3) is not available here: "
                f"{' and '.join(missing)}. Install it with `pip install \"torchmetrics[image]\"` (or `pip install "
                "torch-fidelity`), then fetch the weights once on a machine with internet, `python -c \"from "
                "torchmetrics.image.fid import FrechetInceptionDistance; FrechetInceptionDistance()\"` (saved to the "
                f"torch hub cache as {path.name}), and copy that file to {tf_inception_weights_default().parent} here "
                "or give its path as `inception_weights`. Or measure with a feature network that is on this machine: "
                "`feature_net: classifier` (a Classifier trained here), or `inception` (torchvision's weights)."
            )
        torch.load(path, map_location="cpu", weights_only=True)  # refuses a file that is more than tensors
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(self.num_features)],
                                      feature_extractor_weights_path=str(path))
        self.net.requires_grad_(False)
        self.identity = f"tf-inception-{_file_identity(path)}"

    def check_images(self, shape: tuple[int, int, int]) -> None:
        if shape[0] not in (1, 3):
            raise ConfigError(f"the Inception feature network takes 1- or 3-channel images, got {shape[0]} channels.")

    def train(self, mode: bool = True) -> TFInceptionFeatures:
        return super().train(False)

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, None]:
        x = images.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)  # [-1, 1] -> uint8 [0, 255]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).float(), None  # (B, 2048)


def metric_name(net: nn.Module, metric: str) -> str:
    """The logged name of `metric` ("fid", "kid", ...) on `net`'s features: `<net.name>_<metric>`
    (`tv_inception_fid`), or the plain name for the standard FID's network (`fid`)."""
    prefix = getattr(net, "metric_prefix", None)
    return f"{net.name}_{metric}" if prefix is None else f"{prefix}{metric}"


__all__ = ["ClassifierFeatures", "FeatureNetwork", "InceptionFeatures", "TFInceptionFeatures", "metric_name",
           "tf_inception_weights_default"]
