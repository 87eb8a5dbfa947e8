"""The LightningCLI of lightning_gen: `lightning-gen fit|validate|test|predict`, and `python cli.py ...`.

Models and datamodules are chosen by short name (`--model DCGAN --data MNIST`) or `class_path`. Defaults on
top of Lightning's: the W&B logger (offline without a login), a Rich progress bar, `RunCheckpoint`
(`last.ckpt`, save on Ctrl-C/SIGTERM/preemption, no silent overwrite), checkpoints written whole or not at all
(`AtomicCheckpointIO`), the run's config saved in its own folder, and PNG output for `predict`. `--ckpt_path last`
finds the newest `last.ckpt` under the run root and resumes its W&B run; a requeued SLURM job resumes by itself.
`--trainer.num_nodes` above 1 without a launcher (torchrun, SLURM, ...) is refused before anything starts.

Bad input stops before anything runs, with one line `error: <the problem and the fix>` and exit status 2: the
project's own checks (`ConfigError`, `DataError`, also when raised in a constructor that jsonargparse runs), a
parse error (an unknown option, a wrong type: jsonargparse's message without its usage dump), and a `--ckpt_path`
that is missing, unreadable, or of another technique than the configured model.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden

import datamodules
import lightning_gen  # noqa: F401  (registers the techniques for short names)
from lightning_gen.callbacks import ImageWriter, RunCheckpoint, SaveRunConfig
from lightning_gen.core.checkpoints import AtomicCheckpointIO, read_lightning_checkpoint
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.distributed import check_multi_node_launcher
from lightning_gen.core.loggers import AutoWandbLogger
from lightning_gen.core.preemption import requeued_checkpoint
from lightning_gen.core.protocols import ExplainsData, ImageData, OwnsPredictInputs, WritesPredictions
from lightning_gen.core.runs import run_dir
from lightning_gen.metrics import SampleQuality  # noqa: F401  (short name for --trainer.callbacks+=SampleQuality)

DEFAULT_LOGGER = {"class_path": "lightning_gen.core.loggers.AutoWandbLogger"}
USER_ERRORS = (ConfigError, datamodules.DataError)  # what the checks raise: printed as one line, exit status 2


def user_error(error: BaseException) -> BaseException | None:
    """The project's own error (`ConfigError`, `DataError`) behind `error`: itself, or one it was raised from or
    while handling (`__cause__`, `__context__`, followed to the end). jsonargparse runs the constructors of the
    model, the datamodule and the callbacks and wraps what they raise in a `ValueError` "Does not validate against
    any of the Union subtypes" raised from it (jsonargparse/_typehints.py, `raise_union_unexpected_value`)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, USER_ERRORS):
            return err
        todo += [err.__cause__, err.__context__]
    return None


_GIVEN_CLASS = re.compile(r"Given value: Namespace\(class_path='([\w.]+)'")


def constructor_error(error: BaseException, subcommand: str = "fit") -> ConfigError | None:
    """A library's exception (a `TypeError` from gymnasium, an `OSError` from PIL, ...) raised in the constructor of
    a class the config names, which jsonargparse wrapped in its Union `ValueError`: one `ConfigError` line naming the
    class, the original error and where its options are explained. None for any other error (a bug in the project
    itself, raised elsewhere, keeps its traceback). `LIGHTNING_GEN_DEBUG=1` shows the traceback instead."""
    found = _GIVEN_CLASS.search(str(error))
    if not found or os.environ.get("LIGHTNING_GEN_DEBUG"):
        return None
    cause, seen = error.__cause__ or error.__context__, set()
    while cause is not None and id(cause) not in seen:  # the first one raised outside jsonargparse
        seen.add(id(cause))
        tb = cause.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and "jsonargparse" not in tb.tb_frame.f_code.co_filename:
            break
        cause = cause.__cause__ or cause.__context__
    else:
        return None
    class_path = found[1]
    group = "data" if class_path.startswith("datamodules.") else "model"
    message = " ".join(str(cause).split())
    return ConfigError(
        f"{class_path.rpartition('.')[2]} could not be built from the given options: {type(cause).__name__}: "
        f"{message}. Check its options (`lightning-gen {subcommand} --{group}.help {class_path}`); set "
        "LIGHTNING_GEN_DEBUG=1 to see the traceback."
    )


_UNION_NOISE = re.compile(r"^(Does not validate against any of the Union subtypes|Subtypes: |Errors:|Given value type: "
                          r"|Expected a <class 'NoneType'>$)")
