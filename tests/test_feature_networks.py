"""The Inception feature networks of the sample-quality metrics: torchvision's ImageNet Inception v3 (`inception`)
and the standard FID's 2015 TF-Inception (`tf_inception`, torch-fidelity's weights through torchmetrics)."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_gen.metrics.features as features_module
from datamodules import Digits
from lightning_gen import DCGAN, Pix2Pix
from lightning_gen.core.checks import ConfigError
from lightning_gen.metrics import InceptionFeatures, SampleQuality, TFInceptionFeatures, metric_name
from tests.test_pix2pix import SMALL as PIX2PIX_SMALL
from tests.test_pix2pix import make_pairs, paired

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_inception() -> nn.Module:
    """torchvision's Inception v3 as `inception_v3(weights=IMAGENET1K_V1)` builds it, without the download."""
    from torchvision.models import inception_v3

    return inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True).eval()


# ---- torchvision's ImageNet Inception v3 ----------------------------------------------------------------------------
def test_inception_features_are_torchvisions_own_forward():
    # same random weights, same images: the pool features and logits are those of torchvision's forward (with its
    # transform_input remapping) on the ImageNet-normalised 299x299 images
    torch.manual_seed(0)
    net = InceptionFeatures(pretrained=False)
    reference = torchvision_inception()
    missing, unexpected = reference.load_state_dict(net.net.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("AuxLogits.") for k in missing)
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1  # grey, in [-1, 1]
    with torch.no_grad():
        features, logits = net.features_and_logits(images)
        x = F.interpolate(images.add(1).div(2).repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear",
                          align_corners=False)
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pooled = []
        hook = reference.avgpool.register_forward_hook(lambda module, args, out: pooled.append(out.flatten(1)))
        want_logits = reference(x)
        hook.remove()
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)
    scale = pooled[0].abs().max()
    assert torch.allclose(features, pooled[0], rtol=1e-4, atol=1e-5 * float(scale))
    assert torch.allclose(logits, want_logits, rtol=1e-4, atol=1e-5 * float(want_logits.abs().max()))
    net.train()
    assert not net.training and not net.net.training  # a feature network stays in eval mode


def test_inception_weights_load_from_a_file_as_a_state_dict(tmp_path):
    torch.manual_seed(3)
    state = torchvision_inception().state_dict()
    torch.save(state, tmp_path / "inception.pth")
    net = InceptionFeatures(str(tmp_path / "inception.pth"))
    loaded = net.net.state_dict()
    assert loaded and all(torch.equal(value, state[key]) for key, value in loaded.items())
    assert net.identity.startswith("tv-inception-v2-")
    with pytest.raises(ConfigError, match="Inception v3 weights not found"):
        InceptionFeatures(str(tmp_path / "no.pth"))


# ---- the standard FID's network: 2015 TF-Inception through torchmetrics ------------------------------------------
@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path / "torch"


@pytest.mark.parametrize("installed", [False, True])
def test_tf_inception_without_its_package_or_weights_is_a_clear_config_error(torch_home, monkeypatch, installed):
    monkeypatch.setattr(features_module, "_torch_fidelity_available", lambda: installed)
    expected = features_module.tf_inception_weights_default()
    assert expected == torch_home / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(ConfigError) as error:
        SampleQuality(feature_net="tf_inception").build_net()
    message = str(error.value)
    assert ("torch-fidelity is not installed" in message) == (not installed)
    assert f"its weights are not at {expected}" in message
    for fix in ("torchmetrics[image]", "machine with internet", "inception_weights", "feature_net: classifier"):
        assert fix in message
    assert "\n" not in message  # one paragraph
    with pytest.raises(ConfigError, match="weights are not at /no/such.pth"):
        TFInceptionFeatures("/no/such.pth")


def test_pix2pix_tf_inception_fid_is_refused_before_evaluation(tmp_path, torch_home, monkeypatch):
    monkeypatch.setattr(features_module, "_torch_fidelity_available", lambda: False)
    model = Pix2Pix(**PIX2PIX_SMALL, fid_network="tf_inception")
    t = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  limit_val_batches=1, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match="feature_net tf_inception .* is not available here"):
        t.validate(model, paired(make_pairs(tmp_path / "pairs")), verbose=False)


class FakeNoTrainInceptionV3(nn.Module):
    """Stands in for torchmetrics' NoTrainInceptionV3 (torch-fidelity and its weights are not on this machine):
    takes uint8 images [0, 255] as it does, and gives 4 'features' per image (channel means, and the overall std)."""

    calls: list = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None, antialias=True):
        super().__init__()
        self.init = dict(name=name, features_list=features_list, path=feature_extractor_weights_path)
        FakeNoTrainInceptionV3.calls.append(self)
        self.inputs = []

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        self.inputs.append(x)
        x = x.float()
        return torch.cat([x.mean((2, 3)), x.flatten(1).std(1, keepdim=True)], 1)


@pytest.fixture
def fake_tf_inception(torch_home, monkeypatch):
    """torch-fidelity 'installed', a weights file in the torch hub cache, and the fake network in torchmetrics."""
    import torchmetrics.image.fid

    monkeypatch.setattr(features_module, "_torch_fidelity_available", lambda: True)
    path = features_module.tf_inception_weights_default()
    path.parent.mkdir(parents=True)
    torch.save({"fc.bias": torch.zeros(3)}, path)  # a plain state dict
    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", FakeNoTrainInceptionV3)
    FakeNoTrainInceptionV3.calls = []
    return path


def test_tf_inception_feeds_torchmetrics_network_uint8_rgb_from_the_cache(fake_tf_inception):
    net = SampleQuality(feature_net="tf_inception").build_net()
    assert isinstance(net, TFInceptionFeatures)
    (fake,) = FakeNoTrainInceptionV3.calls
    assert fake.init == dict(name="inception-v3-compat", features_list=["2048"], path=str(fake_tf_inception))
    images = torch.tensor([-1.0, 0.0, 1.0, 2 * 200 / 255 - 1]).view(1, 1, 2, 2)  # grey, [-1, 1]
    features, logits = net.features_and_logits(images)
    assert logits is None and features.shape == (1, 4)
    (seen,) = fake.inputs
    assert seen.shape == (1, 3, 2, 2) and seen[0, :, 0, 0].tolist() == [0, 0, 0]
    assert seen[0, 0].flatten().tolist() == [0, 128, 255, 200]  # rounded: 8-bit images come back exactly
    assert metric_name(net, "fid") == "fid" and metric_name(net, "fid_floor") == "fid_floor"
    with pytest.raises(ConfigError, match="1- or 3-channel"):
        net.check_images((4, 32, 32))
    # a weights file that holds more than tensors is refused (it is read with weights_only=True)
    torch.save({"fc.bias": torch.zeros(3), "code": FakeNoTrainInceptionV3}, fake_tf_inception)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        TFInceptionFeatures()


def test_sample_quality_on_tf_inception_logs_the_standard_names(tmp_path, fake_tf_inception):
    quality = SampleQuality(feature_net="tf_inception", num_samples=50, batch_size=25, kid_subset_size=20,
                            cache_dir=str(tmp_path / "cache"))
    t = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, limit_val_batches=1, callbacks=[quality], default_root_dir=tmp_path)
    (result,) = t.validate(DCGAN(latent_dim=8, g_features=4, d_features=4, num_samples=10), Digits(batch_size=32),
                           verbose=False)
    assert {"val/fid", "val/kid", "val/kid_std", "val/fid_floor", "val/fid_n"} <= set(result)
    assert result["val/fid_n"] == 50 and result["val/fid"] > result["val/fid_floor"] > 0
