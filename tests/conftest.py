from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker (and per process it starts), so two
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # workers share two cores instead of each spinning two threads
    import torch

    torch.set_num_threads(1)


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


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m lightning_gen.core.cli ARGS` in a subprocess (as a user would), project root on PYTHONPATH."""
    full_env = {**child_env(), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    full_env.setdefault("WANDB_SILENT", "true")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lightning_gen.core.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
