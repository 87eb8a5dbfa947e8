"""The skeleton of a metric-learning technique (Siamese, Triplet): what they share, written once.

- The embedding network, built from the data's image shape (`nn.embedding.EmbeddingNet`), and Adam over every
  parameter of the technique (a loss such as ArcFace has weights of its own).
- A training step that logs, besides the loss, the mean distance of same-class and of different-class pairs in the
  batch: when both fall to 0 together the embedding has collapsed (the failure most asked about).
- Evaluation on the embeddings of the whole validation or test set, gathered from every process (each item once,
  `first_visit`): precision@1, MAP@R and k-NN accuracy (`metrics.retrieval`), or, on data whose evaluation set is
  a set of one-shot episodes (e.g. Lake's Omniglot runs), the N-way one-shot accuracy. The contract: evaluation
  batches are `(images, labels)`, or `(images, labels, episode, is_support)` for episodes (within an episode,
  each query's label is the label of the support item it should be matched with).
- Pictures after every evaluation: the evaluation set's embedding in 2-D (the embedding itself when it has two
  dimensions, else t-SNE or PCA of it), coloured by class, and retrieval rows (a query, then its nearest items).
- `predict`: the embedding of every item of the datamodule's predict (or test) set, written to
  `predictions/embeddings.pt` by `callbacks.EmbeddingWriter`.

A subclass implements `metric_loss(embeddings, labels) -> (loss, {name: value to log})`, and may override
`distance` (how evaluation compares two embeddings; Euclidean by default).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_gen.core.checks import ConfigError, check_learning_rates, resolve_image_shape
from lightning_gen.core.runs import ColumnWriter, logs_this_step, save_and_log_images
from lightning_gen.core.technique import Technique, eval_mode
from lightning_gen.metrics.retrieval import euclidean, one_shot_accuracy, retrieval_metrics
from lightning_gen.nn.embedding import EmbeddingNet
from lightning_gen.nn.norm import Norm

Projection = Literal["tsne", "pca"]
PALETTE = torch.tensor([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]]) / 255.0


def pair_distances(embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Mean Euclidean distance of the same-class pairs (`pos_distance`) and of the different-class pairs
    (`neg_distance`) of a batch; NaN where the batch has no such pair."""
    d = torch.cdist(embeddings.float(), embeddings.float())
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = d[same & off_diagonal], d[~same]
    nan = d.new_tensor(float("nan"))
    return {"pos_distance": pos.mean() if pos.numel() else nan, "neg_distance": neg.mean() if neg.numel() else nan}


def check_embedding_options(embedding_dim: int, width: int, knn_k: int, lr: float) -> None:
    check_learning_rates(lr=lr)
    if embedding_dim < 1:
        raise ConfigError(f"embedding_dim must be 1 or more, got {embedding_dim}.")
    if width < 1:
        raise ConfigError(f"width must be 1 or more, got {width}.")
    if knn_k < 1:
        raise ConfigError(f"knn_k must be 1 or more, got {knn_k}.")


def scatter_picture(points: Tensor, labels: Tensor, side: int = 512, dot: int = 2) -> Tensor:
    """(N, 2) points and their (N,) classes -> a (3, side, side) picture in [-1, 1]: one coloured dot per point
    (ten colours, repeating), on white, scaled to fill the square."""
    points = points.float().cpu()
    lo, hi = points.min(0).values, points.max(0).values
    xy = ((points - lo) / (hi - lo).clamp(min=1e-12) * (side - 2 * dot - 1) + dot).round().long()
    picture = torch.ones(3, side, side)
    colours = PALETTE[labels.cpu().long() % len(PALETTE)]
    for dx in range(-dot, dot + 1):
        for dy in range(-dot, dot + 1):
            picture[:, side - 1 - (xy[:, 1] + dy), xy[:, 0] + dx] = colours.T
    return picture * 2 - 1


def project_2d(embeddings: Tensor, method: Projection, seed: int = 0) -> Tensor:
    """(N, D) -> (N, 2): the embedding itself when D == 2, else t-SNE (scikit-learn) or PCA of it."""
    embeddings = embeddings.float().cpu()
    if embeddings.shape[1] == 2:
        return embeddings
    if method == "tsne" and len(embeddings) > 5:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(embeddings) - 1) / 3)
        return torch.as_tensor(TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
                               .fit_transform(embeddings.numpy()))
    centred = embeddings - embeddings.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


class EmbeddingWriter(ColumnWriter):
    """Writes what a metric-learning `predict` returns, `embeddings` (and `labels` when the data has them), to
    `predictions/embeddings.pt` (see `ColumnWriter`): a dict of tensors, read with
    `torch.load(path, weights_only=True)`."""

    stem, suffix = "embeddings", ".pt"

    def save(self, columns: dict[str, Tensor], path: Any) -> None:
        torch.save(columns, path)


