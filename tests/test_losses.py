import math

import pytest
import torch

from lightning_gen.losses import discriminator_loss, generator_loss

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_matches_closed_form():
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    expected = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert discriminator_loss(REAL, FAKE, "bce").item() == pytest.approx(expected, rel=1e-6)
    assert generator_loss(FAKE, "bce").item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, rel=1e-6)


def test_bce_label_smoothing_changes_only_real_targets():
    t = 0.9  # target for reals
    real_term = sum(-(t * math.log(1 / (1 + math.exp(-r))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-r)))) for r in (2.0, -1.0)) / 2
    fake_term = (softplus(0.5) + softplus(-3.0)) / 2
    got = discriminator_loss(REAL, FAKE, "bce", label_smoothing=0.1).item()
    assert got == pytest.approx(real_term + fake_term, rel=1e-6)


def test_lsgan_matches_closed_form():
    expected = 0.5 * ((2 - 1) ** 2 + (-1 - 1) ** 2) / 2 + 0.5 * (0.5**2 + 3.0**2) / 2
    assert discriminator_loss(REAL, FAKE, "lsgan").item() == pytest.approx(expected)
    assert generator_loss(FAKE, "lsgan").item() == pytest.approx(0.5 * ((0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2)
    smoothed = 0.5 * ((2 - 0.8) ** 2 + (-1 - 0.8) ** 2) / 2 + 0.5 * (0.5**2 + 3.0**2) / 2
    assert discriminator_loss(REAL, FAKE, "lsgan", 0.2).item() == pytest.approx(smoothed)


def test_hinge_matches_closed_form():
    # relu(1 - r): [0, 2]; relu(1 + f): [1.5, 0]
    assert discriminator_loss(REAL, FAKE, "hinge").item() == pytest.approx(1.0 + 0.75)
    assert generator_loss(FAKE, "hinge").item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="hinge"):
        discriminator_loss(REAL, FAKE, "hinge", label_smoothing=0.1)


def test_losses_are_minimised_by_the_right_logits():
    # a confident, correct discriminator has lower loss than a confused one, in every mode
    good = discriminator_loss(torch.full((4,), 5.0), torch.full((4,), -5.0), "bce")
    bad = discriminator_loss(torch.zeros(4), torch.zeros(4), "bce")
    assert good < bad
    for mode in ("bce", "lsgan", "hinge"):
        assert generator_loss(torch.full((4,), 3.0), mode) < generator_loss(torch.full((4,), -3.0), mode)


def test_losses_under_autocast_stay_float32():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real, fake = REAL.bfloat16(), FAKE.bfloat16()
        for mode in ("bce", "lsgan", "hinge"):
            assert discriminator_loss(real, fake, mode).dtype == torch.float32
            assert generator_loss(fake, mode).dtype == torch.float32


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown GAN loss"):
        generator_loss(FAKE, "wasserstein")  # type: ignore[arg-type]
