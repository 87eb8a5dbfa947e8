"""The command line as a user runs it: subprocesses of `python -m lightning_gen.core.cli`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lightning_gen.core.cli import GenCLI
from lightning_gen.nn.features import imagenet_url
from tests.conftest import QUIET, ROOT, TINY, run_cli, shared_data

CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        GenCLI(args=["fit", "--config", str(ROOT / config), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("lightning_gen.")


def parse_exit(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in this process up to where it stops while parsing or instantiating; return (code, stdout,
    stderr). An error raised while instantiating (which a user sees as a traceback ending in the message, exit
    code 1) comes back as code 1 with the message in stderr."""
    with pytest.raises((SystemExit, ValueError)) as stop:
        GenCLI(args=args)
    captured = capsys.readouterr()
    if isinstance(stop.value, ValueError):
        return 1, captured.out, captured.err + str(stop.value)
    return stop.value.code or 0, captured.out, captured.err


def test_short_names_help_and_unknown_keys(capsys):
    code, help_text, _ = parse_exit(["fit", "--model.help", "DCGAN"], capsys)
    assert code == 0
    for arg in ("latent_dim", "g_features", "d_features", "loss", "label_smoothing", "n_critic", "lr_g", "lr_d",
                "betas", "image_shape", "num_samples", "sample_seed", "flush_denormal"):
        assert f"--model.{arg}" in help_text
    assert "{bce,lsgan,hinge}" in help_text and "discriminator steps per generator step" in help_text
    code, _, err = parse_exit(["fit", "--config", TINY, "--model.n_critics", "2"], capsys)
    assert code != 0 and "n_critics" in err
    code, _, err = parse_exit(["fit", "--config", TINY, "--model.loss", "wgan"], capsys)
    assert code != 0 and "wgan" in err
    code, _, err = parse_exit(["fit", "--config", TINY, "--model.n_critic", "0"], capsys)
    assert code != 0 and "n_critic must be 1 or more" in err
    code, _, err = parse_exit(["fit", "--config", TINY, "--data", "NoSuchData"], capsys)
    assert code != 0 and "NoSuchData" in err


