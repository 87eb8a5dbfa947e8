"""A2C: the synchronous advantage actor-critic (Mnih et al., "Asynchronous Methods for Deep Reinforcement
Learning", 2016), with parallel gymnasium environments from `datamodules.GymEnv`.

One training step is one update: every actor (the `num_envs` environments of each process) takes `n_steps`
steps with the current policy; the advantages come from GAE(lambda) (lambda = 1: the n-step returns of the paper);
one loss, policy gradient + `vf_coef` * value loss - `ent_coef` * entropy, is minimised with one optimizer step
(RMSprop as in the paper, or Adam) after clipping the gradient norm. The network is one trunk (an MLP for vector
observations, the Nature CNN for Atari frames) with a policy head and a value head, orthogonally initialised.

Episode ends: a terminated episode's next value is 0; a truncated one (a time limit) is bootstrapped from the value
of the state where it was cut, added to its last reward (gymnasium hands that state over in the step's info).

Under DDP every process runs its own environments with its own seeds (so `devices=k` multiplies the actors), and
each update averages the gradients of the one loss over the processes (`Technique.optimizing`). `validate`/`test`
play `eval_episodes` episodes with the deterministic (or sampled) policy and report the mean and std of their
returns. With `eval_seeds: fresh` (the default) the k-th evaluation during fit plays new episodes, seeded
`eval_seed + k * eval_episodes + i`; `test`, and every evaluation with `eval_seeds: fixed`, plays the episodes seeded
`eval_seed + i`.
"""

from __future__ import annotations

import importlib.util
import math
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.protocols import Environments
from lightning_gen.core.runs import logs_this_step, run_dir
from lightning_gen.core.technique import LinearDecay, Technique, eval_mode
from lightning_gen.losses import a2c_loss, categorical_entropy, gae_advantages, gaussian_entropy, gaussian_log_prob

# ---- the network -------------------------------------------------------------------------------------------------


