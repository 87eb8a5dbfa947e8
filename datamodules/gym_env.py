"""Reinforcement-learning environments as a datamodule: gymnasium vector environments for the actors, and the
evaluation environment, for `lightning_gen.A2C`.

An RL technique has no dataset; its data is what the environments return. This datamodule owns them, so the
model's config stays the algorithm's and `--data.env_id` picks the problem. Under DDP every process builds its
own `num_envs` environments, seeded `seed + rank * num_envs + i`, so `--trainer.devices k` runs k times as many
actors, each on its own episodes.

Atari games (`ALE/Pong-v5`, `PongNoFrameskip-v4`, ...; ROMs ship in the `ale-py` wheel) get the standard
preprocessing: no-op starts (up to 30), frame skip 4 with max-pooling (for the `NoFrameskip` ids; `ALE/*-v5` ids
skip frames themselves, so the preprocessing takes them unskipped), 84x84 grayscale, 4 stacked frames, rewards
clipped to their sign for training (episode returns are reported unclipped).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from datamodules.base import DataError, Ticks

Vectorization = Literal["sync", "async"]

# optional packages behind some environment families: (modules, pip extra that installs them)
_ATARI = (("ale_py", "cv2"), 'pip install "lightning-gen[atari]"  (ale-py with the game ROMs, and OpenCV)')
_BOX2D = (("Box2D", "pygame"), 'pip install "lightning-gen[box2d]"  (gymnasium[box2d])')
_FAMILIES = {"ALE/": _ATARI, "NoFrameskip": _ATARI, "LunarLander": _BOX2D, "BipedalWalker": _BOX2D,
             "CarRacing": _BOX2D}


def _gym():
    try:
        return importlib.import_module("gymnasium")
    except ImportError as err:
        raise DataError('A2C needs gymnasium: pip install "lightning-gen[rl]".') from err


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def check_env_id(env_id: str) -> None:
    """Refuse an unknown id or one whose optional package is missing, naming the fix, before anything starts."""
    gym = _gym()
    for marker, (modules, install) in _FAMILIES.items():
        if marker not in env_id:
            continue
        for module in modules:
            try:
                mod = importlib.import_module(module)
            except ImportError as err:
                raise DataError(f"environment {env_id!r} needs the `{module}` package: {install}.") from err
            if module == "ale_py":
                gym.register_envs(mod)
    if env_id not in gym.registry:
        close = sorted(k for k in gym.registry if k.split("/")[-1][:4].lower() == env_id.split("/")[-1][:4].lower())
        hint = f" Similar ids: {', '.join(close[:8])}." if close else ""
        raise DataError(f"unknown gymnasium environment id {env_id!r}.{hint} `python -c \"import gymnasium; "
                        "print(list(gymnasium.registry))\"` lists the registered ones.")


def first_episode(episode: int) -> bool:
    """`RecordVideo`'s trigger: record episode 0 only."""
    return episode == 0


def sign_reward(reward: float) -> float:
    """Atari training rewards clipped to their sign (-1, 0, 1)."""
    return float(np.sign(reward))


def make_env(env_id: str, env_kwargs: dict[str, Any], training: bool, video_dir: str | None = None) -> Any:
    """One environment with episode statistics (unclipped returns) and, for Atari, the standard preprocessing.
    With `video_dir`, the first episode is recorded there as MP4 (needs moviepy)."""
    gym = _gym()
    if is_atari(env_id):  # registered here too, for environments built in subprocesses
        gym.register_envs(importlib.import_module("ale_py"))
    kwargs = dict(env_kwargs)
    if is_atari(env_id) and env_id.startswith("ALE/"):
        kwargs.setdefault("frameskip", 1)  # the preprocessing skips frames itself
    if video_dir is not None:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, **kwargs)
    if video_dir is not None:
        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=first_episode,
                                       disable_logger=True)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if is_atari(env_id):
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
        env = gym.wrappers.FrameStackObservation(env, 4)  # (4, 84, 84) uint8
        if training:
            env = gym.wrappers.TransformReward(env, sign_reward)
    return env


