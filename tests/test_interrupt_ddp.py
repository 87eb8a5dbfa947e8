"""SIGTERM to one process of a real 2-process DDP fit (CPU, gloo): every process stops at the same batch, one
complete `last.ckpt` is written, and nothing waits forever for a process that was not signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import QUIET, ROOT, TINY, child_env

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")


class SlowValidation(L.Callback):
    """Test-only: each validation batch of `fit` (or training batch, `during: train`) takes `seconds`, and when
    the first starts process `rank` writes its pid to `marker`, for the test to signal that one process."""

    def __init__(self, marker: str, rank: int = 1, seconds: float = 0.5, during: str = "validation"):
        self.marker, self.rank, self.seconds, self.during = marker, rank, seconds, during

    def _mark(self, trainer: L.Trainer) -> None:
        marker = Path(self.marker)
        if trainer.global_rank == self.rank and not marker.exists():
            partial = marker.with_name(marker.name + ".part")
            partial.write_text(str(os.getpid()))
            partial.replace(marker)  # the test never reads a half-written pid

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.during == "validation" and not trainer.sanity_checking:
            self._mark(trainer)
            time.sleep(self.seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.during == "train":
            self._mark(trainer)
            time.sleep(self.seconds)


def fit_and_signal_one_process(tmp_path: Path, during: str, timeout: float = 90) -> tuple[int, str]:
    marker = tmp_path / "rank1.pid"
    args = ["fit", "--config", TINY, "--data.batch_size", "8", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.logger", "false", "--trainer.default_root_dir", "out", "--trainer.max_epochs", "1000",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "8",
            "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks+=tests.test_interrupt_ddp.SlowValidation",
            f"--trainer.callbacks.marker={marker}", f"--trainer.callbacks.during={during}", *QUIET]
    env = {**child_env(), "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    # its own session: on a timeout the whole group (rank 0 and the rank it started) is killed, never left behind
    proc = subprocess.Popen([sys.executable, "-m", "lightning_gen.core.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"process 1 never reached {during}:\n{proc.communicate(timeout=5)[0][-3000:]}"
        os.kill(int(marker.read_text()), signal.SIGTERM)  # process 1 only: process 0 never receives a signal
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        print(out[-5000:])
        raise
    return proc.returncode, out


@pytest.mark.parametrize("during", ["validation", "train"])
def test_sigterm_to_one_ddp_process_stops_every_process_with_a_complete_checkpoint(tmp_path, during):
    returncode, out = fit_and_signal_one_process(tmp_path, during)
    assert "Interrupted: saved" in out and "Traceback" not in out, out[-3000:]
    assert returncode == 0, out[-3000:]
    folder = tmp_path / "out" / "checkpoints"
    ckpt = torch.load(folder / "last.ckpt", weights_only=False)
    # two optimizer steps a batch: validation runs after epoch 0's two batches; the training case stops in one of them
    steps = (4,) if during == "validation" else (2, 4)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] in steps, (ckpt["epoch"], ckpt["global_step"])
    assert all(torch.isfinite(v.float()).all() for v in ckpt["state_dict"].values())
    assert len(ckpt["optimizer_states"]) == 2
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("RunCheckpoint")]
    assert Path(state["last_model_path"]).name == "last.ckpt"  # so a resumed run updates it, not a last-v1.ckpt
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("epoch=")) == ["last.ckpt"]
