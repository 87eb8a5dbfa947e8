"""Sentiment classification (TextClassifier, TextClassification): the tokenizer and the vocabulary, the aclImdb folder
layout and the TSV of scored snippets (both written here), the hashed n-grams of the bag against a hand computation,
each network's shapes and indifference to padding,
training on a separable toy corpus, mixed precision, checkpoint -> predict without data, resume, DDP equal to one
process, bad input, and the real snippets file."""

from __future__ import annotations

import csv
import json
import random

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from datamodules import DataError, TextClassification
from datamodules.text_classification import PAD, UNK, UNK_INDEX, build_vocabulary, encode, pad_batch, tokenize
from lightning_gen import TextClassifier
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.cli import main
from lightning_gen.nn.text_classifier import NGRAM_PRIME, BagOfEmbeddings, hashed_ngrams
from tests.conftest import QUIET, ROOT, run_cli, shared_data
from tests.helpers import fp16_on_cpu

TINY = str(ROOT / "configs" / "text_classifier" / "tiny.yaml")
SMALL = {"bag": dict(encoder="bag", embedding_dim=16, dropout=0.0),
         "bigram": dict(encoder="bag", embedding_dim=16, ngrams=2, ngram_buckets=500, dropout=0.0),
         "lstm": dict(encoder="lstm", embedding_dim=16, hidden=12, dropout=0.0),
         "cnn": dict(encoder="cnn", embedding_dim=16, kernel_sizes=[2, 3], num_filters=8, dropout=0.0)}

POSITIVE, NEGATIVE = ["great", "superb", "moving", "wonderful"], ["awful", "dull", "boring", "terrible"]
NEUTRAL = ["the", "film", "plot", "actor", "scene", "story", "it", "was", "a", "and", "director", "music", "ending",
           "this", "cast", "script", "camera", "is", "of", "to"]


