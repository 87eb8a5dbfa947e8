"""The LightningCLI of lightning_gen: `lightning-gen fit|validate|test|predict`, and `python cli.py ...`.

Models and datamodules are chosen by short name (`--model DCGAN --data MNIST`) or `class_path`. Defaults on
top of Lightning's: the W&B logger (offline without a login), a Rich progress bar, `RunCheckpoint`
(`last.ckpt`, save on Ctrl-C/SIGTERM, no silent overwrite), the run's config saved in its own folder, and PNG
output for `predict`. `--ckpt_path last` finds the newest `last.ckpt` under the run root and resumes its W&B run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden

import datamodules
import lightning_gen  # noqa: F401  (registers the techniques for short names)
from lightning_gen.callbacks import ImageWriter, RunCheckpoint, SaveRunConfig
from lightning_gen.core.checkpoints import load_checkpoint
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.loggers import AutoWandbLogger
from lightning_gen.core.protocols import OwnsPredictInputs
from lightning_gen.core.runs import run_dir
from lightning_gen.metrics import SampleQuality  # noqa: F401  (short name for --trainer.callbacks+=SampleQuality)

DEFAULT_LOGGER = {"class_path": "lightning_gen.core.loggers.AutoWandbLogger"}


def find_last_checkpoint(roots: list[Path]) -> Path | None:
    """The most recently written `last.ckpt` under any of `roots`."""
    found = [p for root in roots if root.is_dir() for p in root.rglob("last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _logger_configs(logger_cfg: Any) -> list[Any]:
    if logger_cfg in (None, False, True):
        return []
    return list(logger_cfg) if isinstance(logger_cfg, list) else [logger_cfg]


class GenCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        datamodules.load_plugins()
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)  # each technique owns its optimizers
        trainer_defaults = {"logger": DEFAULT_LOGGER, "default_root_dir": "runs"}
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}) or {})
        kwargs["trainer_defaults"] = trainer_defaults
        kwargs.setdefault("parser_kwargs", {"description": "lightning_gen: generative models on Lightning."})
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        given = sys.argv[1:] if args is None else args
        self._raw_args = [str(a) for a in given] if isinstance(given, (list, tuple)) else []  # not a dict/Namespace
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")

    # ---- `--ckpt_path last` and resuming the same W&B run --------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Resolve `--ckpt_path last` to the newest `last.ckpt` under the run root, before Lightning reads the
        checkpoint's hyperparameters (so `predict` knows the image shape from it)."""
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path") == "last":
            cfg = self.config[subcommand]
            roots = [Path(cfg.trainer.default_root_dir or ".")]
            for logger in _logger_configs(cfg.trainer.logger):
                save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
                if save_dir:
                    roots.append(Path(save_dir))
            found = find_last_checkpoint(roots)
            if found is None:
                raise ConfigError(
                    f"--ckpt_path last: no last.ckpt under {', '.join(map(str, roots))}. Give the checkpoint's "
                    "path, or the same `--trainer.default_root_dir` / logger `save_dir` as the run to resume."
                )
            rank_zero_info(f"Resuming from {found}")
            cfg.ckpt_path = str(found)
        # Lightning replaces the model's arguments with the checkpoint's hyperparameters; options given explicitly on
        # the command line (`predict ... --model.num_samples 1000`) are the user's choice and win over them.
        model_cfg = self.config[subcommand].get("model") if subcommand else None
        init_args = getattr(model_cfg, "init_args", None)
        explicit = {}
        for token in self._raw_args:
            if token.startswith("--model.") and not token.startswith("--model.help"):
                key = token[len("--model."):].split("=")[0].removeprefix("init_args.").rstrip("+")
                if init_args is not None and key in init_args:
                    explicit[key] = init_args[key]
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():  # refused with one line, before Lightning's own read of it
            load_checkpoint(ckpt_path)
        super()._parse_ckpt_path()
        init_args = getattr(self.config[subcommand].get("model"), "init_args", None) if subcommand else None
        for key, value in explicit.items():
            init_args[key] = value

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        cfg = self.config[subcommand]
        ckpt_path = cfg.get("ckpt_path")
        if "weights_only" in cfg and cfg.get("weights_only") is None:  # the Trainer's restore runs no code from
            cfg.weights_only = True  # the checkpoint, on every torch and URL (`--weights_only false` opts out)
        if subcommand == "predict" and any(
            "AutoWandbLogger" in str(getattr(c, "class_path", "")) for c in _logger_configs(cfg.trainer.logger)
        ):
            cfg.trainer.logger = False  # predict logs nothing: do not open a W&B run for it
        if subcommand == "fit" and ckpt_path:
            if not Path(ckpt_path).is_file():
                raise ConfigError(f"--ckpt_path {ckpt_path}: no such file.")
            meta = load_checkpoint(ckpt_path).get("lightning_gen", {})
            run_id = meta.get("run_id")
            for logger in _logger_configs(cfg.trainer.logger):
                init = getattr(logger, "init_args", None)
                if run_id and init is not None and "WandbLogger" in str(logger.class_path):
                    if init.get("id") is None:
                        init.id = run_id
                elif run_id and init is not None and "version" in init and init.get("version") is None:
                    init.version = run_id

    # ---- progress bar: Rich unless the user chose another or none ------------------------------------------
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        chosen = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in chosen):
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    # ---- predict: a generator needs no data, only its checkpoint --------------------------------------------
    def before_predict(self) -> None:
        dm = self.datamodule
        model_inputs = is_overridden("predict_dataloader", self.model, LightningModule)
        if dm is not None and model_inputs and (
            (isinstance(self.model, OwnsPredictInputs) and self.model.owns_predict_inputs)  # e.g. `predict_images`
            or not is_overridden("predict_dataloader", dm, LightningDataModule)
        ):
            self.datamodule = None
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(ImageWriter())

    def after_fit(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        lines = [f"Run folder: {run_dir(trainer)}"]
        samples = sorted((run_dir(trainer) / "samples").glob("*.png"))
        if samples:
            lines.append(f"Sample grid: {samples[-1]}")
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.last_model_path:
            lines.append(f"Last checkpoint: {trainer.checkpoint_callback.last_model_path}")
        for logger in trainer.loggers:
            if isinstance(logger, AutoWandbLogger) and logger.run_folder() is not None:
                folder = logger.run_folder()
                if logger.mode == "offline":
                    lines.append(f"W&B run (offline): {folder}  -> upload with `wandb sync {folder}`")
                else:
                    lines.append(f"W&B run: {folder}")
        print("\n".join(lines), flush=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `lightning-gen` console script and of `python cli.py`."""
    try:
        GenCLI(args=args)
    except (ConfigError, datamodules.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