def _orthogonal(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def nature_cnn(channels: int) -> tuple[nn.Module, int]:
    """Mnih et al. (2015)'s Atari trunk: (B, C, 84, 84) uint8 frames -> (B, 512)."""
    g = math.sqrt(2)
    net = nn.Sequential(
        _orthogonal(nn.Conv2d(channels, 32, 8, 4), g), nn.ReLU(),
        _orthogonal(nn.Conv2d(32, 64, 4, 2), g), nn.ReLU(),
        _orthogonal(nn.Conv2d(64, 64, 3, 1), g), nn.ReLU(), nn.Flatten(),
        _orthogonal(nn.Linear(64 * 7 * 7, 512), g), nn.ReLU(),
    )
    return net, 512


def mlp(inputs: int, hidden: list[int], activation: type[nn.Module]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [_orthogonal(nn.Linear(inputs, width), math.sqrt(2)), activation()]
        inputs = width
    return nn.Sequential(*layers), inputs


class ActorCritic(nn.Module):
    """One trunk, a policy head (logits, or the Gaussian's mean plus a learned state-independent log-std) and a
    value head. With `share_trunk: false` the policy and the value each get their own copy of the trunk (the
    layout of stable-baselines3's `MlpPolicy`)."""

    def __init__(self, observation_shape: tuple[int, ...], action_type: str, action_dim: int, hidden: list[int],
                 activation: str, share_trunk: bool, log_std_init: float) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]

        def trunk() -> tuple[nn.Module, int]:
            if len(observation_shape) == 3:  # stacked frames
                return nature_cnn(observation_shape[0])
            return mlp(math.prod(observation_shape), hidden, act)

        self.images = len(observation_shape) == 3
        self.policy_trunk, features = trunk()
        self.value_trunk = None if share_trunk else trunk()[0]
        self.policy_head = _orthogonal(nn.Linear(features, action_dim), 0.01)
        self.value_head = _orthogonal(nn.Linear(features, 1), 1.0)
        self.continuous = action_type == "continuous"
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init))) if self.continuous else None

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(B, *obs) -> policy output (B, A) (logits or Gaussian mean) and values (B,)."""
        x = obs.float() / 255.0 if self.images else obs.float()
        features = self.policy_trunk(x)
        value_features = features if self.value_trunk is None else self.value_trunk(x)
        return self.policy_head(features), self.value_head(value_features).squeeze(-1)

    def log_prob_entropy(self, out: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        if self.continuous:
            log_std = self.log_std.expand_as(out)
            return gaussian_log_prob(actions, out, log_std), gaussian_entropy(log_std)
        log_p = F.log_softmax(out, dim=-1)
        return log_p.gather(1, actions.long().unsqueeze(1)).squeeze(1), categorical_entropy(out)

    def sample(self, out: Tensor, deterministic: bool) -> Tensor:
        if self.continuous:
            return out if deterministic else out + torch.randn_like(out) * self.log_std.exp()
        if deterministic:
            return out.argmax(-1)
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits), in two elementwise ops
        return (out.float() - torch.empty_like(out, dtype=torch.float32).exponential_().log()).argmax(-1)


# ---- the technique -----------------------------------------------------------------------------------------------


class A2C(Technique):
    """Synchronous advantage actor-critic. Use with `datamodules.GymEnv`.

    Args:
        n_steps: steps each actor takes per update (the rollout length).
        gamma: discount factor.
        gae_lambda: GAE's lambda; 1 gives the n-step returns of the A2C/A3C paper.
        normalize_advantage: standardise the advantages of each rollout.
        vf_coef: weight of the value loss.
        ent_coef: weight of the entropy bonus.
        max_grad_norm: clip the gradient's global norm to this before each step (0: no clipping).
        optimizer: `rmsprop` (the paper's; alpha 0.99, eps `optimizer_eps`) or `adam`.
        lr: learning rate.
        optimizer_eps: the optimizer's epsilon (1e-5, stable-baselines3's default for A2C).
        lr_schedule: `constant`, or `linear` decay to 0 over the run's updates (max_steps or max_epochs).
        hidden: widths of the MLP trunk's layers (vector observations).
        activation: `tanh` or `relu` (MLP trunk).
        share_trunk: one trunk for the policy and the value (the default), or one each.
        log_std_init: initial log standard deviation of the Gaussian policy (continuous actions).
        env_steps_per_epoch: environment steps, summed over all actors and processes, per epoch; validation runs
            after each epoch (by `check_val_every_n_epoch`).
        eval_episodes: episodes played by `validate` and `test`.
        eval_seeds: which episodes the evaluations during fit play. `fresh` (the default): new ones each time, the
            k-th evaluation of the run (k = 1, 2, ..., counted in checkpoints, so a resumed run goes on with the
            next) seeding episode i with `eval_seed + k * eval_episodes + i` (the datamodule's `eval_seed`), so
            that every evaluation is an independent estimate and a stopping rule or best-checkpoint choice is not
            tuned to one set of start states. `fixed`: the same episodes every time, `eval_seed + i` (evaluations
            compare the policies on identical episodes). `test`, `validate` outside fit and fit's sanity check
            always play the fixed set, `eval_seed + i` for i < `eval_episodes`, the same for every checkpoint.
        eval_deterministic: evaluate the policy's mode (argmax / mean) rather than sampled actions.
        eval_video: record the first evaluation episode of each validate/test as MP4 under `<run dir>/videos`
            (needs the `video` extra: moviepy).
        observation_shape: shape of an observation; taken from the datamodule when not given.
        action_type: `discrete` or `continuous`; taken from the datamodule when not given.
        action_dim: number of actions (discrete) or action dimensions (continuous); from the datamodule.
    """

    def __init__(
        self,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        normalize_advantage: bool = False,
        vf_coef: float = 0.5,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        optimizer: Literal["rmsprop", "adam"] = "rmsprop",
        lr: float = 7e-4,
        optimizer_eps: float = 1e-5,
        lr_schedule: Literal["constant", "linear"] = "constant",
        hidden: tuple[int, ...] = (64, 64),
        activation: Literal["tanh", "relu"] = "tanh",
        share_trunk: bool = True,
        log_std_init: float = 0.0,
        env_steps_per_epoch: int = 10_000,
        eval_episodes: int = 10,
        eval_seeds: Literal["fresh", "fixed"] = "fresh",
        eval_deterministic: bool = True,
        eval_video: bool = False,
        observation_shape: tuple[int, ...] | None = None,
        action_type: Literal["discrete", "continuous"] | None = None,
        action_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if n_steps < 1 or env_steps_per_epoch < 1 or eval_episodes < 1:
            raise ConfigError("n_steps, env_steps_per_epoch and eval_episodes must be 1 or more.")
        if not (0.0 <= gamma <= 1.0 and 0.0 <= gae_lambda <= 1.0):
            raise ConfigError(f"gamma and gae_lambda must be in [0, 1], got {gamma} and {gae_lambda}.")
        if vf_coef < 0 or ent_coef < 0 or max_grad_norm < 0:
            raise ConfigError("vf_coef, ent_coef and max_grad_norm must be 0 or more.")
        if eval_seeds not in ("fresh", "fixed"):
            raise ConfigError(f"eval_seeds must be 'fresh' or 'fixed', got {eval_seeds!r}.")
        if eval_video and importlib.util.find_spec("moviepy") is None:
            raise ConfigError('eval_video needs moviepy: pip install "lightning-gen[video]".')
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.envs = None
        self._obs: np.ndarray | None = None
        self._finished: list[tuple[float, int]] = []  # (return, length) of episodes ended since the last log
        self.env_steps = 0
        self.evaluations = 0  # evaluations done during fit (sanity check excluded): numbers the fresh episode sets

    # ---- the environments (an `Environments` datamodule such as GymEnv) and the network built for them ---------
    def environments(self) -> Environments:
        """The trainer's datamodule, which must offer environments (the `Environments` protocol: GymEnv)."""
        dm = self.datamodule
        if not isinstance(dm, Environments):
            raise ConfigError("A2C plays gymnasium environments: use `--data datamodules.GymEnv --data.env_id "
                              "CartPole-v1` (see configs/a2c/cartpole.yaml).")
        return dm

    def resolve_spaces(self) -> None:
        """The observation shape and the action type and count, from the environments when there are some (checked
        against the model's own, e.g. a checkpoint's) and stored in the hyperparameters."""
        hp = self.hparams
        dm = self.datamodule
        if not isinstance(dm, Environments):
            if hp.observation_shape is None or hp.action_type is None or hp.action_dim is None:
                self.environments()  # raises: nothing says what to build
            return
        space = dm.action_space
        continuous = isinstance(space, gymnasium.spaces.Box)  # else Discrete, with `n` actions
        spec = (tuple(dm.observation_space.shape), "continuous" if continuous else "discrete",
                int(np.prod(space.shape)) if continuous else int(space.n))
        if hp.observation_shape is not None and (tuple(hp.observation_shape), hp.action_type, hp.action_dim) != spec:
            raise ConfigError(
                f"this A2C was built for observations {tuple(hp.observation_shape)} and {hp.action_dim} "
                f"{hp.action_type} actions, but {dm.env_id} has {spec[0]} and {spec[2]} {spec[1]} actions. Use the "
                "environment it was trained on."
            )
        if continuous and hp.action_type is None:  # said once, when the model is first built for this environment
            rank_zero_info(
                f"A2C: {dm.env_id} has continuous actions ({spec[2]} dimension{'s' if spec[2] > 1 else ''}): a "
                "Gaussian policy (learned log-std), "
                f"its actions clipped to [{float(space.low.min()):g}, {float(space.high.max()):g}] when sent to the "
                "environment."
            )
        hp.observation_shape, hp.action_type, hp.action_dim = spec

    def setup(self, stage: str) -> None:
        self.action_space = self.environments().action_space  # `act` clips continuous actions to its bounds
        self.resolve_spaces()
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError("A2C does not run under 16-mixed (its gradient clipping needs unscaled gradients, and "
                              "float16 speeds up nothing in these small networks): use 32-true or bf16-mixed.")

    def build(self) -> None:
        self.resolve_spaces()
        hp = self.hparams
        self.net = ActorCritic(tuple(hp.observation_shape), hp.action_type, hp.action_dim, list(hp.hidden),
                               hp.activation, hp.share_trunk, hp.log_std_init)

    # ---- data: `GymEnv`'s training loader yields one item per update ----------------------------------------
    def updates_per_epoch(self) -> int:
        """Updates per epoch (on every process) that make about `env_steps_per_epoch` environment steps over all
        actors and processes (the `RolloutTechnique` protocol: GymEnv sizes its epochs with it). A method, not a
        property: it reads the trainer and the datamodule, and Python 3.11's protocol `isinstance` would evaluate
        a property."""
        per_update = self.hparams.n_steps * self.environments().num_envs * self.trainer.world_size
        return max(1, math.ceil(self.hparams.env_steps_per_epoch / per_update))

    def on_train_start(self) -> None:
        self.envs, self._obs = self.environments().make_actors(self.global_rank)

    def on_train_end(self) -> None:
        if self.envs is not None:
            self.envs.close()
            self.envs = None

    # ---- training --------------------------------------------------------------------------------------------
    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(B, *obs) -> policy output (logits or Gaussian mean) (B, A), values (B,)."""
        return self.net(obs)

    @torch.no_grad()
    def act(self, obs: np.ndarray | Tensor, deterministic: bool) -> tuple[Tensor, np.ndarray, Tensor]:
        """Actions for a batch of observations: (the policy's actions, those sent to the environments, values)."""
        out, value = self.net(torch.as_tensor(obs, device=self.device))
        action = self.net.sample(out, deterministic)
        env_action = action.cpu().numpy()
        if self.net.continuous:  # the environment gets the action clipped to its bounds; the policy keeps its own
            env_action = np.clip(env_action, self.action_space.low, self.action_space.high)
        return action, env_action, value

    @torch.no_grad()
    def collect(self) -> dict[str, Tensor]:
        """`n_steps` steps of every actor with the current policy: a rollout of (T, N) tensors."""
        hp = self.hparams
        obs, actions, rewards, dones, values = [], [], [], [], []
        for _ in range(hp.n_steps):
            obs.append(torch.as_tensor(self._obs, device=self.device))
            action, env_action, value = self.act(obs[-1], deterministic=False)
            next_obs, reward, terminated, truncated, info = self.envs.step(env_action)
            reward = torch.as_tensor(reward, dtype=torch.float32, device=self.device)
            cut = truncated & ~terminated
            if cut.any():  # bootstrap a time-limit cut from the value of the state where it was cut
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
                reward[torch.as_tensor(np.flatnonzero(cut), device=self.device)] += hp.gamma * self.net(
                    torch.as_tensor(final, device=self.device))[1].float()
            if "final_info" in info:
                self._record_episodes(info)
            actions.append(action)
            rewards.append(reward)
            dones.append(torch.as_tensor(terminated | truncated, dtype=torch.float32, device=self.device))
            values.append(value.float())
            self._obs = next_obs
        last_value = self.net(torch.as_tensor(self._obs, device=self.device))[1].float()
        self.env_steps += hp.n_steps * self.envs.num_envs * self.trainer.world_size
        return {"obs": torch.stack(obs), "actions": torch.stack(actions), "rewards": torch.stack(rewards),
                "dones": torch.stack(dones), "values": torch.stack(values), "last_value": last_value}

    def _record_episodes(self, info: dict) -> None:
        episode, mask = info["final_info"].get("episode"), info["final_info"].get("_episode")
        if episode is None:
            return
        for i in np.flatnonzero(mask):
            self._finished.append((float(episode["r"][i]), int(episode["l"][i])))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        hp = self.hparams
        rollout = self.collect()
        advantages, returns = gae_advantages(rollout["rewards"], rollout["values"], rollout["dones"],
                                             rollout["last_value"], hp.gamma, hp.gae_lambda)
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (T, N, ...) -> (T*N, ...)
        advantages, returns = flat(advantages), flat(returns)
        if hp.normalize_advantage and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        opt = self.optimizers()
        with self.optimizing(opt, self.net, clip_norm=hp.max_grad_norm) as step:
            out, values = self.net(flat(rollout["obs"]))  # (T*N, A), (T*N,)
            log_prob, entropy = self.net.log_prob_entropy(out.float(), flat(rollout["actions"]))
            loss, policy_loss, value_loss, mean_entropy = a2c_loss(log_prob, entropy, values.float(), advantages,
                                                                  returns, hp.vf_coef, hp.ent_coef)
            step(loss)
        if logs_this_step(self.trainer):
            values_flat = flat(rollout["values"])
            explained = 1.0 - (returns - values_flat).var() / returns.var().clamp_min(1e-8)
            self.log_dict({"train/loss": loss.detach(), "train/policy_loss": policy_loss.detach(),
                           "train/value_loss": value_loss.detach(), "train/entropy": mean_entropy.detach(),
                           "train/explained_variance": explained, "train/lr": opt.param_groups[0]["lr"],
                           "charts/env_steps": float(self.env_steps)})
            if self._finished:
                returns_, lengths = zip(*self._finished)
                self.log_dict({"charts/episodic_return": float(np.mean(returns_)),
                               "charts/episodic_length": float(np.mean(lengths))}, prog_bar=True)
                self._finished.clear()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # foreach: one kernel per step over all the (small) tensors; PyTorch picks it only for CUDA by default
        if hp.optimizer == "rmsprop":
            opt = torch.optim.RMSprop(self.parameters(), lr=hp.lr, alpha=0.99, eps=hp.optimizer_eps, foreach=True)
        else:
            opt = torch.optim.Adam(self.parameters(), lr=hp.lr, eps=hp.optimizer_eps, foreach=True)
        if hp.lr_schedule == "constant":
            return opt
        # linear: after update u of U, lr * (1 - u / U), U the run's updates (max_steps, or max_epochs' worth);
        # `interval: step`: `Technique.optimizing` steps it after every update
        updates = max(1, int(self.trainer.estimated_stepping_batches))
        return [opt], [{"scheduler": LambdaLR(opt, LinearDecay(constant=0, decay=updates, offset=0)),
                        "interval": "step"}]

    # ---- checkpoints: the step and evaluation counters travel with the weights ----------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["a2c_env_steps"] = self.env_steps
        checkpoint["a2c_evaluations"] = self.evaluations

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.env_steps = int(checkpoint.get("a2c_env_steps", 0))
        self.evaluations = int(checkpoint.get("a2c_evaluations", 0))

    # ---- evaluation: whole episodes ---------------------------------------------------------------------------
    def evaluation_seeds(self, k: int, episodes: int) -> list[int]:
        """The seeds of evaluation set k: `eval_seed + k * episodes + i`, i < `episodes` (k = 0: the fixed set)."""
        base = self.environments().eval_seed + k * episodes
        return list(range(base, base + episodes))

    def play(self, episodes: int, deterministic: bool, video_dir: Path | None = None,
             k: int = 0) -> tuple[list[float], list[int]]:
        """Play `episodes` episodes on a new evaluation environment, those of set k (episode i seeded
        eval_seed + k * episodes + i; k = 0 the fixed set); returns their (unclipped) returns and lengths. Every
        process plays the same episodes, so every process reports the same."""
        dm = self.environments()
        returns, lengths = [], []
        with closing(dm.make_evaluator(video_dir=video_dir)) as env, eval_mode(self.net):
            for seed in self.evaluation_seeds(k, episodes):
                obs, _ = env.reset(seed=seed)
                total, length, done = 0.0, 0, False
                while not done:
                    _, env_action, _ = self.act(obs[None], deterministic)
                    obs, reward, terminated, truncated, _ = env.step(env_action[0])
                    total, length, done = total + float(reward), length + 1, bool(terminated or truncated)
                returns.append(total)
                lengths.append(length)
        return returns, lengths

    def _evaluate(self, stage: str) -> None:
        hp = self.hparams
        video_dir = run_dir(self.trainer) / "videos" / f"{stage}_epoch{self.current_epoch:04d}" if hp.eval_video \
            else None
        # the k-th evaluation during fit plays set k (fresh) or set 0 (fixed); test, validate outside fit and the
        # sanity check play set 0. The counter is saved in checkpoints: a resumed run goes on with new sets.
        counted = stage == "val" and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking
        k = self.evaluations + 1 if counted and hp.eval_seeds == "fresh" else 0
        start = time.perf_counter()
        returns, lengths = self.play(hp.eval_episodes, hp.eval_deterministic, video_dir, k=k)
        if counted:
            self.evaluations += 1
        # every process played the same episodes: the values agree, and the sync only keeps Lightning content
        self.log(f"{stage}/episodic_return", float(np.mean(returns)), prog_bar=True, sync_dist=True)
        self.log_dict({f"{stage}/episodic_return_std": float(np.std(returns)),
                       f"{stage}/episodic_length": float(np.mean(lengths)),
                       f"{stage}/seconds": time.perf_counter() - start}, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate("test")
