"""Metric learning: the losses against their closed forms, the retrieval metrics against pytorch-metric-learning's
`AccuracyCalculator`, the P x K batches, Omniglot and Lake's runs, and Siamese / Triplet through the command line
(fit, test, predict, DDP, mixed precision, bad input)."""

from __future__ import annotations

import json
import re

import lightning as L
import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from datamodules import ClassBatches, DataError, Digits, Omniglot
from datamodules.metric import ClassBatchSampler
from lightning_gen import Siamese, Triplet
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.embedding import pair_distances, scatter_picture
from lightning_gen.metrics.retrieval import majority, one_shot_accuracy, retrieval_metrics
from lightning_gen.nn.embedding import EmbeddingNet, VerificationHead
from lightning_gen.siamese import contrastive_pairs
from lightning_gen.triplet import triplet_losses
from tests.conftest import QUIET, ROOT, run_cli, shared_data

TRIPLET = str(ROOT / "configs" / "triplet" / "tiny.yaml")
SIAMESE = str(ROOT / "configs" / "siamese" / "tiny.yaml")
SAVE_METRICS = "--trainer.callbacks+=tests.helpers.SaveTestMetrics"

# four points on a line (unnormalised distances are |x_i - x_j|), classes 0 0 1 1
POINTS = torch.tensor([[0.0, 0.0], [0.3, 0.0], [1.0, 0.0], [2.5, 0.0]])
CLASSES = torch.tensor([0, 0, 1, 1])
PLAIN = LpDistance(normalize_embeddings=False)


def test_contrastive_loss_is_the_closed_form():
    """Same-class pairs: max(0, d - pos_margin); different-class pairs: max(0, neg_margin - d); each part averaged
    over its pairs with a loss above 0, the parts added."""
    loss = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.2, distance=PLAIN)
    pos = [0.3, 1.5]  # d(0,1), d(2,3)
    neg = [max(0.0, 1.2 - d) for d in (1.0, 2.5, 0.7, 2.2)]  # d(0,2), d(0,3), d(1,2), d(1,3)
    expected = sum(pos) / 2 + sum(n for n in neg if n > 0) / sum(n > 0 for n in neg)
    assert loss(POINTS, CLASSES).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_loss_is_the_closed_form_and_semi_hard_mining_picks_the_band():
    """max(0, d(a,p) - d(a,n) + m) averaged over the triplets above 0; semi-hard keeps d(a,p) < d(a,n) < d(a,p)+m."""
    margin = 0.5
    a, p, n = [], [], []
    for i in range(4):
        for j in range(4):
            for k in range(4):
                if i != j and CLASSES[i] == CLASSES[j] and CLASSES[i] != CLASSES[k]:
                    a.append(i), p.append(j), n.append(k)
    a, p, n = map(torch.tensor, (a, p, n))
    each = triplet_losses(POINTS, a, p, n, margin)
    expected = each[each > 0].mean()
    loss = losses.TripletMarginLoss(margin=margin, distance=PLAIN)
    assert loss(POINTS, CLASSES).item() == pytest.approx(expected.item(), rel=1e-5)
    d = torch.cdist(POINTS, POINTS)
    band = (d[a, p] < d[a, n]) & (d[a, n] < d[a, p] + margin)
    mined = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=PLAIN)(POINTS, CLASSES)
    assert sorted(zip(*(t.tolist() for t in mined))) == sorted(zip(a[band].tolist(), p[band].tolist(),
                                                                   n[band].tolist()))


def test_retrieval_metrics_equal_pytorch_metric_learning_without_faiss():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=generator)
    embeddings = torch.randn(300, 8, generator=generator) + labels[:, None].float() * 0.4
    ours = retrieval_metrics(embeddings, labels, k=1)
    calculator = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                    knn_func=CustomKNN(LpDistance(normalize_embeddings=False)))
    theirs = calculator.get_accuracy(embeddings, labels)  # the query set is the reference set: leave one out
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours["knn_accuracy"] == ours["precision_at_1"]  # one neighbour votes


