"""Citation graphs for semi-supervised node classification: Cora and CiteSeer with the Planetoid public split (Yang et
al. 2016, the split of Kipf & Welling's GCN paper), read from the raw Planetoid files, or a graph of your own.

The whole graph is one batch: every loader (train, val, test, predict) yields one `GraphBatch` of the node features,
the renormalised adjacency (a sparse tensor, computed once per graph), the labels and the stage's node mask. Under
DDP every process gets the same whole graph.

The raw files, `<root>/<name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}` (those of tkipf/gcn's `data/`
folder, which `torch_geometric.datasets.Planetoid` downloads), are read with `pickle` and never written to. They are
turned into one graph exactly as Kipf & Welling's code and torch_geometric do:

- nodes are `allx` then `tx`; `test.index` lists the test nodes' ids in the order of `tx`, so the features and labels
  are moved to those ids;
- CiteSeer has 15 isolated nodes inside the test id range that are in no file: they get zero features and label 0
  and belong to no split;
- train = the nodes of `x`/`y` (the first 20 per class), val = the next 500, test = the 1,000 nodes of `test.index`;
- the edges of the adjacency lists, undirected, without duplicates and self-loops (CiteSeer's lists hold some).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.base import DataError, data_root

PlanetoidName = Literal["Cora", "CiteSeer"]
RAW_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
FIELDS = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")
MASKS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}
SPARSE_BELOW = 0.1  # features with fewer non-zeros (Cora's bag-of-words: 1.3%) travel as a sparse tensor
VAL_SIZE = 500  # Planetoid's validation nodes: the 500 after the training nodes


class GraphBatch(NamedTuple):
    """One graph as one batch. A NamedTuple: Lightning moves it to the device field by field without copying it."""

    x: Tensor  # (N, F) float32 node features; sparse CSR when under SPARSE_BELOW of them are non-zero
    adjacency: Tensor  # (N, N) float32 sparse COO: D^-1/2 (A + I) D^-1/2
    y: Tensor  # (N,) int64 class of every node
    mask: Tensor  # (N,) bool: the nodes of this stage (train / val / test; every node for predict)


@runtime_checkable
class NodeGraph(Protocol):
    """A graph with node features, labels and split masks: a `torch_geometric.data.Data` (x (N, F), edge_index
    (2, E), y (N,), boolean masks (N,)), or any object with these attributes."""

    x: Any
    edge_index: Any
    y: Any
    train_mask: Any
    val_mask: Any
    test_mask: Any


@runtime_checkable
class DictLike(Protocol):
    """An object that gives its fields as a dict (`torch_geometric.data.Data.to_dict()`)."""

    def to_dict(self) -> dict[str, Any]: ...


def graph_fields(graph: Any, what: str = "the graph") -> dict[str, Tensor]:
    """The six fields of `graph` (a `NodeGraph`, a mapping, an object with `to_dict()`, or the path of a file
    holding such a dict, read with `torch.load(weights_only=True)`) as tensors. Raises `DataError` naming what is
    missing."""
    if isinstance(graph, (str, Path)):
        path = Path(graph).expanduser()
        if not path.is_file():
            raise DataError(f"graph file {path} does not exist. Save your graph's fields with "
                            "`torch.save(data.to_dict(), path)` (a torch_geometric Data) and give that path.")
        try:
            graph = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DataError(f"graph file {path} could not be read as a dict of tensors ({type(err).__name__}: "
                            f"{err}). Save it with `torch.save(data.to_dict(), path)`.") from None
        what = f"graph file {path}"
    if isinstance(graph, NodeGraph):
        fields = {name: getattr(graph, name) for name in FIELDS}  # the protocol guarantees them
    elif isinstance(graph, Mapping):
        fields = dict(graph)
    elif isinstance(graph, DictLike):
        fields = graph.to_dict()
    else:
        raise DataError(f"{what} is a {type(graph).__name__}; give a torch_geometric Data, a dict or an object with "
                        f"the fields {', '.join(FIELDS)}.")
    missing = [name for name in FIELDS if fields.get(name) is None]
    if missing:
        raise DataError(f"{what} has no {', '.join(missing)}: a graph needs {', '.join(FIELDS)} (boolean masks that "
                        "choose the training, validation and test nodes).")
    return {name: torch.as_tensor(fields[name]) for name in FIELDS}


def check_graph(fields: dict[str, Tensor], what: str) -> None:
    """Raise `DataError` when the fields do not describe one graph: node counts that disagree, edges to nodes that do
    not exist, labels that are not class indices, or a mask that selects no node."""
    x, edge_index, y = fields["x"], fields["edge_index"], fields["y"]
    if x.dim() != 2 or y.dim() != 1:
        raise DataError(f"{what}: x must be (nodes, features) and y (nodes,), got {tuple(x.shape)} and "
                        f"{tuple(y.shape)}.")
    n = x.shape[0]
    counts = {"x": n, "y": len(y), **{m: len(fields[m]) for m in MASKS.values()}}
    if len(set(counts.values())) > 1:
        raise DataError(f"{what}: the node counts disagree ({', '.join(f'{k} {v}' for k, v in counts.items())}); x, y "
                        "and the masks need one row per node.")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise DataError(f"{what}: edge_index must be (2, edges), got {tuple(edge_index.shape)}.")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        raise DataError(f"{what}: edges name nodes {int(edge_index.min())}..{int(edge_index.max())} but there are "
                        f"{n} nodes (0..{n - 1}); the features and labels must cover every node of the edges.")
    if y.dtype.is_floating_point or (len(y) and int(y.min()) < 0):
        raise DataError(f"{what}: y must hold class indices 0, 1, ... (integers), got {y.dtype} values.")
    for stage, name in MASKS.items():
        mask = fields[name]
        if mask.dtype != torch.bool:
            raise DataError(f"{what}: {name} must be a boolean mask, got {mask.dtype}.")
        if not bool(mask.any()):
            raise DataError(f"{what}: {name} selects no node, so {stage} has no node to work on; give it at least one "
                            "True.")


def read_planetoid(folder: Path, name: str) -> dict[str, Tensor]:
    """The raw Planetoid files of `name` in `folder` as one graph (see the module docstring): the six fields."""
    prefix = name.lower()
    items: dict[str, Any] = {}
    for part in RAW_PARTS:
        path = folder / f"ind.{prefix}.{part}"
        if part == "test.index":
            items[part] = np.loadtxt(path, dtype=np.int64, ndmin=1)
            continue
        with path.open("rb") as file, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*scipy.sparse.*namespace", category=DeprecationWarning)
            items[part] = pickle.load(file, encoding="latin1")  # scipy sparse, numpy arrays, dict of lists
    dense = {k: np.asarray(v.todense() if k in ("x", "tx", "allx") else v, dtype=np.float32)
             for k, v in items.items() if k not in ("graph", "test.index")}
    test_index = torch.from_numpy(items["test.index"])
    sorted_test = test_index.sort().values
    tx, ty = torch.from_numpy(dense["tx"]), torch.from_numpy(dense["ty"])
    span = int(sorted_test[-1] - sorted_test[0]) + 1
    if span != len(tx):  # CiteSeer: isolated test-range nodes in no file get zero features and labels
        tx_full, ty_full = tx.new_zeros(span, tx.shape[1]), ty.new_zeros(span, ty.shape[1])
        tx_full[sorted_test - sorted_test[0]], ty_full[sorted_test - sorted_test[0]] = tx, ty
        tx, ty = tx_full, ty_full
    allx, ally = torch.from_numpy(dense["allx"]), torch.from_numpy(dense["ally"])
    if len(allx) != len(ally) or len(tx) != len(ty) or len(allx) != int(sorted_test[0]):
        raise DataError(f"Planetoid files in {folder} disagree: allx has {len(allx)} rows, ally {len(ally)}, tx "
                        f"{len(tx)}, ty {len(ty)}, and the test ids start at {int(sorted_test[0])} (should be the "
                        "row count of allx). Replace them with an unmodified copy of the Planetoid data.")
    x, y = torch.cat([allx, tx]), torch.cat([ally, ty]).argmax(1)  # (N, F), one-hot (N, C) -> (N,)
    x[test_index], y[test_index] = x[sorted_test].clone(), y[sorted_test].clone()  # rows back to their node ids
    n, n_train = len(x), len(dense["y"])
    graph = items["graph"]
    src = [int(node) for node, neighbours in graph.items() for _ in neighbours]
    dst = [int(other) for neighbours in graph.values() for other in neighbours]
    train_mask, val_mask, test_mask = (torch.zeros(n, dtype=torch.bool) for _ in range(3))
    train_mask[:n_train] = True
    val_mask[n_train: n_train + VAL_SIZE] = True
    test_mask[test_index] = True
    return {"x": x, "edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1), "y": y,
            "train_mask": train_mask, "val_mask": val_mask, "test_mask": test_mask}


def undirected_edges(edge_index: Tensor, num_nodes: int) -> Tensor:
    """(2, E) edges -> (2, E') with both directions of every edge, no duplicates and no self-loops, sorted."""
    src, dst = edge_index.long()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    flat = torch.unique(torch.cat([src * num_nodes + dst, dst * num_nodes + src]))  # one number per directed edge
    return torch.stack([flat // num_nodes, flat % num_nodes])


def first_item(items: list[GraphBatch]) -> GraphBatch:
    """The collate function of a batch of one graph: the graph itself."""
    return items[0]


def one_batch(batch: GraphBatch, copies: int = 1) -> DataLoader:
    """A loader whose one batch is the whole graph (no workers, no pinned copy). Under DDP, Lightning's sampler pads
    the one item to one per process, so every process gets the whole graph; `predict`'s sampler does not pad, so its
    loader holds one copy per process (`copies`)."""
    return DataLoader([batch] * copies, batch_size=1, collate_fn=first_item)


class Planetoid(L.LightningDataModule):
    """Cora or CiteSeer with the Planetoid public split, or your own graph: node classification on one graph that is
    one batch (see the module docstring). Cora: 2,708 nodes, 5,278 undirected edges, 1,433 features, 7 classes;
    CiteSeer: 3,327, 4,552, 3,703, 6; both 20 training nodes per class, 500 validation and 1,000 test nodes.

    Args:
        name: `Cora` or `CiteSeer`: the folder `<root>/<name>/raw/` with the raw Planetoid files
            `ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}` (name in lower case).
        root: the folder holding `Cora/` and `CiteSeer/` (torch_geometric's Planetoid root). Default:
            `$LIGHTNING_GEN_DATA/planetoid`.
        normalize_features: divide each node's features by their sum (the paper's preprocessing of the bag-of-words
            features; rows summing to 0 stay 0).
        graph: your own graph instead of Cora/CiteSeer: the path of a file holding its fields as a dict (a
            torch_geometric `Data`: `torch.save(data.to_dict(), path)`; read with `weights_only=True`), or, from
            Python, the `Data` object itself or any object or dict with `x`, `edge_index`, `y`, `train_mask`,
            `val_mask`, `test_mask` (`Planetoid.from_graph(data)`).
    """

    num_features: int | None
    """Features per node; None until `setup`."""
    num_classes: int | None
    """Classes of the node labels; None until `setup`."""

    def __init__(
        self,
        name: PlanetoidName = "Cora",
        root: str | None = None,
        normalize_features: bool = True,
        graph: Any = None,
    ) -> None:
        super().__init__()
        if name not in ("Cora", "CiteSeer"):
            raise DataError(f"name must be Cora or CiteSeer, got {name!r}; give your own graph with `graph`.")
        self.name, self.normalize_features = name, normalize_features
        self.num_features = self.num_classes = None
        self.batches: dict[str, GraphBatch] = {}
        self._device_copies: dict[tuple[int, str], Tensor] = {}
        self._fields: dict[str, Tensor] | None = None
        self.raw_folder: Path | None = None
        if graph is not None:
            self._fields = graph_fields(graph)
            check_graph(self._fields, "the graph")
        else:
            base = data_root(root) if root is not None else data_root(None) / "planetoid"
            self.raw_folder = base / name / "raw"
            self._check_raw_files()

    @classmethod
    def from_graph(cls, graph: Any, normalize_features: bool = False) -> Planetoid:
        """A datamodule of your own graph: a torch_geometric `Data` (or any object or dict with `x`, `edge_index`,
        `y`, `train_mask`, `val_mask`, `test_mask`). Features are used as they are unless `normalize_features`."""
        return cls(graph=graph, normalize_features=normalize_features)

    def _check_raw_files(self) -> None:
        folder, prefix = self.raw_folder, self.name.lower()
        hint = (f"Point `--data.root` (or LIGHTNING_GEN_DATA, whose planetoid/ folder is the default) at the folder "
                f"holding {self.name}/raw/ with the raw Planetoid files ind.{prefix}.*, those of tkipf/gcn's data/ "
                "folder.")
        if not folder.is_dir():
            raise DataError(f"Planetoid {self.name} was not found: no folder {folder}. {hint}")
        missing = [f"ind.{prefix}.{part}" for part in RAW_PARTS if not (folder / f"ind.{prefix}.{part}").is_file()]
        if missing:
            raise DataError(f"Planetoid {self.name}: {folder} lacks {', '.join(missing)}. {hint}")

    # ---- the graph, read once ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.batches:
            return
        what = "the graph" if self.raw_folder is None else f"Planetoid {self.name} ({self.raw_folder})"
        if self._fields is None:
            self._fields = read_planetoid(self.raw_folder, self.name)
            check_graph(self._fields, what)
        fields = self._fields
        x, y = fields["x"].float(), fields["y"].long()
        if self.normalize_features:
            x = x / x.sum(1, keepdim=True).clamp(min=1e-12)  # rows of zeros stay zero
        from lightning_gen.nn.graph import normalized_adjacency  # here, not at the top: lightning_gen imports us

        n = len(x)
        self.edge_index = undirected_edges(fields["edge_index"].long(), n)  # (2, 2 * undirected edges)
        adjacency = normalized_adjacency(self.edge_index, n)  # once per graph
        self.num_features, self.num_classes = x.shape[1], int(y.max()) + 1
        if x.count_nonzero() < SPARSE_BELOW * x.numel():
            with warnings.catch_warnings():  # torch warns once that CSR support is "in beta"; it is what we need
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
                x = x.to_sparse_csr()  # dropout and H W then cost the non-zeros, not N x F (3 times faster on Cora)
        self.batches = {stage: GraphBatch(x, adjacency, y, fields[mask].bool()) for stage, mask in MASKS.items()}
        self.batches["predict"] = GraphBatch(x, adjacency, y, torch.ones(n, dtype=torch.bool))

    @property
    def num_nodes(self) -> int | None:
        return len(self.batches["train"].x) if self.batches else None

    @property
    def num_edges(self) -> int | None:
        """Undirected edges (each counted once), after `setup`."""
        return self.edge_index.shape[1] // 2 if self.batches else None

    def train_dataloader(self) -> DataLoader:
        return one_batch(self.batches["train"])

    def val_dataloader(self) -> DataLoader:
        return one_batch(self.batches["val"])

    def test_dataloader(self) -> DataLoader:
        return one_batch(self.batches["test"])

    def predict_dataloader(self) -> DataLoader:
        return one_batch(self.batches["predict"], self.trainer.world_size if self.trainer is not None else 1)

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Move the graph to the accelerator once: every epoch's batch holds the same tensors, so their copies on
        `device` are kept and handed out again."""
        if not isinstance(batch, GraphBatch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        moved = []
        for tensor in batch:
            key = (id(tensor), str(device))
            if key not in self._device_copies:
                self._device_copies[key] = tensor.to(device)
            moved.append(self._device_copies[key])
        return GraphBatch(*moved)


__all__ = ["GraphBatch", "NodeGraph", "Planetoid", "check_graph", "first_item", "graph_fields", "one_batch",
           "read_planetoid", "undirected_edges"]