_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")
_LITERAL = re.compile(r"Expected a typing\.Literal\[(.*?)\]")
_CLASS_PATH = re.compile(r"^Parser key \"(model|data)\":.*Problem with given class_path '([\w.]+)'")


def short_parse_error(message: str) -> str:
    """jsonargparse's parse error on one line: without the Union boilerplate (the subtypes tried, the `None` that
    did not fit either, the value's type) and with types written as names."""
    text, given, seen = "", None, set()
    for line in (raw.strip().removeprefix("- ") for raw in message.splitlines()):
        if not line or _UNION_NOISE.match(line) or line in seen:
            continue
        seen.add(line)
        if line.startswith("Given value: "):
            given = line[len("Given value: "):]
        else:
            text += line if not text else (" " if text.endswith(":") else "; ") + line
    if not text:
        return " ".join(message.split())
    shown = given is not None and re.search(rf"(?<![\w.]){re.escape(given)}(?![\w.])", text)
    if given is not None and not shown and not given.startswith(("Namespace(", "NestedArg(")):
        text += f". Got value: {given}"
    text = _LITERAL.sub(r"Expected one of \1", _CLASS_REPR.sub(r"\1", text))
    return text.replace("Expected a int", "Expected an int")


class GenArgumentParser(LightningArgumentParser):
    """Lightning's parser, whose errors are one line and a pointer to the help instead of the usage of every
    option (60 lines) before the message."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):  # a caller that handles it, or debugging
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        text = short_parse_error(message)
        found = _CLASS_PATH.match(text)
        pointer = f"{prog} --{found[1]}.help {found[2]}" if found else f"{prog} --help"
        sys.stderr.write(f"error: {text} (see {pointer})\n")
        self.exit(2)


def run_technique(ckpt: Path) -> str | None:
    """The `model.class_path` in the config saved beside `ckpt` (`<run>/config.yaml` for `<run>/checkpoints/x.ckpt`),
    or None when there is none. Read instead of the checkpoint, which may be large."""
    config = ckpt.parent.parent / "config.yaml"
    try:
        model = (yaml.safe_load(config.read_text()) or {}).get("model")
    except (OSError, yaml.YAMLError):
        return None
    return model.get("class_path") if isinstance(model, dict) else None


def find_last_checkpoint(roots: list[Path], technique: str | None = None) -> Path | None:
    """The most recently written `last.ckpt` under any of `roots`; with `technique` (a class path), the most recent
    of the runs of that technique (runs whose saved config names another are skipped; runs without one are kept)."""
    found = [p for root in roots if root.is_dir() for p in root.rglob("last.ckpt") if p.is_file()]
    if technique is not None:
        wanted = _import_class(technique)
        found = [p for p in found if (saved := run_technique(p)) is None or saved == technique
                 or (wanted is not None and _import_class(saved) is wanted)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def is_local_checkpoint(ckpt_path: str) -> bool:
    """Whether `--ckpt_path` names a local file (which must exist), not a URL or Lightning's `hpc`/`registry`."""
    text = str(ckpt_path)
    return "://" not in text and text != "hpc" and not text.startswith("registry")


