"""GCN (Kipf & Welling 2017) and the Planetoid data: the renormalised adjacency and the layer against dense closed
forms, Cora's and CiteSeer's counts and public split on the real files (and against torch_geometric where it is
installed), a graph of one's own, learning (and beating the MLP on Cora), the optimizer's weight decay, bf16, DDP
against one process, resume, a checkpoint without data, the command line, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
import types
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from datamodules import DataError, Digits
from datamodules.planetoid import RAW_PARTS, Planetoid, undirected_edges
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.cli import GenCLI, main
from lightning_gen.gcn import GCN
from lightning_gen.nn.graph import GraphConv, feature_dropout, normalized_adjacency
from tests.conftest import QUIET, ROOT, run_cli, shared_data

TINY = str(ROOT / "configs" / "gcn" / "tiny.yaml")
COUNTS = {  # nodes, undirected edges, classes, features, training nodes
    "Cora": (2708, 5278, 7, 1433, 140),
    "CiteSeer": (3327, 4552, 6, 3703, 120),
}


def planted_graph(per_class: int = 20, classes: int = 3, features: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A planted-partition graph: `classes` communities (edge probability 0.3 inside, 0.02 across), features that
    hint at the class through noise; 3 training and 5 validation nodes per class, the rest test."""
    g = torch.Generator().manual_seed(seed)
    n = per_class * classes
    y = torch.arange(classes).repeat_interleave(per_class)
    p = torch.where(y[:, None] == y[None, :], 0.3, 0.02)
    edge_index = torch.triu(torch.rand(n, n, generator=g) < p, 1).nonzero().T  # (2, E), one direction each
    x = torch.randn(n, features, generator=g) + 0.7 * F.one_hot(y, features).float()
    rank = torch.arange(n) % per_class  # position inside its class
    return {"x": x, "edge_index": edge_index, "y": y, "train_mask": rank < 3, "val_mask": (rank >= 3) & (rank < 8),
            "test_mask": rank >= 8}


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    """The in-process command lines read `args`, not pytest's own command line."""
    monkeypatch.setattr("sys.argv", ["lightning-gen"])


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                    num_sanity_val_steps=0, log_every_n_steps=1)
    return L.Trainer(**{**defaults, **kwargs})


