"""Bad input stops before anything runs, with one line: the table of mistakes a user makes (what they type, a
fragment of the message they must see), each run through the real command line. Every row must exit with status 2,
print the fragment, print no `Traceback`, and write nothing to the run folder. docs/common-mistakes.md shows every
row's message (a test below checks it).

A row marked `setup` is a mistake in the data that the datamodule finds when it reads its folder (`setup()`, still
before any training step). Lightning starts the logger's run just before that (`Trainer` touches
`logger.experiment` so that loggers know their run id when the data is set up); the CLI discards that run, which
logged nothing, so these rows too leave the working directory empty. Every other row also prints nothing about W&B
(the logger is lazy).

The rows run in this process through `lightning_gen.core.cli.main` (what the `lightning-gen` console script calls),
with the output captured at the file descriptors; `test_a_subprocess_prints_the_same` checks on two rows that a
separate process, as a user starts it, prints the same line.
"""

from __future__ import annotations

import inspect
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightning_gen.core.cli import main
from tests.conftest import ROOT, run_cli, shared_data

PAGE = ROOT / "docs" / "common-mistakes.md"


def config(technique: str) -> str:
    return str(ROOT / "configs" / technique / "tiny.yaml")


@dataclass(frozen=True)
class Mistake:
    id: str
    args: tuple[str, ...]  # `{dcgan_ckpt}`, `{classifier_ckpt}`, `{unnamed_ckpt}`, `{random_bytes}`, `{truncated}`,
    # `{missing}`, `{folder}`, `{empty}`, `{classes}`, `{photos}`: the files made by `inputs`
    message: str  # a fragment of the one line the user sees
    needs: str = ""  # "data": a config that reads $LIGHTNING_GEN_DATA; "gymnasium": the rl extra
    setup: bool = False  # found by `setup()` or when the networks are built, after Lightning started the logger's run


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
    Mistake("negative-lr", ("fit", "--config", config("dcgan"), "--model.lr_g", "-0.0002"),
            "lr_g must be a learning rate of 0 or more, got -0.0002."),
    Mistake("env-kwargs", ("fit", "--config", config("a2c"), "--data.env_kwargs", "{{bad: 1}}"),
            "GymEnv could not be built from the given options: TypeError: CartPoleEnv.__init__() got an unexpected "
            "keyword argument 'bad'", needs="gymnasium"),
    Mistake("style-missing", ("fit", "--config", config("fast_style"), "--model.style", "{missing}"),
            "no-such-file.png does not exist. Give the path of an image file", needs="data"),
    Mistake("style-size-0", ("fit", "--config", config("fast_style"), "--model.style_size", "0"),
            "style_size >= 8; got 4, 1, 0.001, 0.", needs="data"),
    Mistake("classifier-lr-decay", ("fit", "--config", config("classifier"), "--model.lr_decay", "0"),
            "lr_decay must be in (0, 1], got 0.0."),
    Mistake("cvae-no-sample-class", ("fit", "--config", config("cvae"), "--model.sample_classes", "[]"),
            "sample_classes must name at least one class (or be left out for all classes)."),
    Mistake("srresnet-blocks", ("fit", "--config", config("srresnet"), "--model.num_blocks", "-1"),
            "need channels >= 1, num_blocks >= 0, lr > 0 and scale 2, 3 or 4; got", needs="data"),
    Mistake("srgan-no-generator", ("fit", "--config", config("srgan"), "--model.generator_ckpt", "{missing}"),
            "does not exist: train an SRResNet first (configs/srresnet/...) and give its last.ckpt.", needs="data",
            setup=True),
    Mistake("deepdream-octaves", ("predict", "--config", config("deepdream"), "--model.octaves", "0"),
            "need octaves >= 1, steps >= 1, octave_scale > 1, step_size > 0 and jitter >= 0; got 0,", needs="data"),
    Mistake("embedding-dim-0", ("fit", "--config", config("triplet"), "--model.embedding_dim", "0"),
            "embedding_dim must be 1 or more, got 0."),
    Mistake("one-class-target", ("fit", "--config", config("deep_svdd"), "--data.target_class", "12"),
            "target_class=12 is not a class of Digits: its classes are 0..9."),
    Mistake("reference-is-target", ("fit", "--config", config("deep_svdd"), "--data.reference", "datamodules.Digits"),
            "the reference set is the target dataset itself (Digits)"),
    Mistake("feature-dim-0", ("fit", "--config", config("deep_svdd"), "--model.feature_dim", "0"),
            "feature_dim must be 1 or more, got 0"),
    Mistake("ema-decay", ("fit", "--config", config("dcgan"), "--trainer.callbacks+=lightning_gen.callbacks.EMA",
                          "--trainer.callbacks.decay", "1.5"),
            "EMA decay must be in [0, 1), got 1.5."),
    # ---- a folder or a file that is not what the technique needs, found when the datamodule reads it
    Mistake("empty-class-folder", ("fit", "--config", config("cgan"), "--data", "datamodules.ImageFolder",
                                   "--data.root", "{classes}"),
            "is empty: it holds no images (.jpg, .jpeg, .png", setup=True),
    Mistake("empty-class-named", ("fit", "--config", config("cgan"), "--data", "datamodules.ImageFolder",
                                  "--data.root", "{classes}", "--data.classes", "[a,b]"),
            "Put its images in it, or leave it out of `--data.classes`.", setup=True),
    Mistake("photo-not-aligned", ("fit", "--config", config("pix2pix"), "--data.root", "{photos}"),
            "is 640x480 (width/height 1.33), but an aligned pair holds A and B side by side", setup=True),
    Mistake("sr-empty-test-roots", ("test", "--config", config("srcnn"), "--data.test_roots", "[{empty}]"),
            "Point `--data.test_roots` at a folder of images.", setup=True),
    Mistake("torchvision-not-there", ("fit", "--config", config("dcgan"), "--data", "datamodules.TorchvisionData",
                                      "--data.dataset", "CIFAR10", "--data.root", "{empty}"),
            "or pass `--data.download true` to download it there.", setup=True),
    Mistake("style-predict-empty", ("predict", "--config", config("fast_style"), "--model.predict_images", "{empty}"),
            "predict_images folder", needs="data"),
    Mistake("k-over-smallest-class", ("fit", "--config", config("triplet"), "--data.samples_per_class", "200"),
            "samples_per_class=200 is more than the 1", setup=True),
    Mistake("p-over-classes", ("fit", "--config", config("triplet"), "--data.classes_per_batch", "6"),
            "classes_per_batch=6 is more than the 5 classes Digits trains on. Use at most 5.", setup=True),
    Mistake("omniglot-no-zips", ("fit", "--config", config("siamese"), "--data.data.root", "{empty}"),
            "images_background_small1.zip is missing: Omniglot needs the zip files as published", setup=True),
    Mistake("num-labeled-too-many", ("fit", "--config", config("sgan"), "--data.num_labeled", "1430"),
            "num_labeled=1430 is too many", setup=True),
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
    Mistake("last-of-another", ("fit", "--config", config("vae"), "--ckpt_path", "last", "--trainer.default_root_dir",
                                "{dcgan_root}"),
            "--ckpt_path last: no last.ckpt of VAE under"),
    Mistake("explain-not-a-classifier", ("predict", "--config", config("explain"), "--model.classifier_ckpt",
                                         "{dcgan_ckpt}"),
            "is a DCGAN checkpoint, not a classifier: explanations need a Classifier checkpoint"),
    Mistake("explain-target-class", ("predict", "--config", config("explain"), "--model.classifier_ckpt",
                                     "{classifier_ckpt}", "--model.target_class", "10"),
            "target_class 10 is out of range: the Classifier knows classes 0..9."),
    Mistake("explain-layer", ("predict", "--config", config("explain"), "--model.classifier_ckpt",
                              "{classifier_ckpt}", "--model.layer", "conv5"),
            "layer 'conv5' is not a convolutional layer of this network. Its layers with a (C, h, w) output are: "
            "features.0,"),
    Mistake("resume-new-size", ("fit", "--config", config("dcgan"), "--ckpt_path", "{dcgan_ckpt}",
                                "--data.image_size", "16"),
            "holds a model for images of shape (1, 8, 8), but Digits gives (1, 16, 16). Give the data the "
            "checkpoint's size (`--data.image_size 8`), or start a new run without `--ckpt_path`."),
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
        main(["fit", "--config", config("classifier"), "--trainer.logger", "false", "--trainer.default_root_dir",
              "classifier", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    ckpt = folder / "dcgan" / "checkpoints" / "last.ckpt"
    contents = torch.load(ckpt, weights_only=True)
    del contents["hyper_parameters"]["_class_path"]
    torch.save(contents, folder / "unnamed.ckpt")
    data = ckpt.read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (folder / "random.ckpt").write_bytes(b"\0" + random.Random(0).randbytes(4095))
    (folder / "checkpoints").mkdir()
    (folder / "empty").mkdir()
    for name in ("a", "b", "c"):  # class folders, b empty
        (folder / "classes" / name).mkdir(parents=True)
        for i in range(4 if name != "b" else 0):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / "classes" / name / f"{i}.png")
    (folder / "photos" / "train").mkdir(parents=True)  # ordinary 4:3 photos where aligned A | B pairs belong
    for i in range(4):
        Image.new("RGB", (640, 480), (60 * i, 90, 0)).save(folder / "photos" / "train" / f"{i}.jpg")
    return {"dcgan_ckpt": str(ckpt), "dcgan_root": str(folder / "dcgan"),
            "classifier_ckpt": str(folder / "classifier" / "checkpoints" / "last.ckpt"),
            "unnamed_ckpt": str(folder / "unnamed.ckpt"),
            "truncated": str(folder / "truncated.ckpt"), "random_bytes": str(folder / "random.ckpt"),
            "folder": str(folder / "checkpoints"), "missing": str(folder / "no-such-file.png"),
            "empty": str(folder / "empty"), "classes": str(folder / "classes"), "photos": str(folder / "photos")}


def prepare(mistake: Mistake, inputs: dict[str, str]) -> list[str]:
    if mistake.needs == "data":
        shared_data()
    elif mistake.needs == "gymnasium":
        pytest.importorskip("gymnasium", reason="needs the rl extra")
    args = [arg.format(**inputs) for arg in mistake.args]
    return args if "--trainer.default_root_dir" in args else [*args, "--trainer.default_root_dir", "run"]


def written(folder: Path) -> list[Path]:
    """What a refused command left in `folder`: every file and folder, but W&B's per-user folders, which the
    tests' fixture puts there too (`WANDB_CONFIG_DIR`, `WANDB_CACHE_DIR`; a user's are in their home)."""
    return [p for p in folder.rglob("*") if p.relative_to(folder).parts[0] not in ("wandb-config", "wandb-cache")]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_one_line_and_nothing_runs(mistake, inputs, tmp_path, monkeypatch, capfd, caplog):
    args = prepare(mistake, inputs)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-gen"])  # the console script's name, and no pytest arguments
    monkeypatch.setenv("WANDB_SILENT", "true")
    with pytest.raises(SystemExit) as stop:  # any other exception would reach the user as a traceback
        main(args)
    if mistake.setup and "wandb" in sys.modules:  # the process would end here; the next row starts a run of its own
        sys.modules["wandb"].finish()
    out, err = capfd.readouterr()
    output = out + err
    assert stop.value.code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and mistake.message in errors[0], output
    assert not err.strip().splitlines()[-1:] or err.strip().splitlines()[-1] == errors[0], err  # the last line
    assert not written(tmp_path), written(tmp_path)  # no run folder, no checkpoint, no config
    if not mistake.setup:
        assert "W&B" not in output + caplog.text, output  # the logger says nothing until its run starts


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.id in ("batch-size-0", "unknown-option")],
                         ids=lambda m: m.id)
