"""One-class anomaly detection (DOC and Deep SVDD): the losses against hand computations, Deep SVDD's bias-free
network and centre, training, AUROC on a toy problem with a known answer, the one-vs-rest data, bad input, bf16 and
the command line (fit, test, predict)."""

import csv

import lightning as L
import pytest
import torch
import torchvision
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules import MNIST, DataError, Digits, ImageFolder
from datamodules.one_class import OneClass, conform
from datamodules.semi_supervised import dataset_labels
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.cli import main
from lightning_gen.losses import compactness_loss, knn_distance, svdd_loss
from lightning_gen.one_class import DOC, DeepSVDD, nudge_center
from tests.conftest import QUIET, ROOT, run_cli, shared_data

TINY_DOC = str(ROOT / "configs" / "one_class" / "tiny.yaml")
TINY_SVDD = str(ROOT / "configs" / "deep_svdd" / "tiny.yaml")
SMALL = dict(channels=[4, 8], feature_dim=8, lr=1e-3, num_extremes=2)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=4, limit_val_batches=0,
                    limit_test_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory):
    """A labeled image folder of another kind than the digits (two classes: dark and light 8x8 textures), for the
    mechanics of a reference set without the shared datasets."""
    root = tmp_path_factory.mktemp("reference")
    generator = torch.Generator().manual_seed(0)
    for label, (low, high) in enumerate([(0.0, 0.5), (0.5, 1.0)]):
        (root / f"class{label}").mkdir()
        for i in range(40):
            image = low + (high - low) * torch.rand(3, 8, 8, generator=generator)
            torchvision.utils.save_image(image, root / f"class{label}" / f"{i}.png")
    return str(root)


def one_class(reference_root: str | None = None, **kwargs) -> OneClass:
    reference = ImageFolder(root=reference_root, batch_size=16, verify=False) if reference_root else None
    return OneClass(Digits(batch_size=32), reference=reference, **kwargs)


# ---- the losses ------------------------------------------------------------------------------------------------
def test_compactness_loss_is_the_leave_one_out_distance_of_the_paper():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])  # n = 3, k = 2
    # means of the other two: (1, 2), (0, 2), (1, 0); squared distances 5, 8, 17; (5 + 8 + 17) / (n k) = 5
    assert compactness_loss(x).item() == pytest.approx(5.0)
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    n, k = x.shape
    loop = sum(((x[i] - torch.cat([x[:i], x[i + 1:]]).mean(0)) ** 2).sum() for i in range(n)) / (n * k)
    assert compactness_loss(x).item() == pytest.approx(loop.item(), rel=1e-5)
    biased_variance = x.var(0, unbiased=False).mean()  # the n^2 / (n - 1)^2 factor of the paper
    assert compactness_loss(x).item() == pytest.approx((n / (n - 1)) ** 2 * biased_variance.item(), rel=1e-5)
    with pytest.raises(ValueError, match="2 or more"):
        compactness_loss(x[:1])


def test_svdd_loss_and_knn_distance_by_hand():
    features, center = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([1.0, 1.0])
    assert svdd_loss(features, center).item() == pytest.approx((1.0 + 2.0) / 2)  # ||(0,-1)||^2, ||(-1,1)||^2
    bank = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    query = torch.zeros(1, 2)
    assert [knn_distance(query, bank, k).item() for k in (1, 2, 3)] == pytest.approx([0.0, 1.5, 7 / 3])
    with pytest.raises(ValueError, match="k=4"):
        knn_distance(query, bank, 4)


def test_center_entries_near_zero_are_pushed_to_eps():
    c = torch.tensor([0.5, 0.05, -0.05, 0.0, -0.3])
    assert nudge_center(c, 0.1).tolist() == pytest.approx([0.5, 0.1, -0.1, 0.1, -0.3])


