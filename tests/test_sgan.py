"""Semi-supervised split, the (N+1)-class discriminator, the supervised Classifier and the SGAN module."""

import re

import lightning as L
import pytest
import torch

from datamodules import DataError, Digits, ImageFolder, SemiSupervised
from datamodules.semi_supervised import PermutationStream, dataset_labels, shuffled_shard
from lightning_gen import SGAN, Classifier
from lightning_gen.classifier import load_classifier
from lightning_gen.core.checks import ConfigError
from lightning_gen.nn import ClassifierNet
from tests.conftest import QUIET, ROOT, run_cli
from tests.helpers import fp16_on_cpu

TINY_SGAN = str(ROOT / "configs" / "sgan" / "tiny.yaml")
SMALL = dict(arch="cnn", generator="dcgan", latent_dim=8, g_features=4, num_samples=10)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=2,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


def semi(num_labeled=50, seed=0, batch_size=32, num_validation=200, **kwargs) -> SemiSupervised:
    dm = SemiSupervised(Digits(batch_size=batch_size), num_labeled=num_labeled, seed=seed,
                        num_validation=num_validation, **kwargs)
    dm.setup("fit")
    return dm


# ---- the split -------------------------------------------------------------------------------------------------
def test_split_is_exact_balanced_disjoint_and_reproducible():
    dm = semi(num_labeled=50, seed=3)
    labels = dataset_labels(dm.labeled_set)
    assert len(dm.labeled_set) == 50 and torch.bincount(labels, minlength=10).tolist() == [5] * 10
    pool = len(dm.data.train_set) + len(dm.data.val_set)
    assert len(dm.unlabeled_set) == pool - 50 - 200  # the rest of the training pool, wrapped validation included
    pool_positions = set(dm.labeled_indices.tolist())
    held_out = set(dm.validation_indices.tolist())
    assert len(pool_positions) == 50 and len(held_out) == 200 and pool_positions.isdisjoint(held_out)
    unlabeled = set(dm.unlabeled_set.dataset.indices)
    assert unlabeled.isdisjoint(pool_positions) and unlabeled.isdisjoint(held_out)  # each image in one part only
    assert torch.bincount(dataset_labels(dm.val_set), minlength=10).tolist() == [20] * 10
    again = semi(num_labeled=50, seed=3)
    assert torch.equal(again.labeled_indices, dm.labeled_indices)
    assert torch.equal(again.validation_indices, dm.validation_indices)
    assert not torch.equal(semi(num_labeled=50, seed=4).labeled_indices, dm.labeled_indices)
    # validation is held out of the training pool, never the test set; test is the full labeled test set
    assert dm.val_set is not dm.test_set and len(dm.test_set) == len(dm.data.test_set)
    assert dm.val_set.dataset.datasets[0] is dm.data.train_set  # a view of the training pool


def test_validation_can_be_switched_off_and_bad_sizes_are_refused():
    dm = semi(num_validation=0)
    assert dm.val_set is None and dm.val_dataloader() == []
    assert len(dm.unlabeled_set) == len(dm.data.train_set) + len(dm.data.val_set) - 50
    with pytest.raises(DataError, match="num_validation=25 cannot be split evenly"):
        semi(num_validation=25)
    with pytest.raises(DataError, match="num_validation"):
        semi(num_validation=5000)
    with pytest.raises(DataError, match="num_validation must be 0 or more"):
        SemiSupervised(Digits(), num_validation=-1)


