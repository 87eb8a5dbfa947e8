"""Deep one-class anomaly detection: DOC (Perera & Patel, "Learning Deep Features for One-Class Classification",
IEEE TIP 2019, arXiv:1801.05365) and its baseline Deep SVDD (Ruff et al., "Deep One-Class Classification", ICML 2018).

Both learn a feature map phi from the images of one class only (the `OneClass` datamodule) and score a test image by
how far its features lie from those of the class; the test set's other classes are the anomalies (AUROC).

- DOC: one network with shared weights sees a target batch and a batch of an unrelated labeled reference set. The
  compactness loss pulls the target features together (each one's squared distance to the mean of the other
  n - 1, `compactness_loss`); the descriptiveness loss, the reference set's cross-entropy through a classifier head,
  keeps them informative. Loss: l_D + lambda * l_C. Score: the mean distance to the k nearest features of the target
  training images (`knn_distance`; with `normalize`, of unit-length features), a bank gathered from every
  process.
- Deep SVDD: minimise the mean squared distance of the target features to a centre c fixed by an initial forward
  pass (entries within eps of 0 pushed to +-eps), with weight decay, on a network without biases and without affine
  batch norm (a bias would let it map every image onto c: the collapse Ruff et al. rule out). Score: ||phi(x) - c||^2.
"""

from __future__ import annotations

import csv
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor, nn
from torch.utils.data import Subset
from torchmetrics.classification import BinaryAUROC

from lightning_gen.core.checks import ConfigError, check_labels, check_learning_rates, resolve_image_shape
from lightning_gen.core.optim import adam
from lightning_gen.core.protocols import OneClassData
from lightning_gen.core.runs import ColumnWriter, logs_this_step, save_and_log_images
from lightning_gen.core.technique import Technique, batch_statistics, eval_mode
from lightning_gen.losses import compactness_loss, knn_distance, svdd_loss
from lightning_gen.nn.features import FeatureNet, attach_frozen, on_device
from lightning_gen.nn.norm import Norm, make_norm

Backbone = Literal["cnn", "mobilenet_v1"]
MOBILENET_LAYER = "conv_pw_13_relu"  # the last layer of MobileNet v1 (alpha 0.25): 256 channels
MOBILENET_CHANNELS = 256


# ---- the feature networks ------------------------------------------------------------------------------------------
class LeNetEncoder(nn.Module):
    """Ruff et al.'s LeNet-type network: per entry of `channels` a 5x5 convolution, a normalisation (`norm`, eps 1e-4:
    batch norm in Ruff et al.'s), LeakyReLU(0.1) and 2x2 max pooling, then a linear layer to `feature_dim`.
    `bias=False` removes every bias and the normalisation's affine parameters (Deep SVDD); DOC's default `norm="none"`
    leaves it out (its target and reference batches must not be normalised by each other's statistics)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], feature_dim: int, bias: bool,
                 norm: Norm) -> None:
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers.append(nn.Conv2d(c, out, 5, padding=2, bias=bias))
            if norm != "none":
                layers.append(make_norm(norm, out, affine=bias, eps=1e-4))
            layers += [nn.LeakyReLU(0.1), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2  # (B, c, h, w) -> (B, out, h/2, w/2)
        self.body = nn.Sequential(*layers, nn.Flatten())  # (B, C, H, W) -> (B, c * h * w)
        self.head = nn.Linear(c * h * w, feature_dim, bias=bias)  # -> (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class MobileNetEncoder(nn.Module):
    """The frozen ImageNet MobileNet v1 (`FeatureNet`, kept out of checkpoints and of the optimizer) up to its last
    layer, global average pooling, then a trainable two-layer head to `feature_dim`. Images are resized to
    `input_size` and grey ones repeated to RGB."""

    def __init__(self, weights: str, input_size: int, feature_dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        attach_frozen(self, "trunk", FeatureNet("mobilenet_v1", weights))
        self.input_size = input_size
        self.head = nn.Sequential(nn.Linear(MOBILENET_CHANNELS, hidden, bias=bias), nn.LeakyReLU(0.1),
                                  nn.Linear(hidden, feature_dim, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        trunk = on_device(self.trunk, x.device)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (B, 1, H, W) -> (B, 3, H, W)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x.float(), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            maps = trunk(x, [MOBILENET_LAYER])[MOBILENET_LAYER]  # (B, 256, h, w)
        return self.head(maps.mean((2, 3)).detach())  # (B, 256) -> (B, feature_dim)


def nudge_center(center: Tensor, eps: float) -> Tensor:
    """Deep SVDD's centre with every entry closer to 0 than `eps` moved to `-eps` (negative entries) or `+eps` (the
    others, 0 included), as Ruff et al.'s code does: a network whose last layer outputs zeros cannot sit on it."""
    small = center.abs() < eps
    return torch.where(small & (center < 0), -eps, torch.where(small, eps, center))