# ---- Deep SVDD's network and training ----------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["cnn", "mobilenet_v1"])
def test_deep_svdd_network_has_no_bias_and_no_affine_norm(backbone):
    model = DeepSVDD(backbone=backbone, weights="random", image_shape=(1, 28, 28), **SMALL)
    model.configure_model()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.endswith("bias") for name in trainable), trainable
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.affine for m in norms)
    assert len(norms) == (2 if backbone == "cnn" else 0)  # MobileNet's own (frozen) norms are not submodules
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 8)


class Losses(Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(trainer.callback_metrics["train/loss"].item())


def test_deep_svdd_fit_reduces_the_loss_and_fixes_the_center(tmp_path):
    L.seed_everything(0)
    record = Losses()
    model = DeepSVDD(**{**SMALL, "lr": 3e-3})
    data = one_class(target_class=0)
    trainer(tmp_path, max_epochs=15, limit_train_batches=None, log_every_n_steps=1, callbacks=[record]).fit(model, data)
    assert bool(model.center_ready) and (model.center.abs() >= 0.1 - 1e-6).all()
    first, last = sum(record.values[:3]) / 3, sum(record.values[-3:]) / 3
    assert last < 0.5 * first, record.values
    (metrics,) = trainer(tmp_path, limit_test_batches=None).test(model, data, verbose=False)
    assert metrics["test/auroc"] > 0.9  # digit 0 against the nine others, on sklearn's test digits


def test_doc_fit_reduces_the_loss(tmp_path, reference_folder):
    L.seed_everything(0)
    record = Losses()
    model = DOC(**{**SMALL, "lr": 3e-3}, k=2)
    data = one_class(reference_folder, target_class=0)
    trainer(tmp_path, max_epochs=15, limit_train_batches=None, log_every_n_steps=1, callbacks=[record]).fit(model, data)
    first, last = sum(record.values[:3]) / 3, sum(record.values[-3:]) / 3
    assert last < 0.7 * first, record.values
    assert model.hparams.num_reference_classes == 2 and model.bank is None
    trainer(tmp_path, limit_test_batches=1).test(model, data, verbose=False)
    assert model.bank.shape == (len(data.bank_set), 8)  # the k-NN bank: every target training image


# ---- evaluation: AUROC with a known answer -----------------------------------------------------------------
class MeanPixel(nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)).unsqueeze(1)  # (B, 1, H, W) -> (B, 1)


def test_auroc_of_known_scores(tmp_path):
    """Scores (squared distance to c = 0) 0.1^2, 0.4^2 for the normal images, 0.35^2, 0.8^2 for the anomalies: of the
    four (anomaly, normal) pairs three are ordered right, AUROC 0.75. Batches of 3 check that batches add up."""
    model = DeepSVDD(image_shape=(1, 2, 2), channels=[1], feature_dim=1, num_extremes=2)
    model.configure_model()
    model.encoder = MeanPixel()
    values = torch.tensor([0.1, 0.35, 0.4, 0.8])
    images = values.view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    is_anomaly = torch.tensor([0, 1, 0, 1])
    loader = DataLoader(TensorDataset(images, is_anomaly, torch.zeros(4), torch.arange(4)), batch_size=3)
    (metrics,) = trainer(tmp_path, limit_test_batches=None).test(model, loader, verbose=False)
    assert metrics["test/auroc"] == pytest.approx(0.75)
    assert metrics["test/normal_score"] == pytest.approx((0.1**2 + 0.4**2) / 2)
    assert (tmp_path / "samples" / "test_extremes_epoch0000.png").is_file()


# ---- the data ----------------------------------------------------------------------------------------------
def test_one_class_data_trains_on_one_class_and_tests_on_all(reference_folder):
    data = one_class(reference_folder, target_class=3)
    data.setup("fit")
    images = next(iter(data.train_dataloader()))[0]
    assert set(images) == {"target", "reference"}
    assert images["target"].shape[1:] == images["reference"][0].shape[1:] == (1, 8, 8)  # RGB folder made grey
    assert len(data.bank_set) == int((dataset_labels(data.data.train_set) == 3).sum())
    items = [data.test_set[i] for i in range(len(data.test_set))]
    assert {int(anomaly == (label != 3)) for _, anomaly, label, _ in items} == {1}
    assert [index for *_, index in items] == list(range(len(items)))
    assert conform(torch.ones(1, 4, 4), (3, 8, 8)).shape == (3, 8, 8)


