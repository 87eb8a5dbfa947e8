"""Sample-quality metrics (Frechet distance, KID, class accuracy) and the EMA callback."""

import lightning as L
import pytest
import torch

from datamodules import Digits
from lightning_gen import CGAN, DCGAN, Classifier
from lightning_gen.callbacks import EMA, GeneratorEMA
from lightning_gen.core.checks import ConfigError
from lightning_gen.metrics import FeatureNetwork, SampleQuality, dataset_features, frechet_distance, kernel_distance
from lightning_gen.nn.modes import eval_mode
from tests.conftest import QUIET, ROOT, run_cli

SMALL = dict(latent_dim=8, g_features=4, d_features=4, num_samples=10)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> str:
    """A Classifier trained for two epochs on the 8x8 digits (about 90% test accuracy), saved by path."""
    folder = tmp_path_factory.mktemp("classifier")
    L.seed_everything(0)
    t = trainer(folder, max_epochs=2, limit_train_batches=None, limit_val_batches=0)
    t.fit(Classifier(lr=3e-3), Digits(batch_size=64))
    t.save_checkpoint(folder / "digits.ckpt")
    return str(folder / "digits.ckpt")


# ---- the distances -------------------------------------------------------------------------------------------------
def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    torch.manual_seed(0)
    x = torch.randn(2000, 8)
    assert abs(frechet_distance(x, x)) < 1e-6
    # same covariance, means apart by s in every coordinate: the distance is 8 * s^2
    for shift in (0.5, 1.0, 2.0):
        assert frechet_distance(x, x + shift) == pytest.approx(8 * shift**2, rel=1e-4)
    assert frechet_distance(x, 2 * x) > frechet_distance(x, 1.2 * x) > 0.01  # a scale change counts too


def test_kid_is_near_zero_for_the_same_distribution_and_grows_with_a_shift():
    torch.manual_seed(0)
    x, y = torch.randn(600, 8), torch.randn(600, 8)
    same, _ = kernel_distance(x, y, subsets=20, subset_size=300)
    small, _ = kernel_distance(x, y + 0.5, subsets=20, subset_size=300)
    large, _ = kernel_distance(x, y + 2.0, subsets=20, subset_size=300)
    assert abs(same) < 0.01 < small < large


# ---- the callback ----------------------------------------------------------------------------------------------------
def test_sample_quality_in_validate_with_cached_reference(tmp_path, digits_classifier):
    cache = tmp_path / "cache"
    quality = SampleQuality(classifier_ckpt=digits_classifier, num_samples=200, batch_size=64, cache_dir=str(cache))
    model, dm = DCGAN(**SMALL), Digits(batch_size=32)
    t = trainer(tmp_path, callbacks=[quality])
    (result,) = t.validate(model, dm, verbose=False)
    for key in ("digits_classifier_fid", "digits_classifier_kid", "digits_classifier_fid_floor"):
        assert f"val/{key}" in result
    assert "val/digits_classifier_class_accuracy" not in result  # DCGAN is unconditional
    # an untrained generator is far from the data; the real-vs-real floor is much closer
    assert result["val/digits_classifier_fid"] > 3 * result["val/digits_classifier_fid_floor"] > 0
    cached = sorted(cache.glob("features_*.pt"))
    assert len(cached) == 2  # train reference and test floor features
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = SampleQuality(classifier_ckpt=digits_classifier, num_samples=200, batch_size=64, cache_dir=str(cache))
    (second,) = trainer(tmp_path, callbacks=[again]).validate(model, dm, verbose=False)
    assert [p.stat().st_mtime_ns for p in sorted(cache.glob("features_*.pt"))] == stamps  # read, not rewritten
    assert second["val/digits_classifier_fid"] == pytest.approx(result["val/digits_classifier_fid"], rel=1e-5)


