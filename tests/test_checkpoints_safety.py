"""Checkpoints are read without running code from them (`lightning_gen.core.checkpoints.load_checkpoint`): a file
that pickles a function call is refused with a `ConfigError` by every place lightning_gen reads a checkpoint, and
every checkpoint lightning_gen writes still loads, resumes, tests and predicts."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning
import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from lightning_gen import SRGAN
from lightning_gen.callbacks import EMA
from lightning_gen.core.checkpoints import UnsafeCheckpointError, load_checkpoint
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.cli import GenCLI
from lightning_gen.nn.classifier import classifier_net_from_checkpoint
from tests.conftest import QUIET, ROOT, TINY, shared_data

EMA_KEY = "EMA{'attribute': 'generator'}"


@pytest.fixture(autouse=True)
def _cli_args_only(monkeypatch):
    """GenCLI(args=...) in this process: no pytest arguments in sys.argv for LightningCLI to warn about."""
    monkeypatch.setattr(sys, "argv", ["lightning-gen"])


class RunsCode:
    """Unpickles to a call of `exec` that writes `marker`: what a malicious "pretrained" checkpoint can carry (here
    harmless, and visible)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from a checkpoint ran')",)


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint shaped like a lightning_gen one (a Classifier's hyperparameters and network, an SRResNet's
    generator, EMA state, run metadata), each part carrying a pickled call; and the file that call would write."""
    marker = tmp_path / "code_ran"
    payload = RunsCode(marker)
    ckpt = {
        "epoch": 0, "global_step": 1, "pytorch-lightning_version": lightning.__version__,
        "state_dict": {"net.head.weight": torch.zeros(10, 4), "generator.body.0.weight": torch.zeros(1)},
        "hyper_parameters": {"arch": "cnn", "image_shape": (1, 8, 8), "num_classes": 10, "residual": True,
                             "pretrained_from": payload},
        "callbacks": {EMA_KEY: {"averaged": {}, "num_updates": 1, "attribute": "generator", "extra": payload}},
        "lightning_gen": {"logger": "CSVLogger", "run_id": payload},
    }
    path = tmp_path / "pretrained.ckpt"
    torch.save(ckpt, path)
    assert not marker.exists()
    return path, marker


def refused(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert isinstance(error.value, ConfigError)
    assert str(path) in message and "exec" in message and "trust" in message, message
    assert len(message.splitlines()) == 1


# ---- a checkpoint that runs code is refused everywhere it can be read ----------------------------------------
def test_load_checkpoint_refuses_a_pickled_call(evil):
    path, marker = evil
    with pytest.raises(UnsafeCheckpointError) as error:
        load_checkpoint(path)
    refused(error, path)
    assert not marker.exists()


def test_classifier_feature_network_refuses_it(evil):
    path, marker = evil
    with pytest.raises(UnsafeCheckpointError) as error:
        classifier_net_from_checkpoint(str(path))
    refused(error, path)
    assert not marker.exists()


def test_srgan_generator_ckpt_refuses_it(evil):
    path, marker = evil
    model = SRGAN(scale=4, channels=8, num_blocks=1, residual=True, d_channels=4, backbone="mobilenet_v1",
                  weights="random", generator_ckpt=str(path))
    with pytest.raises(UnsafeCheckpointError) as error:
        model.load_generator(str(path))
    refused(error, path)
    assert not marker.exists()


def test_ema_restore_refuses_it(evil):
    path, marker = evil
    module = torch.nn.Module()
    module.generator = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(state=SimpleNamespace(fn="test"), ckpt_path=str(path))  # `test --ckpt_path`
    with pytest.raises(UnsafeCheckpointError) as error:
        EMA().on_test_start(trainer, module)
    refused(error, path)
    assert not marker.exists()


def test_cli_run_metadata_read_refuses_it(evil, tmp_path, monkeypatch):
    # Lightning reads the checkpoint's hyperparameters first (weights-only, see the next test); without that read,
    # `fit --ckpt_path` reaches the run-metadata read of GenCLI, which must refuse the file itself
    path, marker = evil
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LightningCLI, "_parse_ckpt_path", lambda self: None)
    with pytest.raises(UnsafeCheckpointError) as error:
        GenCLI(args=["fit", "--config", TINY, "--ckpt_path", str(path), "--trainer.logger", "false", *QUIET])
    refused(error, path)
    assert not marker.exists()


@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_cli_refuses_it_before_training(evil, tmp_path, monkeypatch, subcommand):
    path, marker = evil
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ConfigError, pickle.UnpicklingError)):  # Lightning's own weights-only read, or ours
        GenCLI(args=[subcommand, "--config", TINY, "--ckpt_path", str(path), "--trainer.logger", "false", *QUIET])
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


# ---- every checkpoint lightning_gen writes loads, and resumes / tests / predicts ------------------------------
def cli(*args: str) -> None:
    GenCLI(args=[*args, "--trainer.accelerator", "cpu", *QUIET])


def all_checkpoints_load(folder: Path) -> list[Path]:
    found = sorted(folder.rglob("*.ckpt"))
    assert found
    for path in found:
        ckpt = load_checkpoint(path)
        assert ckpt["state_dict"] and "hyper_parameters" in ckpt
        if hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):  # torch 2.5+
            assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
    return found


def test_dcgan_with_ema_checkpoints_load_resume_test_and_predict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--config", TINY, "--trainer.callbacks+=lightning_gen.callbacks.EMA", "--trainer.callbacks.bn_batches=1",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    logged = ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "logs"]  # writes the run metadata
    cli("fit", *common, *logged)
    first = tmp_path / "logs" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(first)
    assert ckpt["lightning_gen"] == {"logger": "CSVLogger", "run_id": "0"} and EMA_KEY in ckpt["callbacks"]
    # resume (GenCLI reads the run metadata through load_checkpoint), every Lightning read weights-only
    cli("fit", *common, *logged, "--ckpt_path", "last", "--trainer.max_epochs", "2", "--weights_only", "true")
    resumed = load_checkpoint(first)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * ckpt["global_step"]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["version_0"]  # the same run folder
    # test and predict with the average (the EMA callback reads its state through load_checkpoint)
    evaluate = [*common, "--ckpt_path", str(first), "--weights_only", "true", "--trainer.logger", "false",
                "--trainer.default_root_dir", "eval"]
    cli("test", *evaluate)
    cli("predict", *evaluate, "--model.num_samples", "4")
    assert len(list((tmp_path / "logs" / "version_0" / "predictions").glob("0*.png"))) == 4  # in the trained run
    all_checkpoints_load(tmp_path)


def test_classifier_checkpoint_is_a_feature_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli("fit", "--config", str(ROOT / "configs" / "classifier" / "tiny.yaml"), "--trainer.logger", "false",
        "--trainer.default_root_dir", "out", "--trainer.limit_train_batches", "2")
    all_checkpoints_load(tmp_path / "out")
    net, hparams = classifier_net_from_checkpoint(str(tmp_path / "out" / "checkpoints" / "last.ckpt"))
    assert hparams["arch"] == "cnn" and net(torch.zeros(2, *hparams["image_shape"])).shape == (2, 10)


def test_pix2pix_schedules_and_srresnet_generator_load(tmp_path, monkeypatch):
    """Learning-rate schedules (`LinearDecay` state) and an SRResNet checkpoint starting an SRGAN."""
    shared_data("facades")
    monkeypatch.chdir(tmp_path)
    cli("fit", "--config", str(ROOT / "configs" / "pix2pix" / "tiny.yaml"), "--trainer.logger", "false",
        "--trainer.default_root_dir", "p2p", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1")
    ckpt = load_checkpoint(tmp_path / "p2p" / "checkpoints" / "last.ckpt")
    assert ckpt["lr_schedulers"][0]["lr_lambdas"] == [{"constant": 1, "decay": 1, "offset": 1}]
    cli("fit", "--config", str(ROOT / "configs" / "srresnet" / "tiny.yaml"), "--trainer.logger", "false",
        "--trainer.default_root_dir", "srresnet", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1")
    all_checkpoints_load(tmp_path)
    srgan = SRGAN(scale=4, channels=8, num_blocks=1, residual=True, d_channels=4, backbone="mobilenet_v1",
                  weights="random")
    srgan.build()
    srgan.load_generator(str(tmp_path / "srresnet" / "checkpoints" / "last.ckpt"))
