"""The super-resolution literature's evaluation: PSNR and SSIM per image, averaged per benchmark set, on the
luminance (Y of ITU-R BT.601, 16-235) with `scale` pixels shaved off every border, or on RGB; the bicubic
upsampling scored the same way as the baseline row.

As the published evaluation scripts do, every image is first rounded to 8 bits (the image a user would save), and
an image whose file has a single (grey) channel, such as Set14's `bridge.png`, is scored on its grey values in
[0, 255], not on a BT.601 luma of it (which would squeeze its errors into 16-235 and read 1.3 dB high)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.image import StructuralSimilarityIndexMeasure

from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import NamedEvalSets, SuperResolutionData
from lightning_gen.core.runs import logs_this_step, save_and_log_images
from lightning_gen.core.technique import Technique

# BT.601 luma of [0, 1] RGB, in [16, 235]: what MATLAB's rgb2ycbcr gives (the benchmarks' convention)
Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(images: Tensor) -> Tensor:
    """`(B, 3, H, W)` RGB in [-1, 1] -> `(B, 1, H, W)` BT.601 luma in [16, 235] (8-bit scale)."""
    rgb = images.float().clamp(-1, 1).add(1).div(2)
    weights = torch.tensor(Y_WEIGHTS, device=rgb.device).view(1, 3, 1, 1)
    return 16.0 + (rgb * weights).sum(1, keepdim=True)


def rgb_to_grey(images: Tensor) -> Tensor:
    """`(B, 3, H, W)` RGB in [-1, 1] -> `(B, 1, H, W)` grey values in [0, 255]: the BT.601 luma stretched back to
    the full range, so an image with three equal channels gives exactly its grey values."""
    return (rgb_to_y(images) - 16.0) * (255.0 / sum(Y_WEIGHTS))


def to_255(images: Tensor) -> Tensor:
    return images.float().clamp(-1, 1).add(1).mul(127.5)


def to_8_bits(images: Tensor) -> Tensor:
    """Images in [-1, 1] rounded to the nearest of the 256 levels an 8-bit file holds (still in [-1, 1])."""
    return to_255(images).round().div(127.5).sub(1)


def shave(images: Tensor, border: int) -> Tensor:
    return images[..., border:-border, border:-border] if border > 0 else images


class SRMetrics(nn.Module):
    """PSNR and SSIM of the model's output and of bicubic upsampling against HR, one pair of metrics per set.

    Args:
        sets: names of the evaluation sets (e.g. Set5, Set14), in dataloader order.
        channel: `y` (luminance, the literature's tables) or `rgb`.
        border: pixels shaved off each side before scoring (the literature: the scale).
    """

    def __init__(self, sets: list[str], channel: Literal["y", "rgb"] = "y", border: int = 4) -> None:
        super().__init__()
        self.sets, self.channel, self.border = list(sets), channel, border

        def pair() -> nn.ModuleDict:  # per-image PSNR and SSIM, averaged over images; both are float sums, which
            # every DDP process can sync even when it scored no image of a set
            return nn.ModuleDict({"psnr": MeanMetric(), "ssim": StructuralSimilarityIndexMeasure(data_range=255.0)})

        self.model = nn.ModuleList([pair() for _ in sets])
        self.bicubic = nn.ModuleList([pair() for _ in sets])

    def prepare(self, images: Tensor, grey: Tensor | None = None) -> Tensor:
        """Images in [-1, 1] -> the values scored: rounded to 8 bits, then the Y channel (grey images: their grey
        values) or RGB on a 0-255 scale, with the border shaved. `grey`: `(B,)` bool, images from one-channel files."""
        images = to_8_bits(images)
        if self.channel == "y":
            scored = rgb_to_y(images)
            if grey is not None and grey.any():
                scored = torch.where(grey.view(-1, 1, 1, 1).to(scored.device), rgb_to_grey(images), scored)
        else:
            scored = to_255(images)
        return shave(scored, self.border)

    def update(self, index: int, output: Tensor, hr: Tensor, bicubic: Tensor, grey: Tensor | None = None) -> None:
        """Score a batch of set `index`; `grey` `(B,)` marks images whose files are greyscale (scored on grey)."""
        target = self.prepare(hr, grey)
        for metrics, images in ((self.model[index], output), (self.bicubic[index], bicubic)):
            prepared = self.prepare(images, grey)
            metrics["psnr"].update(peak_signal_noise_ratio(prepared, target, data_range=255.0, reduction="none",
                                                           dim=(1, 2, 3)))  # (B,) one value per image
            metrics["ssim"].update(prepared, target)

    def compute(self) -> dict[str, Tensor]:
        """`{"<set>/psnr", "<set>/ssim", "<set>/bicubic_psnr", "<set>/bicubic_ssim"}` for the sets that were
        updated (under DDP: for every set, over the images of all processes); then resets."""
        out = {}
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        for name, ours, base in zip(self.sets, self.model, self.bicubic):
            if ours["psnr"].update_count == 0 and not distributed:  # under DDP a process may have had no image
                continue                                             # of a set, and every process must sync
            for key in ("psnr", "ssim"):
                out[f"{name}/{key}"] = ours[key].compute()
                out[f"{name}/bicubic_{key}"] = base[key].compute()
        for metrics in (*self.model, *self.bicubic):
            for metric in metrics.values():
                metric.reset()
        return out


class SREvaluation:
    """What an SR technique's `validation_step`/`test_step` and epoch ends share: per-set metrics (built on first use
    from the datamodule's set names), logged as `<stage>/<set>/psnr` etc., and (bicubic | output | HR) strips of the
    first `num_strips` images of each set, saved as PNG and sent to the loggers.

    Not a module: the owner keeps its metrics on its device through `step`."""

    def __init__(self, channel: Literal["y", "rgb"] = "y", border: int = 4, num_strips: int = 2) -> None:
        self.channel, self.border, self.num_strips = channel, border, num_strips
        self.metrics: dict[str, SRMetrics] = {}
        self.strips: list[Tensor] = []

    def step(self, module: Technique, stage: str, output: Tensor, batch: dict, batch_idx: int,
             dataloader_idx: int) -> None:
        if stage not in self.metrics:
            dm = module.datamodule
            names = dm.set_names("validate" if stage == "val" else stage) if isinstance(dm, NamedEvalSets) else []
            loaders = module.trainer.val_dataloaders if stage == "val" else module.trainer.test_dataloaders
            count = len(loaders) if isinstance(loaders, (list, tuple)) else 1
            self.metrics[stage] = SRMetrics(names or [f"set{i}" for i in range(count)], self.channel, self.border)
        metrics = self.metrics[stage].to(output.device)
        keep = module.first_visit(batch_idx, len(output), dataloader_idx)  # (B,) bool: DDP's repeated images out
        if not keep.any():  # under DDP: an image the sampler repeated to even out the processes, scored elsewhere
            return
        grey = batch["grey"][keep] if "grey" in batch else None
        metrics.update(dataloader_idx, output[keep].detach(), batch["hr"][keep], batch["bicubic"][keep], grey)
        if batch_idx < self.num_strips and not module.trainer.sanity_checking:
            self.strips.append(strip(batch["bicubic"][0], output[0].detach(), batch["hr"][0]))

    def epoch_end(self, module: Technique, stage: str) -> None:
        if stage not in self.metrics:
            return
        values = self.metrics[stage].compute()
        module.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=True)
        if self.strips:
            save_and_log_images(module.trainer, f"{stage}/strips", torch.stack(self.strips), nrow=1)
        self.strips = []


def strip(bicubic: Tensor, output: Tensor, hr: Tensor, side: int = 128) -> Tensor:
    """A `(3, side, 3 * side)` strip of the same centre crop of the three images (the whole image if smaller)."""
    h, w = hr.shape[-2:]
    s = min(side, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crops = [im[:, top: top + s, left: left + s].float().clamp(-1, 1) for im in (bicubic, output, hr)]
    return torch.cat(crops, dim=-1)


def check_residual(checkpoint: dict, residual: bool, source: str) -> None:
    """Refuse a checkpoint whose `residual` setting (adding the bicubic upsampling to the output; absent in older
    checkpoints: off) differs from the model's."""
    saved = bool(checkpoint.get("hyper_parameters", {}).get("residual", False))
    if saved != residual:
        raise ConfigError(f"{source} was trained with residual={saved} but this model has residual={residual}; set "
                          f"--model.residual {str(saved).lower()} to match it.")


class SuperResolutionEvaluation:
    """Evaluation hooks every SR technique shares (mixed in before `Technique`: `class SRCNN(SuperResolutionEvaluation,
    Technique)`): `validate`/`test` score `self.upscale(batch)` per set with `self.evaluation` (an `SREvaluation`),
    `predict` writes the upscaled images under their names, and `setup` refuses a datamodule of another scale. The
    technique keeps its own `build` and `training_step` (the MSE ones call `mse_step`)."""

    def upscale(self, batch: dict) -> Tensor:
        raise NotImplementedError

    def check_scale(self) -> None:
        scale = self.datamodule.scale if isinstance(self.datamodule, SuperResolutionData) else None
        if scale is not None and scale != self.hparams.scale:
            raise ConfigError(f"the model's scale is {self.hparams.scale} but the data's is {scale}; set both "
                              f"(--model.scale {scale} or --data.scale {self.hparams.scale}).")

    def setup(self, stage: str) -> None:
        self.check_scale()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # the bicubic skip has no weights, so a checkpoint trained without it would load and then be wrong
        check_residual(checkpoint, self.hparams.get("residual", False), "the checkpoint")

    def mse_step(self, batch: dict) -> Tensor:
        """The training loss of the pixel-loss techniques (SRCNN, SRResNet): mean squared error of
        `self.upscale(batch)` against HR, logged as `train/mse`."""
        loss = F.mse_loss(self.upscale(batch).float(), batch["hr"].float())
        if logs_this_step(self.trainer):
            self.log("train/mse", loss.detach(), prog_bar=True, batch_size=len(batch["hr"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluation.step(self, "val", self.upscale(batch), batch, batch_idx, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluation.step(self, "test", self.upscale(batch), batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self.evaluation.epoch_end(self, "val")

    def on_test_epoch_end(self) -> None:
        self.evaluation.epoch_end(self, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"images": self.upscale(batch).clamp(-1, 1), "names": list(batch["name"])}
