"""Callbacks: what the CLI adds to every run (`runs.py`: checkpoints that survive interruption, the run's config in
its own folder and in W&B, PNG output for `predict`), and the weight average of one network (`ema.py`)."""

from lightning_gen.callbacks.ema import EMA, GeneratorEMA
from lightning_gen.callbacks.runs import ImageWriter, RunCheckpoint, SaveRunConfig, same_size

__all__ = ["EMA", "GeneratorEMA", "ImageWriter", "RunCheckpoint", "SaveRunConfig", "same_size"]
