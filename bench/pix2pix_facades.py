"""pix2pix on CMP Facades (labels -> photo): training throughput against a plain-PyTorch loop, then the CPU-budget
recipe's validation L1 / PSNR / SSIM.

1. Throughput: this project's `Pix2Pix` under `Trainer.fit` vs a plain-PyTorch loop running the same networks,
   losses, optimizers (fused Adam) and DataLoader, at the size of `--throughput-config` (default: the CPU recipe);
   images/s over `--batches` steady-state batches, median of `--repeats` interleaved repeats, ratio in one run
   (target: 0.95 or more).
2. Quality: `lightning-gen fit --config configs/pix2pix/facades_cpu.yaml` (capped at 30 minutes), then `validate`
   on its last checkpoint; the untrained generator's figures beside it as the floor to beat. The triplet grid of
   the last validation is copied to docs/img/pix2pix_facades_cpu.png.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/pix2pix_facades.py [--repeats 5] [--batches 60]
        [--throughput-config configs/pix2pix/facades.yaml] [--accelerator gpu] [--precision 16-mixed]
        [--skip-throughput] [--skip-quality]
        [--out bench/out/pix2pix_facades]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from common import QUIET, ROOT, Clock, cli, evaluate, printed_metrics, sync
from datamodules import PairedImages
from lightning_gen import Pix2Pix
from lightning_gen.core.checkpoints import load_checkpoint
from lightning_gen.losses import discriminator_loss, pix2pix_generator_loss

CONFIG = ROOT / "configs" / "pix2pix" / "facades_cpu.yaml"


def recipe(path: Path = CONFIG) -> tuple[dict, dict, str]:
    """The model and data arguments and the precision of a pix2pix recipe."""
    config = yaml.safe_load(Path(path).read_text())
    data = dict(config["data"]["init_args"])
    data["root"] = os.path.expandvars(data["root"])
    return config["model"]["init_args"], data, config["trainer"].get("precision", "32-true")


def plain_loop(model_args: dict, data: PairedImages, precision: str, warmup: int, batches: int,
               device: torch.device) -> float:
    """The same pix2pix step written without Lightning: images/s over the timed batches. Under `16-mixed` a
    GradScaler updated after each optimizer step, as Lightning's precision plugin does."""
    torch.manual_seed(0)
    model = Pix2Pix(**model_args, input_channels=data.input_channels, image_shape=data.image_shape)
    model.configure_model()  # the networks, built from the shapes given (no trainer here)
    model.to(device)
    g, d = model.generator.train(), model.discriminator.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=model_args["lr"], betas=(0.5, 0.999), fused=precision != "16-mixed")
    opt_d = torch.optim.Adam(d.parameters(), lr=model_args["lr"], betas=(0.5, 0.999), fused=precision != "16-mixed")
    dtype = torch.float16 if precision == "16-mixed" and device.type == "cuda" else torch.bfloat16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=precision in ("bf16-mixed", "16-mixed"))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and precision == "16-mixed")
    mode, weight = model_args.get("gan_loss", "bce"), model_args.get("l1_weight", 100.0)

    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    start, done = None, 0
    while True:
        for x, y in data.train_dataloader():
            if done == warmup:
                sync()
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                out = g(x)
                d_loss = 0.5 * discriminator_loss(d(torch.cat([x, y], 1)), d(torch.cat([x, out.detach()], 1)), mode)
            step(opt_d, d_loss)
            d.requires_grad_(False)
            with autocast:
                g_loss = pix2pix_generator_loss(d(torch.cat([x, out], 1)), out, y, mode, weight)[0]
            step(opt_g, g_loss)
            d.requires_grad_(True)
            done += 1
            if done == warmup + batches:
                sync()
                return batches * data.batch_size / (time.perf_counter() - start)


def lightning_fit(model_args: dict, data: PairedImages, precision: str, warmup: int, batches: int,
                  accelerator: str) -> float:
    torch.manual_seed(0)
    clock = Clock(warmup, batches)
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1000, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision=precision, callbacks=[clock])
    trainer.fit(Pix2Pix(**model_args), datamodule=data)
    return batches * data.batch_size / clock.seconds


def throughput(args: argparse.Namespace) -> None:
    model_args, data_args, precision = recipe(args.throughput_config)
    precision = args.precision or precision
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    data = PairedImages(**data_args)
    data.setup("fit")
    plain, ours = [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both sides alike
        plain.append(plain_loop(model_args, data, precision, args.warmup, args.batches, device))
        ours.append(lightning_fit(model_args, data, precision, args.warmup, args.batches, args.accelerator))
    p, o = statistics.median(plain), statistics.median(ours)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\npix2pix {data.crop_size}x{data.crop_size}, batch {data.batch_size}, {precision}, {args.batches} timed "
          f"batches after {args.warmup} warm-up, median of {args.repeats} interleaved repeats, {where}")
    print("| plain PyTorch (img/s) | lightning_gen (img/s) | ratio |")
    print("|---|---|---|")
    print(f"| {p:.2f} | {o:.2f} | {o / p:.3f} |")
    print("per repeat (plain / lightning_gen, img/s): "
          + ", ".join(f"{a:.2f}/{b:.2f} ({b / a:.3f})" for a, b in zip(plain, ours)), flush=True)


def quality(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    cli("fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
        *QUIET, capture=False)
    minutes = (time.perf_counter() - start) / 60
    ckpt = out / "checkpoints" / "last.ckpt"
    epochs = load_checkpoint(ckpt)["epoch"] + 1
    trained = evaluate("validate", out / "config.yaml", ckpt, "--trainer.logger", "false")
    grids = sorted((out / "samples").glob("val_triplets_epoch*.png"))
    if grids:
        shutil.copy(grids[-1], ROOT / "docs" / "img" / "pix2pix_facades_cpu.png")
    # the floor: the same networks as initialised (seed 0: the trained run's starting point), no training
    untrained = printed_metrics(cli("validate", "--config", str(CONFIG), "--trainer.default_root_dir",
                                    str(out / "untrained"), "--trainer.logger", "false", *QUIET).stdout)
    print(f"\npix2pix facades labels->photo, configs/pix2pix/facades_cpu.yaml, seed 0, {epochs} epochs, "
          f"{minutes:.1f} min wall time (2-core CPU), validated on the 100 val pairs (128x128)")
    print("| generator | val L1 ([-1, 1] pixels) | val PSNR (dB) | val SSIM |")
    print("|---|---|---|---|")
    for name, m in (("untrained", untrained), (f"trained, {epochs} epochs", trained)):
        print(f"| {name} | {m['val/l1']:.4f} | {m['val/psnr']:.2f} | {m['val/ssim']:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--throughput-config", default=str(CONFIG),
                        help="the recipe whose networks, sizes and precision the throughput runs (e.g. facades.yaml)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="where the throughput runs")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed", "16-mixed"],
                        help="override the recipe's precision for the throughput runs")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "pix2pix_facades"))
    args = parser.parse_args()
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_quality:
        quality(args)


if __name__ == "__main__":
    main()
