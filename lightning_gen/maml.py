"""MAML: model-agnostic meta-learning (Finn, Abbeel & Levine, ICML 2017, arXiv:1703.03400), with first-order MAML
(FOMAML, same paper) and Meta-SGD's learned inner learning rates (Li, Zhou, Chen & Li 2017, arXiv:1707.09835).

MAML learns initial weights theta from which a few gradient steps on a new task's few examples fit that task. For a
task T with a support set (its K examples of each class) and a query set (other examples of the same classes):

    inner loop:  theta'_T = theta - alpha * grad L_support(T)(theta)            (`inner_steps` such steps)
    outer loss:  L(theta) = mean over the meta-batch of tasks T of L_query(T)(theta'_T)
    outer step:  theta <- Adam(theta, grad_theta L(theta))                       (learning rate `outer_lr`)

The outer gradient runs back through the inner steps: for one step,
grad_theta L_query(theta') = (I - alpha * H_support(theta)) grad L_query(theta'), with H the Hessian of the support
loss. First-order MAML (`first_order: true`) drops the Hessian term (the inner gradients are treated as constants).
Meta-SGD (`learn_inner_lr: true`) replaces alpha by a learned rate per weight, theta' = theta - alpha o grad, with
alpha trained by the outer step like theta.

Everything is written with `torch.func`: `functional_call` runs the network with any weights (the adapted ones)
and `grad` takes the inner gradients, which stay differentiable for the outer step. Batch norm normalises with the
statistics of the batch it is given, a task's support or query set, and keeps no running statistics
(`lightning_gen.nn.maml`), at meta-train and meta-test alike: the paper's transductive setting.

Data: batches of tasks `(support_x, support_y, query_x, query_y)` (`datamodules.Episodes` for N-way K-shot image
classification, `datamodules.Sinusoid` for regression). Under DDP each process adapts to its own share of the
meta-batch and DDP averages the meta-gradient. Evaluation adapts to each validation or test task with
`eval_inner_steps` steps and reports the mean query accuracy over tasks with its 95% confidence interval
(`accuracy_ci95` = 1.96 std / sqrt(tasks)), or the query MSE after 0, 1 and 10 steps for regression.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.func import functional_call, grad
from torchmetrics import CatMetric

from lightning_gen.core.checks import ConfigError, check_learning_rates, resolve_image_shape
from lightning_gen.core.protocols import EpisodicData
from lightning_gen.core.runs import logs_this_step
from lightning_gen.core.technique import Technique
from lightning_gen.nn.maml import ConvNet, Pool, SineMLP

Weights = dict[str, Tensor]
TaskKind = Literal["classification", "regression"]


def task_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy for class labels (int targets), mean squared error for regression targets (float); computed in
    float32 at least (outputs of bf16 autocast are promoted)."""
    outputs = outputs.to(torch.promote_types(outputs.dtype, torch.float32))
    if targets.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs, targets.to(outputs.dtype))


def adapt(net: nn.Module, weights: Weights, rates: dict[str, Tensor | float], x: Tensor, y: Tensor, steps: int,
          first_order: bool = False) -> Weights:
    """The inner loop: `steps` gradient steps on the support set (x, y) from `weights`,
    theta <- theta - alpha * grad L(theta), with `rates[name]` the alpha of each weight (a number, or a tensor of the
    weight's shape for Meta-SGD). The result stays differentiable with respect to `weights` and `rates` (through
    the inner gradients too, unless `first_order`)."""

    def support_loss(w: Weights) -> Tensor:
        return task_loss(functional_call(net, w, (x,)), y)

    for _ in range(steps):
        grads = grad(support_loss)(weights)
        if first_order:  # FOMAML: the inner gradients as constants (no second derivatives)
            grads = {name: g.detach() for name, g in grads.items()}
        weights = {name: w - rates[name] * grads[name] for name, w in weights.items()}
    return weights


def over_tasks(fn: Any, *batch: Tensor) -> Any:
    """`fn(*task)` for every task of a meta-batch (tensors with a leading task dimension), the results stacked. A
    loop: `torch.func.vmap` would batch the tasks, but its second derivative through batch norm is wrong (torch 2.14:
    it disagrees with finite differences in float64, where the loop agrees)."""
    results = [fn(*(t[i] for t in batch)) for i in range(len(batch[0]))]
    if isinstance(results[0], tuple):
        return tuple(torch.stack(r) for r in zip(*results))
    return torch.stack(results)


def rate_key(name: str) -> str:
    """A weight's name as a key of the learned rates (`nn.ParameterDict` keys cannot hold dots)."""
    return name.replace(".", "__")