def test_real_images_score_near_the_floor(tmp_path, digits_classifier):
    class Replay(DCGAN):
        """A 'generator' that returns real test digits (compared with the training digits, as the floor's are)."""

        def sample(self, indices):
            data = self.trainer.datamodule.test_set
            return torch.stack([data[len(data) - 1 - int(i) % len(data)][0] for i in indices])

    quality = SampleQuality(classifier_ckpt=digits_classifier, num_samples=150, batch_size=75,
                            cache_dir=str(tmp_path / "cache"))
    (result,) = trainer(tmp_path, callbacks=[quality]).validate(Replay(**SMALL), Digits(batch_size=32), verbose=False)
    floor = result["val/digits_classifier_fid_floor"]
    assert 0.5 * floor < result["val/digits_classifier_fid"] < 2 * floor
    quality.num_samples = 150
    (untrained,) = trainer(tmp_path, callbacks=[quality]).validate(DCGAN(**SMALL), Digits(batch_size=32), verbose=False)
    assert untrained["val/digits_classifier_fid"] > 3 * floor


class LabelFeatures(FeatureNetwork):
    """A 'feature network' whose one feature is the class an image of `class_sorted_images` was made for."""

    name, num_features = "label", 1

    def features_and_logits(self, images):
        return images[:, 0, 0, :1], None  # (B, 1)


def class_sorted_images(classes=10, per_class=50):
    """A dataset listed class by class (as an image folder is): image i of class c is filled with c."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    return torch.utils.data.TensorDataset(labels.float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone(), labels)


def test_reference_images_are_a_random_subset_across_all_classes():
    data = class_sorted_images()
    picked = dataset_features(LabelFeatures(), data, 100, 32, torch.device("cpu"))
    assert picked.shape == (100, 1)
    counts = torch.bincount(picked[:, 0].long(), minlength=10)
    assert (counts > 0).all() and counts.max() < 25  # every class, about 10 images each: not the first 2 classes
    # drawn by its seed, with its own generator: reproducible, and the global random stream is left alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    again = dataset_features(LabelFeatures(), data, 100, 7, torch.device("cpu"), seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(again, picked)
    other = dataset_features(LabelFeatures(), data, 100, 32, torch.device("cpu"), seed=1)
    assert not torch.equal(other, picked)
    assert len(dataset_features(LabelFeatures(), data, 10**6, 64, torch.device("cpu"))) == len(data)  # all of it


def test_small_test_set_sets_one_count_for_reference_floor_and_generated(tmp_path, digits_classifier, monkeypatch):
    # 1,797 digits with 5% held out: 90 test images, fewer than num_samples. The floor can only use 90, so the
    # generated set and the training reference use 90 too (the Frechet distance's bias depends on the count)
    import lightning_gen.metrics.quality as quality_module

    class CountingDCGAN(DCGAN):
        """Records the indices of the images it was asked to make."""

        def sample(self, indices):
            self.made = getattr(self, "made", []) + indices.tolist()
            return super().sample(indices)

    messages = []
    monkeypatch.setattr(quality_module, "rank_zero_info", messages.append)
    dm = Digits(batch_size=32, test_fraction=0.05)
    quality = SampleQuality(classifier_ckpt=digits_classifier, num_samples=200, batch_size=64,
                            cache_dir=str(tmp_path / "cache"))
    model = CountingDCGAN(**SMALL)
    (result,) = trainer(tmp_path, callbacks=[quality]).validate(model, dm, verbose=False)
    n = len(dm.test_set)
    assert n == 90
    assert result["val/digits_classifier_fid_n"] == n
    assert sorted(model.made) == list(range(n))  # each generated image once, N of them
    assert len(quality._reference["train"]) == len(quality._reference["test"]) == n
    assert any("have 90 images each, not num_samples=200" in m for m in messages)
    # with enough images the count is num_samples, and no such line
    messages.clear()
    enough = SampleQuality(classifier_ckpt=digits_classifier, num_samples=80, batch_size=64,
                           cache_dir=str(tmp_path / "cache"))
    (result,) = trainer(tmp_path, callbacks=[enough]).validate(DCGAN(**SMALL), dm, verbose=False)
    assert result["val/digits_classifier_fid_n"] == 80
    assert not any("not num_samples" in m for m in messages)


def test_reference_cache_is_keyed_by_the_subset(tmp_path, digits_classifier):
    cache = tmp_path / "cache"
    dm, model = Digits(batch_size=32), DCGAN(**SMALL)
    floors = []
    for seed in (0, 1, 0):
        quality = SampleQuality(classifier_ckpt=digits_classifier, num_samples=100, batch_size=100, seed=seed,
                                cache_dir=str(cache))
        (result,) = trainer(tmp_path, callbacks=[quality]).validate(model, dm, verbose=False)
        floors.append(result["val/digits_classifier_fid_floor"])
    assert len(list(cache.glob("features_*.pt"))) == 4  # train and test subsets of seed 0, of seed 1; then read
    assert floors[0] == pytest.approx(floors[2], rel=1e-6) and floors[0] != pytest.approx(floors[1], rel=1e-6)


def test_kid_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    kernel_distance(torch.randn(300, 4, generator=torch.Generator().manual_seed(1)),
                    torch.randn(300, 4, generator=torch.Generator().manual_seed(2)), subsets=5, subset_size=100)
    assert torch.equal(torch.rand(3), expected)


def test_class_accuracy_of_a_conditional_model(tmp_path, digits_classifier):
    class PerfectCGAN(CGAN):
        """Returns a real test digit of the requested class: class accuracy is the classifier's accuracy."""

        def sample(self, indices):
            data = self.trainer.datamodule.test_set
            wanted = self.default_labels(indices).tolist()
            by_class = {}
            for image, label in (data[i] for i in range(len(data))):
                by_class.setdefault(int(label), []).append(image)
            return torch.stack([by_class[c][k % len(by_class[c])] for k, c in enumerate(wanted)])

    quality = SampleQuality(classifier_ckpt=digits_classifier, num_samples=200, batch_size=100,
                            cache_dir=str(tmp_path / "cache"))
    (result,) = trainer(tmp_path, callbacks=[quality]).validate(PerfectCGAN(**SMALL), Digits(batch_size=32),
                                                              verbose=False)
    assert result["val/digits_classifier_class_accuracy"] > 0.8
    per_class = [result[f"val/digits_classifier_class_accuracy_{c}"] for c in range(10)]
    assert min(per_class) <= result["val/digits_classifier_class_accuracy"] <= max(per_class)
    assert min(per_class) > 0.4  # every class is made, and recognised, not only most of them
    untrained = SampleQuality(classifier_ckpt=digits_classifier, num_samples=200, batch_size=100,
                              cache_dir=str(tmp_path / "cache"))
    (chance,) = trainer(tmp_path, callbacks=[untrained]).validate(CGAN(**SMALL), Digits(batch_size=32), verbose=False)
    assert chance["val/digits_classifier_class_accuracy"] < 0.5