def _import_class(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


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
        kwargs.setdefault("parser_class", GenArgumentParser)
        trainer_defaults = {"logger": DEFAULT_LOGGER, "default_root_dir": "runs"}
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}) or {})
        kwargs["trainer_defaults"] = trainer_defaults
        kwargs.setdefault("parser_kwargs", {"description": "lightning_gen: generative models on Lightning."})
        try:
            super().__init__(*args, **kwargs)
        except USER_ERRORS:  # bad data found by `setup()`, after Lightning started the logger's run
            trainer = self.__dict__.get("trainer")  # None when the error came while building it
            for logger in trainer.loggers if trainer is not None else []:
                if isinstance(logger, AutoWandbLogger):
                    logger.discard_if_empty()
            raise

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        given = sys.argv[1:] if args is None else args
        self._raw_args = [str(a) for a in given] if isinstance(given, (list, tuple)) else []  # not a dict/Namespace
        self._checkpoint: dict[str, Any] | None = None  # the `--ckpt_path` file's contents, once checked
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")

    # ---- `--ckpt_path last` and resuming the same W&B run --------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Resolve `--ckpt_path last` to the newest `last.ckpt` under the run root, and check the file (it exists,
        is a readable Lightning checkpoint without code in it, and is of the configured technique: one `ConfigError`
        line otherwise), before Lightning reads the checkpoint's hyperparameters (so `predict` knows the image shape
        from it) and before anything else reads it."""
        subcommand = self.config.get("subcommand")
        if subcommand == "fit" and self.config.fit.get("ckpt_path") is None:  # a requeued SLURM job: same command
            found = requeued_checkpoint(self.config.fit.trainer.default_root_dir or ".")
            if found is not None:
                rank_zero_info(f"Requeued SLURM job: resuming from {found}")
                self.config.fit.ckpt_path = str(found)
        if subcommand and self.config[subcommand].get("ckpt_path") == "last":
            cfg = self.config[subcommand]
            roots = [Path(cfg.trainer.default_root_dir or ".")]
            for logger in _logger_configs(cfg.trainer.logger):
                save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
                if save_dir:
                    roots.append(Path(save_dir))
            technique = getattr(cfg.get("model"), "class_path", None)
            found = find_last_checkpoint(roots, technique)
            if found is None:
                of = f" of {technique.rpartition('.')[2]}" if technique and find_last_checkpoint(roots) else ""
                raise ConfigError(
                    f"--ckpt_path last: no last.ckpt{of} under {', '.join(map(str, roots))}. Give the checkpoint's "
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
        if ckpt_path and is_local_checkpoint(ckpt_path):  # refused with one line, before anything else reads it
            self._checkpoint = read_lightning_checkpoint(ckpt_path)
            self._check_technique(subcommand, ckpt_path, self._checkpoint)
        exit_on_error, self.parser.exit_on_error = self.parser.exit_on_error, False
        try:
            super()._parse_ckpt_path()
        except ArgumentError as err:  # a checkpoint without `_class_path` whose hyperparameters do not fit the model
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: its hyperparameters do not fit the model to {subcommand} "
                f"({short_parse_error(str(err))}). Give a checkpoint of that model, or the config of the run that "
                "wrote it."
            ) from None
        finally:
            self.parser.exit_on_error = exit_on_error
        init_args = getattr(self.config[subcommand].get("model"), "init_args", None) if subcommand else None
        for key, value in explicit.items():
            init_args[key] = value

    def _check_technique(self, subcommand: str, ckpt_path: str, ckpt: dict[str, Any]) -> None:
        """Refuse a checkpoint of another technique than the configured model: Lightning would build the model from
        the checkpoint's class (its hyperparameters' `_class_path`) and run that one instead, without a word."""
        saved = (ckpt.get("hyper_parameters") or {}).get("_class_path")
        configured = getattr(self.config[subcommand].get("model"), "class_path", None)
        if not saved or not configured:  # no model configured: the checkpoint's is the one to run
            return
        saved_class, configured_class = _import_class(saved), _import_class(configured)
        if saved == configured or (saved_class is not None and saved_class is configured_class):
            return
        saved_name = saved_class.__name__ if saved_class is not None else saved
        configured_name = configured_class.__name__ if configured_class is not None else configured
        run_config = Path(ckpt_path).resolve().parent.parent / "config.yaml"
        its_config = f" (`--config {run_config}`)" if run_config.is_file() else ""
        raise ConfigError(
            f"--ckpt_path {ckpt_path} is a checkpoint of {saved_name} ({saved}), but the model to {subcommand} is "
            f"{configured_name} ({configured}). Give a {configured_name} checkpoint, or the config of the "
            f"{saved_name} run that wrote it{its_config}."
        )

    def instantiate_classes(self) -> None:
        """Lightning's, with a check raised in a constructor surfacing as itself: jsonargparse wraps it while
        instantiating (see `user_error`), and `main` prints the project's own errors as one line."""
        try:
            super().instantiate_classes()
        except Exception as error:
            original = user_error(error) or constructor_error(error, self.config.get("subcommand") or "fit")
            if original is None or original is error:
                raise
            raise original from None

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        cfg = self.config[subcommand]
        ckpt_path = cfg.get("ckpt_path")
        if "weights_only" in cfg and cfg.get("weights_only") is None:  # the Trainer's restore runs no code from
            cfg.weights_only = True  # the checkpoint, on every torch and URL (`--weights_only false` opts out)
        if subcommand == "predict" and not _explains_data(cfg) and any(
            "AutoWandbLogger" in str(getattr(c, "class_path", "")) for c in _logger_configs(cfg.trainer.logger)
        ):
            cfg.trainer.logger = False  # predict logs nothing: do not open a W&B run for it
        if subcommand == "fit" and ckpt_path and is_local_checkpoint(ckpt_path):
            if self._checkpoint is None:
                self._checkpoint = read_lightning_checkpoint(ckpt_path)
            meta = self._checkpoint.get("lightning_gen", {})
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
        trainer = super()._instantiate_trainer(config, callbacks)
        check_multi_node_launcher(trainer)  # before any process starts and waits for nodes that never come
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    # ---- a checkpoint's image shape against the data's ---------------------------------------------------------
    def _check_checkpoint_shape(self) -> None:
        """Refuse data of another image shape than the checkpoint's model, naming the checkpoint and the data option
        that gives its size (the technique's own check would name `--model.image_shape`, which the user never gave:
        the shape came from the checkpoint). Data whose shape is known only after `setup()` is left to that check."""
        if self._checkpoint is None or self._given("--model.image_shape"):
            return
        saved = (self._checkpoint.get("hyper_parameters") or {}).get("image_shape")
        data_shape = self.datamodule.image_shape if isinstance(self.datamodule, ImageData) else None
        if saved is None or data_shape is None or tuple(saved) == tuple(data_shape):
            return
        saved, data_shape = tuple(int(v) for v in saved), tuple(int(v) for v in data_shape)
        name = type(self.datamodule).__name__
        options = {name for cls in type(self.datamodule).__mro__ if "__init__" in vars(cls)  # with its parents'
                   for name in inspect.signature(cls.__init__).parameters}
        size = next((f"`--data.{o} {saved[1]}`" for o in ("image_size", "crop_size") if o in options), None)
        fix = f"Give the data the checkpoint's size ({size})" if size else "Give data of the checkpoint's shape"
        if saved[0] != data_shape[0]:
            fix = f"Give data with {saved[0]} channel{'s' if saved[0] > 1 else ''}"
        raise ConfigError(
            f"--ckpt_path {self.config[self.subcommand].ckpt_path} holds a model for images of shape {saved}, but "
            f"{name} gives {data_shape}. {fix}, or start a new run without `--ckpt_path`."
        )

    def _given(self, option: str) -> bool:
        """Whether `option` (e.g. `--model.image_shape`) was typed on the command line."""
        return any(token == option or token.startswith(option + "=") for token in self._raw_args)

    def before_fit(self) -> None:
        self._check_checkpoint_shape()

    def before_validate(self) -> None:
        self._check_checkpoint_shape()

    def before_test(self) -> None:
        self._check_checkpoint_shape()

    # ---- predict: a generator needs no data, only its checkpoint --------------------------------------------
    def before_predict(self) -> None:
        self._check_checkpoint_shape()
        dm = self.datamodule
        model_inputs = is_overridden("predict_dataloader", self.model, LightningModule)
        if isinstance(self.model, ExplainsData):
            self.model.source_data, self.datamodule = dm, None  # its own loader reads the datamodule's images
        elif dm is not None and model_inputs and (
            (isinstance(self.model, OwnsPredictInputs) and self.model.owns_predict_inputs)  # e.g. `predict_images`
            or not is_overridden("predict_dataloader", dm, LightningDataModule)
        ):
            self.datamodule = None
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            writer = self.model.prediction_writer() if isinstance(self.model, WritesPredictions) else ImageWriter()
            self.trainer.callbacks.append(writer)

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


def _explains_data(cfg: Any) -> bool:
    """Whether the configured model class (read from its class path, before it is built) is `ExplainsData`."""
    class_path = str(getattr(cfg.get("model"), "class_path", "") or "")
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return False
    return cls is not None and isinstance(cls, ExplainsData)


def one_line(error: BaseException) -> str:
    """The message of a project error as the user sees it. An error raised in a DataLoader worker process comes back
    as the same type whose message is "Caught DataError in DataLoader worker process 0." and the worker's traceback
    (torch's `ExceptionWrapper.reraise`): the original message is its last line(s), after the type's name."""
    text = str(error)
    kind = type(error)
    if text.startswith(f"Caught {kind.__name__} ") and "Original Traceback" in text:
        _, found, message = text.rpartition(f"{kind.__module__}.{kind.__qualname__}: ")
        if found:
            return message.strip()
    return text


def main(args: list[str] | None = None) -> None:
    """Entry point of the `lightning-gen` console script and of `python cli.py`."""
    try:
        GenCLI(args=args)
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