def toy_corpus(n: int, seed: int = 0) -> list[tuple[float, str]]:
    """(score, text): 3 to 12 neutral words with one or two words of the text's sentiment somewhere among them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 12))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append((round(rng.uniform(0.5, 3.5), 2) * (1 if positive else -1), " ".join(words).capitalize() + "."))
    return rows


def write_tsv(path, rows: list[tuple[float, str]], line_end: str = "\r\n"):
    path.write_text(line_end.join(f"{i}\t{score}\t{text}" for i, (score, text) in enumerate(rows, 1)) + line_end,
                    encoding="utf-8", newline="")
    return path


@pytest.fixture(scope="module")
def toy_tsv(tmp_path_factory):
    return write_tsv(tmp_path_factory.mktemp("toy") / "toy.tsv", toy_corpus(240))


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                    num_sanity_val_steps=0, limit_val_batches=0)
    return L.Trainer(**{**defaults, **kwargs})


# ---- tokenizer and vocabulary ----------------------------------------------------------------------------------
def test_tokenizer_lowercases_keeps_apostrophe_words_and_drops_punctuation_and_html_breaks():
    assert tokenize("It's GREAT!<br /><br />10/10, isn't it? ''Conan''") == [
        "it's", "great", "10", "10", "isn't", "it", "conan"]
    assert tokenize("co-writer/director; naïve") == ["co", "writer", "director", "na", "ve"]
    assert tokenize("  ... !!! ") == []


def test_vocabulary_order_and_unknown_words():
    texts = [["b", "a", "c", "a"], ["c", "d", "a"], ["b", "e"]]  # a: 3, b: 2, c: 2, d: 1, e: 1
    assert build_vocabulary(texts, 100) == [PAD, UNK, "a", "b", "c", "d", "e"]  # ties alphabetical
    assert build_vocabulary(texts, 4) == [PAD, UNK, "a", "b"]
    assert build_vocabulary(texts, 100, min_count=2) == [PAD, UNK, "a", "b", "c"]
    assert build_vocabulary(texts, 2) == [PAD, UNK]
    index = {w: i for i, w in enumerate(build_vocabulary(texts, 4))}
    assert encode(["a", "zzz", "b", "c"], index, 10).tolist() == [2, UNK_INDEX, 3, UNK_INDEX]
    assert encode(["a", "b", "a"], index, 2).tolist() == [2, 3]  # truncated to max_length
    assert encode([], index, 5).tolist() == [UNK_INDEX]  # a text without words reads one <unk>
    tokens, labels = pad_batch([(torch.tensor([4, 5, 6]), 1), (torch.tensor([7]), 0)])
    assert tokens.tolist() == [[4, 5, 6], [7, 0, 0]] and labels.tolist() == [1, 0]
    assert tokens.dtype == labels.dtype == torch.int64


# ---- the two sources -------------------------------------------------------------------------------------------
def test_tsv_with_crlf_drops_zero_scores_and_splits_by_seed(tmp_path):
    rows = [(2.5, "A great film"), (0.0, "Neutral words only"), (-1.0, "A dull film"), (-0.1, "Slightly dull"),
            *[(1.0 if i % 2 else -1.0, f"filler {i} words") for i in range(36)], (0.4, "trainonly testonly")]
    path = write_tsv(tmp_path / "reviews.tsv", rows)
    assert b"\r\n" in path.read_bytes()
    data = TextClassification(path=str(path), val_fraction=0.2, test_fraction=0.2, batch_size=4)
    data.setup("fit")
    sizes = [len(data.train_set), len(data.val_set), len(data.test_set)]
    assert sum(sizes) == len(rows) - 1 and sizes == [24, 8, 8]  # the zero-scored line left out
    every_label = data.train_set.labels + data.val_set.labels + data.test_set.labels
    assert sorted(every_label) == sorted([int(s > 0) for s, _ in rows if s != 0])
    assert data.vocabulary[:2] == [PAD, UNK] and "neutral" not in data.vocabulary
    tokens, labels = next(iter(data.train_dataloader()))
    assert tokens.dtype == labels.dtype == torch.int64 and tokens.shape[0] == 4 and labels.shape == (4,)
    again = TextClassification(path=str(path), val_fraction=0.2, test_fraction=0.2, batch_size=4)
    again.setup("fit")
    assert again.vocabulary == data.vocabulary and again.test_set.labels == data.test_set.labels
    other = TextClassification(path=str(path), val_fraction=0.2, test_fraction=0.2, split_seed=1)
    other.setup("fit")
    assert [t.tolist() for t in other.test_set.tokens] != [t.tolist() for t in data.test_set.tokens]


def write_aclimdb(root, per_class: dict[str, int]):
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / split / label
            folder.mkdir(parents=True)
            word = "wonderful" if label == "pos" else "terrible"
            for i in range(per_class[split]):
                rating = 8 if label == "pos" else 2
                (folder / f"{i}_{rating}.txt").write_text(f"A {word} movie.<br /><br />Take {i}.", encoding="utf-8")
    (root / "train" / "unsup").mkdir()  # the unlabeled folder of the real archive is ignored
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabeled", encoding="utf-8")
    return root


def test_aclimdb_layout_train_val_split_and_test_folder_and_nothing_written(tmp_path):
    root = write_aclimdb(tmp_path / "aclImdb", {"train": 10, "test": 3})
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    data = TextClassification(path=str(root), val_fraction=0.2, batch_size=4)
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (16, 4, 6)
    assert sorted(data.test_set.labels) == [0, 0, 0, 1, 1, 1]
    assert {"wonderful", "terrible", "movie", "take"} <= set(data.vocabulary) and "br" not in data.vocabulary
    assert "unlabeled" not in data.vocabulary
    for tokens, label in zip(data.train_set.tokens, data.train_set.labels):
        assert data.vocabulary[int(tokens[1])] == ("wonderful" if label == 1 else "terrible")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


# ---- the networks ----------------------------------------------------------------------------------------------
def test_hashed_ngrams_equal_a_hand_computation_and_padding_makes_none():
    tokens = torch.tensor([[5, 9, 2, 0, 0], [7, 0, 0, 0, 0], [4, 4, 4, 4, 4]])
    assert NGRAM_PRIME % 13 == 3
    ids, inside = hashed_ngrams(tokens, 2, 13)  # (a * P + b) % 13 = (3a + b) % 13
    assert ids.shape == inside.shape == (3, 4)
    assert inside.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]  # no pair touches padding
    assert ids[0, :2].tolist() == [(3 * 5 + 9) % 13, (3 * 9 + 2) % 13] == [11, 3]
    assert ids[2].tolist() == [(3 * 4 + 4) % 13] * 4 == [3] * 4
    ids, inside = hashed_ngrams(tokens, 3, 13)  # pairs (t = 0..3), then triples (t = 0..2)
    assert ids.shape == (3, 7) and inside[0].tolist() == [True, True, False, False, True, False, False]
    assert ids[0, 4].item() == (3 * 11 + 2) % 13 == 9  # h(5, 9, 2) = (h(5, 9) * P + 2) % 13
    assert inside[1].sum() == 0 and inside[2].sum() == 7
    big = torch.tensor([[19_999, 19_998]])  # int64 never overflows: the same as Python's unbounded integers
    assert hashed_ngrams(big, 2, 2_000_000)[0].item() == (19_999 * NGRAM_PRIME + 19_998) % 2_000_000
    ids, inside = hashed_ngrams(tokens, 1, 13)
    assert ids.shape == inside.shape == (3, 0)


def test_bigram_bag_is_the_mean_of_the_word_and_pair_embeddings():
    torch.manual_seed(0)
    net = BagOfEmbeddings(vocab_size=12, embedding_dim=4, num_classes=2, dropout=0.0, ngrams=2, ngram_buckets=13)
    words, pairs = net.embedding.weight, net.ngram_embedding.weight  # (12, 4), (13, 4)
    tokens = torch.tensor([[5, 9, 2, 0, 0], [7, 0, 0, 0, 0]])
    expected = torch.stack([(words[5] + words[9] + words[2] + pairs[11] + pairs[3]) / 5, words[7]])  # 3 words, 2 pairs
    torch.testing.assert_close(net.bag(tokens), expected)
    torch.testing.assert_close(net(tokens), net.head(expected))
    torch.testing.assert_close(net.bag(tokens[:1, :3]), expected[:1])  # the padding changes nothing
    words_only = BagOfEmbeddings(12, 4, 2, 0.0)
    words_only.embedding.weight.data.copy_(words)
    torch.testing.assert_close(words_only.bag(tokens), torch.stack([(words[5] + words[9] + words[2]) / 3, words[7]]))


NETS = [dict(SMALL["bag"]), dict(SMALL["bigram"]), dict(SMALL["bigram"], ngrams=3, ngram_buckets=7), dict(SMALL["cnn"]),
        dict(SMALL["cnn"], kernel_sizes=[5]),
        *[dict(SMALL["lstm"], pooling=p, bidirectional=b, num_layers=n)
          for p, b, n in [("max", True, 1), ("mean", False, 2), ("last", True, 2), ("last", False, 1)]]]


@pytest.mark.parametrize("options", NETS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_output_shape_and_padding_does_not_change_the_logits(options):
    torch.manual_seed(0)
    model = TextClassifier(**options, vocab_size=30, num_classes=3)
    model.configure_model()
    model.eval()
    review = torch.tensor([5, 9, 2, 17, 3])
    alone = model(review[None])  # (1, 5) -> (1, 3)
    assert alone.shape == (1, 3)
    batch = torch.zeros(4, 11, dtype=torch.int64)
    batch[0, :5] = review
    batch[1, :11] = torch.arange(1, 12)
    batch[2, :2] = torch.tensor([4, 4])  # shorter than every filter width
    batch[3, :1] = 7
    logits = model(batch)
    assert logits.shape == (4, 3)
    torch.testing.assert_close(logits[0], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(batch[2:3, :2]), logits[2:3], rtol=1e-5, atol=1e-6)
    changed = batch[:1].clone()
    changed[0, 2] = 8  # a real word changes the output: the network reads the text
    assert not torch.allclose(model(changed), logits[:1])


def corpus_loss(model, data) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (eval mode) on the training split."""
    model.eval()
    with torch.no_grad():
        tokens, labels = pad_batch([data.train_set[i] for i in range(len(data.train_set))])
        logits = model(tokens)
    model.train()
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("encoder", ["bag", "bigram", "lstm", "cnn"])
def test_training_learns_a_separable_corpus(encoder, toy_tsv, tmp_path):
    L.seed_everything(0)
    data = TextClassification(path=str(toy_tsv), batch_size=16)
    data.setup("fit")
    model = TextClassifier(**SMALL[encoder], lr=0.01)
    trainer(tmp_path, max_epochs=6).fit(model, data)
    loss, accuracy = corpus_loss(model, data)
    fresh = TextClassifier(**SMALL[encoder], vocab_size=len(data.vocabulary), num_classes=2)
    fresh.configure_model()
    first, _ = corpus_loss(fresh, data)
    assert loss < 0.3 * first and accuracy > 0.95, (first, loss, accuracy)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_every_encoder(precision, toy_tsv, tmp_path):
    for encoder in ("bag", "bigram", "lstm", "cnn"):
        L.seed_everything(0)
        data = TextClassification(path=str(toy_tsv), batch_size=16)
        model = TextClassifier(**SMALL[encoder], lr=0.01)
        plugin = {"plugins": [fp16_on_cpu()]} if precision == "16-mixed" else {"precision": precision}
        trainer(tmp_path, max_epochs=4, **plugin).fit(model, data)
        loss, accuracy = corpus_loss(model, data)
        assert loss < 0.45 and accuracy > 0.9, (precision, encoder, loss, accuracy)  # a fresh model: ln 2 = 0.69