# ---- bad input: one line, before training ------------------------------------------------------------------
@pytest.mark.parametrize("make, error, words", [
    (lambda ref: OneClass(Digits(), target_class=10), DataError, "target_class=10 is not a class of Digits"),
    (lambda ref: OneClass(Digits(), target_class=-1), DataError, "target_class=-1"),
    (lambda ref: OneClass(Digits(), reference=Digits()), DataError, "reference set is the target dataset"),
    (lambda ref: OneClass(MNIST(), reference=MNIST(batch_size=8)), DataError, "reference set is the target dataset"),
    (lambda ref: OneClass(ImageFolder(root=ref), reference=ImageFolder(root=ref, classes=["class0"])), DataError,
     "reference set is the target dataset"),
    (lambda ref: DOC(feature_dim=0), ConfigError, "feature_dim must be 1 or more"),
    (lambda ref: DeepSVDD(feature_dim=0), ConfigError, "feature_dim must be 1 or more"),
    (lambda ref: DOC(k=0), ConfigError, "k must be 1 or more"),
    (lambda ref: DOC(lr=-1.0), ConfigError, "lr must be a learning rate"),
])
def test_bad_settings_are_refused_in_one_line(make, error, words, reference_folder):
    with pytest.raises(error, match=words) as raised:
        make(reference_folder)
    assert "\n" not in str(raised.value)


def test_k_above_the_target_images_and_a_missing_reference_are_refused_before_training(tmp_path, reference_folder):
    for model, data, words in [(DOC(**SMALL, k=100_000), one_class(reference_folder), "k=100000 nearest neighbours"),
                               (DOC(**SMALL), one_class(None), "DOC learns from a reference set")]:
        with pytest.raises(ConfigError, match=words) as raised:
            trainer(tmp_path).fit(model, data)
        assert "\n" not in str(raised.value) and model.global_step == 0


def test_the_command_line_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", TINY_SVDD, "--data.target_class", "12", "--trainer.logger", "false", *QUIET])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0 and "target_class=12" in err, err


# ---- precision and the command line -------------------------------------------------------------------------
def test_bf16_mixed_runs_one_step(tmp_path, reference_folder):
    for model, data in [(DeepSVDD(**SMALL), one_class()), (DOC(**SMALL), one_class(reference_folder))]:
        record = Losses()
        trainer(tmp_path, precision="bf16-mixed", max_steps=1, log_every_n_steps=1, callbacks=[record]).fit(model, data)
        assert len(record.values) == 1 and torch.isfinite(torch.tensor(record.values)).all()


def test_cli_fit_test_predict_on_the_tiny_config(tmp_path):
    shared_data("MNIST")  # the tiny config's reference set is MNIST
    args = ["--config", TINY_DOC, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), *QUIET]
    fit = run_cli(["fit", *args], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    tested = run_cli(["test", *args, "--ckpt_path", str(ckpt)], tmp_path)
    assert tested.returncode == 0 and "test/auroc" in tested.stdout, tested.stderr[-3000:]
    predicted = run_cli(["predict", *args, "--ckpt_path", str(ckpt)], tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "predictions" / "anomaly_scores.csv").open()))
    assert len(rows) == 64 and {int(r["index"]) for r in rows} == set(range(64))  # 2 batches of 32 test digits
    assert all(int(r["is_anomaly"]) == int(int(r["class"]) != 0) for r in rows)
    assert (tmp_path / "samples" / "test_extremes_epoch0000.png").is_file()
