"""A2C against stable-baselines3: this project's `A2C` (configs/a2c/<env>.yaml) vs SB3's A2C with its
rl-baselines3-zoo hyperparameters, same machine, same run, on CartPole-v1 or LunarLander-v3.

- CartPole-v1 (configs/a2c/cartpole.yaml; zoo: 8 environments, ent_coef 0, the rest SB3's defaults).
- LunarLander-v3 (configs/a2c/lunarlander.yaml; zoo, for LunarLander-v2: 8 environments, gamma 0.995, n_steps 5,
  learning rate 0.00083 decayed linearly to 0, ent_coef 1e-5; v3 is v2 with bugs fixed). Needs
  `pip install "lightning-gen[box2d]"`.

Every 10,000 environment steps both are evaluated on the same 20 episodes with their deterministic policies, with
the training clock paused: evaluation k (after 10,000 * k training steps, k = 1, 2, ...) of every method and every
training seed plays episodes reset with seeds BASE + 20 * k + i, i = 0..19 (BASE = 1,000,000), so each evaluation
plays new start states and both methods play the same ones. Ours uses the library's `A2C(eval_seeds="fresh")` with
`GymEnv(eval_seed=BASE)`; SB3's are played by an explicit loop on one gymnasium environment with
`model.predict(obs, deterministic=True)`. Per run: training throughput (env steps per training second), the env
steps and training seconds at which the evaluation mean first reaches the environment's threshold (475 for
CartPole, 200 for LunarLander), those from which every later evaluation stays at or above it (A2C tends to collapse
after a first hit), and the final evaluation. Then the medians, the mean +- std of the final evaluations, and the
ratios ours / SB3. Needs `pip install "lightning-gen[bench]"` (stable-baselines3).

    python bench/a2c_zoo.py [--env cartpole | lunarlander] [--seeds 0 1 2] [--steps N] [--methods lightning_gen sb3]
        [--config configs/a2c/<env>.yaml] [--threads 1]

`--steps` defaults to 300,000 for CartPole and to the zoo's 200,000 for LunarLander. `--threads` sets torch's
intra-op threads for both methods (default: torch's own choice, one per core). These networks are too small to gain
from several threads, and on a machine that other jobs share, threads that wait on each other slow both methods by
an order of magnitude; one thread measures the algorithms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import gymnasium
import lightning as L
import numpy as np
import torch
import yaml

from common import ROOT

EVAL_EVERY, EVAL_EPISODES = 10_000, 20
BASE = 1_000_000  # evaluation k plays the episodes seeded BASE + EVAL_EPISODES * k + i, for both methods


def sb3_linear(initial: float):
    """The zoo's `lin_<initial>`: the learning rate decays linearly from `initial` to 0 over the run."""
    return lambda progress_remaining: progress_remaining * initial


# per environment: gymnasium id, our recipe, default training steps, the return that counts as solved, and SB3's A2C
# keyword arguments from rl-baselines3-zoo's hyperparams/a2c.yml (n_envs 8 for both)
ENVS = {
    "cartpole": {"env_id": "CartPole-v1", "config": ROOT / "configs" / "a2c" / "cartpole.yaml", "steps": 300_000,
                 "solved": 475.0, "sb3": {"ent_coef": 0.0}},
    "lunarlander": {"env_id": "LunarLander-v3", "config": ROOT / "configs" / "a2c" / "lunarlander.yaml",
                    "steps": 200_000, "solved": 200.0,
                    "sb3": {"gamma": 0.995, "n_steps": 5, "learning_rate": sb3_linear(0.00083), "ent_coef": 1e-5}},
}


def evaluation_seeds(k: int) -> list[int]:
    """The seeds of evaluation k (after EVAL_EVERY * k training steps), the same for every method and run."""
    return [BASE + EVAL_EPISODES * k + i for i in range(EVAL_EPISODES)]


class TrainingClock(L.Callback):
    """Training seconds (validation excluded) and the evaluations: (env steps, training seconds, mean return)."""

    def __init__(self) -> None:
        self.evals: list[tuple[int, float, float]] = []
        self.seconds, self._since = 0.0, None

    def on_train_epoch_start(self, trainer, pl_module):
        self._since = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        if self._since is not None and trainer.state.fn == "fit":
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            episodic_return = float(trainer.callback_metrics["val/episodic_return"])
            self.evals.append((pl_module.env_steps, self.seconds, episodic_return))
            self._since = time.perf_counter()


def run_ours(seed: int, steps: int, config_path: Path) -> list[tuple[int, float, float]]:
    from datamodules import GymEnv
    from lightning_gen import A2C

    config = yaml.safe_load(Path(config_path).read_text())
    L.seed_everything(seed, verbose=False)
    # the library's fresh evaluations: the k-th plays the episodes seeded eval_seed + eval_episodes * k + i
    model_args = {**config["model"]["init_args"], "env_steps_per_epoch": EVAL_EVERY, "eval_episodes": EVAL_EPISODES,
                  "eval_seeds": "fresh"}
    data = GymEnv(**{**config["data"]["init_args"], "seed": seed, "eval_seed": BASE})
    clock = TrainingClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=steps // EVAL_EVERY, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(A2C(**model_args), datamodule=data)
    return clock.evals