# ---- checkpoints: predict without data, resume, DDP ------------------------------------------------------------
def cli_args(tmp_path, data_path, *extra):
    return ["--config", TINY, "--data.path", str(data_path), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), *QUIET, *extra]


@pytest.mark.parametrize("options", [[], ["--model.encoder=bag", "--model.ngrams=2", "--model.ngram_buckets=300"]],
                         ids=["cnn", "bigram-bag"])
def test_checkpoint_predicts_a_file_without_the_data(options, tmp_path, toy_tsv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *cli_args(tmp_path, toy_tsv, *options)])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("A superb, moving film.\r\n\r\nDull and boring; the plot, \"terrible\".\r\nnever seen words\r\n",
                       encoding="utf-8", newline="")
    main(["predict", *cli_args(tmp_path, tmp_path / "no-such-data.tsv", *options, "--ckpt_path", str(ckpt),
                               "--model.predict_file", str(reviews))])
    rows = list(csv.DictReader((tmp_path / "predictions" / "predictions.csv").open(encoding="utf-8")))
    assert [r["line"] for r in rows] == ["1", "3", "4"]  # the blank line 2 skipped
    assert rows[1]["text"] == 'Dull and boring; the plot, "terrible".'
    assert list(rows[0]) == ["line", "text", "probability_positive"]
    assert all(0.0 <= float(r["probability_positive"]) <= 1.0 for r in rows)
    model = TextClassifier.load_from_checkpoint(ckpt)  # no data: vocabulary and shapes from the checkpoint
    assert model.vocabulary[:2] == [PAD, UNK] and model.hparams.vocab_size == len(model.vocabulary)
    assert model.hparams.max_length == 40
    assert (model.hparams.encoder, model.hparams.ngrams) == (("bag", 2) if options else ("cnn", 1))
    tokens = encode(tokenize("A superb, moving film."), {w: i for i, w in enumerate(model.vocabulary)}, 40)
    probability = model.eval()(tokens[None]).softmax(1)[0, 1].item()
    assert probability == pytest.approx(float(rows[0]["probability_positive"]), abs=1e-5)


