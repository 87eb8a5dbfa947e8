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
    real_term = sum(-(t * math.log(1 / (1 + math.exp(-r))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-r))))
                    for r in (2.0, -1.0)) / 2
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


# ---- VAE densities --------------------------------------------------------------------------------------------
def test_gaussian_kl_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    from lightning_gen.losses import gaussian_kl

    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))  # q = prior


def test_log_densities_match_torch_distributions():
    from torch.distributions import Bernoulli, Normal

    from lightning_gen.losses import (
        bernoulli_log_likelihood,
        gaussian_log_likelihood,
        log_normal_diag,
        log_standard_normal,
    )

    torch.manual_seed(0)
    z, mu, logvar = torch.randn(3, 4, 6), torch.randn(4, 6), torch.randn(4, 6)
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(log_normal_diag(z, mu, logvar), expected, atol=1e-5)
    assert torch.allclose(log_standard_normal(z), Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)
    logits, x = torch.randn(2, 1, 5, 5), torch.randint(0, 2, (2, 1, 5, 5)).float()
    expected = Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    assert torch.allclose(bernoulli_log_likelihood(logits, x), expected, atol=1e-5)
    mean, target, log_scale = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(3, 1, 1)
    expected = Normal(mean, log_scale.exp()).log_prob(target).sum((1, 2, 3))
    assert torch.allclose(gaussian_log_likelihood(mean, target, log_scale), expected, atol=1e-4)


def test_importance_weighted_bound_closed_form():
    from lightning_gen.losses import importance_weighted_bound

    log_w = torch.tensor([[-3.0, 0.5]])
    assert torch.equal(importance_weighted_bound(log_w), log_w[0])  # k = 1: the single-sample ELBO itself
    two = torch.tensor([[math.log(1.0)], [math.log(3.0)]])
    assert importance_weighted_bound(two).item() == pytest.approx(math.log(2.0))  # log mean(1, 3)
    huge = torch.tensor([[-1000.0], [-1000.0]])  # no underflow: computed in log space
    assert importance_weighted_bound(huge).item() == pytest.approx(-1000.0)


# ---- semi-supervised GAN: (B, N+1) logits, the last being "fake" ----------------------------------------------
from lightning_gen.losses import (  # noqa: E402
    feature_matching_loss,
    sgan_generator_loss,
    sgan_supervised_loss,
    sgan_unsupervised_loss,
)


def test_sgan_losses_at_chance():
    n = 10
    chance = torch.zeros(4, n + 1)  # every class, "fake" included, equally likely
    assert sgan_supervised_loss(chance, torch.arange(4)).item() == pytest.approx(math.log(n))
    # -log(1 - 1/(N+1)) on reals + -log(1/(N+1)) on fakes
    expected = math.log((n + 1) / n) + math.log(n + 1)
    assert sgan_unsupervised_loss(chance, chance).item() == pytest.approx(expected, rel=1e-6)
    assert sgan_generator_loss(chance).item() == pytest.approx(math.log((n + 1) / n), rel=1e-6)


def test_sgan_losses_on_hand_made_logits():
    # two real classes + fake. Image a: logits (2, 0 | fake 1); image b: (-1, 1 | fake -2)
    logits = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 1.0, -2.0]])
    labels = torch.tensor([1, 1])

    def p_real_class(row, y):  # p(y | x, real): softmax over the real classes only
        e = [math.exp(v) for v in row[:2]]
        return e[y] / sum(e)

    def p_fake(row):
        e = [math.exp(v) for v in row]
        return e[2] / sum(e)

    rows = logits.tolist()
    sup = -(math.log(p_real_class(rows[0], 1)) + math.log(p_real_class(rows[1], 1))) / 2
    assert sgan_supervised_loss(logits, labels).item() == pytest.approx(sup, rel=1e-6)
    fake_logits = torch.tensor([[0.0, 0.0, 3.0]])
    unsup = -(math.log(1 - p_fake(rows[0])) + math.log(1 - p_fake(rows[1]))) / 2 - math.log(p_fake([0.0, 0.0, 3.0]))
    assert sgan_unsupervised_loss(logits, fake_logits).item() == pytest.approx(unsup, rel=1e-6)
    assert sgan_generator_loss(fake_logits).item() == pytest.approx(-math.log(1 - p_fake([0.0, 0.0, 3.0])), rel=1e-6)
    # the supervised term ignores the fake logit; the unsupervised term ignores which real class wins
    moved = logits.clone()
    moved[:, 2] += 5.0
    assert sgan_supervised_loss(moved, labels).item() == pytest.approx(sup, rel=1e-6)
    swapped = logits[:, [1, 0, 2]]
    assert sgan_unsupervised_loss(swapped, fake_logits).item() == pytest.approx(unsup, rel=1e-6)


def test_sgan_losses_stay_finite_for_extreme_logits():
    huge = torch.tensor([[80.0, -80.0, -90.0], [-80.0, 90.0, 85.0]])
    for value in (sgan_supervised_loss(huge, torch.tensor([0, 1])), sgan_unsupervised_loss(huge, huge),
                  sgan_generator_loss(huge)):
        assert torch.isfinite(value)


def test_feature_matching_is_the_squared_distance_of_batch_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, 4.0]])  # mean (0, 2)
    assert feature_matching_loss(real, fake).item() == pytest.approx(4.0 + 1.0)
    assert feature_matching_loss(real, real[[1, 0]]).item() == 0.0  # only the means matter


# ---- perceptual losses -------------------------------------------------------------------------------------------

from lightning_gen.losses import content_loss, gram_matrix, style_loss, total_variation  # noqa: E402


def test_gram_matrix_closed_form():
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2 channels, H=1, W=2
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(feats)[0], expected)
    assert gram_matrix(torch.randn(3, 5, 4, 6)).shape == (3, 5, 5)


def test_content_loss_is_the_summed_mean_squared_error():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4)
    c, d = torch.randn(2, 5, 2, 2), torch.randn(2, 5, 2, 2)
    got = content_loss({"x": a, "y": c}, {"x": b, "y": d})
    expected = ((a - b) ** 2).mean() + ((c - d) ** 2).mean()  # the batch-1 target is broadcast
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_style_loss_zero_for_the_same_image_and_closed_form_for_a_scaled_one():
    f = torch.randn(1, 4, 5, 5)
    target = {"l": gram_matrix(f)}
    assert style_loss({"l": f}, target).item() == pytest.approx(0.0, abs=1e-12)
    # G(a f) = a^2 G(f), so the loss is (a^2 - 1)^2 mean(G^2), times the layer's weight
    a, weight = 3.0, 0.5
    expected = weight * (a**2 - 1) ** 2 * gram_matrix(f).pow(2).mean()
    got = style_loss({"l": a * f}, target, {"l": weight})
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_total_variation_closed_forms():
    assert total_variation(torch.full((1, 3, 4, 4), 0.7)).item() == 0.0
    stripes = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)  # vertical stripes
    assert total_variation(stripes).item() == pytest.approx(1.0)  # every horizontal step is 1, vertical 0
    checker = (torch.arange(4).view(4, 1) + torch.arange(4).view(1, 4)) % 2 * 2.0  # amplitude 2
    assert total_variation(checker.view(1, 1, 4, 4)).item() == pytest.approx(4.0)
