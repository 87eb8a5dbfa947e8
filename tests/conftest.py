from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker (and per process it starts), so two
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # workers share two cores instead of each spinning two threads
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` first, each group in its collected order (see `markers` in pyproject.toml)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def shared_data(*parts: str) -> Path:
    """A folder under `$LIGHTNING_GEN_DATA`, or skip the test with the reason."""
    base = os.environ.get("LIGHTNING_GEN_DATA")
    if not base:
        pytest.skip("real data not configured: set LIGHTNING_GEN_DATA to the datasets folder")
    path = Path(base).joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


def child_env() -> dict[str, str]:
    """This process's environment for a child process, without W&B's service token: a test that ran W&B in this
    process (the in-process CLI tests) leaves `WANDB_SERVICE` set, and a child would then hand its run to this
    process's W&B service, which writes the run's files after the child has exited."""
    return {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m lightning_gen.core.cli ARGS` in a child process (as a user would), project root on PYTHONPATH.

    The child is forked from a server process that imported the package once (`multiprocessing`'s forkserver), so
    each call skips the seconds of importing torch and Lightning but still runs in a process of its own, in `cwd`,
    with exactly the given environment, its own stdout / stderr and its exit status. A DDP run it starts re-launches
    `python -m lightning_gen.core.cli` for the other ranks as the real command would. `fresh=True` runs a new
    interpreter instead (for what must be seen from a cold start)."""
    full_env = {**child_env(), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    full_env.setdefault("WANDB_SILENT", "true")
    full_env.update(env or {})
    command = [sys.executable, "-m", "lightning_gen.core.cli", *args]
    if fresh:
        return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = _forkserver().Process(target=_cli_child, args=(args, str(cwd), full_env, str(out), str(err)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text())
        return subprocess.CompletedProcess(command, child.exitcode, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))


_SERVER: list = []  # this worker's forkserver context, started on first use


def _forkserver():
    if not _SERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["lightning_gen.core.cli"])
        _SERVER.append(context)
    return _SERVER[0]


def _cli_child(args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The body of `run_cli`'s child: become `python -m lightning_gen.core.cli ARGS` in `cwd` with `env`."""
    import atexit
    import importlib.util
    import traceback

    import __main__

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    from lightning_gen.core import cli

    sys.argv = [cli.__file__, *args]
    __main__.__spec__ = importlib.util.find_spec("lightning_gen.core.cli")  # Lightning's DDP launcher reads it
    code = 0
    try:
        cli.main(args)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


TINY = str(ROOT / "configs" / "dcgan" / "tiny.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def _no_wandb_login(tmp_path, monkeypatch):
    """Tests never reach W&B servers: no credentials, and W&B's own files stay in the test's folder."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