def test_no_class_accuracy_from_a_classifier_of_other_classes(tmp_path, digits_classifier):
    quality = SampleQuality(classifier_ckpt=digits_classifier, num_samples=100, cache_dir=str(tmp_path / "cache"))
    model = CGAN(**{**SMALL, "num_classes": 4})

    class FourDigits(Digits):
        """Digits with labels folded into 4 classes."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.num_classes = 4

        def _load(self):
            trainval, test = super()._load()
            trainval.dataset.tensors[1].remainder_(4)  # both splits view the same tensors
            return trainval, test

    four = FourDigits(batch_size=32)
    (result,) = trainer(tmp_path, callbacks=[quality]).validate(model, four, verbose=False)
    assert "val/digits_classifier_fid" in result and "val/digits_classifier_class_accuracy" not in result


def test_feature_network_of_the_wrong_image_size_is_refused_before_training(tmp_path, digits_classifier):
    quality = SampleQuality(classifier_ckpt=digits_classifier, cache_dir=str(tmp_path / "cache"))
    model = DCGAN(**SMALL)
    with pytest.raises(ConfigError, match=r"takes images of shape \(1, 8, 8\) but the model makes \(1, 16, 16\)"):
        trainer(tmp_path, callbacks=[quality]).fit(model, Digits(batch_size=32, image_size=16))
    assert model.trainer.global_step == 0


def test_classifier_features_are_the_trained_classifiers(digits_classifier):
    # the metric rebuilds the classifier's network from the checkpoint's hyperparameters, without the technique
    from lightning_gen.classifier import load_classifier
    from lightning_gen.metrics import ClassifierFeatures

    net, classifier = ClassifierFeatures(digits_classifier), load_classifier(digits_classifier)
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    features, logits = net.features_and_logits(images)
    assert torch.equal(features, classifier.features(images)) and torch.equal(logits, classifier(images))
    assert net.name == "digits_classifier" and net.num_classes == 10 and net.image_shape == (1, 8, 8)


def test_sample_quality_needs_a_generative_model(tmp_path, digits_classifier):
    quality = SampleQuality(classifier_ckpt=digits_classifier, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="needs a generative model with `sample"):
        trainer(tmp_path, callbacks=[quality]).validate(Classifier(), Digits(batch_size=32))


def test_sample_quality_bad_options():
    with pytest.raises(ConfigError, match="classifier_ckpt"):
        SampleQuality(feature_net="classifier")
    with pytest.raises(ConfigError, match="feature_net"):
        SampleQuality(feature_net="vgg")
    with pytest.raises(ConfigError, match="does not exist"):
        SampleQuality(classifier_ckpt="/no/such.ckpt").build_net()
    with pytest.raises(ConfigError, match="Inception v3 weights not found"):
        SampleQuality(feature_net="inception", inception_weights="/no/such.pth").build_net()


def test_inception_features_shape_with_random_weights():
    from lightning_gen.metrics import InceptionFeatures

    net = InceptionFeatures(pretrained=False)
    features, logits = net.features_and_logits(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)


def test_ddp_gives_the_same_fid_as_one_process(tmp_path, digits_classifier):
    # every image comes from the fixed noise of its index, so 2 processes sharing the work make the same set
    args = ["validate", "--config", str(ROOT / "configs" / "dcgan" / "tiny.yaml"), "--model.latent_dim", "8",
            "--model.g_features", "4", "--model.d_features", "4", "--trainer.logger", "false",
            "--trainer.callbacks+=lightning_gen.metrics.SampleQuality",
            f"--trainer.callbacks.classifier_ckpt={digits_classifier}", "--trainer.callbacks.num_samples=101",
            "--trainer.callbacks.batch_size=32", f"--trainer.callbacks.cache_dir={tmp_path / 'cache'}", *QUIET]
    values = []
    for devices in ("1", "2"):
        result = run_cli([*args, "--trainer.devices", devices, "--trainer.strategy", "ddp" if devices == "2" else
                          "auto", "--trainer.default_root_dir", f"out{devices}"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        line = next(line for line in result.stdout.splitlines() if "digits_classifier_fid " in line + " ")
        values.append(float(line.replace("│", " ").split()[-1]))
    assert values[0] == pytest.approx(values[1], rel=1e-4)


# ---- the EMA callback (one network's weight average) ----------------------------------------------------------
class RecordGenerator(L.Callback):
    """The generator's parameters and batch-norm buffers after every training batch."""

    def __init__(self):
        self.history, self.buffers = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.history.append([p.detach().clone() for p in pl_module.generator.parameters()])
        self.buffers.append({k: v.detach().clone() for k, v in pl_module.generator.named_buffers()})


