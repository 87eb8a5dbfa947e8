"""Style transfer and DeepDream with the offline ImageNet MobileNet v1: the pictures the README shows, their wall
times, and the speed of fast style transfer's `predict` against optimisation at the same size.

Parts (all by default):
- grid:  Gatys et al.'s optimisation (configs/style_transfer/mobilenet.yaml) for every content x style pair of
         `$LIGHTNING_GEN_DATA/style`; one row per pair (seconds, loss terms) and `grid.jpg` (styles across, contents
         down).
- fast:  trains Johnson et al.'s network (configs/fast_style/mobilenet_facades.yaml, `--fast-epochs`) on CMP
         Facades photos, then stylises the four content photos (never seen in training) at `--fast-size`:
         `fast.jpg` (photo | stylised).
- speed: at `--size`, seconds per image of the optimisation (`--steps` L-BFGS evaluations) vs images/s of the trained
         network's `predict` (median of `--repeats` passes over the four photos), in one run on one machine.
- dream: DeepDream (configs/deepdream/mobilenet.yaml) on one photo: `dream.jpg`.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/style.py [--parts grid fast speed dream] [--size 384]
        [--steps 300] [--fast-epochs 15] [--fast-ckpt runs/.../last.ckpt] [--accelerator cpu] [--out bench/out/style]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from PIL import Image, ImageOps

from common import QUIET, ROOT, cli, sync
from datamodules.files import image_files, load_image
from lightning_gen import FastStyleTransfer, StyleTransfer


def data() -> Path:
    root = os.environ.get("LIGHTNING_GEN_DATA")
    if not root:
        raise SystemExit("set LIGHTNING_GEN_DATA to the datasets folder (it holds style/ and weights/)")
    return Path(root)


def weights() -> str:
    return str(data() / "weights" / "mobilenet_2_5_224_tf_no_top.h5")


def quiet_trainer(accelerator: str, root: Path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, **kwargs)


def to_pil(image: torch.Tensor) -> Image.Image:
    array = image.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().byte()[0].permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def tile(rows: list[list[Image.Image]], cell: int, gap: int = 4) -> Image.Image:
    """Paste images (each fitted into a `cell` x `cell` box, aspect kept) on a white sheet, row by row."""
    width = len(rows[0]) * (cell + gap) - gap
    sheet = Image.new("RGB", (width, len(rows) * (cell + gap) - gap), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            im = im.copy()
            im.thumbnail((cell, cell))
            sheet.paste(im, (c * (cell + gap) + (cell - im.width) // 2, r * (cell + gap) + (cell - im.height) // 2))
    return sheet.crop(ImageOps.invert(sheet).getbbox())  # trim the white margins around the pictures


def optimise(content: Path, style: Path, size: int, steps: int, accelerator: str,
             root: Path) -> tuple[StyleTransfer, float]:
    model = StyleTransfer(content=str(content), style=str(style), image_size=size, weights=weights(),
                          steps_per_epoch=steps)
    trainer = quiet_trainer(accelerator, root, max_epochs=1, precision="32-true")
    sync()
    start = time.perf_counter()
    trainer.fit(model)
    sync()
    return model, time.perf_counter() - start


def part_grid(args, out: Path) -> None:
    contents, styles = image_files(str(data() / "style" / "content")), image_files(str(data() / "style" / "style"))
    print(f"\n## Style transfer by optimisation: MobileNet v1 0.25, {args.size} px, {args.steps} L-BFGS evaluations, "
          f"seed 0, {args.accelerator}\n")
    print("| content | style | seconds | content loss | style loss | tv |")
    print("|---|---|---|---|---|---|")
    rows = [[Image.new("RGB", (8, 8), "white")] + [Image.open(s).convert("RGB") for s in styles]]
    times = []
    for content in contents:
        row = [Image.open(content).convert("RGB")]
        for style in styles:
            L.seed_everything(0, verbose=False)
            model, seconds = optimise(content, style, args.size, args.steps, args.accelerator, out / "runs")
            terms = model.trainer.callback_metrics
            times.append(seconds)
            print(f"| {content.stem} | {style.stem} | {seconds:.1f} | {float(terms['train/content']):.3f} | "
                  f"{float(terms['train/style']):.2e} | {float(terms['train/tv']):.3f} |", flush=True)
            result = to_pil(model.image)
            result.save(out / f"{content.stem}__{style.stem}.png")
            row.append(result)
        rows.append(row)
    tile(rows, 192).save(out / "grid.jpg", quality=88)
    print(f"\nmedian {statistics.median(times):.1f} s per image ({len(times)} images); grid: {out / 'grid.jpg'}")


def part_fast(args, out: Path) -> Path:
    config = ROOT / "configs" / "fast_style" / "mobilenet_facades.yaml"
    root = out / "fast_run"
    start = time.perf_counter()
    cli("fit", "--config", str(config), "--trainer.max_epochs", str(args.fast_epochs), "--trainer.default_root_dir",
        str(root), "--trainer.accelerator", args.accelerator, *QUIET, "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root), capture=False)
    minutes = (time.perf_counter() - start) / 60
    ckpt = max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    print(f"\n## Fast style transfer: trained {args.fast_epochs} epochs on CMP Facades photos in {minutes:.1f} min "
          f"({args.accelerator}); checkpoint {ckpt}")
    return ckpt


def stylise(ckpt: Path, size: int | None, accelerator: str, root: Path) -> tuple[list[dict], float]:
    model = FastStyleTransfer.load_from_checkpoint(ckpt, map_location="cpu",
                                                   predict_images=str(data() / "style" / "content"), predict_size=size)
    trainer = quiet_trainer(accelerator, root)
    sync()
    start = time.perf_counter()
    outputs = trainer.predict(model)
    sync()
    return outputs, time.perf_counter() - start


def part_fast_pictures(args, ckpt: Path, out: Path) -> None:
    outputs, _ = stylise(ckpt, args.fast_size, args.accelerator, out / "runs")
    rows = []
    for o in outputs:
        photo = load_image(data() / "style" / "content" / _source_name(o["names"][0]), args.fast_size)
        rows.append([to_pil(photo), to_pil(o["images"])])
    tile(rows, 256).save(out / "fast.jpg", quality=88)
    print(f"fast style outputs on photos it never saw: {out / 'fast.jpg'}")


def _source_name(png_name: str) -> str:
    stem = Path(png_name).stem
    return next(p.name for p in (data() / "style" / "content").iterdir() if p.stem == stem)


def part_speed(args, ckpt: Path, out: Path) -> None:
    content = data() / "style" / "content" / "chelsea.png"
    style = data() / "style" / "style" / "starry_night.jpg"
    _, seconds = optimise(content, style, args.size, args.steps, args.accelerator, out / "runs")
    stylise(ckpt, args.size, args.accelerator, out / "runs")  # warm-up
    rates = []
    for _ in range(args.repeats):
        outputs, wall = stylise(ckpt, args.size, args.accelerator, out / "runs")
        rates.append(len(outputs) / wall)
    rate = statistics.median(rates)
    print(f"\n## Speed at {args.size} px ({args.accelerator}, one run)\n")
    print("| method | time |")
    print("|---|---|")
    print(f"| optimisation ({args.steps} L-BFGS evaluations) | {seconds:.1f} s per image |")
    print(f"| fast style `predict` (median of {args.repeats}, 4 photos each) | {rate:.1f} images/s "
          f"({1 / rate:.3f} s per image) |")
    print(f"\nspeed-up: {seconds * rate:.0f}x")


def part_dream(args, out: Path) -> None:
    config = ROOT / "configs" / "deepdream" / "mobilenet.yaml"
    root = out / "dream"
    start = time.perf_counter()
    cli("predict", "--config", str(config), "--trainer.default_root_dir", str(root), "--trainer.accelerator",
        args.accelerator, *QUIET[2:], capture=False)
    seconds = time.perf_counter() - start
    dreamt = Image.open(root / "predictions" / "chelsea.png").convert("RGB")
    photo = to_pil(load_image(data() / "style" / "content" / "chelsea.png", 512))
    tile([[photo, dreamt]], 512).save(out / "dream.jpg", quality=88)
    print(f"\n## DeepDream (conv_pw_11_relu, 4 octaves x 10 steps, 512 px, {args.accelerator}): {seconds:.1f} s "
          f"including start-up; {out / 'dream.jpg'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["grid", "fast", "speed", "dream"],
                        choices=["grid", "fast", "speed", "dream"])
    parser.add_argument("--size", type=int, default=384,
                        help="longer side of the optimised images and of the speed test")
    parser.add_argument("--steps", type=int, default=300, help="L-BFGS evaluations per optimised image")
    parser.add_argument("--fast-epochs", type=int, default=15, help="training epochs of the fast network")
    parser.add_argument("--fast-size", type=int, default=256, help="longer side of the fast network's pictures")
    parser.add_argument("--fast-ckpt", help="a trained FastStyleTransfer checkpoint (skips training in `fast`)")
    parser.add_argument("--repeats", type=int, default=5, help="timed predict passes in `speed`")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "style"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if "grid" in args.parts:
        part_grid(args, out)
    ckpt = Path(args.fast_ckpt) if args.fast_ckpt else None
    if "fast" in args.parts:
        ckpt = ckpt or part_fast(args, out)
        part_fast_pictures(args, ckpt, out)
    if "speed" in args.parts:
        if ckpt is None:
            raise SystemExit("`speed` needs a trained network: add `fast` to --parts or give --fast-ckpt")
        part_speed(args, ckpt, out)
    if "dream" in args.parts:
        part_dream(args, out)


if __name__ == "__main__":
    main()
