"""Feature networks of the sample-quality metrics: images in [-1, 1] -> feature vectors (and class logits where the
network is a classifier). A metric is named for its network: `mnist_classifier_fid`, `tv_inception_fid`."""

from __future__ import annotations

import hashlib
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


class InceptionFeatures(FeatureNetwork):
    """torchvision's ImageNet Inception v3: 2048 pool features of images resized to 299x299 (grey images
    repeated to RGB), and its 1000 ImageNet logits. Needs the weights in the torch hub cache (torchvision
    downloads them there on first use, on a machine with internet) or at `weights_path`."""

    name = "tv_inception"
    num_features = 2048

    def __init__(self, weights_path: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
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
            self.identity = f"tv-inception-{_file_identity(path)}"
        else:
            self.identity = "tv-inception-random"
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def check_images(self, shape: tuple[int, int, int]) -> None:
        if shape[0] not in (1, 3):
            raise ConfigError(f"the Inception feature network takes 1- or 3-channel images, got {shape[0]} channels.")

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.float().add(1).div(2)  # [-1, 1] -> [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        net = self.net
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
            x = getattr(net, name)(x)
        features = x.flatten(1)  # (B, 2048)
        return features, net.fc(features)


__all__ = ["ClassifierFeatures", "FeatureNetwork", "InceptionFeatures"]