class EmbeddingTechnique(Technique):
    """Base of the metric-learning techniques (see the module's docstring): the options every one of them has.

    Args:
        embedding_dim: size of the embedding (2: the embedding is drawn as it is).
        width: channels of the embedding network's convolution blocks.
        normalize: L2-normalise the embeddings (what pytorch-metric-learning's distances assume by default).
        norm: normalisation in the convolution blocks (`lightning_gen.nn.norm`): `batch` (the default), `layer`,
            `instance`, `group` or `none`. Batch norm makes an image's embedding depend on its batch in training.
        image_shape: (channels, height, width); taken from the datamodule when not given, stored in the checkpoint.
        lr: Adam learning rate (over the network and any weights of the loss).
        weight_decay: Adam weight decay.
        knn_k: neighbours that vote in the k-NN accuracy.
        projection: how an embedding of more than two dimensions is drawn: `tsne` or `pca`.
        picture_items: evaluation items kept for the retrieval rows (rank 0's first ones).
    """

    def __init__(
        self,
        embedding_dim: int = 64,
        width: int = 64,
        normalize: bool = True,
        norm: Norm = "batch",
        image_shape: tuple[int, int, int] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        knn_k: int = 5,
        projection: Projection = "tsne",
        picture_items: int = 500,
    ) -> None:
        super().__init__()
        check_embedding_options(embedding_dim, width, knn_k, lr)
        self.save_hyperparameters(ignore=["loss", "miner"])  # objects: given again by the config when resuming
        self._bank: dict[str, list[Tensor]] = {}

    def build(self) -> None:
        hp = self.hparams
        hp.image_shape = resolve_image_shape(hp.image_shape, self.datamodule, type(self).__name__)
        self.embedder = EmbeddingNet(tuple(hp.image_shape), hp.embedding_dim, hp.width, hp.normalize,
                                     norm=hp.get("norm", "batch"))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, embedding_dim) embeddings."""
        return self.embedder(images)

    def distance(self, queries: Tensor, references: Tensor) -> Tensor:
        """(Q, D), (R, D) -> (Q, R): how far apart evaluation considers two embeddings (smaller: more alike)."""
        return euclidean(queries, references)

    def metric_loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    # ---- training --------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        embeddings = self(images).float()
        loss, stats = self.metric_loss(embeddings, labels)
        if logs_this_step(self.trainer):
            logged = {"train/loss": loss.detach()}
            logged.update({f"train/{k}": v.detach().float() for k, v in stats.items()})
            logged.update({f"train/{k}": v for k, v in pair_distances(embeddings.detach(), labels).items()})
            self.log_dict(logged, prog_bar=False)
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ---- evaluation: every item once, gathered from all processes --------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._bank = {}

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._collect(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._collect(batch, batch_idx)

    def _collect(self, batch: Any, batch_idx: int) -> None:
        images = batch[0]
        columns = {"embeddings": self(images).float(), "labels": batch[1].long(),
                   "keep": self.first_visit(batch_idx, images.shape[0])}
        if len(batch) >= 4:  # one-shot episodes: (images, labels, episode, is_support)
            columns.update(episodes=batch[2].long(), support=batch[3].bool())
        for name, value in columns.items():
            self._bank.setdefault(name, []).append(value)
        kept = sum(len(t) for t in self._bank.get("images", []))
        if self.global_rank == 0 and kept < self.hparams.picture_items:  # pictures: rank 0's own items
            self._bank.setdefault("images", []).append(images[: self.hparams.picture_items - kept].detach().cpu())

    def _gathered(self) -> dict[str, Tensor]:
        """The bank of every process, each evaluation item once."""
        local = {k: torch.cat(v) for k, v in self._bank.items() if k != "images"}
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            local = {k: self.all_gather(v).flatten(0, 1) for k, v in local.items()}  # equal sizes: padded sampler
        keep = local.pop("keep")
        return {k: v[keep] for k, v in local.items()}

    def on_validation_epoch_end(self) -> None:
        self._evaluate("val")

    def on_test_epoch_end(self) -> None:
        self._evaluate("test")

    def _evaluate(self, stage: str) -> None:
        if not self._bank or self.trainer.sanity_checking:
            return
        items = self._gathered()
        if "episodes" in items:  # one-shot episodes
            accuracy, per_episode = one_shot_accuracy(items["embeddings"], items["labels"], items["episodes"],
                                                      items["support"], self.distance)
            ways = int(items["support"][items["episodes"] == items["episodes"][0]].sum())
            self.log(f"{stage}/one_shot_accuracy", accuracy, prog_bar=True)
            rank_zero_info(f"{ways}-way one-shot accuracy over {len(per_episode)} runs: {100 * accuracy:.2f}% "
                           f"(runs: {', '.join(f'{100 * a:.0f}' for a in per_episode.tolist())})")
        else:
            metrics = retrieval_metrics(items["embeddings"], items["labels"], self.hparams.knn_k, self.distance)
            metrics.pop("queries")
            for name, value in metrics.items():
                self.log(f"{stage}/{name}", value, prog_bar=name == "map_at_r")
        if self.global_rank == 0:
            self._pictures(stage, items)

    def _pictures(self, stage: str, items: dict[str, Tensor]) -> None:
        n = min(len(items["embeddings"]), 2000)
        points = project_2d(items["embeddings"][:n], self.hparams.projection)
        save_and_log_images(self.trainer, f"{stage}/embedding", scatter_picture(points, items["labels"][:n])[None])
        images = torch.cat(self._bank["images"]) if self._bank.get("images") else None
        if images is None or len(images) < 7:
            return
        embeddings = torch.cat(self._bank["embeddings"])[: len(images)]
        queries = torch.linspace(0, len(images) - 1, min(8, len(images))).long()
        d = self.distance(embeddings[queries], embeddings).cpu()
        d[torch.arange(len(queries)), queries] = float("inf")
        nearest = d.topk(5, dim=1, largest=False).indices
        rows = torch.cat([queries[:, None], nearest], 1).flatten()
        save_and_log_images(self.trainer, f"{stage}/retrieval", images[rows].float(), nrow=6)

    # ---- predict: the embeddings -------------------------------------------------------------------------------
    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        out = {"embeddings": self(images).float()}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["labels"] = batch[1]
        return out

    def prediction_writer(self) -> BasePredictionWriter:
        return EmbeddingWriter()

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Embeddings of `images` in eval mode (for use outside a trainer)."""
        with eval_mode(self.embedder):
            return self(images)