class GymEnv(L.LightningDataModule):
    """gymnasium environments for the actors (a vector of `num_envs` per process) and for evaluation.

    Args:
        env_id: any registered gymnasium id, e.g. `CartPole-v1`, `Acrobot-v1`, `Pendulum-v1`, `LunarLander-v3`
            (needs the `box2d` extra), `ALE/Pong-v5` or `PongNoFrameskip-v4` (the `atari` extra).
        env_kwargs: keyword arguments of `gymnasium.make` (e.g. `{continuous: true}` for LunarLander).
        num_envs: parallel environments per process (the A2C actors).
        vectorization: `sync` (all in this process; best for cheap environments like CartPole) or `async`
            (one subprocess each; for expensive ones like Atari).
        seed: seed of the first training environment; the others and the other processes count up from it.
        eval_seed: seed of the first evaluation episode (episode i uses eval_seed + i; with A2C's `eval_seeds:
            fresh`, the k-th evaluation during fit uses eval_seed + k * eval_episodes + i).
    """

    env_id: str
    """The gymnasium id of the environment."""
    num_envs: int
    """Training environments per process (the actors)."""
    eval_seed: int
    """Seed of the first evaluation episode (episode i uses `eval_seed + i`; A2C's fresh evaluations count on from
    it, see `A2C.evaluation_seeds`)."""
    observation_space: Any
    """The environment's `gymnasium.spaces.Space` of observations (Atari: `Box(0, 255, (4, 84, 84), uint8)`)."""
    action_space: Any
    """The environment's `gymnasium.spaces.Discrete` or `Box` of actions."""

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        env_kwargs: dict[str, Any] | None = None,
        num_envs: int = 8,
        vectorization: Vectorization = "sync",
        seed: int = 0,
        eval_seed: int = 1_000_000,
    ) -> None:
        super().__init__()
        if num_envs < 1:
            raise DataError(f"num_envs must be 1 or more, got {num_envs}.")
        if vectorization not in ("sync", "async"):
            raise DataError(f"vectorization must be 'sync' or 'async', got {vectorization!r}.")
        check_env_id(env_id)
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.num_envs, self.vectorization = num_envs, vectorization
        self.seed, self.eval_seed = seed, eval_seed
        probe = make_env(env_id, self.env_kwargs, training=False)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        gym = _gym()
        if not isinstance(self.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise DataError(f"{env_id} has a {type(self.action_space).__name__} action space; A2C handles Discrete "
                            "(categorical policy) and Box (Gaussian policy).")

    def actor_seeds(self, rank: int) -> list[int]:
        """The training environments' seeds on process `rank`: distinct across processes."""
        return [self.seed + rank * self.num_envs + i for i in range(self.num_envs)]

    def make_actors(self, rank: int) -> tuple[Any, np.ndarray]:
        """This process's vector of training environments, reset with its seeds. Returns (envs, first obs)."""
        gym = _gym()
        # module-level function + partial, no lambdas: picklable for `async` environments under any start method
        fns: list[Callable[[], Any]] = [
            functools.partial(make_env, self.env_id, self.env_kwargs, training=True) for _ in range(self.num_envs)
        ]
        mode = gym.vector.AutoresetMode.SAME_STEP  # a finished episode's last observation comes in the info
        cls = gym.vector.SyncVectorEnv if self.vectorization == "sync" else gym.vector.AsyncVectorEnv
        envs = cls(fns, autoreset_mode=mode)
        obs, _ = envs.reset(seed=self.actor_seeds(rank))
        envs.action_space.seed(self.actor_seeds(rank)[0])
        return envs, obs

    def make_evaluator(self, video_dir: str | None = None) -> Any:
        """One environment for evaluation episodes (rewards unclipped), optionally recording its first episode."""
        return make_env(self.env_id, self.env_kwargs, training=False, video_dir=video_dir)

    # ---- loaders: the environments are the data; these only pace the loops --------------------------------
    def train_dataloader(self) -> DataLoader:
        """One item per update of the model: `model.updates_per_epoch()` items per epoch on every process."""
        from lightning_gen.core.protocols import RolloutTechnique  # here: lightning_gen imports datamodules

        model = self.trainer.lightning_module
        if not isinstance(model, RolloutTechnique):
            raise DataError(f"GymEnv feeds reinforcement-learning models such as `lightning_gen.A2C`, not "
                            f"{type(model).__name__}.")
        return DataLoader(Ticks(model.updates_per_epoch()), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        """One item: the model plays its evaluation episodes in one step."""
        return DataLoader(Ticks(1), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(Ticks(1), batch_size=1)


__all__ = ["GymEnv", "check_env_id", "is_atari", "make_env"]
