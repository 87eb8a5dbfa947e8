"""Losses as pure tensor functions, each with a numerical test. Every GAN loss takes logits (never probabilities), so it
is safe under autocast; the VAE densities are computed in float32. Also the actor-critic's estimators (GAE) and
policy densities."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

GANLoss = Literal["bce", "lsgan", "hinge"]


def discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, mode: GANLoss = "bce", label_smoothing: float = 0.0
) -> Tensor:
    """Discriminator loss on real and generated logits.

    - `bce`: -log sigmoid(real) - log(1 - sigmoid(fake)), the real target being `1 - label_smoothing`
      (one-sided label smoothing, Salimans et al. 2016).
    - `lsgan`: 0.5 * (real - target)^2 + 0.5 * fake^2 (Mao et al. 2017, a=0, b=target).
    - `hinge`: relu(1 - real) + relu(1 + fake) (Lim & Ye 2017; Miyato et al. 2018). No label smoothing.
    Each term is a mean over the batch.
    """
    target = 1.0 - label_smoothing
    if mode == "bce":
        real = F.binary_cross_entropy_with_logits(real_logits, real_logits.new_full(real_logits.shape, target))
        fake = F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_zeros(fake_logits.shape))
        return real + fake
    if mode == "lsgan":
        return 0.5 * ((real_logits.float() - target) ** 2).mean() + 0.5 * (fake_logits.float() ** 2).mean()
    if mode == "hinge":
        if label_smoothing:
            raise ValueError("label_smoothing has no meaning for the hinge loss; set it to 0 or use bce/lsgan.")
        return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()
    raise ValueError(f"unknown GAN loss {mode!r}; choose one of bce, lsgan, hinge")


def generator_loss(fake_logits: Tensor, mode: GANLoss = "bce") -> Tensor:
    """Generator loss on the discriminator's logits for generated images.

    - `bce`: the non-saturating loss -log sigmoid(fake).
    - `lsgan`: 0.5 * (fake - 1)^2.
    - `hinge`: -fake.
    """
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_ones(fake_logits.shape))
    if mode == "lsgan":
        return 0.5 * ((fake_logits.float() - 1.0) ** 2).mean()
    if mode == "hinge":
        return -fake_logits.float().mean()
    raise ValueError(f"unknown GAN loss {mode!r}; choose one of bce, lsgan, hinge")


def pix2pix_generator_loss(
    fake_logits: Tensor, outputs: Tensor, targets: Tensor, mode: GANLoss = "bce", l1_weight: float = 100.0
) -> tuple[Tensor, Tensor, Tensor]:
    """pix2pix's generator objective (Isola et al. 2017): `generator_loss(fake_logits) + l1_weight * mean|outputs -
    targets|`. Returns the total and its two terms (GAN, L1)."""
    gan = generator_loss(fake_logits, mode)
    l1 = F.l1_loss(outputs.float(), targets.float())
    return gan + l1_weight * l1, gan, l1


# ---- variational autoencoders: per-image log-densities in nats, each of shape (B,) ------------------------------
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, summed over the latent dims: (B, D) -> (B,).

    0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2) (Kingma & Welling 2013, appendix B).
    """
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def log_normal_diag(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dim: (..., D) -> (...)."""
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dim: (..., D) -> (...)."""
    z = z.float()
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)


def bernoulli_log_likelihood(logits: Tensor, target: Tensor) -> Tensor:
    """log p(x | z) of a factorised Bernoulli on logits, summed over every pixel: (B, C, H, W) -> (B,).

    `target` holds values in [0, 1] (binary for a true Bernoulli likelihood).
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return -per_pixel.flatten(1).sum(dim=1)


def gaussian_log_likelihood(mean: Tensor, target: Tensor, log_scale: Tensor) -> Tensor:
    """log p(x | z) of a factorised Gaussian N(mean, exp(log_scale)^2), summed over every pixel: (B, C, H, W) -> (B,).

    `log_scale` broadcasts against the images (one value per channel: shape (C, 1, 1)).
    """
    mean, target, log_scale = mean.float(), target.float(), log_scale.float()
    per_pixel = -0.5 * LOG_2PI - log_scale - 0.5 * ((target - mean) * torch.exp(-log_scale)).pow(2)
    return per_pixel.flatten(1).sum(dim=1)


def importance_weighted_bound(log_weights: Tensor) -> Tensor:
    """The k-sample bound log (1/k) sum_k w_k (Burda et al. 2015) from log w_k = log p(x, z_k) - log q(z_k | x).

    (K, B) -> (B,). With K = 1 it is the single-sample ELBO; its expectation never decreases as K grows.
    """
    k = log_weights.shape[0]
    return torch.logsumexp(log_weights.float(), dim=0) - math.log(k)


# ---- semi-supervised GAN: an (N+1)-class discriminator whose last logit is the "fake" class ----------------------
def _split_fake(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(B, N+1) logits -> log-sum-exp of the N real-class logits `(B,)` and the fake-class logit `(B,)`."""
    logits = logits.float()
    return torch.logsumexp(logits[:, :-1], dim=1), logits[:, -1]


def sgan_supervised_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the true class among the N real classes, -log p(y | x, real), from `(B, N+1)` logits.

    This is Salimans et al. (2016)'s supervised term; that the image is real is the unsupervised term's job.
    """
    return F.cross_entropy(logits.float()[:, :-1], labels)


def sgan_unsupervised_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's real-vs-fake loss from `(B, N+1)` logits: -log(1 - p(fake | x)) on unlabeled real
    images plus -log p(fake | G(z)) on generated ones, each a batch mean.

    With r = logsumexp of the real-class logits and f the fake logit: -log(1 - p(fake)) = softplus(f - r) and
    -log p(fake) = softplus(r - f). At chance (all N+1 logits equal): log((N+1)/N) + log(N+1).
    """
    r_real, f_real = _split_fake(real_logits)
    r_fake, f_fake = _split_fake(fake_logits)
    return F.softplus(f_real - r_real).mean() + F.softplus(r_fake - f_fake).mean()


def sgan_generator_loss(fake_logits: Tensor) -> Tensor:
    """The generator's non-saturating loss from `(B, N+1)` logits: -log(1 - p(fake | G(z))) = softplus(f - r)."""
    r, f = _split_fake(fake_logits)
    return F.softplus(f - r).mean()


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """Salimans et al. (2016)'s generator loss: squared distance between the batch means of the discriminator's
    features on real and generated images, ||mean f(x) - mean f(G(z))||^2. `(B, F)`, `(B', F)` -> scalar."""
    return (real_features.float().mean(0) - fake_features.float().mean(0)).pow(2).sum()


# ---- perceptual losses (Gatys et al. 2016; Johnson et al. 2016) -------------------------------------------------


def gram_matrix(features: Tensor) -> Tensor:
    """Channel correlations of a feature map, normalised by its size: G = F F^T / (C H W), with F the `(C, H*W)`
    features of one image. `(B, C, H, W)` -> `(B, C, C)`, in float32."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def content_loss(features: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
    """Sum over layers of the mean squared difference between `features` and the content `targets` (same keys,
    `(B, C, H, W)` each; a target with batch 1 is broadcast)."""
    return sum(F.mse_loss(features[k].float(), targets[k].float().expand_as(features[k])) for k in features)


def style_loss(features: dict[str, Tensor], target_grams: dict[str, Tensor],
               layer_weights: dict[str, float] | None = None) -> Tensor:
    """Sum over layers of `weight * mean squared difference` between the Gram matrices of `features` and the style
    `target_grams` (`(1 or B, C, C)`), as Gatys et al. (weights default to 1)."""
    total = 0.0
    for k, feats in features.items():
        gram = gram_matrix(feats)
        weight = 1.0 if layer_weights is None else layer_weights[k]
        total = total + weight * F.mse_loss(gram, target_grams[k].float().expand_as(gram))
    return total


def total_variation(images: Tensor) -> Tensor:
    """Anisotropic total variation: the mean absolute difference between vertical neighbours plus that between
    horizontal neighbours. `(B, C, H, W)` -> scalar."""
    x = images.float()
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


# ---- actor-critic reinforcement learning (Mnih et al. 2016; Schulman et al. 2016) --------------------------------
def gae_advantages(
    rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over a rollout of T steps of N actors.

    `rewards`, `values`, `dones`: (T, N); `dones[t]` is 1 where the episode ended at step t (truncated episodes
    carry their bootstrap value in their last reward). `last_value`: (N,), the value of each actor's state after
    the last step. delta_t = r_t + gamma * (1 - d_t) * V_{t+1} - V_t and A_t = sum_k (gamma * lam)^k delta_{t+k}
    within the episode. Returns (advantages, returns = advantages + values), both (T, N). lam = 1 gives the n-step
    returns minus the values.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * nonterminal * next_value - values[t]
        running = delta + gamma * lam * nonterminal * running
        advantages[t] = running
    return advantages, advantages + values


def categorical_entropy(logits: Tensor) -> Tensor:
    """Entropy of the categorical distributions given by `logits` (B, A) -> (B,), in nats."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def gaussian_log_prob(actions: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Log-density of `actions` (B, D) under the diagonal Gaussian N(mean, exp(log_std)^2), summed over D -> (B,)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian with these log standard deviations (..., D) -> (...), in nats."""
    return (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)


def a2c_loss(
    log_prob: Tensor, entropy: Tensor, values: Tensor, advantages: Tensor, returns: Tensor, vf_coef: float,
    ent_coef: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(total, policy loss, value loss, mean entropy): -mean(A * log pi(a|s)) + vf_coef * mean((R - V)^2) -
    ent_coef * mean(H). Advantages and returns are targets (no gradient flows into them). All inputs (B,)."""
    policy_loss = -(advantages.detach() * log_prob).mean()
    value_loss = F.mse_loss(values, returns.detach())
    mean_entropy = entropy.mean()
    return policy_loss + vf_coef * value_loss - ent_coef * mean_entropy, policy_loss, value_loss, mean_entropy


def compactness_loss(features: Tensor) -> Tensor:
    """Perera & Patel (2019)'s compactness loss of a batch of target-class features (n, k), n >= 2: each feature's
    squared distance to the mean of the OTHER n - 1 features, averaged over the n samples and k dimensions,

        m_i = 1/(n-1) sum_{j != i} x_j,   l_C = 1/(n k) sum_i ||x_i - m_i||^2.

    Since x_i - m_i = n/(n-1) (x_i - mu) (mu the batch mean), this is n^2/(n-1)^2 times the mean per-dimension
    variance of the batch (the biased, 1/n variance): the form computed here. Computed in float32."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"the compactness loss needs a batch of 2 or more features, got {n}.")
    x = features.float()
    variance = (x - x.mean(0, keepdim=True)).pow(2).mean()  # 1/(n k) sum_i ||x_i - mu||^2
    return variance * (n / (n - 1)) ** 2


def svdd_loss(features: Tensor, center: Tensor) -> Tensor:
    """Ruff et al. (2018)'s one-class Deep SVDD objective without its weight decay (given to the optimizer): the mean
    over the batch of the squared distance of each feature (n, k) to the fixed centre c (k,),
    1/n sum_i ||phi(x_i) - c||^2. Computed in float32."""
    return (features.float() - center.float()).pow(2).sum(-1).mean()


def knn_distance(queries: Tensor, bank: Tensor, k: int) -> Tensor:
    """Mean Euclidean distance of each query (B, F) to its `k` nearest rows of `bank` (N, F) -> (B,). Computed in
    float32."""
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k={k} nearest neighbours need 1 <= k <= {bank.shape[0]} (the bank's rows).")
    distances = torch.cdist(queries.float(), bank.float())  # (B, N)
    return distances.topk(k, dim=1, largest=False).values.mean(1)