def test_a_subprocess_prints_the_same(mistake, inputs, tmp_path):
    result = run_cli(prepare(mistake, inputs), tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and mistake.message.split(" (see ")[0] in last, result.stderr
    assert not written(tmp_path)


def test_a_broken_image_found_in_a_worker_is_named_on_one_line(tmp_path, monkeypatch, capfd):
    """With `verify: false` a truncated JPEG is found when a batch reads it, mid-epoch, maybe in a DataLoader worker
    (torch sends the worker's error back with its traceback in the message): the user still gets one line naming
    the file."""
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(tmp_path / "images" / name / f"{i}.jpg", quality=95)
    broken = tmp_path / "images" / "a" / "3.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-gen"])
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config("dcgan"), "--data", "datamodules.ImageFolder", "--data.root", "images",
              "--data.verify", "false", "--data.num_workers", "1", "--data.batch_size", "16", "--trainer.logger",
              "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    out, err = capfd.readouterr()
    assert stop.value.code == 2 and "Traceback" not in out + err, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cannot read image images/a/3.jpg as an image") and "Remove or replace it" in last


def test_a_library_error_in_a_constructor_keeps_its_traceback_when_debugging(tmp_path, monkeypatch):
    """`LIGHTNING_GEN_DEBUG=1` lets the original exception through (the traceback a bug report needs)."""
    pytest.importorskip("gymnasium", reason="needs the rl extra")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-gen"])
    monkeypatch.setenv("LIGHTNING_GEN_DEBUG", "1")
    with pytest.raises(ValueError, match="Does not validate against any of the Union subtypes") as raised:
        main(["fit", "--config", config("a2c"), "--data.env_kwargs", "{bad: 1}"])
    chain, err = [], raised.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, TypeError) and "unexpected keyword argument 'bad'" in str(e) for e in chain)