class AnomalyScoreWriter(ColumnWriter):
    """Writes what a one-class `predict` returns to `predictions/anomaly_scores.csv` (see `ColumnWriter`):
    `index, class, is_anomaly, score`, one row per image, sorted by index."""

    stem, suffix = "anomaly_scores", ".csv"

    def save(self, columns: dict[str, Tensor], path: Any) -> None:
        names = ["index", "class", "is_anomaly", "score"]
        with path.open("w", newline="") as file:
            out = csv.writer(file)
            out.writerow(names)
            out.writerows(sorted(zip(*(columns[name].tolist() for name in names))))


# ---- the shared skeleton -------------------------------------------------------------------------------------------
class OneClassTechnique(Technique):
    """What DOC and Deep SVDD share: the feature network, scoring the whole validation/test split with AUROC (each
    item counted once under DDP), the grid of the most and least anomalous images of the normal class, and `predict`
    writing every test image's anomaly score to `anomaly_scores.csv`. Subclasses give the loss and `score`."""

    bias: bool = True  # biases and affine normalisation in the feature network

    def _check_common(self, feature_dim: int, channels: list[int], input_size: int, hidden: int,
                      num_extremes: int) -> None:
        if feature_dim < 1:
            raise ConfigError(f"feature_dim must be 1 or more, got {feature_dim}: it is the length of the feature "
                              "vector that the anomaly score is computed on.")
        if not channels or any(c < 1 for c in channels):
            raise ConfigError(f"channels must list 1 or more positive channel counts, got {channels}.")
        if input_size < 32 or hidden < 1 or num_extremes < 0:
            raise ConfigError(f"input_size must be 32 or more, hidden 1 or more and num_extremes 0 or more; got "
                              f"{input_size}, {hidden} and {num_extremes}.")

    def build_encoder(self) -> None:
        hp = self.hparams
        hp.image_shape = resolve_image_shape(hp.image_shape, self.datamodule, type(self).__name__)
        if hp.backbone == "cnn":
            side = min(hp.image_shape[1:])
            if side >> len(hp.channels) < 1:
                raise ConfigError(f"{len(hp.channels)} pooling layers (one per entry of `channels`) shrink "
                                  f"{side}-pixel images below one pixel: give at most {side.bit_length() - 1} channel "
                                  "counts.")
            self.encoder = LeNetEncoder(hp.image_shape, list(hp.channels), hp.feature_dim, self.bias, hp.norm)
        else:
            self.encoder = MobileNetEncoder(hp.weights, hp.input_size, hp.feature_dim, hp.hidden, self.bias)
        self.val_auroc, self.test_auroc = BinaryAUROC(), BinaryAUROC()

    def one_class_data(self) -> OneClassData:
        dm = self.datamodule
        if not isinstance(dm, OneClassData):
            raise ConfigError(f"{type(self).__name__} needs one-vs-rest data: use `--data datamodules.OneClass` "
                              f"(got {type(dm).__name__}).")
        return dm

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images)  # (B, C, H, W) -> (B, feature_dim)

    def score(self, features: Tensor) -> Tensor:
        """(B, feature_dim) -> (B,) anomaly scores: higher is more anomalous."""
        raise NotImplementedError

    def prepare_scoring(self) -> None:
        """Whatever `score` needs from the training data, made before an evaluation or prediction pass."""

    @torch.no_grad()
    def target_features(self) -> Tensor:
        """(N, feature_dim): the features of every target training image in eval mode, each process computing a
        share and `all_gather` collecting them, in the same order on every process."""
        dm = self.one_class_data()
        n, world, rank = len(dm.bank_set), self.trainer.world_size, self.trainer.global_rank
        share = Subset(dm.bank_set, list(range(rank, n, world)))  # positions rank, rank + W, ...
        with eval_mode(self.encoder):
            parts = [self(images.to(self.device)).float() for images in dm.bank_dataloader(share)]
        per = math.ceil(n / world)
        mine = torch.zeros(per, self.hparams.feature_dim, device=self.device)
        mine[: len(share)] = torch.cat(parts) if parts else mine[:0]
        gathered = self.all_gather(mine)  # (W, per, F) under DDP, (per, F) in one process
        gathered = gathered.reshape(-1, per, self.hparams.feature_dim).transpose(0, 1).reshape(-1, gathered.shape[-1])
        return gathered[:n]  # item r + W * i sits at row W * i + r: the dataset order

    # ---- evaluation: AUROC over the whole split, each item once --------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def _start_evaluation(self) -> None:
        self.prepare_scoring()
        self._extremes: dict[str, tuple[Tensor, Tensor]] = {}

    def _evaluate(self, batch: Any, batch_idx: int, stage: str, metric: BinaryAUROC) -> None:
        images, is_anomaly = batch[0], batch[1]  # (B, C, H, W), (B,) 1 = another class than the target
        scores = self.score(self(images)).float()  # (B,)
        keep = self.first_visit(batch_idx, len(images))
        metric.update(scores[keep], is_anomaly[keep])
        self.log(f"{stage}/auroc", metric, prog_bar=True)
        normal = keep & (is_anomaly == 0)
        self.log_means(stage, {"normal_score": scores[normal].mean() if normal.any() else scores.new_zeros(())},
                       weight=int(normal.sum()))
        self._keep_extremes(scores[normal], images[normal])

    def _keep_extremes(self, scores: Tensor, images: Tensor) -> None:
        """Keep the `num_extremes` lowest- and highest-scored normal images seen so far."""
        n = self.hparams.num_extremes
        if n == 0 or len(scores) == 0:
            return
        for key, largest in (("low", False), ("high", True)):
            old_scores, old_images = self._extremes.get(key, (scores[:0], images[:0]))
            all_scores, all_images = torch.cat([old_scores, scores]), torch.cat([old_images, images])
            top = all_scores.topk(min(n, len(all_scores)), largest=largest).indices
            self._extremes[key] = (all_scores[top], all_images[top])

    def _save_extremes(self, stage: str) -> None:
        """Save `<stage>/extremes`: the least anomalous normal images (top row) and the most anomalous (bottom row),
        over every process."""
        n = self.hparams.num_extremes
        if n == 0 or self.trainer.sanity_checking:
            return
        rows = []
        for key, largest in (("low", False), ("high", True)):
            fill = -math.inf if largest else math.inf
            scores = torch.full((n,), fill, device=self.device)
            images = torch.zeros(n, *self.hparams.image_shape, device=self.device)
            if key in self._extremes:
                found, pictures = self._extremes[key]
                scores[: len(found)], images[: len(found)] = found, pictures.float()
            scores, images = self.all_gather(scores).reshape(-1), self.all_gather(images).reshape(-1, *images.shape[1:])
            order = scores.argsort(descending=largest)[:n]
            rows.append(images[order][scores[order].isfinite()])
        if self.trainer.is_global_zero and len(rows[0]):
            save_and_log_images(self.trainer, f"{stage}/extremes", torch.cat(rows), nrow=len(rows[0]))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val", self.val_auroc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test", self.test_auroc)

    def on_validation_epoch_end(self) -> None:
        self._save_extremes("val")

    def on_test_epoch_end(self) -> None:
        self._save_extremes("test")

    # ---- predict: every test image's score, to a CSV ---------------------------------------------------------------
    def on_predict_epoch_start(self) -> None:
        self.prepare_scoring()

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images = batch[0]
        index = batch[3] if len(batch) > 3 else batch_idx * len(images) + torch.arange(len(images))
        return {"index": index, "class": batch[2], "is_anomaly": batch[1], "score": self.score(self(images)).float()}

    def prediction_writer(self) -> BasePredictionWriter:
        return AnomalyScoreWriter()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.parameters() if p.requires_grad]
        return adam(self, trainable, self.hparams.lr, weight_decay=self.hparams.weight_decay)