class MAML(Technique):
    """Model-agnostic meta-learning for few-shot classification and regression (see the module's docstring).

    Args:
        inner_lr: alpha, the inner-loop learning rate (the paper: 0.4 for Omniglot 5-way, 0.1 for 20-way, 0.01 for
            sinusoids); with `learn_inner_lr`, the initial value of every learned rate.
        inner_steps: inner gradient steps at meta-training (the paper: 1; 5 for Omniglot 20-way). 0 trains the
            initial weights on the query sets directly: joint training on all tasks, the paper's pretrained baseline.
        eval_inner_steps: inner gradient steps when adapting to a validation or test task (the paper: 3 for
            Omniglot 5-way, 5 for 20-way, up to 10 for sinusoids).
        outer_lr: beta, Adam's learning rate for the meta-update.
        first_order: first-order MAML: the meta-gradient without the second-order term (inner gradients detached).
        learn_inner_lr: Meta-SGD: a learned inner learning rate for every element of every weight.
        filters: channels of the four convolution blocks (image tasks).
        pool: how each block halves the image: `stride` (stride-2 convolution, the paper's Omniglot network) or
            `max` (2x2 max-pooling).
        hidden: units of the two hidden layers of the regression MLP.
        ways: N, classes per task (None: regression); taken from the datamodule, stored in the checkpoint.
        image_shape: (channels, height, width) of the images; taken from the datamodule, stored in the checkpoint.
        task: `classification` or `regression`; taken from the datamodule, stored in the checkpoint.
    """

    def __init__(
        self,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int = 3,
        outer_lr: float = 1e-3,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        filters: int = 64,
        pool: Pool = "stride",
        hidden: int = 40,
        ways: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
        task: TaskKind | None = None,
    ) -> None:
        super().__init__()
        check_learning_rates(inner_lr=inner_lr, outer_lr=outer_lr)
        if inner_steps < 0 or eval_inner_steps < 0:
            raise ConfigError(f"inner_steps and eval_inner_steps must be 0 or more, got {inner_steps} and "
                              f"{eval_inner_steps}.")
        if filters < 1 or hidden < 1:
            raise ConfigError(f"filters and hidden must be 1 or more, got {filters} and {hidden}.")
        if ways is not None and ways < 2:
            raise ConfigError(f"ways must be 2 or more, got {ways}.")
        self.save_hyperparameters()

    # ---- the networks, from the tasks the datamodule makes -----------------------------------------------------
    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        if dm is not None and not isinstance(dm, EpisodicData):
            raise ConfigError(f"MAML trains on few-shot tasks, and {type(dm).__name__} gives plain batches: wrap "
                              f"labeled images in `datamodules.Episodes` (`--data Episodes --data.data "
                              f"{type(dm).__name__}`), or use `datamodules.Sinusoid`.")
        if isinstance(dm, EpisodicData):
            kind = "regression" if dm.ways is None else "classification"
            if hp.task is not None and (hp.task, hp.ways) != (kind, dm.ways):
                raise ConfigError(f"MAML was built for {hp.ways or 'regression'}-way {hp.task} tasks (the checkpoint "
                                  f"or `--model.ways`) but {type(dm).__name__} makes {dm.ways or 'regression'}-way "
                                  f"{kind} tasks: give the data `--data.ways {hp.ways}`, or start a new run.")
            hp.task, hp.ways = kind, dm.ways
        if hp.task is None:
            raise ConfigError("MAML does not know its tasks: give a task datamodule (`datamodules.Episodes`, "
                              "`datamodules.Sinusoid`) or load a trained checkpoint with `--ckpt_path`.")
        if hp.task == "classification":
            hp.image_shape = resolve_image_shape(hp.image_shape, dm, "MAML")
            self.net: nn.Module = ConvNet(tuple(hp.image_shape), hp.ways, hp.filters, pool=hp.pool)
        else:
            self.net = SineMLP(hp.hidden)
        if hp.learn_inner_lr:  # Meta-SGD: one rate per weight element, starting at inner_lr
            self.inner_lrs = nn.ParameterDict({rate_key(name): nn.Parameter(torch.full_like(w, hp.inner_lr))
                                               for name, w in self.net.named_parameters()})
        self.eval_values = CatMetric()  # per-task scores of the current evaluation, gathered across processes

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint made for other tasks (before its weights meet networks of another shape)."""
        saved = checkpoint.get("hyper_parameters") or {}
        hp = self.hparams
        if saved.get("task") is not None and (saved["task"], saved.get("ways")) != (hp.task, hp.ways):
            raise ConfigError(f"the checkpoint holds MAML for {saved.get('ways') or 'regression'}-way {saved['task']} "
                              f"tasks but the data makes {hp.ways or 'regression'}-way {hp.task} tasks: give the data "
                              f"`--data.ways {saved.get('ways')}`, or start a new run without `--ckpt_path`.")

    def forward(self, x: Tensor) -> Tensor:
        """Outputs of the initial (meta-learned, not adapted) weights: (B, C, H, W) -> (B, ways), (B, 1) -> (B, 1)."""
        return self.net(x)

    def initial_weights(self) -> Weights:
        return dict(self.net.named_parameters())

    def inner_rates(self) -> dict[str, Tensor | float]:
        """alpha of each weight: the learned tensors (Meta-SGD) or `inner_lr`."""
        if self.hparams.learn_inner_lr:
            return {name: self.inner_lrs[rate_key(name)] for name, _ in self.net.named_parameters()}
        return {name: self.hparams.inner_lr for name, _ in self.net.named_parameters()}

    def adapt(self, x: Tensor, y: Tensor, steps: int, first_order: bool = False) -> Weights:
        """The weights adapted to one task's support set (x, y) by `steps` inner steps."""
        return adapt(self.net, self.initial_weights(), self.inner_rates(), x, y, steps, first_order)

    def run(self, weights: Weights, x: Tensor) -> Tensor:
        """The network's outputs on `x` with `weights` (e.g. adapted ones)."""
        return functional_call(self.net, weights, (x,))

    # ---- meta-training ----------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        hp = self.hparams

        def task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
            fast = self.adapt(sx, sy, hp.inner_steps, hp.first_order)  # theta'_T from the support set
            outputs = self.run(fast, qx)  # (N*Q, ways) or (Q, 1)
            hits = (outputs.argmax(1) == qy).float().mean() if hp.task == "classification" else outputs.new_zeros(())
            return task_loss(outputs, qy), hits  # the query loss of the adapted weights

        # batch: (T, N*K, C, H, W), (T, N*K), (T, N*Q, C, H, W), (T, N*Q): this process's tasks of the meta-batch
        losses, accuracies = over_tasks(task, *batch)  # (T,), (T,)
        loss = losses.mean()  # the meta-objective; DDP averages its gradient over the processes
        if logs_this_step(self.trainer):
            logged = {"train/loss": loss.detach()}
            if hp.task == "classification":
                logged["train/accuracy"] = accuracies.mean()
            self.log_dict(logged, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.outer_lr)  # theta and, for Meta-SGD, alpha

    # ---- meta-validation and meta-test: adapt to each task, score its query set ---------------------------------
    def report_steps(self) -> list[int]:
        """The inner steps after which regression reports the query MSE: 0, 1, 10 and `eval_inner_steps`."""
        last = self.hparams.eval_inner_steps
        return sorted({s for s in (0, 1, 10, last) if s <= last})

    def score_task(self, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        """Adapt to one task with `eval_inner_steps` steps and score its queries: the accuracy (a scalar), or for
        regression the query MSE after each of `report_steps()` (a vector). No meta-gradient is kept."""
        hp = self.hparams
        with torch.no_grad():  # `grad` still takes the inner gradients; no graph back to the initial weights
            if hp.task == "classification":
                outputs = self.run(self.adapt(sx, sy, hp.eval_inner_steps), qx)
                return (outputs.float().argmax(1) == qy).float().mean()
            weights, done, scores = self.initial_weights(), 0, []
            for step in self.report_steps():
                weights = adapt(self.net, weights, self.inner_rates(), sx, sy, step - done)
                done = step
                scores.append(task_loss(self.run(weights, qx), qy))
            return torch.stack(scores)

    def _evaluate(self, batch: Any, batch_idx: int) -> None:
        with torch.inference_mode(False):  # Lightning evaluates in inference mode; the inner loop needs gradients
            tasks = [t.clone() for t in batch]  # normal tensors, which autograd may record
            scores = over_tasks(self.score_task, *tasks)  # (T,) or (T, len(report_steps()))
            keep = self.first_visit(batch_idx, len(scores))  # each task once under DDP
            self.eval_values.update(scores[keep])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def _log_scores(self, stage: str) -> None:
        """Mean over tasks (every process's, each once) and, for classification, the 95% confidence interval
        1.96 * std / sqrt(tasks) of the mean accuracy."""
        if self.trainer.sanity_checking or not self.eval_values.update_count:
            self.eval_values.reset()
            return
        scores = self.eval_values.compute().float()  # (tasks,) accuracies or (tasks, len(report_steps())) MSEs
        self.eval_values.reset()
        n = scores.shape[0]
        if self.hparams.task == "classification":
            mean, ci95 = scores.mean(), 1.96 * scores.std(unbiased=False) / n**0.5
            self.log_dict({f"{stage}/accuracy": mean, f"{stage}/accuracy_ci95": ci95}, sync_dist=True)
            rank_zero_info(f"{stage}: {self.hparams.ways}-way accuracy over {n} tasks: {100 * mean:.2f}% "
                           f"+- {100 * ci95:.2f}%")
        else:
            mse = scores.reshape(n, -1).mean(0)
            logged = {f"{stage}/mse_step{s}": v for s, v in zip(self.report_steps(), mse)}
            logged[f"{stage}/mse"] = mse[-1]
            self.log_dict(logged, sync_dist=True)


__all__ = ["MAML", "adapt", "rate_key", "task_loss"]
