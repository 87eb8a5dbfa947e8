"""Explanations of a trained classifier's decisions: which pixels made it say "cat"?

Four methods, each giving one map per image (same height and width as the image; larger = more evidence for the
explained class):

- **CAM** (Zhou et al., CVPR 2016), for networks whose last layers are global average pooling (GAP) and one linear
  layer: the class's linear weights applied to the feature map that GAP reduces,
  `CAM_c(i, j) = sum_k w_ck A_k(i, j)`, upsampled to the image.
- **Grad-CAM** (Selvaraju et al., ICCV 2017), for any convolutional layer: each channel weighted by the spatial mean
  of the class score's gradient there, `ReLU(sum_k mean_ij(d y_c / d A_k) A_k)`. On a GAP network at the GAP layer
  the gradient mean is `w_ck / (h w)`, so Grad-CAM is `ReLU(CAM) / (h w)`.
- **LIME** (Ribeiro et al., KDD 2016) and **Kernel SHAP** (Lundberg & Lee, NeurIPS 2017), from captum: switch
  segments of the image (SLIC superpixels or a grid) off to a baseline at random, and fit a weighted linear model of
  the class probability on which segments were on; a segment's coefficient is its share of the evidence. Kernel SHAP's
  weights make the coefficients Shapley values.

CAM and Grad-CAM read a layer's output through a forward hook that lives only while one forward pass runs (removed
even when the pass fails) and differentiate with `torch.autograd.grad`: nothing stays attached to the network.

The technique: `lightning-gen predict --config configs/explain/<method>_<data>.yaml --model.classifier_ckpt <ckpt>`
explains test images of the configured datamodule with a `Classifier` checkpoint (or an `SGAN`'s discriminator), and
writes per image the image, each method's map and overlay, a grid across methods (`explanations/`) and, with a W&B
logger, a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from datamodules.base import ImageDataModule
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import ImageData, ReferenceImages
from lightning_gen.core.runs import image_grid, predictions_folder
from lightning_gen.core.technique import Technique
from lightning_gen.nn.classifier import explained_network

Method = Literal["cam", "gradcam", "lime", "kernel_shap"]
Segments = Literal["slic", "grid"]
Baseline = Literal["zero", "mean", "blur"]


# ---- the layer a map is read from ------------------------------------------------------------------------------
def spatial_layers(net: nn.Module, image_shape: Sequence[int]) -> list[str]:
    """Names of the layers of `net` whose output is a `(B, C, h, w)` map (those Grad-CAM can read), in order."""
    found: list[str] = []
    modules = {module: name for name, module in net.named_modules() if name}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and modules[module] not in found:
            found.append(modules[module])

    handles = [module.register_forward_hook(record) for module in modules]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *image_shape))
    finally:
        for handle in handles:
            handle.remove()
    return found


def check_layer(net: nn.Module, layer: str, image_shape: Sequence[int]) -> None:
    """Raise `ConfigError` listing the valid names unless `layer` is a layer of `net` with a spatial output."""
    valid = spatial_layers(net, image_shape)
    if layer not in valid:
        shown = ", ".join(valid) if valid else "none: the network has no convolutional layers (use lime or kernel_shap)"
        raise ConfigError(f"layer {layer!r} is not a convolutional layer of this network. Its layers with a "
                          f"(C, h, w) output are: {shown}.")


@contextmanager
def retained_output(net: nn.Module, layer: str) -> Iterator[list[Tensor]]:
    """While the `with` block runs, every output of `layer` is replaced by a leaf copy that requires grad and is
    appended to the yielded list, so `torch.autograd.grad(score, kept[0])` differentiates with respect to it (also
    when the network's weights are frozen). The hook is removed on leaving the block, error or not."""
    kept: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        kept.append(leaf)
        return leaf

    handle = dict(net.named_modules())[layer].register_forward_hook(keep)
    try:
        yield kept
    finally:
        handle.remove()


# ---- CAM and Grad-CAM ------------------------------------------------------------------------------------------
def _class_scores_and_map(net: nn.Module, images: Tensor, target: Tensor, layer: str) -> tuple[Tensor, Tensor]:
    # Lightning's predict runs in inference mode; tensors made there are copied out of it (`clone`)
    with torch.inference_mode(False), torch.enable_grad(), retained_output(net, layer) as kept:
        logits = net(images.clone())
        activations = kept[0]  # (B, K, h, w)
        score = logits.gather(1, target.clone().view(-1, 1)).sum()  # each image's score: its own map only
        (gradients,) = torch.autograd.grad(score, activations)
    return activations.detach(), gradients


def grad_cam(net: nn.Module, images: Tensor, target: Tensor, layer: str) -> Tensor:
    """Grad-CAM maps `(B, h, w)` at `layer`'s resolution: `ReLU(sum_k mean_ij(d y_c / d A_k) A_k)` with `y_c` the
    logit of class `target[b]`."""
    activations, gradients = _class_scores_and_map(net, images, target, layer)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): alpha_k^c
    return F.relu((weights * activations).sum(1))


