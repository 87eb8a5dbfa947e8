"""The contracts between datamodules, techniques, callbacks and the CLI, written down as `typing.Protocol`s.

A datamodule or technique takes part in a contract by having the members below; nothing has to inherit from
these classes. Code that depends on a contract asks `isinstance(obj, Protocol)` (they are runtime-checkable),
never `hasattr`. A third-party datamodule plugs in by offering the members of the contracts its techniques need
(see docs/contributing.md).

Data side (what a datamodule offers):
    ImageData        image_shape                 every image technique builds its networks from it
    LabeledData      num_classes                 class-conditional and classifying techniques
    SemiSupervisedData  num_labeled, reference_set, data  the semi-supervised GAN (labeled + unlabeled pools)
    NamedData        dataset                     names metrics computed with a classifier trained on it
    PairedData       input_channels              pix2pix (input and target images of one scene)
    NamedEvalSets    set_names(stage)            evaluation on several named sets (Set5, Set14)
    SuperResolutionData  scale                   super-resolution: the upscaling factor of the pairs
    ReferenceImages  train_set, test_set         sample-quality metrics compare samples with these
    Environments     make_actors, make_evaluator, spaces  reinforcement learning (gymnasium environments)
    OneClassData     target_class, num_reference_classes, bank_set, bank_dataloader  one-class anomaly detection
    TextData         vocabulary                  text techniques: tokens as indices into the training vocabulary
    TruncatedText    max_length                  text classification: the words kept per text (predict keeps as many)
    GraphData        num_features, num_classes   node classification on one graph (GCN): the whole graph one batch
    EpisodicData     ways, shots, queries        meta-learning (MAML): batches of few-shot tasks (support + query)

Technique side (what a technique offers to callbacks and the CLI):
    Generative       sample, default_labels, sample_grid   sample grids, EMA grids, SampleQuality, predict
    NoiseGenerator   generator_inputs, generate  the EMA recomputes batch-norm statistics through it
    RolloutTechnique updates_per_epoch()         the environment datamodule sizes its epochs with it
    OwnsPredictInputs owns_predict_inputs         predict reads the technique's own inputs, not the data's
    WritesPredictions prediction_writer()         predict outputs other than images (metric learning: embeddings)
    ExplainsData     explains_data, source_data  predict reads the datamodule's images (handed over as source_data)
                                                 through the technique's own loader, and logs what it writes
    LatentEncoder    encode, hparams (latent_dim, image_shape)  a trained VAE whose latent means are another
                                                 technique's features (M1 of the semi-supervised VAE)

Evaluation batches of the metric-learning techniques (core/embedding.py) are `(images, labels)`, or
`(images, labels, episode, is_support)` for one-shot episodes (Omniglot's test set).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import DataLoader, Dataset

# ---- data side ------------------------------------------------------------------------------------------------


@runtime_checkable
class ImageData(Protocol):
    """Images of one shape. `image_shape` is (channels, height, width) of the images a batch carries (after the
    datamodule's transforms), or None until the datamodule has looked at its files."""

    image_shape: tuple[int, int, int] | None


@runtime_checkable
class LabeledData(Protocol):
    """Images with class labels 0..num_classes-1. A datamodule without labels (a flat image folder) says
    `num_classes = 1` or None."""

    num_classes: int | None


@runtime_checkable
class SemiSupervisedData(Protocol):
    """Training batches `{"labeled": (images, labels), "unlabeled": images}` (and, when asked for, a second,
    independently drawn unlabeled batch `"unlabeled_2"`) drawn from a labeled pool of
    `num_labeled` images and an unlabeled pool `reference_set` (what sample quality compares with), both split from
    the labeled datamodule `data`."""

    num_labeled: int
    reference_set: Dataset | None
    data: Any


@runtime_checkable
class NamedData(Protocol):
    """A datamodule that serves one of several known datasets, named by `dataset` ("MNIST", "CIFAR10", ...): the
    name that metrics computed on a network trained on it carry ("MNIST-classifier FID")."""

    dataset: str


@runtime_checkable
class PairedData(Protocol):
    """Batches of (input, target) images of one scene; `input_channels` is the inputs' channel count (the
    targets' shape is `image_shape`)."""

    input_channels: int | None


@runtime_checkable
class NamedEvalSets(Protocol):
    """Several evaluation sets, one dataloader each, with names used as metric suffixes (`val/psnr/Set5`)."""

    def set_names(self, stage: str) -> list[str]: ...


@runtime_checkable
class SuperResolutionData(Protocol):
    """Batches of low-resolution images and their high-resolution originals, `scale` times larger."""

    scale: int


@runtime_checkable
class OneClassData(Protocol):
    """One-vs-rest data (`datamodules.OneClass`): the normal class `target_class`, the reference set's class count
    (None: no reference set), and `bank_dataloader(dataset)`, a loader of the target training images `bank_set` (or
    of `dataset`, a part of them) in order."""

    target_class: int
    num_reference_classes: int | None
    bank_set: Dataset | None

    def bank_dataloader(self, dataset: Dataset | None = None) -> DataLoader: ...


@runtime_checkable
class TextData(Protocol):
    """Text as token indices: `vocabulary[i]` is the token (a character, a word) of index i, made from the training
    split (None until `setup`). Batches carry `(B, T)` int64 indices; what else they carry is the technique's
    contract with its datamodule (see `datamodules/text.py`)."""

    vocabulary: list[str] | None


@runtime_checkable
class GraphData(Protocol):
    """One graph whose nodes are classified (`datamodules.Planetoid`): `num_features` per node and `num_classes`
    (None until `setup`). Every loader yields the whole graph as one batch `(x (N, F), adjacency (N, N) sparse,
    y (N,), mask (N,) bool)`, the mask choosing the stage's nodes (see `datamodules/planetoid.py`)."""

    num_features: int | None
    num_classes: int | None


@runtime_checkable
class EpisodicData(Protocol):
    """Few-shot tasks (`datamodules.Episodes`, `datamodules.Sinusoid`): batches `(support_x, support_y, query_x,
    query_y)`, each with a leading task dimension; `ways` classes per task (labels 0..ways-1; None: regression),
    `shots` support examples and `queries` query examples of each class."""

    ways: int | None
    shots: int
    queries: int


@runtime_checkable
class TruncatedText(Protocol):
    """Text data that keeps the first `max_length` words of each text (`datamodules.TextClassification`); a
    classifier stores it so that `predict` truncates new texts the same way."""

    max_length: int


@runtime_checkable
class ReferenceImages(Protocol):
    """Real training and test images (items `image` or `(image, label)`, pixels in [-1, 1])."""

    train_set: Dataset | None
    test_set: Dataset | None


@runtime_checkable
class Environments(Protocol):
    """Vectorised environments for on-policy reinforcement learning: `num_envs` training actors per process built by
    `make_actors(rank)` (the environments and their first observations), and one evaluation environment from
    `make_evaluator(video_dir)` seeded from `eval_seed`; `env_id` names the environment and the two spaces describe
    one actor's observations and actions."""

    env_id: str
    num_envs: int
    eval_seed: int
    observation_space: Any
    action_space: Any

    def make_actors(self, rank: int) -> Any: ...

    def make_evaluator(self, video_dir: str | None = None) -> Any: ...


# ---- technique side -------------------------------------------------------------------------------------------


@runtime_checkable
class Generative(Protocol):
    """A technique that makes images from nothing but an index: image i always comes from the same noise.

    `sample(indices)` -> (B, C, H, W) images in [-1, 1], networks in eval mode, no gradients;
    `default_labels(indices)` -> the class image i is made in (None: unconditional);
    `sample_grid()` -> (images, images per row or None for a square) for the per-epoch grid.
    """

    def sample(self, indices: Tensor) -> Tensor: ...

    def default_labels(self, indices: Tensor) -> Tensor | None: ...

    def sample_grid(self) -> tuple[Tensor, int | None]: ...


@runtime_checkable
class NoiseGenerator(Protocol):
    """A generator network fed noise: `generate(*generator_inputs(indices))` makes the images of `indices` (the
    noise of each index is fixed). The EMA callback uses it to recompute batch-norm statistics of averaged weights."""

    def generator_inputs(self, indices: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LatentEncoder(Protocol):
    """A trained model whose encoder gives features (M1 of the semi-supervised VAE: `lightning_gen.VAE`).
    `encode(images)` -> mean and log-variance of q(z | x), each (B, latent_dim), for images in [-1, 1]; calling the
    model on z (B, latent_dim) -> images in [-1, 1]; `hparams` holds `latent_dim` and `image_shape`."""

    hparams: Any

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class RolloutTechnique(Protocol):
    """A technique that learns from environment rollouts: one epoch is `updates_per_epoch()` updates."""

    def updates_per_epoch(self) -> int: ...


@runtime_checkable
class WritesPredictions(Protocol):
    """A technique whose `predict` returns something other than images (e.g. embeddings): the CLI writes its
    outputs with the callback `prediction_writer()` returns instead of the PNG writer."""

    def prediction_writer(self) -> Any: ...


@runtime_checkable
class OwnsPredictInputs(Protocol):
    """A technique whose `predict` reads its own inputs (e.g. a style network's `predict_images`) when this is
    True, so the CLI does not hand it the datamodule's."""

    owns_predict_inputs: bool


@runtime_checkable
class ExplainsData(Protocol):
    """A technique whose `predict` explains the datamodule's images: the CLI hands the datamodule to it as
    `source_data` (its `predict_dataloader` reads a split of it: Lightning would otherwise ask the datamodule for a
    predict loader) and keeps the configured logger, which `predict` otherwise turns off. `explains_data` is a class
    attribute, read from the configured class before it is built."""

    explains_data: bool
    source_data: Any
