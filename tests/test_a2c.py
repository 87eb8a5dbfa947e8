"""A2C: the advantage estimators and losses in closed form, the rollout's episode-end handling, the environments
datamodule, the module through fit/test (CartPole, Pendulum, Atari frames), DDP and bad input, and the seeds of the
evaluation episodes (fresh or fixed, across a resume)."""

import math

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules import DataError, GymEnv
from lightning_gen import A2C
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import RolloutTechnique
from lightning_gen.losses import (
    a2c_loss,
    categorical_entropy,
    gae_advantages,
    gaussian_entropy,
    gaussian_log_prob,
)
from tests.conftest import QUIET, ROOT, run_cli

TINY = str(ROOT / "configs" / "a2c" / "tiny.yaml")


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                    num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})


# ---- estimators and losses ----------------------------------------------------------------------------------------
def brute_force_gae(rewards, values, dones, last_value, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k}, summed term by term until the episode's end."""
    T, N = rewards.shape
    adv = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            total, factor = 0.0, 1.0
            for k in range(t, T):
                next_v = last_value[n] if k == T - 1 else values[k + 1, n]
                delta = rewards[k, n] + gamma * (1 - dones[k, n]) * next_v - values[k, n]
                total += factor * delta
                if dones[k, n]:
                    break
                factor *= gamma * lam
            adv[t, n] = total
    return adv


