"""How faithful an explanation map is to the model it explains.

- **Deletion and insertion** (Petsiuk, Das & Saenko, BMVC 2018, "RISE"): remove the pixels in the order of the map
  (most important first) and follow the class probability; a faithful map makes it fall fast (low deletion AUC). Or
  start from a blurred image and put the pixels back in that order; a faithful map makes it rise fast (high insertion
  AUC). Removed pixels become 0 (mid grey in the project's [-1, 1] scaling, as Petsiuk et al. set removed pixels to
  0 after normalising by the dataset mean); insertion starts from a strongly blurred copy.
- **Model randomisation** (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency maps"): re-initialise the
  network's layers from the top, one more at a time, and compare each map with the trained network's (Spearman rank
  correlation over the pixels). A map that stays the same does not explain what the network learned.
- **Baselines** a method has to beat: a random map, and the image's edge map (Sobel gradient magnitude).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchmetrics.functional import spearman_corrcoef


def _blurred(images: Tensor) -> Tensor:
    """Petsiuk et al.'s insertion start: the image under a Gaussian blur (kernel 11, sigma 5 at 224 px, scaled)."""
    side = max(images.shape[-2:])
    sigma = 5.0 * side / 224 * 4  # a 28-32 px image gets sigma ~2.5: its shape is gone, its brightness is kept
    kernel = 2 * int(2 * sigma) + 1
    return torchvision.transforms.v2.functional.gaussian_blur(images, [kernel, kernel], [sigma, sigma])


@torch.no_grad()
def deletion_insertion(probability: Callable[[Tensor], Tensor], images: Tensor, maps: Tensor, target: Tensor,
                       steps: int = 32) -> tuple[Tensor, Tensor]:
    """The deletion and insertion curves `(B, steps + 1)`: the probability of class `target[b]` after 0, 1/steps, ...,
    all of the pixels have been removed (deletion) or put back (insertion) in the order of `maps[b]` (highest first;
    ties broken by position). `probability` maps images to `(B, N)` class probabilities."""
    b, c, h, w = images.shape
    order = maps.reshape(b, -1).float().argsort(dim=1, descending=True, stable=True)  # (B, H*W) pixel indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))  # rank of each pixel in the order
    rank = rank.view(b, 1, h, w)
    removed, blurred = torch.zeros_like(images), _blurred(images)
    deletion, insertion = [], []
    for k in range(steps + 1):
        shown = rank < round(k * h * w / steps)  # (B, 1, H, W): the first k/steps of the pixels in map order
        deletion.append(probability(torch.where(shown, removed, images)).gather(1, target[:, None])[:, 0])
        insertion.append(probability(torch.where(shown, images, blurred)).gather(1, target[:, None])[:, 0])
    return torch.stack(deletion, 1), torch.stack(insertion, 1)


def area_under(curve: Tensor) -> Tensor:
    """Trapezoidal area under `(B, K)` curves sampled at K evenly spaced points of [0, 1]: `(B,)`."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def random_maps(images: Tensor, seed: int = 0) -> Tensor:
    """Uniform random `(B, H, W)` maps: the floor every explanation should beat."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(images.shape[0], *images.shape[-2:], generator=generator).to(images.device)


def edge_maps(images: Tensor) -> Tensor:
    """Sobel gradient magnitude `(B, H, W)` summed over the channels: where the image has edges, which a map that
    only follows the image (and not the model) would highlight."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    kernels = torch.stack([sobel, sobel.t()])[:, None]  # (2, 1, 3, 3)
    grey = images.float().sum(1, keepdim=True)
    gradients = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return gradients.pow(2).sum(1).sqrt()


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between two `(B, H, W)` map batches, per image: `(B,)` (torchmetrics)."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return spearman_corrcoef(a.t(), b.t()).reshape(-1).float()


def layers_top_down(net: nn.Module) -> list[str]:
    """Names of `net`'s modules that hold their own weights, from the output back to the input."""
    names = [name for name, module in net.named_modules()
             if name and any(True for _ in module.parameters(recurse=False))]
    return names[::-1]


def cascading_randomisation(net: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Adebayo et al.'s cascade: yields `(layer name, copy of net)` with the top layer re-initialised, then the top
    two, and so on to the input. Each layer gets its PyTorch default initialisation (`reset_parameters`) or, for a
    module without one, normal noise of its weights' standard deviation."""
    randomised = copy.deepcopy(net)
    modules = dict(randomised.named_modules())
    torch.manual_seed(seed)
    for name in layers_top_down(randomised):
        module = modules[name]
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        else:
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    p.copy_(torch.randn_like(p) * p.std().clamp_min(1e-3))
        yield name, randomised


__all__ = ["area_under", "cascading_randomisation", "deletion_insertion", "edge_maps", "layers_top_down",
           "random_maps", "rank_correlation"]
