"""Bad input stops before anything runs, with one line: the table of mistakes a user makes (what they type, a
fragment of the message they must see), each run through the real command line. Every row must exit with status 2,
print the fragment, print no `Traceback`, and write nothing to the run folder. docs/common-mistakes.md shows every
row's message (a test below checks it).

The rows run in this process through `lightning_gen.core.cli.main` (what the `lightning-gen` console script calls),
with the output captured at the file descriptors; `test_a_subprocess_prints_the_same` checks on two rows that a
separate process, as a user starts it, prints the same line.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lightning_gen.core.cli import main
from tests.conftest import ROOT, run_cli, shared_data

PAGE = ROOT / "docs" / "common-mistakes.md"


def config(technique: str) -> str:
    return str(ROOT / "configs" / technique / "tiny.yaml")


@dataclass(frozen=True)
class Mistake:
    id: str
    args: tuple[str, ...]  # `{dcgan_ckpt}`, `{unnamed_ckpt}`, `{random_bytes}`, `{truncated}`, `{missing}`,
    # `{folder}`: the files made by `inputs`
    message: str  # a fragment of the one line the user sees
    needs: str = ""  # "data": a config that reads $LIGHTNING_GEN_DATA; "gymnasium": the rl extra


MISTAKES = [
    # ---- a check in a model's, datamodule's or callback's constructor (jsonargparse runs it and wraps the error)
    Mistake("batch-size-0", ("fit", "--config", config("dcgan"), "--data.batch_size", "0"),
            "batch_size must be at least 1, got 0."),
    Mistake("latent-dim-0", ("fit", "--config", config("vae"), "--model.latent_dim", "0"),
            "latent_dim must be 1 or more, got 0."),
    Mistake("one-class", ("fit", "--config", config("cgan"), "--model.num_classes", "1"),
            "num_classes must be 2 or more, got 1."),
    Mistake("num-labeled-0", ("fit", "--config", config("sgan"), "--data.num_labeled", "0"),
            "num_labeled must be positive, got 0."),
    Mistake("num-envs-0", ("fit", "--config", config("a2c"), "--data.num_envs", "0"),
            "num_envs must be 1 or more, got 0.", needs="gymnasium"),
    Mistake("unknown-env", ("fit", "--config", config("a2c"), "--data.env_id", "CartPol-v1"),
            "unknown gymnasium environment id 'CartPol-v1'.", needs="gymnasium"),
    Mistake("missing-content", ("fit", "--config", config("style_transfer"), "--model.content", "{missing}"),
            "does not exist. Give the path of an image file or of a folder of images", needs="data"),
    Mistake("unknown-layer", ("predict", "--config", config("deepdream"), "--model.layers", "[conv9]"),
            "layers ['conv9'] are not layers of mobilenet_v1. Its layers are:", needs="data"),
    Mistake("crop-over-load", ("fit", "--config", config("pix2pix"), "--data.crop_size", "64"),
            "need 1 <= crop_size <= load_size; got crop_size=64, load_size=36.", needs="data"),
    Mistake("sr-crop", ("fit", "--config", config("srcnn"), "--data.crop_size", "25"),
            "crop_size must be a multiple of the scale (3); got 25.", needs="data"),
    Mistake("ema-decay", ("fit", "--config", config("dcgan"), "--trainer.callbacks+=lightning_gen.callbacks.EMA",
                          "--trainer.callbacks.decay", "1.5"),
            "EMA decay must be in [0, 1), got 1.5."),
    # ---- an option the parser rejects: its message and a pointer to the help, without the usage of every option
    Mistake("unknown-option", ("fit", "--config", config("dcgan"), "--model.n_critics", "2"),
            "Option 'n_critics' is not accepted (see lightning-gen fit --model.help lightning_gen.DCGAN)"),
    Mistake("wrong-type", ("fit", "--config", config("dcgan"), "--trainer.max_epochs", "ten"),
            "Expected an int. Got value: ten (see lightning-gen fit --help)"),
    Mistake("wrong-choice", ("fit", "--config", config("dcgan"), "--model.loss", "wgan"),
            "Expected one of 'bce', 'lsgan', 'hinge'. Got value: wgan"),
    # ---- --ckpt_path: a checkpoint of another technique, a missing or unreadable file
    Mistake("other-technique", ("fit", "--config", config("vae"), "--ckpt_path", "{dcgan_ckpt}"),
            "is a checkpoint of DCGAN (lightning_gen.DCGAN), but the model to fit is VAE (lightning_gen.VAE)."),
    Mistake("subclass-technique", ("predict", "--config", config("cgan"), "--ckpt_path", "{dcgan_ckpt}"),
            "is a checkpoint of DCGAN (lightning_gen.DCGAN), but the model to predict is CGAN (lightning_gen.CGAN)."),
    Mistake("foreign-hparams", ("test", "--config", config("classifier"), "--ckpt_path", "{unnamed_ckpt}"),
            "its hyperparameters do not fit the model to test"),
    Mistake("missing-ckpt", ("test", "--config", config("dcgan"), "--ckpt_path", "{missing}"),
            ": no such file. Check the path"),
    Mistake("folder-ckpt", ("validate", "--config", config("dcgan"), "--ckpt_path", "{folder}"),
            "is a folder, not a checkpoint file"),
    Mistake("random-bytes", ("predict", "--config", config("dcgan"), "--ckpt_path", "{random_bytes}"),
            "is not a readable checkpoint: it is not a file written by torch.save."),
    Mistake("truncated-ckpt", ("fit", "--config", config("dcgan"), "--ckpt_path", "{truncated}"),
            "is not a readable checkpoint: it begins like a torch.save file but cannot be read"),
    Mistake("no-last", ("fit", "--config", config("dcgan"), "--ckpt_path", "last"),
            "--ckpt_path last: no last.ckpt under run"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """The files the rows name: a real DCGAN checkpoint (one training step), the same without its class path (as
    written by a script, not the CLI), the first half of it, random bytes, a folder, and a path where nothing is."""
    folder = tmp_path_factory.mktemp("inputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["lightning-gen"])
        patch.setenv("WANDB_SILENT", "true")
        main(["fit", "--config", config("dcgan"), "--trainer.logger", "false", "--trainer.default_root_dir", "dcgan",
              "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar",
              "false", "--trainer.enable_model_summary", "false"])
    ckpt = folder / "dcgan" / "checkpoints" / "last.ckpt"
    contents = torch.load(ckpt, weights_only=True)
    del contents["hyper_parameters"]["_class_path"]
    torch.save(contents, folder / "unnamed.ckpt")
    data = ckpt.read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (folder / "random.ckpt").write_bytes(b"\0" + random.Random(0).randbytes(4095))
    (folder / "checkpoints").mkdir()
    return {"dcgan_ckpt": str(ckpt), "unnamed_ckpt": str(folder / "unnamed.ckpt"),
            "truncated": str(folder / "truncated.ckpt"), "random_bytes": str(folder / "random.ckpt"),
            "folder": str(folder / "checkpoints"), "missing": str(folder / "no-such-file.png")}


def prepare(mistake: Mistake, inputs: dict[str, str]) -> list[str]:
    if mistake.needs == "data":
        shared_data()
    elif mistake.needs == "gymnasium":
        pytest.importorskip("gymnasium", reason="needs the rl extra")
    return [arg.format(**inputs) for arg in mistake.args] + ["--trainer.default_root_dir", "run"]


def written(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_one_line_and_nothing_runs(mistake, inputs, tmp_path, monkeypatch, capfd):
    args = prepare(mistake, inputs)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-gen"])  # the console script's name, and no pytest arguments
    monkeypatch.setenv("WANDB_SILENT", "true")
    with pytest.raises(SystemExit) as stop:  # any other exception would reach the user as a traceback
        main(args)
    out, err = capfd.readouterr()
    output = out + err
    assert stop.value.code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and mistake.message in errors[0], output
    assert not err.strip().splitlines()[-1:] or err.strip().splitlines()[-1] == errors[0], err  # the last line
    assert not written(tmp_path), written(tmp_path)  # no run folder content, no checkpoint, no config


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.id in ("batch-size-0", "unknown-option")],
                         ids=lambda m: m.id)
def test_a_subprocess_prints_the_same(mistake, inputs, tmp_path):
    result = run_cli(prepare(mistake, inputs), tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and mistake.message.split(" (see ")[0] in last, result.stderr
    assert not written(tmp_path)


def test_common_mistakes_page_shows_every_row():
    page = PAGE.read_text()
    missing = [m.id for m in MISTAKES if m.message not in page]
    assert not missing, f"docs/common-mistakes.md lacks the messages of the rows {missing}"
    assert re.search(r"^# Common mistakes", page, flags=re.MULTILINE)