def test_resume_continues_and_other_data_is_refused(tmp_path, toy_tsv):
    data = TextClassification(path=str(toy_tsv), batch_size=16)
    first = trainer(tmp_path, max_epochs=1)
    first.fit(TextClassifier(**SMALL["cnn"]), data)
    first.save_checkpoint(tmp_path / "one.ckpt")
    steps = first.global_step
    model = TextClassifier(**SMALL["cnn"])
    second = trainer(tmp_path, max_epochs=2)
    second.fit(model, TextClassification(path=str(toy_tsv), batch_size=16), ckpt_path=tmp_path / "one.ckpt")
    assert second.global_step == 2 * steps and model.vocabulary == data.vocabulary
    other = write_tsv(tmp_path / "other.tsv", [(1.0 if i % 2 else -1.0, f"other words {i}") for i in range(40)])
    with pytest.raises(ConfigError, match="not the checkpoint's"):
        trainer(tmp_path, max_epochs=2).fit(TextClassifier(**SMALL["cnn"]), TextClassification(path=str(other)),
                                            ckpt_path=tmp_path / "one.ckpt")


@pytest.mark.slow
def test_ddp_test_accuracy_equals_one_process(tmp_path, monkeypatch):
    # 39 test texts in batches of 8: on 2 processes the sampler repeats one, which must not count
    monkeypatch.chdir(tmp_path)
    path = write_tsv(tmp_path / "ddp.tsv", toy_corpus(130, seed=1))
    options = [*[f"--model.{k}={v}" for k, v in SMALL["lstm"].items()], "--data.batch_size", "8",
               "--data.val_fraction", "0.1", "--data.test_fraction", "0.3"]
    main(["fit", *cli_args(tmp_path / "one", path, *options)])
    ckpt = str(tmp_path / "one" / "checkpoints" / "last.ckpt")
    data = TextClassification(path=str(path), batch_size=8, val_fraction=0.1, test_fraction=0.3)
    (one,) = trainer(tmp_path).test(TextClassifier(**SMALL["lstm"]), data, ckpt_path=ckpt, verbose=False)
    assert len(data.test_set) == 39
    two = run_cli(["test", *cli_args("two", path, *options, "--ckpt_path", ckpt, "--trainer.devices", "2",
                                     "--trainer.strategy", "ddp", "--trainer.limit_test_batches", "1.0",
                                     "--trainer.callbacks+=tests.helpers.SaveTestMetrics")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "test_metrics.json").read_text())
    for key in ("test/accuracy", "test/loss"):
        assert metrics[key] == pytest.approx(one[key], abs=1e-5), (key, metrics, one)