class DOC(OneClassTechnique):
    """Deep one-class classification (Perera & Patel 2019): loss = descriptiveness (cross-entropy of the reference
    set's classes) + `compactness_weight` * compactness (of the target features); anomaly score = mean distance to the
    `k` nearest target training features.

    Args:
        backbone: feature network: `cnn` (the LeNet-type network, trained from scratch) or `mobilenet_v1` (the frozen
            ImageNet MobileNet v1, alpha 0.25, with a trainable head).
        weights: MobileNet's weights: a file (offline: `$LIGHTNING_GEN_DATA/weights/mobilenet_2_5_224_tf_no_top.h5`),
            `imagenet` (torch hub cache) or `random` (tests only).
        channels: `cnn` convolution channels, one 5x5 convolution and 2x2 pooling each.
        norm: the `cnn` network's normalisation after each convolution: `none` (the default), `layer`, `instance`,
            `group` or `batch` (see `lightning_gen.nn.norm`; batch norm would normalise the target and reference
            batches each by its own statistics in training).
        feature_dim: length of the feature vector the losses and the score are computed on.
        hidden: width of the MobileNet head's hidden layer.
        input_size: side MobileNet's input images are resized to.
        compactness_weight: lambda, the weight of the compactness loss (the paper's 0.1).
        k: nearest target training features whose mean distance is the anomaly score.
        normalize: score on unit-length features: the test features and the bank are L2-normalised before the k-NN
            distance (cosine k-NN); the losses are unchanged.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        image_shape: (channels, height, width); taken from the datamodule when not given.
        num_reference_classes: classes of the reference set; taken from the datamodule when not given.
        num_extremes: normal test images shown in each row of the most/least anomalous grid (0: no grid).
    """

    def __init__(
        self,
        backbone: Backbone = "cnn",
        weights: str = "imagenet",
        channels: list[int] = [32, 64],  # noqa: B006 (jsonargparse needs the list; it is never mutated)
        norm: Norm = "none",
        feature_dim: int = 64,
        hidden: int = 256,
        input_size: int = 64,
        compactness_weight: float = 0.1,
        k: int = 1,
        normalize: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        image_shape: tuple[int, int, int] | None = None,
        num_reference_classes: int | None = None,
        num_extremes: int = 8,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        self._check_common(feature_dim, channels, input_size, hidden, num_extremes)
        if k < 1:
            raise ConfigError(f"k must be 1 or more nearest neighbours, got {k}.")
        if compactness_weight < 0:
            raise ConfigError(f"compactness_weight must be 0 or more, got {compactness_weight}.")
        self.save_hyperparameters()
        self.bank: Tensor | None = None

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        self.build_encoder()
        if dm is not None:
            data = self.one_class_data()
            if data.num_reference_classes is None:
                raise ConfigError("DOC learns from a reference set: give `--data.reference` a labeled dataset other "
                                  "than the target (CIFAR-10 for MNIST targets, MNIST for CIFAR-10 targets).")
            if hp.num_reference_classes is not None and hp.num_reference_classes != data.num_reference_classes:
                raise ConfigError(f"DOC has num_reference_classes={hp.num_reference_classes} but the reference set has "
                                  f"{data.num_reference_classes}; leave out `--model.num_reference_classes`.")
            hp.num_reference_classes = data.num_reference_classes
            if data.bank_set is not None and hp.k > len(data.bank_set):
                raise ConfigError(f"k={hp.k} nearest neighbours but only {len(data.bank_set)} target training images: "
                                  f"give `--model.k` at most {len(data.bank_set)}.")
        if hp.num_reference_classes is None or hp.num_reference_classes < 2:
            raise ConfigError("DOC needs a reference set with 2 or more classes: use `--data datamodules.OneClass` "
                              "with `--data.reference`, or give `--model.num_reference_classes`.")
        self.classifier = nn.Linear(hp.feature_dim, hp.num_reference_classes)  # (B, F) -> (B, reference classes)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        target = batch["target"]  # (B, C, H, W): normal images
        ref_images, ref_labels = batch["reference"][0], batch["reference"][1]  # (B', C, H, W), (B',)
        if batch_idx == 0:
            check_labels(ref_labels, self.hparams.num_reference_classes, "DOC (reference set)")
        target_features = self(target)  # (B, F): the same network for both batches
        logits = self.classifier(self(ref_images))  # (B', F) -> (B', reference classes)
        compactness = compactness_loss(target_features)
        descriptiveness = F.cross_entropy(logits.float(), ref_labels)
        loss = descriptiveness + self.hparams.compactness_weight * compactness
        if logs_this_step(self.trainer):
            accuracy = (logits.argmax(1) == ref_labels).float().mean()
            self.log_dict({"train/loss": loss.detach(), "train/compactness": compactness.detach(),
                           "train/descriptiveness": descriptiveness.detach(), "train/reference_accuracy": accuracy},
                          prog_bar=True)
        return loss

    def prepare_scoring(self) -> None:
        bank = self.target_features()  # (N, F), the same on every process
        self.bank = F.normalize(bank, dim=1) if self.hparams.normalize else bank

    def score(self, features: Tensor) -> Tensor:
        features = F.normalize(features.float(), dim=1) if self.hparams.normalize else features
        return knn_distance(features, self.bank, self.hparams.k)  # (B, F) -> (B,)


class DeepSVDD(OneClassTechnique):
    """One-class Deep SVDD (Ruff et al. 2018): features pulled towards a fixed centre c; anomaly score
    ||phi(x) - c||^2. The network has no biases and no affine batch norm.

    Args:
        backbone: feature network: `cnn` (Ruff et al.'s LeNet-type network, trained from scratch) or `mobilenet_v1`
            (the frozen ImageNet MobileNet v1 with a trainable bias-free head).
        weights: MobileNet's weights: a file, `imagenet` (torch hub cache) or `random` (tests only).
        channels: `cnn` convolution channels, one 5x5 convolution, normalisation and 2x2 pooling each (the paper: 8,
            4 for MNIST; 32, 64, 128 for CIFAR-10).
        norm: the `cnn` network's normalisation, without scale and shift: `batch` (the paper's), `layer`,
            `instance`, `group` or `none` (see `lightning_gen.nn.norm`).
        feature_dim: length of the feature vector (the paper: 32 for MNIST, 128 for CIFAR-10).
        hidden: width of the MobileNet head's hidden layer.
        input_size: side MobileNet's input images are resized to.
        eps: centre entries closer to 0 than this are moved to +-eps (the paper's code: 0.1).
        lr: Adam learning rate (the paper's 1e-4).
        weight_decay: Adam weight decay, the objective's lambda/2 ||W||^2 term (the paper's code: 0.5e-6).
        image_shape: (channels, height, width); taken from the datamodule when not given.
        num_extremes: normal test images shown in each row of the most/least anomalous grid (0: no grid).
    """

    bias = False

    def __init__(
        self,
        backbone: Backbone = "cnn",
        weights: str = "imagenet",
        channels: list[int] = [8, 4],  # noqa: B006 (jsonargparse needs the list; it is never mutated)
        norm: Norm = "batch",
        feature_dim: int = 32,
        hidden: int = 256,
        input_size: int = 64,
        eps: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 0.5e-6,
        image_shape: tuple[int, int, int] | None = None,
        num_extremes: int = 8,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        self._check_common(feature_dim, channels, input_size, hidden, num_extremes)
        if eps < 0:
            raise ConfigError(f"eps must be 0 or more, got {eps}.")
        self.save_hyperparameters()

    def build(self) -> None:
        self.build_encoder()
        if self.datamodule is not None:
            self.one_class_data()
        self.register_buffer("center", torch.zeros(self.hparams.feature_dim))  # c, saved with the weights
        self.register_buffer("center_ready", torch.tensor(False))

    def on_train_start(self) -> None:
        if not bool(self.center_ready):  # a fresh run (a resumed one has c in its checkpoint)
            self.center.copy_(self.initial_center())
            self.center_ready.fill_(True)

    @torch.no_grad()
    def initial_center(self) -> Tensor:
        """c: the mean feature of the target training images in one forward pass of the initial network (batch norm
        normalising with each batch's statistics, as in training, running statistics untouched), each entry closer
        to 0 than eps moved to +-eps so that a zero network cannot reach it."""
        dm = self.one_class_data()
        with batch_statistics(self.encoder):  # every process reads all the images: the same c everywhere
            c = torch.cat([self(images.to(self.device)).float() for images in dm.bank_dataloader()]).mean(0)
        return nudge_center(c, self.hparams.eps)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        features = self(batch["target"])  # (B, C, H, W) -> (B, F)
        loss = svdd_loss(features, self.center)
        if logs_this_step(self.trainer):
            self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def score(self, features: Tensor) -> Tensor:
        return (features.float() - self.center).pow(2).sum(1)  # (B, F) -> (B,)


__all__ = ["DOC", "DeepSVDD", "LeNetEncoder", "MobileNetEncoder", "OneClassData", "OneClassTechnique", "nudge_center"]
