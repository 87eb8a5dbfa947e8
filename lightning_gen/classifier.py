"""Supervised image classifier: the supervised-only baseline of the semi-supervised GAN, the scorer of
conditional samples, the feature network of the sample-quality metric ("MNIST-classifier FID"), the network the
explanations explain, and transfer learning from ImageNet backbones (`backbone:`, `finetune: all | head`).

Trains on `(images, labels)` batches of any labeled datamodule (or of `SemiSupervised` with
`with_unlabeled: false`, for the same labeled examples as a semi-supervised run), reports accuracy with
torchmetrics, and loads by path: `Classifier.load_from_checkpoint(path)` or `load_classifier(path)`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from lightning_gen.core.checks import (
    ConfigError,
    check_labels,
    check_learning_rates,
    resolve_image_shape,
    resolve_num_classes,
)
from lightning_gen.core.distributed import average_parameters
from lightning_gen.core.evaluation import evaluate_accuracy
from lightning_gen.core.lightning_private import attached_trainer
from lightning_gen.core.optim import adam
from lightning_gen.core.protocols import NamedData, SemiSupervisedData
from lightning_gen.core.runs import logs_this_step
from lightning_gen.core.technique import Technique
from lightning_gen.nn import ClassifierArch, ClassifierNet
from lightning_gen.nn.backbones import NATIVE_SIZE, BackboneName, BackboneNet
from lightning_gen.nn.classifier import classifier_checkpoint
from lightning_gen.nn.norm import Norm


class Classifier(Technique):
    """Image classifier (a `ClassifierNet`), trained with cross-entropy and Adam.

    Args:
        arch: network: `cnn` (small all-convolutional net) or `mlp` (Salimans et al.'s noisy MNIST MLP; the same
            network as the semi-supervised GAN's discriminator).
        num_classes: number of classes; taken from the datamodule when not given.
        image_shape: (channels, height, width); taken from the datamodule when not given. Stored in the
            checkpoint, so a trained classifier loads without data.
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: Adam weight decay.
        lr_decay: multiply the learning rate by this factor after every epoch (1 keeps it constant).
        noise: the network's regularisers (dropout / Gaussian noise) on or off.
        norm: the `cnn` network's normalisation after each convolution: `none` (the default), `batch`, `layer`,
            `instance` or `group` (see `lightning_gen.nn.norm`; `bench/norms.py` compares them).
        data_name: name of the training data, used to name metrics computed on this classifier's features
            ("MNIST-classifier FID"); taken from the datamodule when not given.
        backbone: an ImageNet network to start from instead of `arch` (transfer learning): `vgg16`, `resnet18`,
            `mobilenet_v3_large` (torchvision) or `mobilenet_v1` (the Keras MobileNet v1, alpha 0.25, available
            offline). Its classifier is replaced by global average pooling and a new linear head.
        weights: the backbone's ImageNet weights: a file path, or `imagenet` (torchvision's file in the torch hub
            cache, downloaded there on a machine with internet). Read once, when a new run starts; a checkpoint
            holds the trained weights. `random` trains the same network from scratch.
        input_size: the side images are resized to before the backbone (ImageNet networks see objects at 224 px;
            smaller is faster). Default: 224 for a backbone.
        finetune: `all` trains every weight; `head` trains the new head only (the backbone frozen, its batch norm
            with the ImageNet statistics).
        dropout: dropout before the backbone classifier's linear head.
    """

    def __init__(
        self,
        arch: ClassifierArch = "cnn",
        num_classes: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_decay: float = 1.0,
        noise: bool = True,
        norm: Norm = "none",
        data_name: str | None = None,
        backbone: BackboneName | None = None,
        weights: str = "imagenet",
        input_size: int | None = None,
        finetune: Literal["all", "head"] = "all",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if input_size is not None and input_size < 32:
            raise ConfigError(f"input_size must be at least 32 (the backbones downsample 32 times), got {input_size}.")
        if backbone is not None and input_size is None:
            input_size = NATIVE_SIZE
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"num_classes must be 2 or more, got {num_classes}.")
        if not 0 < lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}.")
        if norm != "none" and (backbone is not None or arch != "cnn"):
            raise ConfigError(f"norm={norm!r} applies to the cnn network; "
                              f"{'a backbone keeps its own batch norm' if backbone else 'the mlp has none'}: use "
                              "arch cnn without a backbone, or norm none.")
        self.save_hyperparameters()

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        hp.image_shape = resolve_image_shape(hp.image_shape, dm, "Classifier")
        hp.num_classes = resolve_num_classes(hp.num_classes, dm, "Classifier")
        if hp.data_name is None and dm is not None:
            inner = dm.data if isinstance(dm, SemiSupervisedData) else dm  # it wraps the named datamodule
            hp.data_name = inner.dataset if isinstance(inner, NamedData) else type(inner).__name__
        if hp.backbone is None:
            self.net = ClassifierNet(hp.image_shape, hp.num_classes, hp.arch, hp.noise, hp.norm)
        else:  # ImageNet weights only for a new run: a resumed run, `test` or a loaded checkpoint bring their own
            trainer = attached_trainer(self)
            fresh = self.stage == "fit" and trainer is not None and trainer.ckpt_path is None
            self.net = BackboneNet(hp.image_shape, hp.num_classes, hp.backbone, hp.weights if fresh else None,
                                   hp.input_size, hp.dropout)
            if hp.finetune == "head":
                self.net.features.requires_grad_(False)
        self.val_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)
        self.test_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, num_classes) logits

    def features(self, x: Tensor) -> Tensor:
        return self.net.features(x)  # (B, C, H, W) -> (B, F)

    @staticmethod
    def _labeled(batch: Any) -> tuple[Tensor, Tensor]:
        if isinstance(batch, dict):
            batch = batch["labeled"]
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ConfigError("Classifier needs (images, labels) batches; this datamodule gives images only.")
        return batch[0], batch[1]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = self._labeled(batch)
        if batch_idx == 0:
            check_labels(labels, self.hparams.num_classes, "Classifier")
        if self.global_step == 0 and batch_idx == 0:  # a fresh run (not a resumed one)
            self.net.initialise(images)
            average_parameters(self.net)
        if self.hparams.finetune == "head" and isinstance(self.net, BackboneNet):
            self.net.features.eval()  # a frozen backbone keeps its ImageNet batch-norm statistics
        logits = self(images)
        loss = F.cross_entropy(logits.float(), labels)
        if logs_this_step(self.trainer):
            acc = (logits.argmax(1) == labels).float().mean()
            self.log_dict({"train/loss": loss.detach(), "train/accuracy": acc}, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        evaluate_accuracy(self, self._labeled(batch), batch_idx, self.val_acc, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        evaluate_accuracy(self, self._labeled(batch), batch_idx, self.test_acc, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).argmax(1)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        trainable = [p for p in self.parameters() if p.requires_grad]  # not the fixed scales of the mlp
        opt = adam(self, trainable, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)
        if hp.lr_decay == 1.0:
            return opt
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, hp.lr_decay)}


def load_classifier(path: str, map_location: str | torch.device = "cpu") -> Classifier:
    """A trained `Classifier` from its checkpoint, frozen and in eval mode. Raises `ConfigError` naming the fix
    when the file is missing or is not a Classifier checkpoint."""
    classifier_checkpoint(path)  # the checks, with messages that name the fix
    model = Classifier.load_from_checkpoint(path, map_location=map_location)
    model.eval().requires_grad_(False)
    return model


__all__ = ["Classifier", "load_classifier"]
