"""Reading checkpoints without running code from them.

A checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever functions it names: a "pretrained" file
from an untrusted source, read with `torch.load(..., weights_only=False)`, can run any code. `load_checkpoint` reads
with `weights_only=True` (torch's restricted unpickler: tensors, containers and plain Python values, nothing that
calls a function), and turns a refusal into a `ConfigError` that names the file, what it holds, and what to do.

Every checkpoint lightning_gen writes (all techniques, with the EMA, `RunCheckpoint`, early stopping, learning-rate
schedules, mixed precision) holds only tensors, dicts, lists, tuples, strings, numbers, booleans and None: the
techniques save their hyperparameters as plain values, `LinearDecay` saves its settings as a dict, and the run
metadata is two strings. So `SAFE_GLOBALS`, the types allowed beyond torch's own list, is empty.

A file that is not a checkpoint at all (empty, truncated by an interrupted copy, random bytes, a text file) is
reported as such (`CorruptCheckpointError`), never with torch's advice to retry with `weights_only=False`.
`read_lightning_checkpoint` adds the checks of a `--ckpt_path`: the file exists and holds a Lightning checkpoint.

Writing: `AtomicCheckpointIO` (what the CLI's trainers save with) never leaves a partial file under a checkpoint's
name: it writes beside it under a temporary name, flushes it to disk, then renames it over the old one.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from lightning_gen.core.checks import ConfigError

# Types (classes, never functions) that project checkpoints hold beyond torch's weights-only allow-list
# (torch.serialization.get_safe_globals()). None: see the module docstring. Add a type here only after checking
# that unpickling it runs no code but its constructor's plain data handling.
SAFE_GLOBALS: tuple[type, ...] = ()

# How the two formats of `torch.save` begin: a zip archive (torch 1.6 and newer), or the legacy pickle whose first
# value is torch's magic number 0x1950A86A20F9469CFC6C
_ZIP_HEADER = b"PK\x03\x04"
_LEGACY_HEADER = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_RUN_FOLDER = "a lightning-gen run writes its checkpoints to `<run folder>/checkpoints/`"

_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_BLOCKED = re.compile(r"(\S+) whose module (\S+) is blocked")


class UnsafeCheckpointError(ConfigError):
    """A checkpoint that `load_checkpoint` refused to unpickle: it holds Python objects other than tensors and plain
    values, which unpickling could turn into running code. The message names the file, the objects and the fix."""


class CorruptCheckpointError(ConfigError):
    """A file that is not a readable checkpoint: empty, cut short, damaged, or not written by `torch.save`. The
    message names the file and what to do."""


def _torch_format(path: str | os.PathLike) -> str | None:
    """'zip' or 'legacy' when the file begins as `torch.save` writes it, else None."""
    with open(path, "rb") as file:
        head = file.read(len(_LEGACY_HEADER))
    if head.startswith(_ZIP_HEADER):
        return "zip"
    return "legacy" if head == _LEGACY_HEADER else None


def _corrupt(path: str | os.PathLike, error: BaseException) -> CorruptCheckpointError:
    """The one-line error for a file torch could not read as a checkpoint (torch's own text is not repeated: it
    can suggest `weights_only=False`, which would run any code the file holds)."""
    name = os.fspath(path)
    size = os.path.getsize(path)
    fmt = _torch_format(path) if size else None
    if not size:
        what = "the file is empty"
    elif fmt is None:
        what = "it is not a file written by torch.save"
    else:
        what = (f"it begins like a torch.save file but cannot be read ({type(error).__name__}): it is cut short or "
                "damaged, e.g. by an interrupted copy, download or save")
    return CorruptCheckpointError(f"{name} is not a readable checkpoint: {what}. Copy it again, or use another "
                                  f"checkpoint ({_RUN_FOLDER}).")


def _refused(path: str | os.PathLike, error: Exception) -> list[str]:
    """The globals a weights-only load refused: all of them when torch can list them (2.5 or newer), else the
    one its error names."""
    names: list[str] = []
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is not None:
        try:
            names = list(lister(path))  # reads the pickle's opcodes; imports and runs nothing
        except Exception:  # an archive it cannot read: fall back to the error message
            names = []
    if not names:
        message = str(error)
        names = _REFUSED_GLOBAL.findall(message) or [m[0] for m in _BLOCKED.findall(message)]
    return names


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The contents of the checkpoint at `path`, read with `torch.load(weights_only=True)` (tensors on
    `map_location`, the CPU by default), so reading it cannot run code.

    Raises `UnsafeCheckpointError` (a `ConfigError`) if the file holds anything else (a pickled function call, an
    object of a class not in torch's allow-list or `SAFE_GLOBALS`), `CorruptCheckpointError` (a `ConfigError`) if it
    is not a readable `torch.save` file; `FileNotFoundError` if there is no such file."""
    try:
        if SAFE_GLOBALS:
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        names = _refused(path, error)
        if not names and _torch_format(path) is None:  # random bytes, a plain pickle, text: not a torch file
            raise _corrupt(path, error) from None
        if names:
            what = (f"it refers to {', '.join(names)}, which is neither a tensor nor a plain value; unpickling it "
                    "would import and call that")
        else:  # refused for another reason (an operation the restricted unpickler does not perform)
            reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            what = f"torch's weights-only unpickler refused it ({reason}); unpickling it unchecked could run code"
        raise UnsafeCheckpointError(
            f"{os.fspath(path)} was not loaded: {what}, and a checkpoint can run any code this way. lightning_gen's "
            "own checkpoints hold only tensors and plain values, so this file was written or changed by other code. "
            "Load only checkpoints you trust. If you trust this one (you know who wrote it and how), convert it once: "
            "load it with `torch.load(path, weights_only=False)`, replace those objects by plain values (or drop "
            "them), and `torch.save` the result under a new name."
        ) from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # a zip archive cut short, an empty file, bytes that are no pickle
        raise _corrupt(path, error) from None