def cam(net: nn.Module, images: Tensor, target: Tensor, layer: str, linear: nn.Linear) -> Tensor:
    """CAM maps `(B, h, w)`: `sum_k w_ck A_k` with `A` the output of `layer` (the map global average pooling
    reduces) and `w` the weights of the `linear` layer after the pooling."""
    with retained_output(net, layer) as kept, torch.no_grad():
        net(images)
    activations = kept[0].detach()  # (B, K, h, w)
    weights = linear.weight[target].to(activations.dtype)  # (B, K)
    return torch.einsum("bk,bkhw->bhw", weights, activations)


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """`(B, h, w)` maps -> `(B, H, W)`, bilinear (a coarse map's cells spread smoothly over the image)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# ---- LIME and Kernel SHAP on segments ---------------------------------------------------------------------------
def segment(images: Tensor, how: Segments = "slic", n_segments: int = 50) -> Tensor:
    """`(B, C, H, W)` images in [-1, 1] -> `(B, H, W)` integer segment ids 0..S-1 per image: SLIC superpixels
    (scikit-image, about `n_segments` per image) or a square grid of about `n_segments` cells."""
    b, c, h, w = images.shape
    if how == "grid":
        side = max(1, round((h * w / n_segments) ** 0.5))
        rows, cols = torch.arange(h) // side, torch.arange(w) // side
        ids = rows[:, None] * int(cols.max() + 1) + cols[None, :]
        return ids.expand(b, h, w).clone()
    try:
        from skimage.segmentation import slic
    except ImportError:  # pragma: no cover - scikit-image is in the explain extra
        raise ConfigError('SLIC superpixels need scikit-image: `pip install "lightning-gen[explain]"`, or use '
                          "`segments: grid`.") from None
    out = []
    for image in images.detach().float().cpu().add(1).div(2).clamp(0, 1):
        array = image.permute(1, 2, 0).numpy() if c == 3 else image[0].numpy()
        labels = slic(array, n_segments=n_segments, compactness=10 if c == 3 else 0.1, start_label=0,
                      channel_axis=-1 if c == 3 else None)
        out.append(torch.from_numpy(labels).long())
    return torch.stack(out)


def baseline_images(images: Tensor, how: Baseline) -> Tensor:
    """What a segment that is "off" shows: `zero` (mid grey in [-1, 1]), `mean` (the image's mean colour) or `blur`
    (a strongly blurred copy of the image)."""
    if how == "zero":
        return torch.zeros_like(images)
    if how == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    side = max(images.shape[-2:])
    kernel = 2 * (side // 4) + 1
    return torchvision.transforms.v2.functional.gaussian_blur(images, [kernel, kernel], [side / 6, side / 6])


def class_probability(net: nn.Module, num_classes: int) -> Callable[[Tensor], Tensor]:
    """The function LIME and Kernel SHAP explain: images -> `(B, N)` softmax over the first N (real-class) logits."""
    def forward(x: Tensor) -> Tensor:
        return net(x)[:, :num_classes].float().softmax(1)
    return forward


def lime_similarity(_original: Tensor, _perturbed: Tensor, on: Tensor, kernel_width: float = 0.25, **_: Any) -> Tensor:
    """LIME's sample weight: `exp(-d^2 / width^2)` with `d` the cosine distance between the sample's on/off vector of
    segments and the all-on vector of the image itself."""
    on = on.float().flatten()
    distance = 1 - on.sum() / (on.norm() * on.numel() ** 0.5).clamp_min(1e-12)
    return torch.exp(-(distance**2) / kernel_width**2)


def perturbation_maps(method: Literal["lime", "kernel_shap"], forward: Callable[[Tensor], Tensor], images: Tensor,
                      target: Tensor, segments: Tensor, baselines: Tensor, n_samples: int, seed: int = 0) -> Tensor:
    """LIME or Kernel SHAP (captum) maps `(B, H, W)`: every pixel gets its segment's coefficient. One image at a
    time (each gets its own linear model), `n_samples` perturbed copies each, seeded by `seed + index`."""
    try:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import KernelShap, Lime
    except ImportError:  # pragma: no cover - captum is in the explain extra
        raise ConfigError(f'{method} needs captum: `pip install "lightning-gen[explain]"`.') from None
    if method == "kernel_shap":
        explainer = KernelShap(forward)
    else:  # LIME's image settings (Ribeiro et al.'s lime_image): ridge regression, kernel width 0.25
        explainer = Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=lime_similarity)
    maps = []
    for i in range(images.shape[0]):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            attribution = explainer.attribute(
                images[i : i + 1], baselines=baselines[i : i + 1], target=int(target[i]),
                feature_mask=segments[i].to(images.device)[None, None].expand(1, images.shape[1], -1, -1),
                n_samples=n_samples, perturbations_per_eval=min(n_samples, 64),
            )
        maps.append(attribution[0, 0].detach().float())
    return torch.stack(maps)


def exact_shapley(f: Callable[[Tensor], Tensor], x: Tensor, baseline: Tensor) -> Tensor:
    """Exact Shapley values of the scalar function `f` at the `(M,)` point `x`, players the M features, a feature
    that is absent taking its `baseline` value: `phi_i = sum_{S without i} |S|! (M - |S| - 1)! / M! (f(S + i) - f(S))`
    by enumerating all 2^M coalitions (M at most about 16)."""
    m = x.numel()
    coalitions = torch.tensor([[(s >> i) & 1 for i in range(m)] for s in range(2**m)], dtype=torch.bool)
    values = f(torch.where(coalitions, x, baseline)).reshape(-1)  # value of every coalition, by bit pattern
    sizes = coalitions.sum(1)
    factorial = torch.tensor([float(torch.arange(1, k + 1).prod()) for k in range(m + 1)], dtype=torch.float64)
    phi = torch.zeros(m, dtype=torch.float64)
    for i in range(m):
        without = ~coalitions[:, i]
        s = torch.nonzero(without).squeeze(1)
        weight = factorial[sizes[s]] * factorial[m - sizes[s] - 1] / factorial[m]
        phi[i] = (weight * (values[s + (1 << i)].double() - values[s].double())).sum()
    return phi


# ---- the technique ---------------------------------------------------------------------------------------------
class _Indexed(Dataset):
    """`(index, image, label)` items of the items `indices` of a dataset (items `(image, label)` or an image; label
    -1 when there is none)."""

    def __init__(self, data: Dataset, indices: list[int]) -> None:
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Tensor, int]:
        index = self.indices[i]
        item = self.data[index]
        image, label = (item[0], int(item[1])) if isinstance(item, (tuple, list)) else (item, -1)
        return index, image, label


class Explain(Technique):
    """Explain a trained classifier's predictions on images of a datamodule (`predict` only; nothing is trained).

    Args:
        classifier_ckpt: a `Classifier` checkpoint (small CNN, MLP or ImageNet backbone) or an `SGAN` checkpoint
            (its discriminator's real-class logits are explained).
        methods: which explanations to compute: `cam` (networks ending in global average pooling and a linear layer:
            the project's `cnn` and every ImageNet backbone), `gradcam`, `lime`, `kernel_shap`.
        layer: the layer Grad-CAM reads (a name from the network's layers; the error for a wrong one lists them).
            Default: the layer that global average pooling reduces, else the last convolutional layer.
        target_class: explain this class for every image. Default: each image's predicted class.
        segments: the units LIME and Kernel SHAP switch off: `slic` superpixels or a `grid` of square cells.
        n_segments: about how many segments per image.
        n_samples: perturbed copies per image for LIME and Kernel SHAP (more: steadier maps, slower).
        baseline: what a switched-off segment shows: `zero` (mid grey), `mean` (the image's mean colour), `blur`.
        num_images: explain this many images of the split, drawn at random with `seed` (None: all of it, in order).
        split: `test` or `train` images of the datamodule, or `all` of them (a folder of your own pictures: its
            training, validation and test images together).
        batch_size: images per predict batch.
        seed: seed of the image draw and of the LIME / Kernel SHAP sampling (image i uses seed + its index).
    """

    explains_data = True  # the CLI keeps the logger for predict and hands the datamodule over (core/protocols.py)
    source_data: L.LightningDataModule | None = None  # the images to explain, set by the CLI

    def __init__(
        self,
        classifier_ckpt: str,
        methods: list[Method] | None = None,
        layer: str | None = None,
        target_class: int | None = None,
        segments: Segments = "slic",
        n_segments: int = 50,
        n_samples: int = 200,
        baseline: Baseline = "zero",
        num_images: int | None = 16,
        split: Literal["test", "train", "all"] = "test",
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        methods = list(methods or ["cam", "gradcam", "lime", "kernel_shap"])
        unknown = [m for m in methods if m not in ("cam", "gradcam", "lime", "kernel_shap")]
        if unknown or not methods:
            raise ConfigError(f"methods {unknown or '[]'}: choose from cam, gradcam, lime, kernel_shap.")
        for name, value, low in (("n_segments", n_segments, 2), ("n_samples", n_samples, 10),
                                 ("batch_size", batch_size, 1), ("num_images", num_images or 1, 1)):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}.")
        self.save_hyperparameters()
        self.net, self.num_classes, self.image_shape, technique = explained_network(classifier_ckpt)
        if target_class is not None and not 0 <= target_class < self.num_classes:
            raise ConfigError(f"target_class {target_class} is out of range: the {technique} knows classes "
                              f"0..{self.num_classes - 1}.")
        cam_layer = self.net.cam_layer
        if "cam" in methods and cam_layer is None:
            raise ConfigError(f"CAM needs a network that ends in global average pooling and one linear layer; this "
                              f"{technique}'s `{self.net.arch}` network does not. Use gradcam (any convolutional "
                              "layer), lime or kernel_shap.")
        self.layer = layer or cam_layer
        if "gradcam" in methods:
            if self.layer is None:
                layers = spatial_layers(self.net, self.image_shape)
                if not layers:
                    raise ConfigError(f"Grad-CAM needs a convolutional layer; this {technique}'s `{self.net.arch}` "
                                      "network has none. Use lime or kernel_shap.")
                self.layer = layers[-1]
            check_layer(self.net, self.layer, self.image_shape)
        self.methods: list[str] = methods
        self.technique = technique

    def build(self) -> None:
        dm = self.source_data or self.datamodule
        if not isinstance(dm, ReferenceImages) or not isinstance(dm, L.LightningDataModule):
            raise ConfigError("Explain needs an image datamodule (`--data`), e.g. datamodules.MNIST or "
                              "datamodules.ImageFolder.")
        dm.setup("test" if self.hparams.split == "test" else "fit")
        shape = dm.image_shape if isinstance(dm, ImageData) else None
        if shape is not None and shape[0] != self.image_shape[0]:
            kind = {1: "grey", 3: "colour"}
            raise ConfigError(
                f"the classifier was trained on {kind.get(self.image_shape[0], self.image_shape[0])} images "
                f"{self.image_shape}, but {type(dm).__name__} gives {kind.get(shape[0], shape[0])} images {shape}. "
                "Explain it on data like its training data."
            )

    def prediction_writer(self) -> ExplanationWriter:
        return ExplanationWriter()

    def predict_dataloader(self) -> DataLoader:
        dm = self.source_data or self.datamodule
        data = {"test": dm.test_set, "train": dm.train_set}.get(self.hparams.split)
        if self.hparams.split == "all":
            parts = [dm.train_set, dm.test_set]
            if isinstance(dm, ImageDataModule):  # the validation split, unless it is the test set already
                parts.insert(1, None if dm.val_set is dm.test_set else dm.val_set)
            data = ConcatDataset([part for part in parts if part is not None])
        if data is None:
            raise ConfigError(f"{type(dm).__name__} has no {self.hparams.split} images; choose another --model.split.")
        indices = list(range(len(data)))
        if self.hparams.num_images is not None and self.hparams.num_images < len(data):
            draw = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.hparams.seed))
            indices = sorted(draw[: self.hparams.num_images].tolist())
        return DataLoader(_Indexed(data, indices), batch_size=self.hparams.batch_size, shuffle=False)

    def explain(self, images: Tensor, target: Tensor, methods: Sequence[str] | None = None) -> dict[str, Tensor]:
        """`{method: (B, H, W) map}` for class `target[b]` of image b, for each of `methods` (default: the configured
        ones)."""
        hp, size = self.hparams, images.shape[-2:]
        maps: dict[str, Tensor] = {}
        methods = list(methods or self.methods)
        if {"lime", "kernel_shap"} & set(methods):  # one segmentation and baseline for both perturbation methods
            segments, baselines = segment(images, hp.segments, hp.n_segments), baseline_images(images, hp.baseline)
        for method in methods:
            if method == "cam":
                maps[method] = upsample(cam(self.net, images, target, self.net.cam_layer, self.net.last_linear), size)
            elif method == "gradcam":
                maps[method] = upsample(grad_cam(self.net, images, target, self.layer), size)
            else:
                maps[method] = perturbation_maps(method, class_probability(self.net, self.num_classes), images,
                                                 target, segments, baselines, hp.n_samples, hp.seed)
        return maps

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        index, images, labels = batch
        with torch.no_grad():
            probabilities = class_probability(self.net, self.num_classes)(images)
        predicted = probabilities.argmax(1)
        target = predicted if self.hparams.target_class is None else torch.full_like(predicted,
                                                                                     self.hparams.target_class)
        maps = self.explain(images, target)
        return {"index": index, "images": images, "labels": labels, "predicted": predicted, "target": target,
                "probability": probabilities.gather(1, target[:, None])[:, 0], "maps": maps}


# ---- pictures --------------------------------------------------------------------------------------------------
def heat_colours(maps: Tensor) -> Tensor:
    """`(B, H, W)` maps -> `(B, 3, H, W)` colours in [0, 1], each map scaled to its own [min, max]: dark blue (least
    evidence) through cyan, yellow, to red (most)."""
    low = maps.flatten(1).min(1).values.view(-1, 1, 1)
    high = maps.flatten(1).max(1).values.view(-1, 1, 1)
    v = ((maps - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    red = (1.5 - (4 * v - 3).abs()).clamp(0, 1)
    green = (1.5 - (4 * v - 2).abs()).clamp(0, 1)
    blue = (1.5 - (4 * v - 1).abs()).clamp(0, 1)
    return torch.stack([red, green, blue], 1)


def explanation_panel(image: Tensor, maps: dict[str, Tensor]) -> Tensor:
    """One image's picture: top row the image then each method's map, bottom row the image then each overlay (the
    map's colours over a dimmed image). `(C, H, W)` image in [-1, 1] -> `(3, H', W')` in [0, 1]."""
    rgb = image.float().expand(3, -1, -1).add(1).div(2).clamp(0, 1)
    heats = [heat_colours(m[None].float())[0] for m in maps.values()]
    top = [rgb, *heats]
    bottom = [rgb, *[0.45 * rgb + 0.55 * h for h in heats]]
    return image_grid(torch.stack(top + bottom).mul(2).sub(1), nrow=len(top), min_side=96)


class ExplanationWriter(BasePredictionWriter):
    """Writes `Explain`'s outputs under `predictions/explanations/`: `<index>.png` per image (see
    `explanation_panel`), `grid.png` (one row per image: the image then each method's overlay; per process under DDP:
    `grid_rank<R>.png`), `explanations.csv` (index, label, predicted, target, probability), and, with a W&B logger, a
    table `explanations` of the same columns with the pictures."""

    def __init__(self, output_dir: str | None = None, grid_max: int = 16) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.grid_max = output_dir, grid_max
        self.rows: list[tuple[int, int, int, int, float]] = []
        self.grid: list[Tensor] = []
        self.methods: list[str] = []

    def folder(self, trainer: L.Trainer) -> Any:
        return predictions_folder(trainer, self.output_dir) / "explanations"

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows, self.grid, self.methods = [], [], []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        maps = {name: m.detach().float().cpu() for name, m in prediction["maps"].items()}
        images = prediction["images"].detach().float().cpu()
        for b, index in enumerate(prediction["index"].tolist()):
            panel = explanation_panel(images[b], {name: m[b] for name, m in maps.items()})
            torchvision.utils.save_image(panel, folder / f"{index:05d}.png")
            row = (index, int(prediction["labels"][b]), int(prediction["predicted"][b]), int(prediction["target"][b]),
                   float(prediction["probability"][b]))
            self.rows.append(row)
            if len(self.grid) < self.grid_max:
                rgb = images[b].expand(3, -1, -1)
                heats = [heat_colours(m[b][None])[0].mul(2).sub(1) for m in maps.values()]
                self.grid.append(torch.stack([rgb, *[0.45 * rgb + 0.55 * h for h in heats]]))
        self.methods = list(maps)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows:
            return
        folder = self.folder(trainer)
        rank = "" if trainer.world_size == 1 else f"_rank{trainer.global_rank}"
        columns = len(self.methods) + 1
        torchvision.utils.save_image(image_grid(torch.cat(self.grid), nrow=columns, min_side=96),
                                     folder / f"grid{rank}.png")
        with (folder / f"explanations{rank}.csv").open("w") as file:
            file.write("index,label,predicted,target,probability\n")
            file.writelines(f"{i},{lab},{p},{t},{prob:.6f}\n" for i, lab, p, t, prob in sorted(self.rows))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                data = [[*row, wandb.Image(str(folder / f"{row[0]:05d}.png"))] for row in sorted(self.rows)]
                columns = ["index", "label", "predicted", "target", "probability", "picture"]
                logger.log_table("explanations", columns=columns, data=data)
        rank_zero_info(f"predict: explained {len(self.rows)} images ({', '.join(self.methods)}) in {folder}")


__all__ = ["Explain", "ExplanationWriter", "cam", "exact_shapley", "grad_cam", "perturbation_maps", "segment"]