# ---- bad input: one line naming the fix, before training -------------------------------------------------------
def bad_inputs(tmp_path) -> list[tuple[object, type, str]]:
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("1\t1.0\tcaf\xe9 cr\xe8me\r\n".encode("latin-1"))
    no_neg = write_aclimdb(tmp_path / "acl", {"train": 2, "test": 2})
    for f in (no_neg / "train" / "neg").iterdir():
        f.unlink()
    (no_neg / "train" / "neg").rmdir()
    two_columns = tmp_path / "two.tsv"
    two_columns.write_text("1\t1.0\tgood\r\n2\t-1.0\tbad\r\n3\tonly two columns\r\n", encoding="utf-8")
    not_a_number = tmp_path / "nan.tsv"
    not_a_number.write_text("1\t1.0\tgood\n2\tpositive\tbad\n", encoding="utf-8")
    tiny = write_tsv(tmp_path / "tiny.tsv", [(1.0, "good"), (-1.0, "bad"), (0.0, "meh")])
    return [
        (lambda: TextClassification(path=str(tmp_path / "missing.tsv")).setup("fit"), DataError,
         "missing.tsv does not exist. Give --data.path"),
        (lambda: TextClassification(path=str(latin1)).setup("fit"), DataError, "is not UTF-8.*iconv -f latin1"),
        (lambda: TextClassification(path=str(no_neg)).setup("fit"), DataError, "train/neg is missing: the aclImdb"),
        (lambda: TextClassification(path=str(two_columns)).setup("fit"), DataError,
         "line 3: expected 3 tab-separated columns"),
        (lambda: TextClassification(path=str(not_a_number)).setup("fit"), DataError,
         "line 2: the score 'positive' .* is not a number"),
        (lambda: TextClassification(path=str(tiny)).setup("fit"), DataError,
         "split of .* is empty .* change --data.val_fraction"),
        (lambda: TextClassification(path=str(tiny), format="aclimdb").setup("fit"), DataError,
         "format aclimdb reads a folder"),
        (lambda: TextClassification(vocab_size=1), DataError, "vocab_size must be at least 2"),
        (lambda: TextClassification(val_fraction=0.6, test_fraction=0.5), DataError, "sum below 1"),
        (lambda: TextClassifier(dropout=1.0), ConfigError, r"dropout must be in \[0, 1\)"),
        (lambda: TextClassifier(kernel_sizes=[]), ConfigError, "kernel_sizes must list"),
        (lambda: TextClassifier(encoder="lstm", ngrams=2), ConfigError, "bag of embeddings only: set --model.encoder"),
        (lambda: TextClassifier(encoder="bag", ngrams=2, ngram_buckets=0), ConfigError, "ngram_buckets from 1 to"),
        (lambda: TextClassifier(lr=-1.0), ConfigError, "lr must be a learning rate"),
        (lambda: TextClassifier(num_classes=1), ConfigError, "num_classes must be 2 or more"),
        (lambda: TextClassifier().predict_dataloader(), ConfigError, "set it"),
        (lambda: TextClassifier().configure_model(), ConfigError, "needs a vocabulary"),
    ]