def read_lightning_checkpoint(path: str | os.PathLike, option: str = "--ckpt_path") -> dict[str, Any]:
    """The contents of the Lightning checkpoint given as `option` (read by `load_checkpoint`), after checking that
    the file exists and is one. Raises a `ConfigError` whose one line names the file and the fix: no such file, a
    folder, an unreadable file (`CorruptCheckpointError`), a file of code (`UnsafeCheckpointError`), or a torch
    file that is no Lightning checkpoint (plain weights, a tensor)."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise ConfigError(f"{option} {name} is a folder, not a checkpoint file: give a .ckpt file ({_RUN_FOLDER}, "
                          "the newest is `last.ckpt`), or `--ckpt_path last`.")
    if not os.path.isfile(name):
        hint = (" (`best` is only known inside the process that ran the fit)" if name == "best" else "")
        raise ConfigError(f"{option} {name}: no such file{hint}. Check the path ({_RUN_FOLDER}), or give "
                          "`--ckpt_path last` for the newest `last.ckpt` under the run root.")
    try:
        ckpt = load_checkpoint(name)
    except PermissionError:
        raise ConfigError(f"{option} {name} cannot be read (permission denied): give a file you can read.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        what = f"a {type(ckpt).__name__}" if not isinstance(ckpt, dict) else "a dict without `state_dict`"
        raise ConfigError(f"{option} {name} holds {what}, not a Lightning checkpoint (plain weights saved with "
                          f"torch.save are not one): give a checkpoint of a run ({_RUN_FOLDER}).")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with the file at a checkpoint's name always complete: a local checkpoint is
    written to `.<name>.partial-<pid>` in the same folder, flushed to disk (`fsync`), then renamed over `<name>`
    (`os.replace`, one step on POSIX and Windows), so a process killed while saving (a cluster's SIGKILL after its
    grace time, a full disk) leaves the previous checkpoint, or none, never half of one. Lightning's own IO writes
    through fsspec's temporary file in the system's temp folder and moves it, which becomes a copy onto the final
    name whenever that folder is on another file system than the checkpoints (node-local `/tmp` on most clusters).
    Remote URLs (s3://, gs://, ...) are left to Lightning's (object stores write whole objects)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = os.path.abspath(os.path.expanduser(os.fspath(path).removeprefix("file://")))
        folder, name = os.path.split(target)
        os.makedirs(folder, exist_ok=True)
        partial = os.path.join(folder, f".{name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise


__all__ = ["SAFE_GLOBALS", "AtomicCheckpointIO", "CorruptCheckpointError", "UnsafeCheckpointError",
           "load_checkpoint", "read_lightning_checkpoint"]
