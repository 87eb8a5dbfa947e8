"""Multi-node DDP on loopback: two "nodes" of one CPU process each, launched with `torchrun --nnodes 2 --node-rank r
--master-addr 127.0.0.1` as two separate launchers (gloo), train DCGAN, the SGAN and pix2pix to the same weights on
both nodes, equal to the single-node two-process run of the same global batch. And the error of `num_nodes > 1`
without a launcher.

To keep the cost down, each launched process imports the package once and runs the three techniques' `fit` one after
the other through the CLI's `main` (`python -m tests.test_multinode ROOT NUM_NODES DEVICES`), as `lightning-gen fit`
would, a few steps each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import QUIET, ROOT, child_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on POSIX")

# (folder, config, extra options): a few steps each, no validation (the evaluation across nodes is the same code as
# across processes, tested in test_distributed.py)
TECHNIQUES = [
    ("dcgan", "dcgan/tiny.yaml", ["--data.batch_size", "8"]),
    ("sgan", "sgan/tiny.yaml", ["--data.data.init_args.batch_size", "8"]),
    ("pix2pix", "pix2pix/tiny.yaml", ["--data.batch_size", "2"]),
]
LOOPBACK = "lo0" if sys.platform == "darwin" else "lo"  # gloo's interface: 127.0.0.1 only
STEPS = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0",
         "--trainer.num_sanity_val_steps", "0"]


class SaveRankWeights(L.Callback):
    """Test-only: every process writes its final parameters and buffers to `<default_root_dir>/weights_rank<R>.pt`."""

    def on_train_end(self, trainer, pl_module):
        state = {"params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
                 "buffers": {k: v.detach().cpu().clone() for k, v in pl_module.named_buffers()}}
        torch.save(state, Path(trainer.default_root_dir) / f"weights_rank{trainer.global_rank}.pt")


def fit_all(root: Path, num_nodes: int, devices: int) -> None:
    """Run in each process that torchrun starts: the three techniques' `fit`, one after the other."""
    from lightning_gen.core.cli import main

    have_facades = (Path(os.environ.get("LIGHTNING_GEN_DATA", "")) / "facades").is_dir()
    for folder, config, extra in TECHNIQUES:
        if folder == "pix2pix" and not have_facades:
            continue
        main(["fit", "--config", str(ROOT / "configs" / config), *extra, *STEPS,
              "--trainer.num_nodes", str(num_nodes), "--trainer.devices", str(devices),
              "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.logger", "false",
              "--trainer.callbacks+=tests.test_multinode.SaveRankWeights",
              "--trainer.default_root_dir", str(root / folder), *QUIET])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(root: Path, nnodes: int, node_rank: int, nproc: int, port: int) -> subprocess.Popen:
    env = {**child_env(), "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": LOOPBACK, "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--node-rank",
               str(node_rank), "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1", "--master-port",
               str(port), "-m", "tests.test_multinode", str(root), str(nnodes), str(nproc)]
    # its own session, so that a timeout kills the launcher and the processes it started
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    deadline, outputs = time.monotonic() + timeout, []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.communicate()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    return outputs


def test_two_nodes_train_like_one_node_of_two_processes(tmp_path):
    two_nodes, one_node = tmp_path / "two_nodes", tmp_path / "one_node"
    two_nodes.mkdir()
    one_node.mkdir()
    port = free_port()
    nodes = [torchrun(two_nodes, 2, rank, 1, port) for rank in (0, 1)]  # two launchers: node 0 and node 1
    wait_all(nodes, timeout=240)
    wait_all([torchrun(one_node, 1, 0, 2, free_port())], timeout=240)  # one launcher, two processes
    folders = [f for f, _, _ in TECHNIQUES if (one_node / f / "weights_rank0.pt").is_file()]
    assert {"dcgan", "sgan"} <= set(folders), folders
    for folder in folders:
        nodes = [torch.load(two_nodes / folder / f"weights_rank{r}.pt") for r in (0, 1)]
        reference = [torch.load(one_node / folder / f"weights_rank{r}.pt") for r in (0, 1)]
        ckpt = torch.load(two_nodes / folder / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 4, (folder, ckpt["global_step"])  # 2 batches, 2 networks
        for key, value in nodes[0]["params"].items():
            assert torch.equal(value, nodes[1]["params"][key]), (folder, key, "differs between the nodes")
            assert torch.equal(ckpt["state_dict"][key], value), (folder, key)
        for rank in (0, 1):  # global rank r on its own node = rank r of the one-node run, buffers included (batch
            for kind in ("params", "buffers"):  # norm's running statistics are per process without sync_batchnorm)
                for key, value in reference[rank][kind].items():
                    got = nodes[rank][kind][key]
                    assert torch.allclose(got.double(), value.double(), rtol=0, atol=1e-6), (folder, rank, key)


def test_num_nodes_without_a_launcher_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from lightning_gen.core.cli import main

    for name in ("MASTER_ADDR", "NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-gen"])
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(ROOT / "configs" / "dcgan" / "tiny.yaml"), "--trainer.num_nodes", "2",
              "--trainer.strategy", "ddp", "--trainer.logger", "false", "--trainer.default_root_dir", "out", *QUIET])
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: --trainer.num_nodes 2") and "torchrun" in line and "srun" in line, line
    assert not (tmp_path / "out").exists()


if __name__ == "__main__":
    fit_all(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