def test_map_at_r_of_a_small_ranking():
    """Classes {0, 1, 2} and {3} on a line: each query of class 0 has R = 2, and only its R nearest count."""
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [1.8]])
    labels = torch.tensor([0, 0, 0, 1])
    metrics = retrieval_metrics(embeddings, labels, k=3)
    # item 0: order 1, 3 -> hit at rank 1: AP = (1/1) / 2; item 1: order 3, 0 -> hit at rank 2: AP = (1/2) / 2;
    # item 2: order 3, 1 -> hit at rank 2: AP = (1/2) / 2; item 3 has no other item of its class: not a query
    assert metrics["queries"] == 3
    assert metrics["map_at_r"] == pytest.approx((0.5 + 0.25 + 0.25) / 3)
    assert metrics["precision_at_1"] == pytest.approx(1 / 3)


def test_majority_vote_breaks_ties_by_nearness():
    votes = torch.tensor([[3, 1, 1], [2, 5, 5], [4, 7, 9], [6, 8, 6]])
    assert majority(votes).tolist() == [1, 5, 4, 6]


def test_one_shot_accuracy_matches_each_query_to_its_nearest_support():
    embeddings = torch.tensor([[0.0], [10.0], [1.0], [9.0], [0.0], [10.0], [6.0], [4.0]])
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    episodes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    support = torch.tensor([True, True, False, False, True, True, False, False])
    accuracy, per_episode = one_shot_accuracy(embeddings, labels, episodes, support)
    assert per_episode.tolist() == [1.0, 0.0] and accuracy == 0.5


def test_verification_head_pairwise_equals_its_pairs_and_pairs_are_balanced():
    torch.manual_seed(0)
    head = VerificationHead(4)
    q, r = torch.randn(3, 4), torch.randn(5, 4)
    pairwise = head.pairwise(q, r, chunk=2)
    direct = torch.stack([head(q[i].expand(5, 4), r) for i in range(3)])
    torch.testing.assert_close(pairwise, direct)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    i, j, same = contrastive_pairs(labels)
    assert (i < j).all() and int(same.sum()) == 3 and len(same) == 6
    assert torch.equal(labels[i] == labels[j], same)


def test_embedding_net_shapes_and_pair_distances():
    net = EmbeddingNet((1, 28, 28), embedding_dim=5, width=4)
    out = net(torch.randn(6, 1, 28, 28))
    assert out.shape == (6, 5) and torch.allclose(out.norm(dim=1), torch.ones(6))
    assert len(net.features) == 2  # 28 -> 14 -> 7: a third block would go below 4... 7 >= 8 is false
    d = pair_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    assert d["pos_distance"].item() == pytest.approx(5.0)
    assert d["neg_distance"].item() == pytest.approx((1.0 + (9 + 9) ** 0.5) / 2)
    picture = scatter_picture(torch.randn(50, 2), torch.arange(50) % 10, side=64)
    assert picture.shape == (3, 64, 64) and picture.min() >= -1 and (picture < 1).any()


def test_class_batches_hold_p_classes_of_k_and_processes_share_no_batch():
    labels = torch.arange(60) % 6
    one = ClassBatchSampler(labels, classes_per_batch=3, samples_per_class=4, num_batches=5, seed=1)
    batches = torch.tensor(list(one)).view(5, 12)
    for batch in batches:
        assert len(batch.unique()) == 12  # distinct images
        counts = torch.bincount(labels[batch], minlength=6)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]
    ranks = []
    for rank in range(2):
        sampler = ClassBatchSampler(labels, 3, 4, num_batches=5, seed=1)
        sampler.num_replicas, sampler.rank = 2, rank
        ranks.append(torch.tensor(list(sampler)).view(5, 12))
    interleaved = torch.stack([ranks[0], ranks[1]], 1).flatten(0, 1)  # global batches 0, 1, 2, ...
    single = ClassBatchSampler(labels, 3, 4, num_batches=10, seed=1)
    assert torch.equal(interleaved, torch.tensor(list(single)).view(10, 12))