def test_one_line_keeps_a_plain_message_and_unwraps_a_workers():
    from datamodules import DataError
    from lightning_gen.core.cli import one_line

    assert one_line(DataError("two\nlines stay")) == "two\nlines stay"
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):"
                        '\n  File "x.py", line 1, in f\n    g()\ndatamodules.base.DataError: image x.png is bad.\n')
    assert one_line(wrapped) == "image x.png is bad."


def test_common_mistakes_page_shows_every_row():
    page = PAGE.read_text()
    missing = [m.id for m in MISTAKES if m.message not in page]
    assert not missing, f"docs/common-mistakes.md lacks the messages of the rows {missing}"
    assert re.search(r"^# Common mistakes", page, flags=re.MULTILINE)


def learning_rate_options() -> list[tuple[type, str]]:
    """Every technique's learning-rate arguments: float arguments named `lr` or `lr_*` (of the class or a parent
    whose constructor it passes `**kwargs` to), except the decay factor `lr_decay`."""
    import lightning_gen

    found = []
    for name in lightning_gen.__all__:
        cls = getattr(lightning_gen, name)
        options = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None and klass.__module__.startswith("lightning_gen"):
                options |= {p.name for p in inspect.signature(init).parameters.values()
                            if (p.name == "lr" or p.name.startswith("lr_")) and p.name != "lr_decay"
                            and "float" in str(p.annotation)}
        found += [(cls, option) for option in sorted(options)]
    return found


