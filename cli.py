"""Thin launcher: `python cli.py fit --config configs/dcgan/mnist.yaml` (same as the `lightning-gen` command)."""

from lightning_gen.core.cli import main

if __name__ == "__main__":
    main()