def test_class_batches_refuse_what_mining_cannot_use():
    def setup(**kwargs):
        data = ClassBatches(Digits(batch_size=32), **kwargs)
        data.setup("fit")
        return data

    with pytest.raises(DataError, match="samples_per_class=500 is more than the 1.. training images of Digits's "
                                        "smallest class. Use at most 1.."):
        setup(samples_per_class=500)
    with pytest.raises(DataError, match="classes_per_batch=6 is more than the 5 classes Digits trains on. Use at "
                                        "most 5"):
        setup(classes_per_batch=6, train_classes=[0, 1, 2, 3, 4])
    with pytest.raises(DataError, match=r"eval_classes \[10\] are not classes of Digits, whose classes are 0..9"):
        setup(eval_classes=[10])
    with pytest.raises(DataError, match="samples_per_class must be 2 or more"):
        ClassBatches(Digits(), samples_per_class=1)
    data = setup(classes_per_batch=5, samples_per_class=3, train_classes=[0, 1, 2, 3, 4], eval_classes=[5, 6, 7, 8, 9])
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (15, 1, 8, 8) and set(labels.tolist()) <= {0, 1, 2, 3, 4}
    assert set(next(iter(data.val_dataloader()))[1].tolist()) <= {5, 6, 7, 8, 9}


def test_omniglot_minimal_splits_and_lakes_runs():
    shared_data("omniglot")
    data = Omniglot(val_characters=20, image_size=28)
    data.setup("fit")
    assert data.num_classes == 242 and len(data.train_set) + len(data.val_set) == 242 * 20
    assert len(data.val_set) == 20 * 20 and data.image_shape == (1, 28, 28)
    image, label = data.train_set[0]
    assert image.shape == (1, 28, 28) and image.min() == -1.0 and image.max() > 0.5  # bright strokes on -1
    runs = data.test_set
    assert len(runs) == 20 * 40
    items = [runs[i] for i in range(40)]  # run 1: 20 training images, then 20 test images
    assert [s for _, _, _, s in items] == [True] * 20 + [False] * 20
    assert sorted(label for _, label, _, s in items if not s) == list(range(20))  # each class once
    turned = Omniglot(val_characters=20, image_size=28, rotations=True)
    turned.setup("fit")
    assert turned.num_classes == 4 * 242 and len(turned.train_set) == 4 * len(data.train_set)
    first, label = turned.train_set[0]
    quarter, quarter_label = turned.train_set[len(data.train_set)]  # the same image, turned once: a new class
    assert quarter_label == label + 242 and torch.equal(quarter, torch.rot90(first, 1, dims=(1, 2)))
    assert len(turned.val_set) == len(data.val_set)  # validation characters are not turned