class Losses(Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


class SaveFitMetrics(Callback):
    """Writes the metrics at the end of `fit` (after the processes' sync) to `<default_root_dir>/fit_metrics.json`."""

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            (Path(trainer.default_root_dir) / "fit_metrics.json").write_text(json.dumps(metrics))


# ---- the renormalised adjacency and the layer -------------------------------------------------------------------
def test_normalized_adjacency_is_the_dense_formula():
    # a duplicate (0-1 twice, once each way), a self-loop (2-2), an edge given one way only (2-3), node 4 isolated
    edges = torch.tensor([[0, 1, 1, 2, 2], [1, 0, 2, 2, 3]])
    n = 5
    a = torch.zeros(n, n)
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        a[i, j] = a[j, i] = 1.0
    a_tilde = a + torch.eye(n)
    d = a_tilde.sum(1).rsqrt().diag()
    expected = d @ a_tilde @ d
    got = normalized_adjacency(edges, n)
    assert got.is_sparse and got.is_coalesced() and got._nnz() == 2 * 3 + n
    torch.testing.assert_close(got.to_dense(), expected)
    assert got.to_dense()[4, 4] == 1.0  # an isolated node keeps its own features
    assert undirected_edges(edges, n).tolist() == [[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")
def test_graph_conv_is_the_dense_computation_for_dense_and_sparse_features():
    torch.manual_seed(0)
    graph = planted_graph(per_class=4, features=6)
    x, n = graph["x"], len(graph["x"])
    adjacency = normalized_adjacency(graph["edge_index"], n)
    layer = GraphConv(6, 3, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    dense = adjacency.to_dense() @ x @ layer.weight + layer.bias
    torch.testing.assert_close(layer(x, adjacency), dense)
    torch.testing.assert_close(layer(x.to_sparse_csr(), adjacency), dense)  # bag-of-words features travel sparse
    torch.testing.assert_close(layer(x), x @ layer.weight + layer.bias)  # no adjacency: the MLP's dense layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, adjacency)
    assert out.dtype == torch.float32  # the sparse product runs in float32
    torch.testing.assert_close(out, dense, atol=0.05, rtol=0.05)
    bound = (6 / (6 + 3)) ** 0.5  # Glorot uniform
    assert layer.weight.abs().max() <= bound and GraphConv(6, 3, bias=False).bias is None


def test_feature_dropout_of_sparse_features_drops_stored_values_only():
    x = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    torch.manual_seed(0)
    for sparse in (x.to_sparse_csr(), x.to_sparse()):
        out = feature_dropout(sparse, 0.5, True).to_dense()
        assert ((out == 0) | (out == 2 * x)).all() and (out[x == 0] == 0).all()
        assert feature_dropout(sparse, 0.5, False) is sparse


# ---- the real data -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Cora", "CiteSeer"])
def test_planetoid_counts_and_public_split(name):
    shared_data("planetoid", name, "raw")
    data = Planetoid(name)
    data.setup("fit")
    nodes, edges, classes, features, train = COUNTS[name]
    assert (data.num_nodes, data.num_edges, data.num_classes, data.num_features) == (nodes, edges, classes, features)
    x, adjacency, y, train_mask = data.batches["train"]
    val_mask, test_mask = data.batches["val"].mask, data.batches["test"].mask
    assert (int(train_mask.sum()), int(val_mask.sum()), int(test_mask.sum())) == (train, 500, 1000)
    assert torch.bincount(y[train_mask]).tolist() == [20] * classes  # 20 labels per class
    assert train_mask[:train].all() and val_mask[train:train + 500].all()  # the first ones, then the next 500
    assert not (train_mask & val_mask).any() and not (val_mask & test_mask).any() and not (train_mask & test_mask).any()
    assert adjacency._nnz() == 2 * edges + nodes  # both directions and the self-loops
    sums = x.to_dense().sum(1)
    assert torch.allclose(sums[sums > 0], torch.ones(1))  # row-normalised
    if name == "CiteSeer":  # 15 isolated nodes inside the test range, in no file: zero features, in no split
        unused = ~(train_mask | val_mask | test_mask)
        assert int(((sums == 0) & unused & (torch.arange(nodes) >= 2312)).sum()) == 15


def test_planetoid_is_what_torch_geometric_reads(tmp_path):
    raw = shared_data("planetoid", "Cora", "raw")
    datasets = pytest.importorskip("torch_geometric.datasets", reason="torch_geometric is not installed")
    shutil.copytree(raw, tmp_path / "Cora" / "raw")  # torch_geometric writes processed/ beside raw/
    theirs = datasets.Planetoid(str(tmp_path), "Cora")[0]
    ours = Planetoid("Cora", normalize_features=False)
    ours.setup()
    x, _, y, train_mask = ours.batches["train"]
    torch.testing.assert_close(x.to_dense(), theirs.x)
    assert torch.equal(y, theirs.y) and torch.equal(train_mask, theirs.train_mask)
    assert torch.equal(ours.batches["test"].mask, theirs.test_mask)
    assert torch.equal(ours.edge_index, undirected_edges(theirs.edge_index, theirs.num_nodes))
    mine = Planetoid.from_graph(theirs, normalize_features=True)  # the real Data class plugs in
    mine.setup()
    assert mine.num_features == 1433 and mine.num_edges == 5278


# ---- a graph of one's own ----------------------------------------------------------------------------------------
def test_own_graph_as_object_dict_or_file(tmp_path):
    graph = planted_graph()
    stand_in = types.SimpleNamespace(**graph)  # the attributes of a torch_geometric Data
    torch.save(graph, tmp_path / "graph.pt")
    path = str(tmp_path / "graph.pt")
    for data in (Planetoid.from_graph(stand_in), Planetoid.from_graph(graph), Planetoid(graph=path)):
        data.setup()
        assert (data.num_nodes, data.num_features, data.num_classes) == (60, 8, 3)
        assert torch.equal(data.batches["val"].mask, graph["val_mask"])
        assert data.batches["train"].x.layout == torch.strided  # dense features stay dense
    loaders = [data.train_dataloader(), data.val_dataloader(), data.test_dataloader()]
    assert [len(list(loader)) for loader in loaders] == [1, 1, 1]  # the whole graph is one batch


# ---- bad input: one line, before training ----------------------------------------------------------------------
def broken(**change):
    graph = planted_graph()
    graph.update(change)
    return graph


@pytest.mark.parametrize("make, error, words", [
    (lambda tmp: Planetoid(root=str(tmp / "none")), DataError, "no folder .*none/Cora/raw.*--data.root"),
    (lambda tmp: Planetoid.from_graph(broken(y=torch.zeros(59, dtype=torch.long))), DataError,
     "node counts disagree .*x 60, y 59"),
    (lambda tmp: Planetoid.from_graph(broken(edge_index=torch.tensor([[0], [60]]))), DataError,
     "edges name nodes 0..60 but there are 60 nodes"),
    (lambda tmp: Planetoid.from_graph(broken(val_mask=torch.zeros(60, dtype=torch.bool))), DataError,
     "val_mask selects no node"),
    (lambda tmp: Planetoid.from_graph(broken(test_mask=None)), DataError, "has no test_mask"),
    (lambda tmp: Planetoid.from_graph(broken(train_mask=torch.ones(60))), DataError, "train_mask must be a boolean"),
    (lambda tmp: Planetoid.from_graph(42), DataError, "give a torch_geometric Data"),
    (lambda tmp: Planetoid(graph=str(tmp / "nothing.pt")), DataError, "does not exist.*torch.save"),
    (lambda tmp: GCN(dropout=1.0), ConfigError, "dropout must be in"),
    (lambda tmp: GCN(hidden=0), ConfigError, "hidden must be 1 or more"),
    (lambda tmp: GCN(lr=-1.0), ConfigError, "lr must be a learning rate"),
])
def test_bad_input_is_refused_in_one_line(make, error, words, tmp_path):
    with pytest.raises(error, match=words) as raised:
        make(tmp_path)
    assert "\n" not in str(raised.value)


def test_missing_planetoid_files_are_named(tmp_path):
    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for part in RAW_PARTS[:5]:  # x, tx, allx, y, ty present; ally, graph, test.index absent
        (raw / f"ind.cora.{part}").write_bytes(b"")
    with pytest.raises(DataError, match="lacks ind.cora.ally, ind.cora.graph, ind.cora.test.index"):
        Planetoid(root=str(tmp_path))


def test_wrong_data_and_wrong_sizes_are_refused_before_training(tmp_path):
    model = GCN()
    with pytest.raises(ConfigError, match="GCN classifies the nodes of a graph.*not Digits"):
        trainer(tmp_path).fit(model, Digits())
    model = GCN(num_features=5)
    with pytest.raises(ConfigError, match="built for 5 features per node .* Planetoid has 8"):
        trainer(tmp_path).fit(model, Planetoid.from_graph(planted_graph()))
    assert model.global_step == 0


# ---- training -------------------------------------------------------------------------------------------------
def test_weight_decay_on_the_first_layer_only():
    model = GCN(num_features=10, num_classes=3, weight_decay=5e-4)
    model.configure_model()
    first, second = model.configure_optimizers().param_groups
    assert first["weight_decay"] == 5e-4 and second["weight_decay"] == 0.0
    assert {id(p) for p in first["params"]} == {id(p) for p in model.conv1.parameters()}
    assert {id(p) for p in second["params"]} == {id(p) for p in model.conv2.parameters()}
    assert first["lr"] == second["lr"] == 0.01


def test_training_reduces_the_loss_and_bf16_mixed_trains(tmp_path):
    for precision in ("32-true", "bf16-mixed"):
        L.seed_everything(0, verbose=False)
        record = Losses()
        model = GCN(hidden=16, picture_nodes=0)
        data = Planetoid.from_graph(planted_graph())
        trainer(tmp_path, max_epochs=30, precision=precision, callbacks=[record]).fit(model, data)
        assert torch.isfinite(torch.tensor(record.values)).all()
        assert sum(record.values[-3:]) < 0.7 * sum(record.values[:3]), (precision, record.values)
        (metrics,) = trainer(tmp_path, precision=precision).test(model, data, verbose=False)
        assert metrics["test/accuracy"] > 0.8, precision


def test_gcn_beats_the_mlp_on_cora(tmp_path):
    shared_data("planetoid", "Cora", "raw")
    data = Planetoid("Cora")
    accuracy = {}
    for arch in ("gcn", "mlp"):
        L.seed_everything(0, verbose=False)
        record = Losses()
        model = GCN(arch=arch, picture_nodes=0)
        trainer(tmp_path, max_epochs=100, callbacks=[record], limit_val_batches=0).fit(model, data)
        assert record.values[-1] < 0.6 * record.values[0], (arch, record.values[::10])
        (metrics,) = trainer(tmp_path).test(model, data, verbose=False)
        accuracy[arch] = metrics["test/accuracy"]
    assert accuracy["gcn"] > 0.7 and accuracy["gcn"] > accuracy["mlp"] + 0.15, accuracy


# ---- DDP, resume, a checkpoint without data, the command line ---------------------------------------------------
def test_ddp_on_two_processes_equals_one_process(tmp_path, monkeypatch):
    """Every process holds the whole graph and draws the same dropout masks: DDP's averaged gradient is the one
    process's gradient, so two gloo processes end with the same weights and the same validation metrics."""
    torch.save(planted_graph(), tmp_path / "graph.pt")
    common = ["fit", "--config", TINY, "--data.graph", "graph.pt", "--data.normalize_features", "false",
              "--trainer.max_epochs", "8", "--trainer.logger", "false", "--model.picture_nodes", "0",
              "--trainer.callbacks+=tests.test_gcn.SaveFitMetrics", *QUIET]
    two = run_cli([*common, "--trainer.default_root_dir", "two", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
                  tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    monkeypatch.chdir(tmp_path)
    GenCLI(args=[*common, "--trainer.default_root_dir", "one"])  # one process, in this one
    metrics = {d: json.loads((tmp_path / d / "fit_metrics.json").read_text()) for d in ("one", "two")}
    for key in ("val/accuracy", "val/loss", "train/loss"):
        assert metrics["two"][key] == pytest.approx(metrics["one"][key], abs=1e-6), key
    weights = {d: torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in ("one", "two")}
    for name, value in weights["one"].items():
        torch.testing.assert_close(weights["two"][name], value, rtol=0, atol=1e-6)


def test_cli_fit_resume_test_predict_and_a_checkpoint_without_data(tmp_path, monkeypatch):
    shared_data("planetoid", "Cora", "raw")
    monkeypatch.chdir(tmp_path)
    args = ["--config", TINY, "--trainer.logger", "false", "--trainer.default_root_dir", "run", *QUIET]
    main(["fit", *args])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt, weights_only=True)
    assert first["global_step"] == 3 and first["hyper_parameters"]["num_features"] == 1433
    main(["fit", *args, "--ckpt_path", "last", "--trainer.max_epochs", "5"])
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["global_step"] == 5  # two more epochs of one step, from where it stopped
    assert int(resumed["optimizer_states"][0]["state"][0]["step"]) == 5  # Adam's state continued
    main(["test", *args, "--ckpt_path", str(ckpt)])
    assert list((tmp_path / "run" / "samples").glob("test_embedding_epoch*.png"))  # t-SNE of the hidden layer
    main(["predict", *args, "--ckpt_path", str(ckpt)])
    rows = list(csv.DictReader((tmp_path / "run" / "predictions" / "node_predictions.csv").open()))
    assert len(rows) == 2708 and [int(r["node"]) for r in rows] == list(range(2708))
    probabilities = torch.tensor([[float(r[f"probability_{c}"]) for c in range(7)] for r in rows])
    assert torch.allclose(probabilities.sum(1), torch.ones(1), atol=1e-4)
    assert all(int(r["predicted"]) == int(p.argmax()) for r, p in zip(rows[:50], probabilities[:50]))

    monkeypatch.delenv("LIGHTNING_GEN_DATA")  # a trained model needs no data folder to load
    model = GCN.load_from_checkpoint(ckpt, map_location="cpu")
    assert (model.hparams.num_features, model.hparams.num_classes) == (1433, 7)
    graph = planted_graph(per_class=10, classes=7, features=1433)
    predicted = trainer(tmp_path).predict(model, Planetoid.from_graph(graph))
    assert predicted[0]["probabilities"].shape == (70, 7)


def test_the_command_line_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", TINY, "--data.root", str(tmp_path / "none"), "--trainer.logger", "false", *QUIET])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0 and "Planetoid Cora was not found" in err, err