def test_training_batches_pair_labeled_and_unlabeled():
    dm = semi(num_labeled=50, batch_size=32, labeled_batch_size=16)
    loaders = dm.train_dataloader()
    assert len(loaders["labeled"]) == len(loaders["unlabeled"]) == dm.batches_per_epoch()
    images, labels = next(iter(loaders["labeled"]))
    unlabeled = next(iter(loaders["unlabeled"]))
    assert images.shape == (16, 1, 8, 8) and labels.shape == (16,)
    assert isinstance(unlabeled, torch.Tensor) and unlabeled.shape == (32, 1, 8, 8)  # images only, no labels
    supervised_only = SemiSupervised(Digits(batch_size=32), num_labeled=50, with_unlabeled=False, num_validation=200)
    supervised_only.setup("fit")
    loader = supervised_only.train_dataloader()
    assert len(loader) == dm.batches_per_epoch() and len(next(iter(loader))) == 2


def test_second_unlabeled_batch_is_an_independent_pass_over_the_pool():
    dm = semi(num_labeled=50, batch_size=32, second_unlabeled_batch=True)
    loaders = dm.train_dataloader()
    assert set(loaders) == {"labeled", "unlabeled", "unlabeled_2"}
    assert len(loaders["unlabeled_2"]) == len(loaders["unlabeled"]) == dm.batches_per_epoch()
    sampler = loaders["unlabeled_2"].sampler
    order = list(sampler)
    assert sorted(order) == list(range(len(dm.unlabeled_set)))  # every unlabeled image once per epoch
    first, second = next(iter(loaders["unlabeled"])), next(iter(loaders["unlabeled_2"]))
    assert second.shape == first.shape and not torch.equal(first, second)  # not the same batch
    assert torch.equal(second, torch.stack([dm.unlabeled_set[i] for i in order[:32]]))
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch
    assert "unlabeled_2" not in semi(num_labeled=50).train_dataloader()  # off by default
    # under DDP each process takes its share of the same order: together every image once
    shards = []
    for rank in range(2):
        shard = shuffled_shard(len(dm.unlabeled_set), seed=5)
        shard.num_replicas, shard.rank = 2, rank  # as under DDP with 2 processes
        shard.num_samples = -(-len(dm.unlabeled_set) // 2)
        shard.total_size = 2 * shard.num_samples
        shards.append(list(shard))
    assert set(shards[0]).isdisjoint(shards[1][: len(dm.unlabeled_set) // 2 - 1])
    assert set(shards[0]) | set(shards[1]) == set(range(len(dm.unlabeled_set)))


def test_labeled_batches_walk_through_permutations():
    # batch size == number of labels: every batch is the whole labeled set, so every class equally often
    dm = semi(num_labeled=50, batch_size=32, labeled_batch_size=50)
    for _, labels in dm.train_dataloader()["labeled"]:
        assert torch.bincount(labels, minlength=10).tolist() == [5] * 10
    # smaller batches: each consecutive run of 50 positions is a permutation; a new epoch, a new stream
    stream = PermutationStream(size=50, batch_size=16, num_batches=25, seed=1)
    positions = list(stream)
    assert len(positions) == len(stream) == 400
    for start in range(0, 350, 50):
        assert sorted(positions[start : start + 50]) == list(range(50))
    stream.set_epoch(1)
    assert list(stream) != positions and sorted(list(stream)[:50]) == list(range(50))


def test_labeled_stream_is_split_between_processes_by_whole_batches():
    single = PermutationStream(size=50, batch_size=10, num_batches=8, seed=2)
    ranks = []
    for rank in range(2):
        shard = PermutationStream(size=50, batch_size=10, num_batches=4, seed=2)
        shard.num_replicas, shard.rank = 2, rank  # as under DDP with 2 processes
        ranks.append(torch.tensor(list(shard)).view(4, 10))
    batches = torch.tensor(list(single)).view(8, 10)
    assert torch.equal(ranks[0], batches[0::2]) and torch.equal(ranks[1], batches[1::2])


@pytest.mark.parametrize(
    "num_labeled, num_validation, message",
    [(55, 200, "multiple of 10"), (5, 200, "multiple of 10"), (5000, 200, "more than the 1438 training images"),
     (1430, 200, r"it takes 143 of each class, and class \d has 135 training images, of which 20 per class are held "
                 r"out for validation"),
     (1430, 0, r"it takes 143 of each class, and class \d has 135 training images, and one batch"),
     (1350, 200, "is too many"), (1160, 200, "is too many"),  # fits without validation or without the unlabeled batch
     (50, 1500, "num_validation=1500 leaves no room"), (5000, 1500, "num_validation=1500 leaves no room")],
)
def test_bad_num_labeled_is_refused_and_the_suggested_value_works(num_labeled, num_validation, message):
    with pytest.raises(DataError, match=message) as err:
        semi(num_labeled=num_labeled, num_validation=num_validation)
    text = str(err.value)
    suggested = re.search(r"(?:at most|for example) (\d+)", text)
    labeled = int(suggested[1]) if suggested else num_labeled
    labeled = int(re.search(r"--data.num_labeled (\d+)", text)[1]) if "--data.num_labeled" in text else labeled
    validation = re.search(r"--data.num_validation (\d+)", text)
    dm = semi(num_labeled=labeled, num_validation=int(validation[1]) if validation else num_validation)
    assert len(dm.labeled_set) == labeled and len(dm.unlabeled_set) >= 32  # what the message said works, works
    if suggested and "at most" in text:
        with pytest.raises(DataError):  # and it is the largest that does
            semi(num_labeled=labeled + 10, num_validation=num_validation)


def test_unlabeled_data_cannot_be_split(tmp_path):
    from PIL import Image

    for i in range(4):
        Image.new("L", (8, 8), color=i * 40).save(tmp_path / f"{i}.png")
    dm = SemiSupervised(ImageFolder(root=str(tmp_path), batch_size=2, drop_last=False), num_labeled=2,
                        num_validation=0)
    with pytest.raises(DataError, match="no class labels"):
        dm.setup("fit")


def base_positions(dataset, positions):
    """Map positions in a (Subset / ConcatDataset of ...) view to indices of the dataset at the bottom."""
    from torch.utils.data import ConcatDataset, Subset

    out = []
    for i in positions:
        ds = dataset
        while isinstance(ds, (Subset, ConcatDataset)):
            if isinstance(ds, Subset):
                i, ds = ds.indices[i], ds.dataset
            else:
                k = next(k for k, end in enumerate(ds.cumulative_sizes) if i < end)
                i, ds = i - (ds.cumulative_sizes[k - 1] if k else 0), ds.datasets[k]
        out.append(int(i))
    return out, ds


def test_training_never_reads_the_unlabeled_labels(tmp_path):
    def train(corrupt: bool) -> dict:
        L.seed_everything(0)
        dm = semi(num_labeled=50)
        if corrupt:  # after the split, every label but the 50 kept ones becomes an impossible class
            labeled, base = base_positions(dm.labeled_set.dataset, dm.labeled_indices.tolist())
            labels = base.tensors[1]
            keep = labels[labeled].clone()
            labels.fill_(10**6)
            labels[labeled] = keep
        model = SGAN(**SMALL)
        trainer(tmp_path, limit_val_batches=0).fit(model, dm)
        return model.state_dict()

    a, b = train(False), train(True)  # any read of a corrupted label would raise or change the weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_semi_supervised_wraps_an_image_folder_with_classes(tmp_path):
    from PIL import Image

    for c in ("cats", "dogs"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.new("L", (8, 8), color=i * 10 + (100 if c == "dogs" else 0)).save(tmp_path / c / f"{i}.png")
    dm = SemiSupervised(ImageFolder(root=str(tmp_path), batch_size=4), num_labeled=4, num_validation=2)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.image_shape == (3, 8, 8)
    assert torch.bincount(dataset_labels(dm.labeled_set)).tolist() == [2, 2]


# ---- the (N+1)-class discriminator --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_an_images_logits_do_not_depend_on_its_batch(arch):
    # no batch statistics: an image gets the same logits alone, among reals or among fakes, in train and eval mode
    torch.manual_seed(0)
    net = ClassifierNet((1, 8, 8), 11, arch, noise=False)
    x = torch.randn(6, 1, 8, 8)
    for mode in (True, False):
        net.train(mode)
        alone = net(x[:1])
        with_reals = net(x)[:1]
        with_fakes = net(torch.cat([x[:1], torch.rand(5, 1, 8, 8) * 2 - 1]))[:1]
        assert torch.allclose(alone, with_reals, atol=1e-5) and torch.allclose(alone, with_fakes, atol=1e-5)


def test_noise_is_off_in_eval_mode():
    net = ClassifierNet((1, 8, 8), 10, "mlp").eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(net(x), net(x))
    assert not torch.equal(net.train()(x), net(x))


def test_data_dependent_init_standardises_every_layer_with_its_noise():
    # the init measures in training mode: replaying the same noise, every layer's noisy output is standardised
    net = ClassifierNet((1, 8, 8), 10, "mlp")
    x = torch.randn(256, 1, 8, 8)
    torch.manual_seed(0)
    net.initialise(x)
    assert net.training
    torch.manual_seed(0)
    h = x
    for layer in [*net.features, *net.head]:
        h = layer(h) if not isinstance(layer, torch.nn.ReLU) else h.relu()
        if isinstance(layer, torch.nn.Linear):
            assert torch.allclose(h.mean(0), torch.zeros(h.shape[1]), atol=1e-4)
            assert torch.allclose(h.std(0), torch.ones(h.shape[1]), atol=1e-3)


@pytest.mark.parametrize("fake_logit, outputs", [("zero", 10), ("learned", 11)])
def test_sgan_discriminator_has_n_plus_one_logits(fake_logit, outputs):
    model = SGAN(**SMALL, fake_logit=fake_logit, num_classes=10, image_shape=(1, 8, 8))
    model.configure_model()  # the networks are built lazily, here from num_classes and image_shape
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    logits, features = model.logits_and_features(x)
    assert logits.shape == (4, 11) and features.shape == (4, 128)
    assert model.discriminator.num_outputs == outputs
    if fake_logit == "zero":
        assert torch.equal(logits[:, -1], torch.zeros(4))
    assert torch.equal(model(x), logits[:, :10])


# ---- training ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_sgan_trains_under_each_precision(tmp_path, precision):
    L.seed_everything(0)
    model = SGAN(**SMALL)
    kwargs = {"plugins": [fp16_on_cpu()]} if precision == "16-mixed" else {"precision": precision}
    t = trainer(tmp_path, log_every_n_steps=1, **kwargs)
    t.fit(model, semi())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert {"train/d_loss_supervised", "train/d_loss_unsupervised", "train/g_loss"} <= set(t.callback_metrics)
    (result,) = t.test(model, semi())
    assert 0.0 <= result["test/accuracy"] <= 1.0


def test_sgan_learns_to_classify_from_50_labels(tmp_path):
    L.seed_everything(0)
    model = SGAN(arch="mlp", generator="mlp", latent_dim=16, lr_g=3e-3, lr_d=3e-3, num_samples=10)
    t = trainer(tmp_path, max_epochs=3, limit_train_batches=None, limit_val_batches=0)
    t.fit(model, semi(num_labeled=50))
    (result,) = t.test(model, semi(num_labeled=50), verbose=False)
    assert result["test/accuracy"] > 0.7  # chance is 0.1


def test_sgan_needs_semi_supervised_data(tmp_path):
    with pytest.raises(ConfigError, match="SemiSupervised"):
        trainer(tmp_path).fit(SGAN(**SMALL), Digits(batch_size=32))


class RecordLearningRates(L.Callback):
    """The learning rate of each optimizer during each training epoch, by epoch."""

    def __init__(self):
        self.lrs = {}

    def on_train_batch_start(self, trainer, pl_module, *args):
        self.lrs[trainer.current_epoch] = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]


def test_linear_decay_is_the_sgan_formula():
    from lightning_gen.core.technique import LinearDecay

    for decay_epochs in (1, 3, 10):
        decay = LinearDecay(0, decay_epochs, offset=0)
        for epoch in range(2 * decay_epochs + 2):  # past the end of the decay too
            assert decay(epoch) == pytest.approx(max(0.0, 1.0 - epoch / decay_epochs), abs=1e-12)
    # lr_constant_epochs=2, lr_decay_epochs=3: two epochs at the full rate, then 1, 2/3, 1/3, 0
    assert [LinearDecay(2, 3, offset=0)(e) for e in range(7)] == pytest.approx([1, 1, 1, 2 / 3, 1 / 3, 0, 0])
    with pytest.raises(ConfigError, match="lr_constant_epochs must be 0 or more"):
        SGAN(lr_constant_epochs=-1)


def test_generator_matches_features_of_the_second_unlabeled_batch(tmp_path):
    # with a second unlabeled batch, the generator step's real images are that batch, not the discriminator's
    seen = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["batch"] = batch

    model = SGAN(**SMALL)
    inputs = []
    original = model.logits_and_features
    model.logits_and_features = lambda x: (inputs.append(x.detach().clone()), original(x))[1]
    trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, callbacks=[Spy()]).fit(
        model, semi(batch_size=32, second_unlabeled_batch=True))
    batch = seen["batch"]
    d_input, g_input = inputs[-2], inputs[-1]  # the discriminator's step, then the generator's
    assert torch.equal(d_input[32:64], batch["unlabeled"])  # labeled, unlabeled, fake: 32 each
    assert torch.equal(g_input[32:], batch["unlabeled_2"]) and not torch.equal(g_input[32:], batch["unlabeled"])


def test_sgan_lr_decay_per_epoch_and_after_resume(tmp_path):
    # epoch e trains at lr * max(0, 1 - e / lr_decay_epochs); a resumed run continues the schedule
    def expected(epoch):
        return [lr * max(0.0, 1.0 - epoch / 3) for lr in (2e-3, 1e-3)]

    options = dict(**SMALL, lr_g=2e-3, lr_d=1e-3, lr_decay_epochs=3)
    record = RecordLearningRates()
    t = trainer(tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=0, callbacks=[record])
    t.fit(SGAN(**options), semi())
    t.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = RecordLearningRates()
    trainer(tmp_path, max_epochs=5, limit_train_batches=1, limit_val_batches=0, callbacks=[resumed]).fit(
        SGAN(**options), semi(), ckpt_path=str(tmp_path / "epoch1.ckpt"))
    lrs = {**record.lrs, **resumed.lrs}
    assert sorted(record.lrs) == [0, 1] and sorted(resumed.lrs) == [2, 3, 4]
    for epoch, got in lrs.items():
        assert got == pytest.approx(expected(epoch), abs=1e-12), epoch
    assert lrs[3] == lrs[4] == [0.0, 0.0]


def test_sgan_builds_lazily_and_loads_without_data(tmp_path):
    model = SGAN(**SMALL)
    assert not model.networks_built
    t = trainer(tmp_path, limit_val_batches=0)
    t.fit(model, semi())
    assert model.hparams.num_classes == 10 and model.hparams.image_shape == (1, 8, 8)
    t.save_checkpoint(tmp_path / "sgan.ckpt")
    loaded = SGAN.load_from_checkpoint(tmp_path / "sgan.ckpt")
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    loaded.eval()
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(loaded.sample(torch.arange(3)), model.sample(torch.arange(3)))


@pytest.mark.slow
def test_sgan_tiny_config_fit_test_predict(tmp_path):
    args = ["--config", TINY_SGAN, "--trainer.logger", "false", "--trainer.default_root_dir", "out", *QUIET]
    fit = run_cli(["fit", *args], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = run_cli(["test", *args, "--ckpt_path", "last"], tmp_path)
    assert test.returncode == 0 and "test/accuracy" in test.stdout, test.stderr[-3000:]
    pred = run_cli(["predict", *args, "--ckpt_path", "last"], tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    assert len(list((tmp_path / "out" / "predictions").glob("0*.png"))) == 20


# ---- the supervised classifier ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_classifier_learns_digits_and_loads_by_path(tmp_path, arch):
    L.seed_everything(0)
    model = Classifier(arch=arch, lr=3e-3)
    t = trainer(tmp_path, max_epochs=4, limit_train_batches=None, limit_val_batches=None, enable_checkpointing=True)
    dm = Digits(batch_size=64)
    t.fit(model, dm)
    (result,) = t.test(model, dm, verbose=False)
    assert result["test/accuracy"] > 0.85
    path = tmp_path / "classifier.ckpt"
    t.save_checkpoint(path)
    loaded = load_classifier(str(path))
    assert loaded.hparams.data_name == "Digits" and loaded.hparams.image_shape == (1, 8, 8)
    x = next(iter(dm.test_dataloader()))[0]
    model.eval()
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_classifier_lr_decay_per_epoch(tmp_path):
    record = RecordLearningRates()
    trainer(tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=0, callbacks=[record]).fit(
        Classifier(lr=2e-3, lr_decay=0.5), Digits(batch_size=32))
    assert record.lrs == {e: [pytest.approx(2e-3 * 0.5**e, abs=1e-12)] for e in range(3)}


def test_classifier_on_the_same_labels_as_sgan(tmp_path):
    dm = SemiSupervised(Digits(batch_size=32), num_labeled=50, with_unlabeled=False)
    t = trainer(tmp_path, limit_train_batches=None, limit_val_batches=0)
    model = Classifier(arch="mlp")
    t.fit(model, dm)
    assert model.hparams.data_name == "Digits" and t.num_training_batches == dm.batches_per_epoch()


def test_load_classifier_refuses_other_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_classifier(str(tmp_path / "none.ckpt"))
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}, "hyper_parameters": {}}, tmp_path / "gan.ckpt")
    with pytest.raises(ConfigError, match="not a lightning_gen Classifier"):
        load_classifier(str(tmp_path / "gan.ckpt"))


class UncountedDigits(Digits):
    """Digits that do not declare their number of classes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = None


def test_classifier_rejects_labels_out_of_range(tmp_path):
    model = Classifier(num_classes=5)
    with pytest.raises(ConfigError, match=r"labels range over \[0, 9\] but the model has 5 classes"):
        trainer(tmp_path).fit(model, UncountedDigits(batch_size=32))
    with pytest.raises(ConfigError, match="num_classes=5 but Digits has 10"):
        trainer(tmp_path).fit(Classifier(num_classes=5), Digits(batch_size=32))


def test_supervised_baseline_is_the_control_its_config_describes():
    # the baseline claims the SGAN's network, optimiser, labeled images, validation split and running average
    import yaml

    sgan = yaml.safe_load((ROOT / "configs" / "sgan" / "mnist_100.yaml").read_text())
    base = yaml.safe_load((ROOT / "configs" / "classifier" / "mnist_100.yaml").read_text())
    assert base["model"]["init_args"]["arch"] == sgan["model"]["init_args"]["arch"]
    assert base["model"]["init_args"]["lr"] == sgan["model"]["init_args"]["lr_d"]
    assert base["model"]["init_args"]["betas"] == sgan["model"]["init_args"]["betas"]
    for key in ("num_labeled", "seed", "num_validation"):
        assert base["data"]["init_args"][key] == sgan["data"]["init_args"][key]

    def averaging(config):
        (ema,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("EMA")]
        return {k: v for k, v in ema["init_args"].items() if k != "attribute"}

    assert averaging(base) == averaging(sgan)
