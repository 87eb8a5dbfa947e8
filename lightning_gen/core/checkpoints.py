"""Reading checkpoints without running code from them.

A checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever functions it names: a "pretrained" file
from an untrusted source, read with `torch.load(..., weights_only=False)`, can run any code. `load_checkpoint` reads
with `weights_only=True` (torch's restricted unpickler: tensors, containers and plain Python values, nothing that
calls a function), and turns a refusal into a `ConfigError` that names the file, what it holds, and what to do.

Every checkpoint lightning_gen writes (all techniques, with the EMA, `RunCheckpoint`, early stopping, learning-rate
schedules, mixed precision) holds only tensors, dicts, lists, tuples, strings, numbers, booleans and None: the
techniques save their hyperparameters as plain values, `LinearDecay` saves its settings as a dict, and the run
metadata is two strings. So `SAFE_GLOBALS`, the types allowed beyond torch's own list, is empty.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from lightning_gen.core.checks import ConfigError

# Types (classes, never functions) that project checkpoints hold beyond torch's weights-only allow-list
# (torch.serialization.get_safe_globals()). None: see the module docstring. Add a type here only after checking
# that unpickling it runs no code but its constructor's plain data handling.
SAFE_GLOBALS: tuple[type, ...] = ()

_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_BLOCKED = re.compile(r"(\S+) whose module (\S+) is blocked")


class UnsafeCheckpointError(ConfigError):
    """A checkpoint that `load_checkpoint` refused to unpickle: it holds Python objects other than tensors and plain
    values, which unpickling could turn into running code. The message names the file, the objects and the fix."""


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
    object of a class not in torch's allow-list or `SAFE_GLOBALS`); `FileNotFoundError` if there is no such file."""
    try:
        if SAFE_GLOBALS:
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        names = _refused(path, error)
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


__all__ = ["SAFE_GLOBALS", "UnsafeCheckpointError", "load_checkpoint"]