def fit_with_ema(tmp_path, ema, batches):
    L.seed_everything(0)
    record, model = RecordGenerator(), DCGAN(**SMALL)
    trainer(tmp_path, limit_train_batches=batches, limit_val_batches=0, callbacks=[record, ema]).fit(
        model, Digits(batch_size=32))
    return record, model


@pytest.mark.parametrize("start_step", [0, 2])
def test_ema_weights_equal_the_running_average(tmp_path, start_step):
    record, model = fit_with_ema(tmp_path, ema := EMA(decay=0.8, start_step=start_step), batches=6)
    expected = record.history[start_step]  # the first start_step + 1 updates copy
    for weights in record.history[start_step + 1:]:
        expected = [0.8 * e + 0.2 * w for e, w in zip(expected, weights)]
    for got, want in zip(ema.ema.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert ema.num_updates == 6
    assert not torch.allclose(next(ema.ema.parameters()), next(model.generator.parameters()))  # it lags behind
    assert all(not p.requires_grad for p in ema.ema.parameters())


@pytest.mark.parametrize("start_step", [0, 2])
def test_bias_corrected_ema_is_the_decay_weighted_mean_of_all_weights(tmp_path, start_step):
    # sum_k d^(n-k) w_k / sum_k d^(n-k) over the weights since the last copy: with d close to 1 every update so far
    # counts about equally, unlike a plain EMA started from the first weights, which would stay within about 1 - d^n
    # of them
    decay = 0.9
    record, _ = fit_with_ema(tmp_path, ema := EMA(decay=decay, bias_correction=True, start_step=start_step), 6)
    history = record.history[start_step:]  # the copies count as one: the last of them
    n = len(history)
    weights = [decay ** (n - 1 - k) for k in range(n)]
    for i, got in enumerate(ema.ema.parameters()):
        want = sum(w * h[i] for w, h in zip(weights, history)) / sum(weights)
        assert torch.allclose(got, want, atol=1e-6)
    assert ema.num_updates == len(record.history) == 6


def test_ema_averages_or_copies_the_batch_norm_statistics(tmp_path):
    # `average`: the running statistics of the average are the EMA of the live ones after every batch (the first
    # copied); `copy`: they are the live network's. The batch counters are copied either way.
    record, model = fit_with_ema(tmp_path, averaged := EMA(decay=0.7), batches=4)
    names = [k for k in record.buffers[0] if k.endswith(("running_mean", "running_var"))]
    assert names
    ema_buffers = dict(averaged.ema.named_buffers())
    for name in names:
        want = record.buffers[0][name]
        for step in record.buffers[1:]:
            want = 0.7 * want + 0.3 * step[name]
        assert torch.allclose(ema_buffers[name], want, atol=1e-6), name
        assert not torch.allclose(ema_buffers[name], record.buffers[-1][name], atol=1e-6)  # not the live ones
    for name, value in model.generator.named_buffers():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(ema_buffers[name], value)
    record, model = fit_with_ema(tmp_path, copied := EMA(decay=0.7, buffers="copy"), batches=4)
    live = dict(model.generator.named_buffers())
    for name, value in copied.ema.named_buffers():
        assert torch.equal(value, live[name]), name


def test_ema_is_used_in_evaluation_and_checkpoints_keep_both(tmp_path):
    L.seed_everything(0)
    ema = EMA(decay=0.9)

    class Probe(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            self.seen = [p.detach().clone() for p in pl_module.generator.parameters()]

    probe = Probe()
    model = DCGAN(**SMALL)
    t = trainer(tmp_path, limit_train_batches=4, callbacks=[ema, probe], enable_checkpointing=True)
    t.fit(model, Digits(batch_size=32))
    for seen, averaged in zip(probe.seen, ema.ema.parameters()):  # validation ran with the EMA weights
        assert torch.equal(seen, averaged)
    (ckpt_path,) = (tmp_path / "checkpoints").glob("*.ckpt")
    ckpt = torch.load(ckpt_path, weights_only=False)
    live = dict(model.generator.state_dict())
    for key, value in live.items():  # the model's weights in the checkpoint are the live ones
        assert torch.equal(ckpt["state_dict"][f"generator.{key}"], value)
    assert ckpt["callbacks"][ema.state_key]["num_updates"] == 4 and "attribute" in ema.state_key
    assert (tmp_path / "samples" / "samples_ema_epoch0000.png").is_file()
    # resumed: the average continues from the checkpoint's
    resumed = EMA(decay=0.9)
    trainer(tmp_path, max_epochs=2, limit_train_batches=4, callbacks=[resumed]).fit(
        DCGAN(**SMALL), Digits(batch_size=32), ckpt_path=str(ckpt_path))
    assert resumed.num_updates == 8


def averaged_weights(state: dict) -> dict:
    """The averaged network's state dict from an `EMA` checkpoint state (AveragedModel keeps it under `module.`)."""
    return {k.removeprefix("module."): v for k, v in state["averaged"].items() if k.startswith("module.")}


def test_ema_predict_from_checkpoint_uses_the_average(tmp_path):
    config = str(ROOT / "configs" / "dcgan" / "tiny.yaml")
    base = ["--config", config, "--trainer.logger", "false", "--trainer.default_root_dir", "out",
            "--trainer.callbacks+=lightning_gen.callbacks.EMA", "--trainer.callbacks.decay=0.5", *QUIET]
    assert run_cli(["fit", *base], tmp_path).returncode == 0
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    ema_state = averaged_weights(ckpt["callbacks"][EMA(decay=0.5).state_key])
    model = DCGAN.load_from_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")
    model.generator.load_state_dict(ema_state)
    EMA().recompute_statistics(model, model.generator)  # the default `buffers: recompute`
    expected = model.sample(torch.arange(2))
    result = run_cli(["predict", *base, "--ckpt_path", "last", "--model.num_samples", "2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import numpy as np
    from PIL import Image

    written = torch.tensor(np.array(Image.open(tmp_path / "out" / "predictions" / "00000.png").convert("L")))
    want = expected[0, 0].clamp(-1, 1).add(1).div(2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    assert (written.int() - want.int()).abs().max() <= 1


def test_deprecated_generator_ema_warns_and_loads_its_old_checkpoints(tmp_path):
    with pytest.warns(DeprecationWarning, match="renamed EMA"):
        old = GeneratorEMA(decay=0.9, buffers="average")  # evaluate with the stored statistics, as release 0.1 did
    assert isinstance(old, EMA)
    # a checkpoint as release 0.1's GeneratorEMA wrote it: the averaged network's state dict and the update count
    L.seed_everything(0)
    model = DCGAN(**SMALL)
    t = trainer(tmp_path, limit_train_batches=3, limit_val_batches=0, callbacks=[EMA(decay=0.9)])
    t.fit(model, Digits(batch_size=32))
    ckpt_path = tmp_path / "old.ckpt"
    t.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=False)
    torch.manual_seed(1)
    averaged = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                for k, v in model.generator.state_dict().items()}  # unlike the live weights
    ckpt["callbacks"] = {"GeneratorEMA{'attribute': 'generator'}": {"ema": averaged, "num_updates": 7}}
    torch.save(ckpt, ckpt_path)
    assert old.state_key == "GeneratorEMA{'attribute': 'generator'}"

    class Probe(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            self.seen = {k: v.detach().clone() for k, v in pl_module.generator.state_dict().items()}

    probe = Probe()
    trainer(tmp_path, limit_val_batches=1, callbacks=[old, probe]).validate(DCGAN(**SMALL), Digits(batch_size=32),
                                                                          ckpt_path=str(ckpt_path), verbose=False)
    assert all(torch.equal(probe.seen[k], v) for k, v in averaged.items())  # evaluated with the old average
    assert old.num_updates == 7
    # and a resumed run continues that average
    with pytest.warns(DeprecationWarning):
        resumed = GeneratorEMA(decay=0.9, buffers="average")
    trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[resumed]).fit(
        DCGAN(**SMALL), Digits(batch_size=32), ckpt_path=str(ckpt_path))
    assert resumed.num_updates == 7 + 3 and int(resumed.averaged.n_averaged) == 7 + 3


def test_ema_names_a_missing_network(tmp_path):
    with pytest.raises(ConfigError, match="has no network `gen`"):
        trainer(tmp_path, callbacks=[EMA(attribute="gen")]).fit(DCGAN(**SMALL), Digits(batch_size=32))


def test_ema_recomputes_batch_norm_statistics_for_the_averaged_weights(tmp_path):
    # `buffers: recompute`: the statistics the averaged generator evaluates with are those of its own outputs on
    # fresh noise (a cumulative mean over the batches), not an average of the live generator's statistics
    L.seed_everything(0)
    model = DCGAN(**SMALL)
    ema = EMA(decay=0.5, bn_batches=3, bn_batch_size=8)
    trainer(tmp_path, limit_train_batches=3, limit_val_batches=0, callbacks=[ema]).fit(model, Digits(batch_size=32))
    net = model.generator
    live = {k: v.clone() for k, v in net.state_dict().items()}
    ema._swap_in(model.trainer, model)
    norm = next(m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))  # the first
    # closed form: the per-channel mean of the first batch-norm's inputs over the 3 x 8 noise vectors, eval weights
    inputs = []
    hook = norm.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    with torch.no_grad(), eval_mode(net):  # eval: this pass leaves the statistics alone
        for k in range(3):
            idx = torch.arange(10**6 + 8 * k, 10**6 + 8 * (k + 1))  # its input does not depend on any norm
            model.generate(*model.generator_inputs(idx))
    hook.remove()
    expected = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    assert torch.allclose(norm.running_mean, expected, atol=1e-5)
    assert not torch.allclose(norm.running_mean, live[[k for k in live if k.endswith("running_mean")][0]])
    ema._swap_out(model.trainer, model)
    assert all(torch.equal(v, live[k]) for k, v in net.state_dict().items())  # the live weights are back