@pytest.mark.parametrize("cls, option", learning_rate_options(), ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("value", [-2e-4, float("nan")])
def test_every_learning_rate_is_checked_when_the_technique_is_built(cls, option, value):
    """A negative or NaN learning rate is refused by the constructor (one line through the CLI, before the model
    summary), not by the optimizer once training starts: the shared `check_learning_rates`, first thing."""
    from lightning_gen.core.checks import ConfigError

    required = {"content": "content.png", "style": "style.png", "images": "images"}  # never read: the check is first
    args = {k: v for k, v in required.items() if k in inspect.signature(cls.__init__).parameters}
    with pytest.raises(ConfigError, match=rf"^{option} must be a learning rate of 0 or more, got {value}\."):
        cls(**args, **{option: value})


def test_the_logger_writes_and_prints_nothing_until_its_run_starts(tmp_path, monkeypatch, capfd, caplog):
    """jsonargparse builds `trainer.logger` before the model: a model refused by its constructor must not leave an
    empty `runs/` or a W&B note behind. The folder and the note come with the W&B run, on first use."""
    from lightning_gen.core.loggers import AutoWandbLogger

    def said() -> str:  # Lightning's rank_zero_info goes through `logging`
        text = "".join(capfd.readouterr()) + caplog.text
        caplog.clear()
        return text

    monkeypatch.setenv("WANDB_SILENT", "true")
    caplog.set_level("INFO")
    logger = AutoWandbLogger(save_dir=str(tmp_path / "runs"))  # auto, and no login in the tests: offline
    assert logger.mode == "offline" and not (tmp_path / "runs").exists()
    assert "W&B" not in said()
    run = logger.experiment
    try:
        assert (tmp_path / "runs" / "wandb").is_dir()
        assert "W&B: no login found, logging offline" in said()
        assert logger.experiment is run and "W&B" not in said()  # said once
    finally:
        run.finish()