def test_bad_input_is_refused_in_one_line_naming_the_fix(tmp_path):
    for make, error, words in bad_inputs(tmp_path):
        with pytest.raises(error, match=words) as raised:
            make()
        assert "\n" not in str(raised.value), raised.value


def test_missing_predict_file_and_the_command_line_say_it_in_one_line(tmp_path, toy_tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = TextClassifier(**SMALL["bag"], vocab_size=5, num_classes=2, max_length=10,
                           predict_file=str(tmp_path / "none.txt"))
    model.vocabulary = [PAD, UNK, "a", "b", "c"]
    with pytest.raises(DataError, match="predict_file .*none.txt does not exist"):
        model.predict_dataloader()
    with pytest.raises(SystemExit) as stop:
        main(["fit", *cli_args(tmp_path, toy_tsv, "--data.vocab_size", "1")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0 and "vocab_size must be at least 2" in err, err
    with pytest.raises(SystemExit) as stop:
        main(["fit", *cli_args(tmp_path, tmp_path / "absent.tsv")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "absent.tsv does not exist" in err and "Traceback" not in err, err


# ---- the real data ---------------------------------------------------------------------------------------------
def test_the_movie_review_snippets_load():
    path = shared_data("text", "movie_review_snippets", "movieReviewSnippets_GroundTruth.txt")
    data = TextClassification(path=str(path))
    data.setup("fit")
    sizes = [len(data.train_set), len(data.val_set), len(data.test_set)]
    assert sum(sizes) == 10605 - 37 and sizes[1] == sizes[2] == 1057  # the 37 snippets rated exactly 0 left out
    labels = data.train_set.labels + data.val_set.labels + data.test_set.labels
    assert 0.45 < sum(labels) / len(labels) < 0.55
    assert data.vocabulary[:5] == [PAD, UNK, "the", "a", "and"] and len(data.vocabulary) > 10000
