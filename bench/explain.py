"""How faithful are CAM, Grad-CAM, LIME and Kernel SHAP to the classifier they explain?

For each dataset (a trained `Classifier` checkpoint and `--images` test images drawn at random with `--seed`), every
method explains the predicted class; the tables give:

1. **Deletion and insertion AUC** (Petsiuk et al. 2018; lower deletion / higher insertion is better), next to two
   maps that do not look at the model: a random map and the image's edge map (Sobel), and the seconds per image.
2. **Model randomisation** (Adebayo et al. 2018): the network's layers are re-initialised from the top, one more at a
   time; the Spearman rank correlation between each map and the trained network's map (CAM and Grad-CAM, at their
   default layer). A map that explains the model changes as soon as the top layers lose their training.
3. **MNIST 8 -> 3** (Lundberg & Lee 2017, Fig. 5): on test 8s the classifier gets right, each method ranks the
   pixels by (evidence for 8) - (evidence for 3); the top `--mask-fraction` of them are set to black and the change in
   log-odds `log p(8) / p(3)` is reported (more negative = the method found what makes an 8 an 8 rather than a 3),
   with the share of images now called 3.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/explain.py [--datasets mnist cifar10] [--images 500]
        [--mnist-ckpt checkpoints/mnist_classifier/last.ckpt]
        [--cifar10-ckpt bench/out/transfer_cifar10/pretrained_seed0/checkpoints/last.ckpt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import ROOT
from datamodules import MNIST, ImageFolder
from lightning_gen.explain import Explain, class_probability, grad_cam, upsample
from lightning_gen.metrics.faithfulness import (
    area_under,
    cascading_randomisation,
    deletion_insertion,
    edge_maps,
    random_maps,
    rank_correlation,
)

METHODS = ["cam", "gradcam", "lime", "kernel_shap"]
DATA = {"mnist": lambda: MNIST(batch_size=100),
        "cifar10": lambda: ImageFolder(root="$LIGHTNING_GEN_DATA/cifar10/train", verify=False, batch_size=100,
                                       test_root="$LIGHTNING_GEN_DATA/cifar10/test")}
CKPT = {"mnist": ROOT / "checkpoints" / "mnist_classifier" / "last.ckpt",
        "cifar10": ROOT / "bench" / "out" / "transfer_cifar10" / "pretrained_seed0" / "checkpoints" / "last.ckpt"}


def test_images(dataset: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = DATA[dataset]()
    data.setup("test")
    pick = torch.randperm(len(data.test_set), generator=torch.Generator().manual_seed(seed))[:n]
    items = [data.test_set[int(i)] for i in pick]
    return torch.stack([image for image, _ in items]), torch.tensor([int(label) for _, label in items])


def in_batches(fn, *tensors: torch.Tensor, size: int = 50) -> torch.Tensor:
    return torch.cat([fn(*(t[i : i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)])


def faithfulness(explainer: Explain, images: torch.Tensor, steps: int, methods: list[str] = METHODS) -> list[dict]:
    probability = class_probability(explainer.net, explainer.num_classes)
    with torch.no_grad():
        target = in_batches(lambda x: probability(x).argmax(1), images)
    maps, seconds = {}, {}
    for method in methods:
        start = time.perf_counter()
        maps[method] = in_batches(lambda x, t, m=method: explainer.explain(x, t, [m])[m], images, target)
        seconds[method] = (time.perf_counter() - start) / len(images)
    maps["random map"], maps["edge map"] = random_maps(images), edge_maps(images)
    seconds["random map"] = seconds["edge map"] = 0.0
    rows = []
    for name, m in maps.items():
        deletion, insertion = _curves(probability, images, m, target, steps)
        rows.append({"method": name, "deletion": area_under(deletion).mean().item(),
                     "insertion": area_under(insertion).mean().item(), "seconds": seconds[name]})
    return rows


def _curves(probability, images, maps, target, steps):
    parts = [deletion_insertion(probability, images[i : i + 50], maps[i : i + 50], target[i : i + 50], steps)
             for i in range(0, len(images), 50)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def randomisation(explainer: Explain, images: torch.Tensor, stages: int) -> list[tuple[str, float, float]]:
    net = explainer.net
    probability = class_probability(net, explainer.num_classes)
    with torch.no_grad():
        target = probability(images).argmax(1)
    size = images.shape[-2:]
    trained = {"cam": explainer.explain(images, target, ["cam"])["cam"],
               "gradcam": upsample(grad_cam(net, images, target, explainer.layer), size)}
    rows = []
    for depth, (name, randomised) in enumerate(cascading_randomisation(net), start=1):
        explainer.net = randomised
        now = explainer.explain(images, target, ["cam"])["cam"]
        gradient = upsample(grad_cam(randomised, images, target, explainer.layer), size)
        rows.append((f"{depth}: {name}", rank_correlation(trained["cam"], now).nanmean().item(),
                     rank_correlation(trained["gradcam"], gradient).nanmean().item()))
        if depth >= stages:
            break
    explainer.net = net
    return rows


def eight_to_three(explainer: Explain, images: torch.Tensor, labels: torch.Tensor, fraction: float) -> list[dict]:
    probability = class_probability(explainer.net, explainer.num_classes)
    with torch.no_grad():
        eights = images[(labels == 8) & (probability(images).argmax(1) == 8)]
    eight, three = torch.full((len(eights),), 8), torch.full((len(eights),), 3)

    def log_odds(x):
        with torch.no_grad():
            p = probability(x)
        return (p[:, 8].clamp_min(1e-12).log() - p[:, 3].clamp_min(1e-12).log()), p.argmax(1)

    before, _ = log_odds(eights)
    rows = []
    maps = {m: explainer.explain(eights, eight, [m])[m] - explainer.explain(eights, three, [m])[m]
            for m in METHODS}
    maps["random map"] = random_maps(eights)
    k = int(fraction * eights[0].numel())
    for name, m in maps.items():
        top = m.flatten(1).topk(k, dim=1).indices
        masked = eights.flatten(1).scatter(1, top, -1.0).view_as(eights)
        after, predicted = log_odds(masked)
        rows.append({"method": name, "change": (after - before).mean().item(),
                     "turned": (predicted == 3).float().mean().item(), "images": len(eights)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--images", type=int, default=500, help="test images per dataset")
    parser.add_argument("--randomisation-images", type=int, default=100)
    parser.add_argument("--randomisation-stages", type=int, default=6, help="layers re-initialised, from the top")
    parser.add_argument("--steps", type=int, default=32, help="points on each deletion / insertion curve")
    parser.add_argument("--samples", type=int, default=200, help="perturbed copies per image (LIME, Kernel SHAP)")
    parser.add_argument("--segments", type=int, default=50, help="SLIC superpixels per image (LIME, Kernel SHAP)")
    parser.add_argument("--mask-fraction", type=float, default=0.1, help="share of pixels masked in 8 -> 3")
    parser.add_argument("--mnist-ckpt", type=Path, default=CKPT["mnist"])
    parser.add_argument("--cifar10-ckpt", type=Path, default=CKPT["cifar10"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS,
                        help="the methods of the deletion / insertion table")
    parser.add_argument("--layer", default=None, help="the layer of CAM's and Grad-CAM's map (default: the last "
                        "spatial layer, the one global pooling reduces), e.g. features.body.conv_pw_11_relu")
    parser.add_argument("--no-randomisation", action="store_true", help="skip the model-randomisation table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for dataset in args.datasets:
        ckpt = args.mnist_ckpt if dataset == "mnist" else args.cifar10_ckpt
        explainer = Explain(str(ckpt), methods=METHODS, n_samples=args.samples, n_segments=args.segments,
                            seed=args.seed, layer=args.layer)
        images, labels = test_images(dataset, args.images, args.seed)
        start = time.perf_counter()
        rows = faithfulness(explainer, images, args.steps, args.methods)
        print(f"\n{dataset}: {ckpt}, {len(images)} test images (seed {args.seed}), predicted class, "
              f"{args.samples} samples / {args.segments} SLIC segments for LIME and Kernel SHAP, "
              f"{args.steps} steps per curve, CAM / Grad-CAM at {explainer.layer} "
              f"({time.perf_counter() - start:.0f} s)")
        print("| method | deletion AUC (lower is better) | insertion AUC (higher is better) | seconds per image |")
        print("|---|---|---|---|")
        for row in rows:
            print(f"| {row['method']} | {row['deletion']:.3f} | {row['insertion']:.3f} | {row['seconds']:.3f} |")
        if args.no_randomisation:
            continue
        rows = randomisation(explainer, images[: args.randomisation_images], args.randomisation_stages)
        print(f"\n{dataset}: rank correlation with the trained network's map after re-initialising the top layers "
              f"(Spearman, mean over {min(len(images), args.randomisation_images)} images; Grad-CAM at "
              f"{explainer.layer})")
        print("| layers re-initialised (the last one named) | CAM | Grad-CAM |")
        print("|---|---|---|")
        for name, cam_corr, grad_corr in rows:
            print(f"| {name} | {cam_corr:.3f} | {grad_corr:.3f} |")
        if dataset == "mnist":
            rows = eight_to_three(explainer, images, labels, args.mask_fraction)
            print(f"\nMNIST 8 -> 3: {rows[0]['images']} correctly classified 8s, the top {args.mask_fraction:.0%} "
                  "of pixels by (evidence for 8) - (evidence for 3) set to black")
            print("| method | change in log-odds log p(8)/p(3) | now classified 3 |")
            print("|---|---|---|")
            for row in rows:
                print(f"| {row['method']} | {row['change']:.2f} | {row['turned']:.1%} |")


if __name__ == "__main__":
    main()