def rollout():
    # two actors over 6 steps: actor 0's episode terminates at step 1; actor 1's is truncated at step 3 (its reward
    # there already holds the bootstrap value of the state where it was cut, as `collect` adds it)
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(6, 2, generator=g, dtype=torch.float64)
    values = torch.randn(6, 2, generator=g, dtype=torch.float64)
    dones = torch.zeros(6, 2, dtype=torch.float64)
    dones[1, 0] = 1.0
    dones[3, 1] = 1.0
    return rewards, values, dones, torch.randn(2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_a_brute_force_sum(lam):
    rewards, values, dones, last = rollout()
    adv, ret = gae_advantages(rewards, values, dones, last, 0.9, lam)
    assert torch.allclose(adv, brute_force_gae(rewards, values, dones, last, 0.9, lam), atol=1e-12)
    assert torch.allclose(ret, adv + values)


def test_lambda_one_gives_n_step_returns_minus_values():
    rewards, values, dones, last = rollout()
    gamma, T = 0.9, rewards.shape[0]
    returns = torch.zeros_like(rewards)
    for n in range(2):
        for t in range(T):  # R_t = r_t + gamma r_{t+1} + ... up to the episode's end or gamma^(T-t) V(s_T)
            total, discount, k = 0.0, 1.0, t
            while True:
                total += discount * rewards[k, n]
                if dones[k, n]:
                    break
                discount *= gamma
                if k == T - 1:
                    total += discount * last[n]
                    break
                k += 1
            returns[t, n] = total
    adv, ret = gae_advantages(rewards, values, dones, last, gamma, 1.0)
    assert torch.allclose(adv, returns - values, atol=1e-12)
    assert torch.allclose(ret, returns, atol=1e-12)
    # lambda = 0 is the one-step TD error
    adv0, _ = gae_advantages(rewards, values, dones, last, gamma, 0.0)
    next_v = torch.cat([values[1:], last[None]])
    assert torch.allclose(adv0, rewards + gamma * (1 - dones) * next_v - values, atol=1e-12)


def test_uniform_categorical_entropy_is_log_of_the_number_of_actions():
    for actions in (2, 6, 18):
        assert torch.allclose(categorical_entropy(torch.zeros(3, actions)), torch.full((3,), math.log(actions)))
    assert categorical_entropy(torch.tensor([[0.0, -1e4]])).item() == pytest.approx(0.0, abs=1e-6)


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std, actions = (torch.randn(5, 3, generator=g) for _ in range(3))
    dist = torch.distributions.Normal(mean, log_std.exp())
    assert torch.allclose(gaussian_log_prob(actions, mean, log_std), dist.log_prob(actions).sum(-1), atol=1e-5)
    assert torch.allclose(gaussian_entropy(log_std), dist.entropy().sum(-1), atol=1e-5)


def test_a2c_loss_closed_form_and_gradients():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    values = torch.tensor([0.5, 1.0], requires_grad=True)
    entropy = torch.tensor([0.7, 0.3])
    advantages, returns = torch.tensor([2.0, -1.0]), torch.tensor([1.5, 0.0])
    total, pg, vf, ent = a2c_loss(log_prob, entropy, values, advantages, returns, vf_coef=0.5, ent_coef=0.1)
    assert pg.item() == pytest.approx(-(2.0 * -1.0 + -1.0 * -2.0) / 2)  # 0
    assert vf.item() == pytest.approx((1.0 ** 2 + 1.0 ** 2) / 2)
    assert ent.item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(pg.item() + 0.5 * vf.item() - 0.1 * 0.5)
    total.backward()
    assert torch.allclose(log_prob.grad, -advantages / 2)  # the advantages are constants
    assert torch.allclose(values.grad, 0.5 * (values - returns).detach())


# ---- the rollout: a time-limit cut is bootstrapped, a termination is not ------------------------------------------
class Corridor(gym.Env):
    """Observation = step count; reward 1 per step; terminates at step `end` unless a 3-step time limit cuts it."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, end: int = 100):
        self.end, self.t = end, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t >= self.end, False, {}


gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=3)


def first_rollout(tmp_path, data, **kwargs):
    """The rollout of the first update of a fit (a learning rate of 1e-12 leaves the networks as they were)."""
    L.seed_everything(0)
    model = A2C(**{"lr": 1e-12, **kwargs})
    captured = []
    collect = model.collect
    model.collect = lambda: captured.append(collect()) or captured[-1]
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, data)
    return model, captured[0]


@pytest.mark.parametrize("truncated", [True, False])
def test_rollout_bootstraps_truncated_but_not_terminated_episodes(tmp_path, truncated):
    data = GymEnv("Corridor-v0", env_kwargs={} if truncated else {"end": 3}, num_envs=2)
    model, r = first_rollout(tmp_path, data, n_steps=4, gamma=0.9)
    # step 3 (index 2) ends the episode: cut by the time limit (1 + 0.9 V(s=3)) or terminated (1)
    v_final = model.net(torch.tensor([[3.0], [3.0]]))[1]
    want = 1.0 + 0.9 * v_final if truncated else torch.ones(2)
    assert torch.allclose(r["rewards"][2], want, atol=1e-5)
    assert torch.equal(r["rewards"][[0, 1, 3]], torch.ones(3, 2))
    assert torch.equal(r["dones"][:, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(r["obs"][3, :, 0], torch.zeros(2))  # the next episode started from a reset


# ---- the module ----------------------------------------------------------------------------------------------------
def test_tiny_config_fit_and_test_through_the_cli(tmp_path):
    result = run_cli(["fit", "--config", TINY, "--trainer.logger", "false", "--trainer.default_root_dir", "out",
                      *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["a2c_env_steps"] == 2 * 20 * 5 * 4  # 2 epochs of 20 updates of 5 steps x 4 actors
    assert ckpt["hyper_parameters"]["observation_shape"] == (4,)
    tested = run_cli(["test", "--config", TINY, "--ckpt_path", str(tmp_path / "out" / "checkpoints" / "last.ckpt"),
                      "--trainer.logger", "false", *QUIET], tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/episodic_return" in tested.stdout and "test/episodic_return_std" in tested.stdout


def test_short_cartpole_run_beats_a_random_policy_by_far(tmp_path):
    # a random policy lasts about 22 steps on CartPole; 40k steps of A2C (seeded) do far better
    L.seed_everything(0)
    model = A2C(env_steps_per_epoch=20_000, eval_episodes=10)
    data = GymEnv("CartPole-v1", num_envs=8, seed=0)
    t = trainer(tmp_path, max_epochs=2, limit_val_batches=0)  # no evaluation during fit: only the test scores
    t.fit(model, data)
    (result,) = t.test(model, data, verbose=False)
    assert result["test/episodic_return"] > 100, result


def test_continuous_actions_train_with_a_gaussian_policy(tmp_path, caplog):
    L.seed_everything(0)
    model = A2C(n_steps=8, env_steps_per_epoch=64, eval_episodes=1, log_std_init=-0.5)
    data = GymEnv("Pendulum-v1", num_envs=2)
    t = trainer(tmp_path, max_epochs=1)
    caplog.set_level("INFO")
    t.fit(model, data)
    said = [r.getMessage() for r in caplog.records if "continuous actions" in r.getMessage()]
    assert said == ["A2C: Pendulum-v1 has continuous actions (1 dimension): a Gaussian policy (learned log-std), its "
                    "actions clipped to [-2, 2] when sent to the environment."]  # one line, what was done
    assert model.net.continuous and model.net.log_std.shape == (1,)
    assert model.net.log_std.detach().item() != pytest.approx(-0.5)  # the log-std is learned
    model.net.policy_head.bias.data.fill_(3.0)  # a mean beyond the bounds: the environment gets them clipped
    action, env_action, _ = model.act(np.array([[1.0, 0.0, 8.0]] * 64, np.float32), deterministic=False)
    assert action.max() > 2.0 and np.all(np.abs(env_action) <= 2.0)  # Pendulum's torque bounds
    (result,) = t.test(model, data, verbose=False)
    assert -2000 < result["test/episodic_return"] <= 0


def test_atari_frames_are_preprocessed_and_feed_the_nature_cnn(tmp_path):
    pytest.importorskip("ale_py", reason="needs the atari extra")
    data = GymEnv("ALE/Pong-v5", num_envs=2, vectorization="sync")
    assert data.observation_space.shape == (4, 84, 84) and data.observation_space.dtype == np.uint8
    model, rollout = first_rollout(tmp_path, data, n_steps=2, env_steps_per_epoch=4, eval_episodes=1)
    obs = rollout["obs"]
    assert obs.shape == (2, 2, 4, 84, 84) and obs.dtype == torch.uint8
    assert model.net.policy_head.out_features == 6 and model.net.images


def test_ddp_gives_each_process_its_own_environments(tmp_path):
    result = run_cli(["fit", "--config", TINY, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                      "--trainer.callbacks+=tests.helpers.DistinctActorSeeds",
                      "--trainer.callbacks+=tests.helpers.SameWeightsCheck",
                      "--trainer.logger", "false", "--trainer.default_root_dir", "ddp", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["a2c_env_steps"] == 2 * 10 * 5 * 4 * 2  # half the updates per epoch, twice the actors


# ---- bad input -----------------------------------------------------------------------------------------------------
def test_unknown_environment_is_refused_with_the_fix():
    with pytest.raises(DataError, match="unknown gymnasium environment id 'CartPol-v1'.*CartPole-v1"):
        GymEnv("CartPol-v1")


def test_missing_optional_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed
    with pytest.raises(DataError, match=r"lightning-gen\[atari\]"):
        GymEnv("ALE/Breakout-v5")


def test_a2c_needs_an_environment_and_refuses_fp16(tmp_path):
    from datamodules import Digits

    with pytest.raises(ConfigError, match="GymEnv"):
        trainer(tmp_path, max_steps=1).fit(A2C(), Digits(batch_size=8))
    with pytest.raises(ConfigError, match="16-mixed"):
        from tests.helpers import fp16_on_cpu

        trainer(tmp_path, max_steps=1, plugins=[fp16_on_cpu()]).fit(A2C(), GymEnv("CartPole-v1", num_envs=2))
    with pytest.raises(ConfigError, match="gamma"):
        A2C(gamma=1.5)


def test_linear_schedule_decays_the_learning_rate_to_zero(tmp_path):
    lrs = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.seed_everything(0)
    model = A2C(lr=1e-3, lr_schedule="linear", env_steps_per_epoch=80, eval_episodes=1)  # 4 updates per epoch
    trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[Record()]).fit(model, GymEnv(num_envs=4))
    assert lrs == pytest.approx([1e-3 * (1 - k / 8) for k in range(1, 9)])
    assert isinstance(model, RolloutTechnique) and model.updates_per_epoch() == 4

    # the schedule is a Lightning scheduler, saved in the checkpoint: a run stopped after its first epoch and
    # resumed goes on where it was
    class StopAfterFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    first = A2C(lr=1e-3, lr_schedule="linear", env_steps_per_epoch=80, eval_episodes=1)
    saved = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, max_epochs=2, limit_val_batches=0, enable_checkpointing=True,
            callbacks=[StopAfterFirstEpoch(), saved]).fit(first, GymEnv(num_envs=4))
    lrs.clear()
    trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[Record()]).fit(
        A2C(lr=1e-3, lr_schedule="linear", env_steps_per_epoch=80, eval_episodes=1), GymEnv(num_envs=4),
        ckpt_path=saved.last_model_path)
    assert lrs == pytest.approx([1e-3 * (1 - k / 8) for k in range(5, 9)])


# ---- evaluation episodes: fresh ones at every evaluation of a fit, or the same ones -------------------------------
class SeedRecorder(gym.Wrapper):
    """Records the seed of every reset of the wrapped environment into `seeds`."""

    def __init__(self, env, seeds: list):
        super().__init__(env)
        self.seeds = seeds

    def reset(self, *, seed=None, options=None):
        self.seeds.append(seed)
        return self.env.reset(seed=seed, options=options)


def recording(data: GymEnv) -> list[list[int]]:
    """The seeds each evaluation environment of `data` is reset with, one list per evaluation environment built."""
    evaluations: list[list[int]] = []
    make = data.make_evaluator

    def make_recorded(video_dir=None):
        evaluations.append([])
        return SeedRecorder(make(video_dir=video_dir), evaluations[-1])

    data.make_evaluator = make_recorded
    return evaluations


@pytest.mark.parametrize("mode", ["fresh", "fixed"])
def test_evaluations_during_fit_play_fresh_or_fixed_episodes(tmp_path, mode):
    L.seed_everything(0)
    data = GymEnv(num_envs=2, eval_seed=100)
    played = recording(data)
    model = A2C(env_steps_per_epoch=20, eval_episodes=3, eval_seeds=mode)  # 2 updates of 5 steps x 2 actors
    t = trainer(tmp_path, max_epochs=3, num_sanity_val_steps=1)
    t.fit(model, data)
    t.test(model, data, verbose=False)
    fixed = [100, 101, 102]
    if mode == "fresh":  # evaluation k of the fit plays eval_seed + k * eval_episodes + i
        want_fit = [[100 + 3 * k + i for i in range(3)] for k in (1, 2, 3)]
        assert want_fit == [[103, 104, 105], [106, 107, 108], [109, 110, 111]]
    else:
        want_fit = [fixed] * 3
    # the sanity check and the test play the fixed set; the three evaluations of the fit, `want_fit`
    assert played == [fixed, *want_fit, fixed]
    assert model.evaluations == 3
    assert model.evaluation_seeds(2, 3) == [106, 107, 108]
    with pytest.raises(ConfigError, match="eval_seeds"):
        A2C(eval_seeds="random")


def test_fresh_evaluations_go_on_with_new_episodes_after_a_resume(tmp_path):
    class StopAfterFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    L.seed_everything(0)
    args = dict(env_steps_per_epoch=20, eval_episodes=2, eval_seeds="fresh")
    data = GymEnv(num_envs=2, eval_seed=100)
    played = recording(data)
    saved = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[StopAfterFirstEpoch(), saved]).fit(
        A2C(**args), data)
    assert played == [[102, 103]]  # evaluation 1
    assert torch.load(saved.last_model_path, weights_only=False)["a2c_evaluations"] == 1
    resumed = A2C(**args)
    trainer(tmp_path, max_epochs=3).fit(resumed, data, ckpt_path=saved.last_model_path)
    assert played == [[102, 103], [104, 105], [106, 107]]  # evaluations 2 and 3, not 1 again
    assert resumed.evaluations == 3


@pytest.mark.skipif(__import__("importlib").util.find_spec("moviepy") is None, reason="needs the video extra")
def test_evaluation_video_is_recorded(tmp_path):
    L.seed_everything(0)
    model = A2C(eval_episodes=2, eval_video=True, env_steps_per_epoch=40)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(model, GymEnv(num_envs=2))
    t.test(model, GymEnv(num_envs=2), verbose=False)
    videos = sorted(tmp_path.glob("videos/*/*.mp4"))
    assert [v.parent.name for v in videos] == ["test_epoch0001", "val_epoch0000"]  # the first episode of each
    assert all(v.stat().st_size > 0 for v in videos)
