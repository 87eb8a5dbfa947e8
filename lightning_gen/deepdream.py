"""DeepDream: Mordvintsev, Olah & Tyka, "Inceptionism: Going Deeper into Neural Networks" (Google Research blog,
2015), as in their published notebook.

Gradient ascent on an image to raise the activations of chosen layers of a frozen ImageNet network F
(`lightning_gen.nn.features`): the objective is `sum_l mean(F_l(x)^2)` (the notebook's L2 objective). Each step
rolls the image by a random offset of up to `jitter` pixels (so the pattern does not lock to the network's stride
grid), takes the gradient, divides it by its mean absolute value (so `step_size` is in pixel units whatever the
layer's scale), steps, and rolls back. The work runs over `octaves` scales, smallest first, each `octave_scale`
times the previous; at every scale the detail the ascent added so far is upscaled and added back to that scale's
version of the photo ("detail re-injection"), so large structures come from small scales and fine texture from
large ones.

`predict` dreams every image of `images` (a file or a folder) and writes the results under their names; there is
no training and no checkpoint. Gradients are switched back on inside `predict_step`, so the Trainer's default
`inference_mode=True` is fine:

    lightning-gen predict --config configs/deepdream/mobilenet.yaml --model.images my_photo.jpg
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.files import ImageFiles, image_files
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.technique import Technique
from lightning_gen.nn.features import Backbone, FeatureNet, attach_frozen, check_layers, on_device

DEFAULT_DREAM_LAYERS = {"vgg16": ["relu4_3"], "vgg19": ["relu4_4"], "mobilenet_v1": ["conv_pw_11_relu"]}


class DeepDream(Technique):
    """DeepDream with octaves, detail re-injection, jitter and normalised gradient steps.

    Args:
        images: the photo to dream on, or a folder of them (`$VARS` and `~` expanded).
        image_size: resize each so its longer side is this (default: its own size).
        backbone: the network whose activations are raised: `mobilenet_v1` (offline), `vgg16` or `vgg19`.
        weights: its weights: a file path, `imagenet` (torch hub cache, downloaded there if missing) or `random`
            (tests only).
        layers: the layers whose activations are raised (deeper layers give more object-like patterns).
        octaves: number of scales.
        octave_scale: size ratio between neighbouring scales.
        steps: gradient-ascent steps per scale.
        step_size: size of each step in [-1, 1] pixel units, after dividing the gradient by its mean absolute value.
        jitter: largest random roll of the image before each step, in pixels.
        seed: seed of the jitter offsets.
    """

    owns_predict_inputs = True  # `predict` reads `images`; it needs no datamodule

    def __init__(
        self,
        images: str,
        image_size: int | None = None,
        backbone: Backbone = "mobilenet_v1",
        weights: str = "imagenet",
        layers: list[str] | None = None,
        octaves: int = 4,
        octave_scale: float = 1.4,
        steps: int = 10,
        step_size: float = 0.01,
        jitter: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = check_layers(backbone, layers or DEFAULT_DREAM_LAYERS[backbone], "layers")
        if octaves < 1 or steps < 1 or octave_scale <= 1 or step_size <= 0 or jitter < 0:
            raise ConfigError(f"need octaves >= 1, steps >= 1, octave_scale > 1, step_size > 0 and jitter >= 0; got "
                              f"{octaves}, {steps}, {octave_scale}, {step_size}, {jitter}.")
        image_files(images, "images")  # a missing path is reported now, before the weights are read

    def build(self) -> None:
        """The frozen feature network whose activations are raised (DeepDream trains nothing; kept out of
        checkpoints and DDP by `attach_frozen`)."""
        attach_frozen(self, "features", FeatureNet(self.hparams.backbone, self.hparams.weights))

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ConfigError(f"DeepDream has nothing to {getattr(stage, 'value', stage)}: it changes images, not "
                              "weights. Run `lightning-gen predict --config configs/deepdream/mobilenet.yaml "
                              "--model.images <photo>`.")

    # Defined only so that `fit` gets past Lightning's checks to `setup`'s explanation above.
    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.setup("fit")

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")

    def configure_optimizers(self) -> None:
        self.setup("fit")

    def objective(self, image: Tensor) -> Tensor:
        """`sum_l mean(F_l(image)^2)` over the dream layers."""
        acts = on_device(self.features, image.device)(image, self.layers)
        return sum(a.float().pow(2).mean() for a in acts.values())

    def ascend(self, image: Tensor, steps: int, generator: torch.Generator) -> Tensor:
        """`steps` jittered, normalised gradient-ascent steps on `(1, 3, H, W)` `image`."""
        hp = self.hparams
        x = image.detach().clone()
        for _ in range(steps):
            dy, dx = (torch.randint(-hp.jitter, hp.jitter + 1, (2,), generator=generator).tolist()
                      if hp.jitter else (0, 0))
            rolled = torch.roll(x, (dy, dx), (-2, -1)).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.objective(rolled), rolled)
            grad = torch.roll(grad, (-dy, -dx), (-2, -1))
            x = (x + hp.step_size * grad / (grad.abs().mean() + 1e-8)).clamp(-1, 1)
        return x

    def dream(self, image: Tensor) -> Tensor:
        """The dream of a `(1, 3, H, W)` image in [-1, 1], of the same size."""
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        h, w = image.shape[-2:]
        sizes = [(max(1, round(h / hp.octave_scale**i)), max(1, round(w / hp.octave_scale**i)))
                 for i in reversed(range(hp.octaves))]  # smallest first
        with torch.inference_mode(False), torch.enable_grad():  # Lightning's predict loop runs in inference mode
            image = image.clone()  # a normal tensor, which autograd may record
            detail = torch.zeros_like(image[..., : sizes[0][0], : sizes[0][1]])
            for size in sizes:
                base = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
                detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
                dreamt = self.ascend(base + detail, hp.steps, generator)
                detail = dreamt - base
        return dreamt.detach()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(ImageFiles(self.hparams.images, self.hparams.image_size, "images"), batch_size=1)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        image = batch["image"]  # (1, 3, H, W)
        dreamt = self.dream(image)
        with torch.inference_mode(False), torch.no_grad():
            before, after = float(self.objective(image.clone())), float(self.objective(dreamt))
        rank_zero_info(f"{batch['name'][0]}: objective {before:.4g} -> {after:.4g}")
        return {"images": dreamt, "names": list(batch["name"])}
