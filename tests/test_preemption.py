"""Cluster preemption: a 2-process CPU DDP fit (gloo) launched as SLURM's `srun` launches it gets the requeue signal
in the middle of an epoch, saves `last.ckpt` at the end of that step on every process, asks SLURM to requeue the
job, and the requeued job (the same command) resumes by itself, in the same W&B run, and ends with the weights of an
uninterrupted run. A checkpoint save that is cut short leaves no partial file under the checkpoint's name."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_gen.core.checkpoints import AtomicCheckpointIO, load_checkpoint
from tests.conftest import QUIET, ROOT, TINY, _cli_child, _forkserver, child_env
from tests.test_multinode import LOOPBACK, free_port

POSIX = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")


class SignalAt(L.Callback):
    """Test-only: process `rank` sends itself `signum` at the end of the training batch after which the global step is
    `step` (once), as SLURM would before the time limit."""

    def __init__(self, step: int, rank: int = 1, signum: str = "SIGUSR1") -> None:
        self.step, self.rank, self.signum = step, rank, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), getattr(signal, self.signum))


ARGS = ["fit", "--config", TINY, "--data.batch_size", "8", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0", "--model.num_samples", "4", *QUIET]


def srun(folder: Path, job_id: str, args: list[str], restarts: int = 0, timeout: float = 120) -> list[str]:
    """Start the two processes of a one-node SLURM job step the way `srun` does (SLURM_* variables, one process per
    task, each `python -m lightning_gen.core.cli ARGS`, forked from the test's server process that imported the
    package once: see `run_cli`), with a fake `scontrol` that records the requeue request, and wait for them."""
    folder.mkdir(parents=True, exist_ok=True)
    bin_dir = folder.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{folder.parent / "scontrol.log"}"\n')
    scontrol.chmod(0o755)
    port = str(free_port())
    procs, logs = [], []
    for rank in (0, 1):
        env = {**child_env(), "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", "WANDB_MODE": "offline",
               "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "lightning-gen", "SLURM_NTASKS": "2",
               "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": str(rank),
               "SLURM_LOCALID": str(rank), "SLURM_NODELIST": "127.0.0.1", "SLURM_RESTART_COUNT": str(restarts),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "GLOO_SOCKET_IFNAME": LOOPBACK}
        for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE"):
            env.pop(name, None)
        log = folder.parent / f"{folder.name}-{restarts}-rank{rank}.log"
        proc = _forkserver().Process(target=_cli_child, args=(args, str(folder), env, str(log), str(log)))
        proc.start()
        procs.append(proc)
        logs.append(log)
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.join(max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    outputs = [log.read_text(errors="replace") for log in logs]
    for proc, out in zip(procs, outputs):
        assert proc.exitcode == 0 and "Traceback" not in out, out[-4000:]
    return outputs


def last_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.rglob("checkpoints/last.ckpt"))


@POSIX
def test_preempted_slurm_job_requeues_and_resumes_to_the_uninterrupted_weights(tmp_path):
    # uninterrupted: 2 epochs of 3 batches, 2 optimizer steps a batch
    srun(tmp_path / "whole", "100", [*ARGS, "--trainer.logger", "false"])
    (whole,) = last_checkpoints(tmp_path / "whole")
    reference = load_checkpoint(whole)
    assert reference["global_step"] == 12

    # the requeue signal reaches process 1 after batch 2 of epoch 0 (mid-epoch); both processes save and stop
    job = tmp_path / "job"
    out = srun(job, "200", [*ARGS, "--trainer.callbacks+=tests.test_preemption.SignalAt",
                            "--trainer.callbacks.step=4"])
    assert "preemption signal: stopping at this batch (every process)" in out[0], out[0][-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "200"]  # rank 0 asked once
    (ckpt,) = last_checkpoints(job)
    stopped = load_checkpoint(ckpt)
    assert stopped["global_step"] == 4 and stopped["epoch"] == 0
    assert len(stopped["lightning_gen_rng"]) == 2  # both processes' generators
    assert not [p for p in job.rglob("*") if "partial" in p.name]

    # SLURM starts the same command again, with SLURM_RESTART_COUNT=1: it finds its checkpoint and W&B run
    out = srun(job, "200", [*ARGS], restarts=1)
    assert "Requeued SLURM job: resuming from" in out[0], out[0][-3000:]
    assert last_checkpoints(job) == [ckpt]  # the same run folder, the same W&B run id
    resumed = load_checkpoint(ckpt)
    assert resumed["lightning_gen"]["run_id"] == stopped["lightning_gen"]["run_id"] == ckpt.parent.parent.name
    assert resumed["global_step"] == 12
    worst = max((resumed["state_dict"][k].double() - v.double()).abs().max().item()
                for k, v in reference["state_dict"].items())
    assert worst < 1e-6, worst


def test_an_interrupted_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 1}, path)
    real_save = torch.save

    def killed_halfway(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.truncate(file.tell() // 2)  # half of the file written, then the process is stopped
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "global_step": 2}, path)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "checkpoints" / "new.ckpt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no new.ckpt, no temporary file
    assert load_checkpoint(path)["global_step"] == 1  # the previous checkpoint, whole
    monkeypatch.setattr(torch, "save", real_save)
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, path)
    assert load_checkpoint(path)["global_step"] == 3


def test_a_restored_loader_skips_the_batches_done_without_loading_them():
    from torch.utils.data import DataLoader, DistributedSampler

    from lightning_gen.core.preemption import ResumableLoader, make_resumable

    class Counted(torch.utils.data.Dataset):
        def __init__(self):
            self.loaded = []

        def __len__(self):
            return 12

        def __getitem__(self, i):
            self.loaded.append(i)
            return i

    data = Counted()
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    loader = make_resumable(DataLoader(data, batch_size=2, sampler=sampler), trainer=None)
    assert isinstance(loader, ResumableLoader) and len(loader) == 6
    sampler.set_epoch(1)
    whole = [b.tolist() for b in loader]
    data.loaded.clear()
    sampler.set_epoch(0)  # a new process: the sampler is at epoch 0 until the checkpoint says otherwise
    loader.load_state_dict({"epoch": 1, "batches_done": 4})
    assert [b.tolist() for b in loader] == whole[4:]  # the rest of the interrupted epoch, in its order
    assert sorted(data.loaded) == sorted(i for b in whole[4:] for i in b)  # the skipped batches were never loaded
    assert len(loader) == 6 and [b.tolist() for b in loader] == whole  # the next pass is whole again
    assert make_resumable(loader, trainer=None) is loader


def test_random_generators_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from lightning_gen.core.preemption import rng_state, set_rng_state

    torch.save({"rng": [rng_state()]}, tmp_path / "rng.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "rng.ckpt")["rng"][0])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_a_requeued_slurm_job_finds_its_own_checkpoint_only(tmp_path, monkeypatch):
    from lightning_gen.core.preemption import requeued_checkpoint, write_pointer

    ckpt = tmp_path / "runs" / "proj" / "abc" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    write_pointer(tmp_path / "runs", ckpt)
    assert requeued_checkpoint(tmp_path / "runs") is None  # the job's first start: a new run
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint(tmp_path / "runs") == ckpt
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job: not its checkpoint
    assert requeued_checkpoint(tmp_path / "runs") is None
