"""Real multi-process DDP on CPU (gloo), launched the way a user launches it: `--trainer.strategy ddp`."""

import json
import shutil
import textwrap

import pytest
import torch

from tests.conftest import QUIET, ROOT, TINY, run_cli, shared_data

SMALL = ["--model.latent_dim", "16", "--model.g_features", "8", "--model.d_features", "8", "--model.num_samples", "4"]


def last(folder):
    return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)


def test_plain_ddp_trains_dcgan_with_no_extra_flags(tmp_path):
    result = run_cli(["fit", "--config", TINY, *SMALL, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                      "--trainer.logger", "false", "--trainer.default_root_dir", "out", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = last(tmp_path / "out")["state_dict"]
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_ddp_equals_one_process_on_the_same_global_batch(tmp_path):
    # one process on batches of 16 vs two processes on 8 each, same images and noise per image, three steps of
    # both networks: the weights must agree to float rounding (unsynchronised gradients differ by ~lr = 2e-4)
    common = ["fit", "--config", TINY, *SMALL, "--model", "tests.helpers.BatchNoiseDCGAN", "--data",
              "tests.helpers.InOrderDigits", "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
              "--trainer.limit_train_batches", "3", "--trainer.use_distributed_sampler", "false", *QUIET]
    one = run_cli([*common, "--data.batch_size", "16", "--trainer.default_root_dir", "one"], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli([*common, "--data.batch_size", "8", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                   "--trainer.default_root_dir", "two"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = last(tmp_path / "one"), last(tmp_path / "two")
    assert a["global_step"] == b["global_step"] == 6
    worst = max((a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"])
    assert worst < 1e-6, worst


PLUGIN = '''
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Stripes(L.LightningDataModule):
    """A third-party datamodule: horizontal and vertical stripes, 1x16x16."""

    def __init__(self, n: int = 64, batch_size: int = 16):
        super().__init__()
        self.n, self.batch_size = n, batch_size
        self.image_shape = (1, 16, 16)

    def setup(self, stage=None):
        rows = torch.arange(16).remainder(2).float().mul(2).sub(1)
        horizontal = rows.view(1, 16, 1).expand(1, 16, 16)
        images = torch.stack([horizontal if i % 2 else horizontal.transpose(1, 2) for i in range(self.n)])
        self.data = TensorDataset(images, torch.arange(self.n) % 2)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)
'''


def test_third_party_datamodule_by_entry_point_and_class_path(tmp_path):
    site = tmp_path / "site"
    (site / "tinyplug").mkdir(parents=True)
    (site / "tinyplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lightning_gen.datamodules]\nStripes = tinyplug:Stripes\n")
    env = {"PYTHONPATH": f"{site}:{ROOT}"}
    args = ["fit", "--config", TINY, *SMALL, "--trainer.logger", "false", *QUIET]
    by_name = run_cli([*args, "--data", "Stripes", "--data.n", "32", "--trainer.default_root_dir", "a"], tmp_path,
                      env=env, fresh=True)  # a new interpreter: entry points are read at import
    assert by_name.returncode == 0, by_name.stderr[-3000:]
    assert last(tmp_path / "a")["hyper_parameters"]["image_shape"] == (1, 16, 16)
    by_path = run_cli([*args, "--data", "tinyplug.Stripes", "--trainer.default_root_dir", "b"], tmp_path, env=env,
                      fresh=True)
    assert by_path.returncode == 0, by_path.stderr[-3000:]


@pytest.mark.slow
def test_ddp_trains_sgan_classifier_and_cgan_with_one_set_of_weights(tmp_path):
    # the discriminator's data-dependent initialisation runs on each process's own batch and is then averaged; the
    # SGAN's two unlabeled batches differ from each other and between the processes
    for config, extra in [("sgan/tiny.yaml", ["--model.arch", "mlp", "--model.generator", "mlp",
                                              "--data.second_unlabeled_batch", "true",
                                              "--trainer.callbacks+=tests.helpers.DistinctUnlabeledBatches"]),
                          ("classifier/tiny.yaml", ["--model.arch", "mlp"]),
                          ("cgan/tiny.yaml", [])]:  # the class embeddings are averaged with their networks
        result = run_cli(["fit", "--config", str(ROOT / "configs" / config), *extra, "--trainer.devices", "2",
                          "--trainer.strategy", "ddp", "--trainer.callbacks+=tests.helpers.SameWeightsCheck",
                          "--trainer.logger", "false", "--trainer.default_root_dir", config.split("/")[0], *QUIET],
                         tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / config.split("/")[0] / "checkpoints" / "last.ckpt").is_file()


def test_ddp_classifier_accuracy_equals_one_process(tmp_path):
    # 359 test digits: on 2 processes the sampler repeats one; it is left out, so accuracy and loss equal one process's
    # (the SGAN evaluates with the same `core.evaluation.evaluate_accuracy`)
    for config in ("classifier/tiny.yaml",):
        folder = config.split("/")[0]
        args = ["--config", str(ROOT / "configs" / config), "--trainer.logger", "false", *QUIET]
        fit = run_cli(["fit", *args, "--trainer.default_root_dir", folder], tmp_path)
        assert fit.returncode == 0, fit.stderr[-3000:]
        metrics = {}
        ckpt = str(tmp_path / folder / "checkpoints" / "last.ckpt")
        for devices in ("1", "2"):
            result = run_cli(["test", *args, "--ckpt_path", ckpt, "--trainer.devices", devices,
                              "--trainer.strategy", "ddp" if devices == "2" else "auto", "--trainer.limit_test_batches",
                              "1.0", "--trainer.callbacks+=tests.helpers.SaveTestMetrics",
                              "--trainer.default_root_dir", f"{folder}_test{devices}"], tmp_path)
            assert result.returncode == 0, result.stderr[-3000:]
            metrics[devices] = json.loads((tmp_path / f"{folder}_test{devices}" / "test_metrics.json").read_text())
        for key in ("test/accuracy", "test/loss"):
            assert abs(metrics["1"][key] - metrics["2"][key]) < 1e-5, (config, key, metrics)


def test_ddp_trains_pix2pix_with_one_set_of_weights(tmp_path):
    shared_data("facades")
    result = run_cli(["fit", "--config", str(ROOT / "configs" / "pix2pix" / "tiny.yaml"), "--trainer.devices", "2",
                      "--trainer.strategy", "ddp", "--trainer.callbacks+=tests.helpers.SameWeightsCheck",
                      "--trainer.logger", "false", "--trainer.default_root_dir", "p2p", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "p2p" / "samples" / "val_triplets_epoch0001.png").is_file()


@pytest.mark.slow
def test_ddp_trains_the_style_techniques_with_one_set_of_weights(tmp_path):
    # the frozen loss network is outside DDP's parameters; the optimised image (or the network) is averaged
    shared_data("facades")
    shared_data("style")
    for config in ("style_transfer/tiny.yaml", "fast_style/tiny.yaml"):
        folder = config.split("/")[0]
        result = run_cli(["fit", "--config", str(ROOT / "configs" / config), "--trainer.devices", "2",
                          "--trainer.strategy", "ddp", "--trainer.callbacks+=tests.helpers.SameWeightsCheck",
                          "--trainer.logger", "false", "--trainer.default_root_dir", folder, *QUIET], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / folder / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ddp_trains_srgan_with_one_set_of_weights(tmp_path):
    shared_data("facades")
    shared_data("sr")
    result = run_cli(["fit", "--config", str(ROOT / "configs" / "srgan" / "tiny.yaml"), "--trainer.devices", "2",
                      "--trainer.strategy", "ddp", "--trainer.callbacks+=tests.helpers.SameWeightsCheck",
                      "--trainer.logger", "false", "--trainer.default_root_dir", "srgan", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "srgan" / "checkpoints" / "last.ckpt"
    # on 2 processes the sampler pads Set5 to 6 images and a 1-image set to 2; the repeats are left out (process 1
    # scores no image of the second set, and still syncs it), so the metrics equal one process's
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(sorted((shared_data("sr") / "Set5").iterdir())[0], single)
    metrics = {}
    for devices in ("1", "2"):
        result = run_cli(["test", "--config", str(ROOT / "configs" / "srgan" / "tiny.yaml"), "--ckpt_path", str(ckpt),
                          "--data.test_roots", f"[{shared_data('sr') / 'Set5'}, {single}]",
                          "--trainer.devices", devices, "--trainer.strategy", "ddp" if devices == "2" else "auto",
                          "--trainer.limit_test_batches", "1.0", "--trainer.callbacks+=tests.helpers.SaveTestMetrics",
                          "--trainer.logger", "false", "--trainer.default_root_dir", f"test{devices}", *QUIET],
                         tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[devices] = json.loads((tmp_path / f"test{devices}" / "test_metrics.json").read_text())
    for name in ("Set5", "single"):
        for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
            key = f"test/{name}/{key}"
            assert abs(metrics["1"][key] - metrics["2"][key]) < 1e-4, (key, metrics)


def test_ddp_one_class_auroc_equals_one_process(tmp_path):
    """DOC's k-NN bank of target features is gathered from every process and each test image is scored once: the
    AUROC on two processes equals one process's."""
    shared_data()  # the reference set is MNIST
    args = ["--config", str(ROOT / "configs" / "one_class" / "tiny.yaml"), "--trainer.logger", "false", *QUIET]
    fit = run_cli(["fit", *args, "--trainer.default_root_dir", "doc"], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    metrics = {}
    for devices in ("1", "2"):
        result = run_cli(["test", *args, "--ckpt_path", str(tmp_path / "doc" / "checkpoints" / "last.ckpt"),
                          "--trainer.devices", devices, "--trainer.strategy", "ddp" if devices == "2" else "auto",
                          "--trainer.limit_test_batches", "1.0", "--trainer.callbacks+=tests.helpers.SaveTestMetrics",
                          "--trainer.default_root_dir", f"doc_test{devices}"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[devices] = json.loads((tmp_path / f"doc_test{devices}" / "test_metrics.json").read_text())
    assert abs(metrics["1"]["test/auroc"] - metrics["2"]["test/auroc"]) < 1e-6, metrics