def test_fit_offline_wandb_resume_same_run_and_predict(tmp_path):
    # short names, default logger (W&B, offline because no login), config saved in the run folder
    args = ["fit", "--config", TINY, "--model", "DCGAN", "--model.latent_dim", "16", "--model.g_features", "8",
            "--model.d_features", "8", "--model.num_samples", "16", "--data", "Digits", "--data.batch_size", "32",
            *QUIET]
    first = ok(run_cli(args, tmp_path))
    (run,) = (tmp_path / "runs" / "lightning-gen").iterdir()
    assert "W&B run (offline)" in first.stdout and "wandb sync" in first.stdout
    assert (run / "config.yaml").is_file() and (run / "samples" / "samples_epoch0000.png").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["latent_dim"] == 16
    (offline,) = (tmp_path / "runs" / "wandb").glob(f"offline-run-*-{run.name}")
    record = next(offline.glob("*.wandb")).read_bytes()  # what `wandb sync` would upload
    assert b"split_seed" in record and b"n_critic" in record  # the full resolved config, data and model
    assert list((offline / "files" / "media" / "images").glob("samples_*.png"))  # the sample grid

    ckpt1 = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt1["lightning_gen"]["run_id"] == run.name
    ok(run_cli([*args, "--ckpt_path", "last", "--trainer.max_epochs", "2"], tmp_path))
    assert [p.name for p in (tmp_path / "runs" / "lightning-gen").iterdir()] == [run.name]  # same run
    assert len(list((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{run.name}"))) == 2  # W&B resumed its id
    ckpt2 = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt2["epoch"] == 1 and ckpt2["global_step"] == 2 * ckpt1["global_step"]
    for state1, state2 in zip(ckpt1["optimizer_states"], ckpt2["optimizer_states"]):  # both optimizers continued
        assert int(state2["state"][0]["step"]) == 2 * int(state1["state"][0]["step"])

    ok(run_cli(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", "last", *QUIET], tmp_path))
    images = sorted((run / "predictions").glob("0*.png"))
    assert len(images) == 16 and (run / "predictions" / "grid.png").is_file()
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 2  # predict opened no W&B run


def test_new_run_does_not_overwrite_checkpoints(tmp_path):
    args = ["fit", "--config", TINY, "--trainer.logger", "false", "--trainer.default_root_dir", "out", *QUIET]
    ok(run_cli(args, tmp_path))
    before = (tmp_path / "out" / "checkpoints" / "last.ckpt").read_bytes()
    config = (tmp_path / "out" / "config.yaml").read_text()
    again = run_cli([*args, "--model.latent_dim", "4"], tmp_path)
    assert again.returncode != 0 and "already holds checkpoints" in again.stderr
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").read_bytes() == before
    assert (tmp_path / "out" / "config.yaml").read_text() == config  # the earlier run's config is kept
    ok(run_cli([*args, "--checkpoint.overwrite", "true"], tmp_path))


def test_missing_data_root_is_reported_before_training(tmp_path):
    result = run_cli(["fit", "--config", TINY, "--data", "MNIST", "--data.root", str(tmp_path / "none"),
                      "--trainer.logger", "false", *QUIET], tmp_path)
    assert result.returncode == 2 and "MNIST was not found" in result.stderr and "download true" in result.stderr
    assert not (tmp_path / "runs" / "checkpoints").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_a_resumable_last_checkpoint(tmp_path, signum):
    args = ["fit", "--config", TINY, "--trainer.logger", "false", "--trainer.default_root_dir", "out",
            "--trainer.limit_train_batches", "1.0", "--trainer.max_epochs", "1000", *QUIET]
    env = {"PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "lightning_gen.core.cli", *args], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = tmp_path / "out" / "samples"
    deadline = time.monotonic() + 120
    while not (samples.is_dir() and any(samples.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until training is under way (first epoch's sample grid written)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert "saved" in out and "last.ckpt" in out, out[-2000:]
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] > 0 and len(ckpt["optimizer_states"]) == 2
    resumed = ok(run_cli([*args[:-len(QUIET)], "--trainer.max_epochs", str(ckpt["epoch"] + 2), "--ckpt_path", "last",
                          *QUIET], tmp_path))
    assert "Restored all states" in resumed.stdout + resumed.stderr
    after = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    assert after["global_step"] > ckpt["global_step"]


def test_tensorboard_logger_gets_the_sample_grid(tmp_path):
    ok(run_cli(["fit", "--config", TINY, "--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "tb",
                *QUIET], tmp_path))
    (run,) = tmp_path.glob("tb/**/version_0")
    assert (run / "samples" / "samples_epoch0000.png").is_file() and (run / "config.yaml").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()
    assert "samples" in events.Tags()["images"]


def untrained_classifier(path: Path, image_shape: tuple[int, int, int], data_name: str) -> str:
    """A Classifier checkpoint (one step on random images) for recipes whose metrics name one."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_gen import Classifier

    model = Classifier(num_classes=10, image_shape=image_shape, data_name=data_name)
    data = TensorDataset(torch.rand(8, *image_shape) * 2 - 1, torch.arange(8) % 10)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=path)
    trainer.fit(model, DataLoader(data, batch_size=8))
    trainer.save_checkpoint(path / "classifier.ckpt")
    return str(path / "classifier.ckpt")


@pytest.mark.parametrize("config", [c for c in CONFIGS if not c.endswith("tiny.yaml")])
def test_every_recipe_runs_a_batch(config, tmp_path, monkeypatch):
    """Each real recipe, on the real data it names, for one batch of fit and one of validation."""
    text = (ROOT / config).read_text()
    if "LIGHTNING_GEN_DATA" in text or "datamodules.MNIST" in text:
        shared_data()  # skips unless the datasets folder is configured
    if "format: aclimdb" in text:  # the IMDB reviews are not in the shared datasets (users download them)
        shared_data("text", "aclImdb")
    extra = []
    subcommand = "fit"
    if "lightning_gen.Explain" in text:  # explanations of a stand-in classifier of the recipe's images: 2 images
        shape = (3, 32, 32) if "cifar10" in text else (1, 28, 28)
        ckpt = untrained_classifier(tmp_path, shape, "CIFAR-10" if shape[0] == 3 else "MNIST")
        subcommand, text = "predict", ""
        extra = ["--model.classifier_ckpt", ckpt, "--model.num_images", "2", "--model.n_samples", "10",
                 "--trainer.default_root_dir", str(tmp_path)]
    if "classifier_ckpt:" in text:  # the metric's feature network: a stand-in of the MNIST classifier
        assert text.rstrip().splitlines()[-1].strip().startswith("every_n_epochs"), "SampleQuality must come last"
        ckpt = untrained_classifier(tmp_path, (1, 28, 28), "MNIST")
        extra = [f"--trainer.callbacks.classifier_ckpt={ckpt}", "--trainer.callbacks.num_samples=64",
                 f"--trainer.callbacks.cache_dir={tmp_path / 'cache'}"]
    if "m1_ckpt:" in text:  # M1+M2: a stand-in M1 (an untrained VAE of the recipe's latent size)
        from tests.test_m2vae import vae_checkpoint

        extra = ["--model.m1_ckpt", vae_checkpoint(tmp_path / "m1.ckpt", latent_dim=50, image_shape=(1, 28, 28))]
    convert = ((yaml.safe_load((ROOT / config).read_text()).get("data") or {}).get("init_args") or {}).get("convert")
    if convert:  # shards made from the real data before the batch: a few hundred images of it are enough here
        convert = {**convert, "source": os.path.expandvars(convert["source"]), "limit": 256}
        extra = [f"--data.convert={json.dumps(convert)}"]
    init_args = yaml.safe_load((ROOT / config).read_text())["model"].get("init_args") or {}
    if init_args.get("weights") == "imagenet":  # torchvision's VGG weights: only where downloaded (needs internet)
        backbone = init_args["backbone"]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(imagenet_url(backbone)).name
        if not cached.is_file():
            pytest.skip(f"{backbone} ImageNet weights are not in the torch hub cache ({cached})")
    if "lightning_gen.DeepDream" in text:  # nothing to train: dream one small image
        subcommand, extra = "predict", ["--model.image_size", "64", "--model.octaves", "2", "--model.steps", "1"]
    monkeypatch.chdir(tmp_path)
    GenCLI(args=[subcommand, "--config", str(ROOT / config), "--trainer.fast_dev_run", "1", "--trainer.logger",
                 "false", "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", *extra, *QUIET])


def test_launcher_and_console_script_run_the_same_cli(tmp_path):
    launcher = ok(subprocess.run([sys.executable, str(ROOT / "cli.py"), "fit", "--model.help", "DCGAN"],
                                 capture_output=True, text=True, cwd=tmp_path))
    script = Path(sys.executable).with_name("lightning-gen")
    assert script.is_file(), "install the package (pip install -e .) to get the lightning-gen command"
    console = ok(subprocess.run([str(script), "fit", "--model.help", "DCGAN"], capture_output=True, text=True,
                                cwd=tmp_path))
    for out in (launcher.stdout, console.stdout):
        assert "--model.n_critic" in out and "discriminator steps per generator step" in out


def test_ckpt_path_last_takes_the_newest_run_of_the_configured_technique(tmp_path):
    """Runs of several techniques share a run root: `last` is the newest `last.ckpt` of the configured technique's
    runs (their saved config names it); a run without a config is still a candidate."""
    from lightning_gen.core.cli import find_last_checkpoint

    def run(name: str, class_path: str | None, mtime: int) -> Path:
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")
        if class_path:
            (tmp_path / name / "config.yaml").write_text(f"model:\n  class_path: {class_path}\n")
        os.utime(ckpt, (mtime, mtime))
        return ckpt

    vae = run("vae", "lightning_gen.VAE", 100)
    dcgan_old = run("dcgan_old", "lightning_gen.DCGAN", 200)
    run("cgan", "lightning_gen.CGAN", 300)  # a DCGAN subclass: another technique
    assert find_last_checkpoint([tmp_path]) == tmp_path / "cgan" / "checkpoints" / "last.ckpt"
    assert find_last_checkpoint([tmp_path], "lightning_gen.VAE") == vae
    assert find_last_checkpoint([tmp_path], "lightning_gen.dcgan.DCGAN") == dcgan_old  # the same class, another path
    unnamed = run("script", None, 400)
    assert find_last_checkpoint([tmp_path], "lightning_gen.VAE") == unnamed
