"""Graph convolutional networks (Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks",
ICLR 2017, arXiv:1609.02907): classify the nodes of one graph from the labels of a few of them.

Two graph convolutions with the renormalised adjacency Â = D^-1/2 (A + I) D^-1/2 (`nn.graph`):

    Z = softmax(Â ReLU(Â X W0) W1)

with dropout on the input features and on the hidden layer, trained with Adam on the cross-entropy of the labeled
(training) nodes only, weight decay on the first layer only. Every node's features reach the loss through Â, which is
what lets 140 labels classify 2,708 Cora papers. `arch: mlp` is the baseline: the same two layers without Â.

The data is one graph that is one batch (`GraphData`, e.g. `datamodules.Planetoid`): `(x, adjacency, y, mask)`, the
mask choosing the stage's nodes. Under DDP every process holds the whole graph and, with the same seed, draws the same
dropout masks, so every process computes the same full-batch gradient and DDP's average of them is the one-process
gradient: more processes give the one-process result, not a speed-up (a graph this size fits one device). Evaluation
counts each node once: process r scores the nodes r, r + W, ... of the mask and torchmetrics adds the processes up.

After `test`, `samples/test_embedding_epochNNNN.png` shows the t-SNE of the hidden layer of the nodes, coloured by
class; `predict` writes every node's class probabilities to `predictions/node_predictions.csv`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from lightning_gen.core.checks import ConfigError, check_labels, check_learning_rates
from lightning_gen.core.embedding import project_2d, scatter_picture
from lightning_gen.core.protocols import GraphData
from lightning_gen.core.runs import ColumnWriter, logs_this_step, save_and_log_images
from lightning_gen.core.technique import Technique
from lightning_gen.nn.graph import GraphConv, feature_dropout

Arch = Literal["gcn", "mlp"]


class NodePredictionWriter(ColumnWriter):
    """Writes `predict`'s outputs to `predictions/node_predictions.csv` (see `ColumnWriter`), one row per node in
    node order: `node, label, predicted, probability_0, ..., probability_<C-1>`."""

    stem, suffix = "node_predictions", ".csv"

    def save(self, columns: dict[str, Tensor], path: Path) -> None:
        probabilities = columns["probabilities"]  # (N, num_classes)
        order = columns["node"].argsort()
        with path.open("w", newline="") as file:
            out = csv.writer(file)
            out.writerow(["node", "label", "predicted", *(f"probability_{c}" for c in range(probabilities.shape[1]))])
            for i in order.tolist():
                out.writerow([int(columns["node"][i]), int(columns["label"][i]), int(columns["predicted"][i]),
                              *(f"{p:.6f}" for p in probabilities[i].tolist())])


def resolve_size(what: str, option: str, model_value: int | None, data: Any, data_value: int | None) -> int:
    """The model's `what` (features per node, classes): the data's, which must agree with the model's (given, or
    from the checkpoint it loads) when both are known. Raises `ConfigError` naming the fix."""
    if model_value is not None and data_value is not None and model_value != data_value:
        raise ConfigError(f"GCN was built for {model_value} {what} (`--model.{option}`, or the checkpoint it loads) "
                          f"but {type(data).__name__} has {data_value}. Use the graph it was trained on, or start a "
                          "new run without `--ckpt_path`.")
    value = data_value or model_value
    if value is None:
        raise ConfigError(f"GCN does not know the number of {what}: give graph data (`--data datamodules.Planetoid`), "
                          f"`--model.{option}`, or a trained checkpoint.")
    return int(value)


class GCN(Technique):
    """Kipf & Welling's two-layer graph convolutional network for semi-supervised node classification (or, with
    `arch: mlp`, the same network without the graph).

    Args:
        arch: `gcn` (graph convolutions, Z = softmax(Â ReLU(Â X W0) W1)) or `mlp` (the baseline: the same layers
            without Â, each node classified from its own features).
        hidden: units of the hidden layer.
        dropout: dropout rate on the input features and on the hidden layer.
        lr: Adam learning rate.
        weight_decay: L2 penalty on the first layer's weights (the paper's; the second layer has none).
        bias: learned biases in both layers (Kipf & Welling's code has none).
        num_features: features per node; taken from the data when not given. Stored in the checkpoint, with
            `num_classes`, so a trained model loads without data.
        num_classes: number of node classes; taken from the data when not given.
        picture_nodes: nodes drawn in the t-SNE picture of the hidden layer saved after `test` (a fixed random
            subset when the graph has more; 0: no picture).
    """

    def __init__(
        self,
        arch: Arch = "gcn",
        hidden: int = 16,
        dropout: float = 0.5,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        bias: bool = False,
        num_features: int | None = None,
        num_classes: int | None = None,
        picture_nodes: int = 3000,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if hidden < 1:
            raise ConfigError(f"hidden must be 1 or more, got {hidden}.")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be 0 or more, got {weight_decay}.")
        if picture_nodes < 0:
            raise ConfigError(f"picture_nodes must be 0 or more (0: no picture), got {picture_nodes}.")
        self.save_hyperparameters()

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        if dm is not None and not isinstance(dm, GraphData):
            raise ConfigError(f"GCN classifies the nodes of a graph: use `--data datamodules.Planetoid` (or your own "
                              f"graph through its `graph` option), not {type(dm).__name__}.")
        data_features = dm.num_features if dm is not None else None
        data_classes = dm.num_classes if dm is not None else None
        hp.num_features = resolve_size("features per node", "num_features", hp.num_features, dm, data_features)
        hp.num_classes = resolve_size("classes", "num_classes", hp.num_classes, dm, data_classes)
        self.conv1 = GraphConv(hp.num_features, hp.hidden, hp.bias)  # W0
        self.conv2 = GraphConv(hp.hidden, hp.num_classes, hp.bias)  # W1
        self.val_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)
        self.test_acc = torchmetrics.Accuracy("multiclass", num_classes=hp.num_classes)

    # ---- the network -------------------------------------------------------------------------------------------
    def hidden_features(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """ReLU(Â dropout(X) W0): (N, num_features) -> (N, hidden). `mlp` leaves Â out."""
        adjacency = adjacency if self.hparams.arch == "gcn" else None
        x = feature_dropout(x, self.hparams.dropout, self.training)  # x dense or sparse (bag-of-words)
        return F.relu(self.conv1(x, adjacency))

    def classify(self, hidden: Tensor, adjacency: Tensor) -> Tensor:
        """Â dropout(H) W1: (N, hidden) -> (N, num_classes) logits (the softmax is in the loss)."""
        adjacency = adjacency if self.hparams.arch == "gcn" else None
        return self.conv2(F.dropout(hidden, self.hparams.dropout, self.training), adjacency)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        return self.classify(self.hidden_features(x, adjacency), adjacency)  # (N, F) -> (N, num_classes)

    # ---- training: cross-entropy of the labeled nodes -----------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, adjacency, y, mask = batch  # (N, F), (N, N) sparse, (N,), (N,) bool: the training nodes
        if self.global_step == 0:
            check_labels(y[mask], self.hparams.num_classes, "GCN")
        logits = self(x, adjacency)[mask]  # every node is computed, only the labeled ones are scored
        loss = F.cross_entropy(logits.float(), y[mask])
        if logs_this_step(self.trainer):
            accuracy = (logits.argmax(1) == y[mask]).float().mean()
            self.log_dict({"train/loss": loss.detach(), "train/accuracy": accuracy}, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = [{"params": list(self.conv1.parameters()), "weight_decay": hp.weight_decay},  # the paper's L2
                  {"params": list(self.conv2.parameters()), "weight_decay": 0.0}]
        return torch.optim.Adam(groups, lr=hp.lr)

    # ---- evaluation: each node once, over every process ----------------------------------------------------------
    def node_share(self, mask: Tensor) -> Tensor:
        """(N,) bool: the nodes of `mask` this process scores (r, r + W, ...), so the processes share them out."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return mask & (torch.arange(len(mask), device=mask.device) % world == rank)

    def _evaluate(self, batch: Any, stage: str, metric: torchmetrics.Metric) -> Tensor:
        x, adjacency, y, mask = batch
        hidden = self.hidden_features(x, adjacency)  # (N, hidden)
        logits = self.classify(hidden, adjacency).float()  # (N, num_classes)
        share = self.node_share(mask)
        metric.update(logits[share], y[share])
        loss = F.cross_entropy(logits[share], y[share]) if share.any() else logits.new_zeros(())
        self.log_means(stage, {"loss": loss}, weight=int(share.sum()))
        self.log(f"{stage}/accuracy", metric, prog_bar=True)
        return hidden

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        hidden = self._evaluate(batch, "test", self.test_acc)
        if self.global_rank == 0 and self.hparams.picture_nodes > 0:
            self._picture_of = (hidden.detach().float().cpu(), batch[2].cpu())

    def on_test_epoch_end(self) -> None:
        """Save the t-SNE of the hidden layer of (up to `picture_nodes`) nodes coloured by class (rank 0)."""
        found = self.__dict__.pop("_picture_of", None)
        if found is None:
            return
        hidden, y = found
        n = len(hidden)
        nodes = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.hparams.picture_nodes]
        points = project_2d(hidden[nodes], "tsne")  # (n, hidden) -> (n, 2)
        save_and_log_images(self.trainer, "test/embedding", scatter_picture(points, y[nodes])[None])

    # ---- predict: every node's class probabilities ---------------------------------------------------------------
    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, adjacency, y, mask = batch
        share = self.node_share(mask)
        probabilities = self(x, adjacency).float().softmax(1)[share]  # (n, num_classes)
        nodes = torch.arange(len(mask), device=mask.device)[share]
        return {"node": nodes, "label": y[share], "predicted": probabilities.argmax(1), "probabilities": probabilities}

    def prediction_writer(self) -> BasePredictionWriter:
        return NodePredictionWriter()


__all__ = ["GCN", "NodePredictionWriter"]
