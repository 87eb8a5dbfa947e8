"""DCGAN training throughput: this project's LightningModule under `Trainer.fit` vs a plain-PyTorch loop running
the same networks, optimizers, losses and batches. Median of interleaved repeats in one run; prints a table
with the ratio (target: 0.95 or more).

    python bench/throughput.py [--repeats 5] [--batches 30] [--batch-size 64] [--image-size 28]

Both sides train on the same in-memory batches (scikit-learn digits resized to --image-size), with denormals
flushed to zero on CPU, and time only steady-state batches (after --warmup). The Lightning side runs with no
logger, checkpointing or progress bar, so the figure is the cost of the training step itself.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from common import Clock
from datamodules import Digits
from lightning_gen import DCGAN
from lightning_gen.losses import discriminator_loss, generator_loss
from lightning_gen.nn import DCGANDiscriminator, DCGANGenerator


def dataset(image_size: int) -> TensorDataset:
    dm = Digits(image_size=image_size, val_fraction=0.01)
    dm.setup("fit")
    images = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    return TensorDataset(images, torch.zeros(len(images), dtype=torch.long))


def loader(data: TensorDataset, batch_size: int) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)


def plain_loop(data, args, bf16: bool) -> float:
    """The same DCGAN step written as in pytorch/examples: images/s over the timed batches."""
    torch.manual_seed(0)
    shape = tuple(data.tensors[0].shape[1:])
    g, d = DCGANGenerator(args.latent, shape, 64), DCGANDiscriminator(shape, 64)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)  # as the project's
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    start, done = None, 0
    while True:
        for real, _ in loader(data, args.batch_size):
            if done == args.warmup:
                start = time.perf_counter()
            z = torch.randn(real.shape[0], args.latent)
            with autocast:
                fake = g(z)
                d_loss = discriminator_loss(d(real), d(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            with autocast:
                g_loss = generator_loss(d(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            done += 1
            if done == args.warmup + args.batches:
                return args.batches * args.batch_size / (time.perf_counter() - start)


def lightning_fit(data, args, bf16: bool) -> float:
    torch.manual_seed(0)
    clock = Clock(args.warmup, args.batches)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1000, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, precision="bf16-mixed" if bf16 else "32-true",
        callbacks=[clock],
    )
    model = DCGAN(latent_dim=args.latent, image_shape=tuple(data.tensors[0].shape[1:]))
    model.on_train_epoch_end = lambda: None  # no sample grid: the plain loop writes none either
    trainer.fit(model, train_dataloaders=loader(data, args.batch_size))
    return args.batches * args.batch_size / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--latent", type=int, default=100)
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # both sides (DCGAN does this itself on CPU; the plain loop gets it here)
    data = dataset(args.image_size)
    rows = []
    for name, bf16 in (("fp32", False), ("bf16-mixed", True)):
        plain, ours = [], []
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both sides alike
            plain.append(plain_loop(data, args, bf16))
            ours.append(lightning_fit(data, args, bf16))
        rows.append((name, statistics.median(plain), statistics.median(ours)))
    print(f"\nDCGAN {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.batches} timed batches after "
          f"{args.warmup} warm-up, median of {args.repeats} interleaved repeats, {torch.get_num_threads()} threads")
    print("| precision | plain PyTorch (img/s) | lightning_gen (img/s) | ratio |")
    print("|---|---|---|---|")
    for name, plain, ours in rows:
        print(f"| {name} | {plain:.0f} | {ours:.0f} | {ours / plain:.3f} |")


if __name__ == "__main__":
    main()