def run_sb3(seed: int, steps: int, env_id: str, hyperparameters: dict) -> list[tuple[int, float, float]]:
    from stable_baselines3 import A2C as SB3A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    def evaluate(model, env, k: int) -> float:
        """Mean return of the deterministic policy over the episodes of evaluation k."""
        returns = []
        for seed in evaluation_seeds(k):
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(int(action))
                total, done = total + float(reward), bool(terminated or truncated)
            returns.append(total)
        return float(np.mean(returns))

    class Evaluate(BaseCallback):
        def __init__(self, eval_env) -> None:
            super().__init__()
            self.eval_env, self.evals, self.seconds, self.next = eval_env, [], 0.0, EVAL_EVERY

        def _on_training_start(self) -> None:
            self.since = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.seconds += time.perf_counter() - self.since
                mean = evaluate(self.model, self.eval_env, self.next // EVAL_EVERY)
                self.evals.append((self.num_timesteps, self.seconds, mean))
                self.next += EVAL_EVERY
                self.since = time.perf_counter()
            return True

    env = make_vec_env(env_id, n_envs=8, seed=seed)
    eval_env = gymnasium.make(env_id)
    callback = Evaluate(eval_env)
    model = SB3A2C("MlpPolicy", env, seed=seed, device="cpu", **hyperparameters)
    model.learn(total_timesteps=steps, callback=callback)
    eval_env.close()
    return callback.evals


def summarise(evals: list[tuple[int, float, float]], solved: float) -> dict:
    """Throughput, first hit of `solved`, the point from which every later evaluation stays >= it, final return."""
    steps, seconds = evals[-1][0], evals[-1][1]
    first = next(((s, t) for s, t, r in evals if r >= solved), None)
    stable = None
    for i, (s, t, _) in enumerate(evals):
        if all(r >= solved for _, _, r in evals[i:]):
            stable = (s, t)
            break
    return {"sps": steps / seconds, "first": first, "stable": stable, "final": evals[-1][2]}


def fmt(point: tuple[int, float] | None) -> str:
    return "never" if point is None else f"{point[0] / 1000:.0f}k / {point[1]:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cartpole", choices=list(ENVS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training env steps per run (default: per --env)")
    parser.add_argument("--methods", nargs="+", default=["lightning_gen", "sb3"], choices=["lightning_gen", "sb3"])
    parser.add_argument("--config", default=None, help="this project's recipe (default: configs/a2c/<env>.yaml)")
    parser.add_argument("--out", default=None, help="default: bench/out/a2c_<env>")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = ENVS[args.env]
    steps, solved = args.steps or env["steps"], env["solved"]
    config = Path(args.config or env["config"])
    if yaml.safe_load(config.read_text())["data"]["init_args"]["env_id"] != env["env_id"]:
        parser.error(f"{config} does not train {env['env_id']}; give --config a recipe for it")
    out = Path(args.out or ROOT / "bench" / "out" / f"a2c_{args.env}")
    out.mkdir(parents=True, exist_ok=True)
    runners = {"lightning_gen": lambda seed, steps: run_ours(seed, steps, config),
               "sb3": lambda seed, steps: run_sb3(seed, steps, env["env_id"], env["sb3"])}
    print(f"{env['env_id']}, {steps} env steps per run, evaluation: {EVAL_EPISODES} deterministic episodes every "
          f"{EVAL_EVERY} steps, evaluation k seeded {BASE} + {EVAL_EPISODES}k + i for both methods (training clock "
          f"paused), {torch.get_num_threads()} torch threads")
    print(f"| method | seed | env steps/s (training) | first eval >= {solved:g} (steps / s) "
          f"| stable >= {solved:g} from (steps / s) | final eval return |")
    print("|---|---|---|---|---|---|", flush=True)
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:  # interleaved, so drifts in machine load hit both alike
            evals = runners[method](seed, steps)
            np.savetxt(out / f"{method}_seed{seed}.csv", np.array(evals), delimiter=",",
                       header="env_steps,train_seconds,eval_return")
            row = summarise(evals, solved)
            results[method].append(row)
            print(f"| {method} | {seed} | {row['sps']:.0f} | {fmt(row['first'])} | {fmt(row['stable'])} | "
                  f"{row['final']:.1f} |", flush=True)
    print(f"\n| method | median env steps/s | median stable-{solved:g} point (steps / s) | runs stable | median final "
          "| final, mean +- std |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for method, rows in results.items():
        stable = [r["stable"] for r in rows if r["stable"] is not None]
        # runs that never became stable count as infinitely late in the median
        steps_m = statistics.median([s for s, _ in stable] + [float("inf")] * (len(rows) - len(stable)))
        secs_m = statistics.median([t for _, t in stable] + [float("inf")] * (len(rows) - len(stable)))
        medians[method] = (statistics.median(r["sps"] for r in rows), secs_m)
        point = "never" if steps_m == float("inf") else f"{steps_m / 1000:.0f}k / {secs_m:.0f} s"
        finals = [r["final"] for r in rows]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(f"| {method} | {medians[method][0]:.0f} | {point} | {len(stable)}/{len(rows)} | "
              f"{statistics.median(finals):.1f} | {statistics.mean(finals):.1f} +- {spread:.1f} |")
    if set(medians) == {"lightning_gen", "sb3"}:
        ours, sb3 = medians["lightning_gen"], medians["sb3"]
        print(f"\nthroughput ratio (lightning_gen / SB3, medians): {ours[0] / sb3[0]:.3f}; stable-{solved:g} training "
              f"time: lightning_gen {ours[1]:.0f} s vs SB3 {sb3[1]:.0f} s")


if __name__ == "__main__":
    main()