def test_omniglot_without_its_zips_says_which_are_missing(tmp_path):
    import zipfile

    zipfile.ZipFile(tmp_path / "images_background_small1.zip", "w").close()
    with pytest.raises(DataError, match=r"images_background_small2.zip is missing: Omniglot needs the zip files as "
                                        r"published .* Point Omniglot's `root` at the folder that holds them "
                                        r"\(`--data.root`, or `--data.data.root` when it is wrapped in "
                                        r"`ClassBatches`\)"):
        Omniglot(root=str(tmp_path)).setup("fit")
    (tmp_path / "images_background_small2.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"images_background_small2.zip is not a readable zip file"):
        Omniglot(root=str(tmp_path)).setup("fit")
    zipfile.ZipFile(tmp_path / "images_background_small2.zip", "w").close()
    with pytest.raises(DataError, match="hold no `<split>/<alphabet>/<character>/\\*.png` images"):
        Omniglot(root=str(tmp_path)).setup("fit")


def test_training_reduces_the_triplet_loss_and_retrieves_held_out_images_better():
    L.seed_everything(0)
    data = ClassBatches(Digits(batch_size=128), classes_per_batch=5, samples_per_class=8, batches_per_epoch=50,
                        seed=0)  # validation: images held out of training
    model = Triplet(mining="none", embedding_dim=16, width=16, projection="pca", lr=3e-3, image_shape=(1, 8, 8))
    model.configure_model()  # the networks, to measure the untrained embedding
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    every_triplet = losses.TripletMarginLoss(margin=0.2, reducer=MeanReducer())  # the mean over all, not the nonzero
    before_loss = every_triplet(model.embed(images), labels).item()
    val_images, val_labels = map(torch.cat, zip(*data.val_dataloader()))
    before = retrieval_metrics(model.embed(val_images), val_labels)["map_at_r"]
    trainer.fit(model, data)
    after_loss = every_triplet(model.embed(images), labels).item()
    after = retrieval_metrics(model.embed(val_images), val_labels)["map_at_r"]
    assert after_loss < 0.7 * before_loss, (before_loss, after_loss)
    assert after > before + 0.1, (before, after)


def test_bad_options_are_refused_when_built():
    with pytest.raises(ConfigError, match="embedding_dim must be 1 or more, got 0."):
        Triplet(embedding_dim=0)
    with pytest.raises(ConfigError, match="margin must be above 0, got -1"):
        Siamese(margin=-1)
    with pytest.raises(ConfigError, match="`loss` and `miner` apply to head: distance"):
        Siamese(head="verification", miner=miners.MultiSimilarityMiner())


def test_siamese_on_omniglot_trains_in_bf16_tests_in_16_mixed_and_reports_the_one_shot_accuracy(tmp_path):
    shared_data("omniglot")
    common = ["--config", SIAMESE, "--model.head", "verification", "--trainer.logger", "false",
              "--trainer.default_root_dir", "run", *QUIET]
    result = run_cli(["fit", *common, "--trainer.precision", "bf16-mixed"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    test = run_cli(["test", *common, "--trainer.precision", "16-mixed", "--ckpt_path",
                    str(tmp_path / "run" / "checkpoints" / "last.ckpt"), SAVE_METRICS], tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    said = re.search(r"20-way one-shot accuracy over 20 runs: ([\d.]+)% \(runs: ([\d, ]+)\)", test.stdout + test.stderr)
    assert said, test.stdout[-2000:]
    accuracy = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["test/one_shot_accuracy"]
    runs = [float(a) for a in said[2].split(",")]  # each run's accuracy, in whole percent (20 queries: 5% steps)
    assert len(runs) == 20 and all(a % 5 == 0 for a in runs)
    assert accuracy * 100 == pytest.approx(float(said[1]), abs=0.01) == pytest.approx(sum(runs) / 20, abs=0.01)


@pytest.mark.slow
def test_triplet_through_the_cli_ddp_fit_test_like_one_process_predict_and_resume(tmp_path):
    """Fit on two processes (mining across them), then `test` on one and on two processes: the embeddings of every
    test item are gathered once, so the metrics are the same; `predict` writes the embeddings; a resumed fit
    continues where it stopped."""
    args = ["--config", TRIPLET, "--trainer.logger", "false", "--trainer.default_root_dir", "run", *QUIET]
    fit = run_cli(["fit", *args, "--trainer.devices", "2", "--trainer.strategy", "ddp"], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    samples = {p.name for p in (tmp_path / "run" / "samples").iterdir()}
    assert {"val_embedding_epoch0001.png", "val_retrieval_epoch0001.png"} <= samples, samples
    assert torch.load(ckpt, weights_only=True)["global_step"] == 8  # 2 epochs of 4 batches on each process
    metrics = {}
    for devices in ("1", "2"):
        result = run_cli(["test", *args, "--ckpt_path", str(ckpt), "--trainer.devices", devices, "--trainer.strategy",
                          "ddp" if devices == "2" else "auto", "--data.data.batch_size", "37",
                          "--trainer.limit_test_batches", "1.0", "--trainer.default_root_dir", f"test{devices}",
                          SAVE_METRICS], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[devices] = json.loads((tmp_path / f"test{devices}" / "test_metrics.json").read_text())
    for key in ("test/precision_at_1", "test/map_at_r", "test/knn_accuracy"):
        assert metrics["1"][key] == pytest.approx(metrics["2"][key], abs=1e-6), key
    predict = run_cli(["predict", *args, "--ckpt_path", str(ckpt)], tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    written = torch.load(tmp_path / "run" / "predictions" / "embeddings.pt", weights_only=True)
    assert written["embeddings"].shape[1] == 8 and len(written["embeddings"]) == len(written["labels"])
    assert set(written["labels"].tolist()) <= {5, 6, 7, 8, 9}
    resumed = run_cli(["fit", *args, "--ckpt_path", "last", "--trainer.max_epochs", "3"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(ckpt, weights_only=True)["global_step"] == 12  # one more epoch, from where it stopped
