"""The character-level language model: its streams, its baselines, its sampling, training, resume and DDP."""

from __future__ import annotations

import json
import math
import random

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules import CharText, DataError
from datamodules.char_text import UNKNOWN, StreamLoader, TextStreams, build_vocabulary, decode, encode
from lightning_gen import CharLSTM
from lightning_gen.char_lstm import reset_rows, sample_next
from lightning_gen.core.checks import ConfigError
from lightning_gen.metrics.text import KneserNey, kneser_ney_nats, unigram_nats
from tests.conftest import QUIET, ROOT, run_cli, shared_data
from tests.helpers import fp16_on_cpu

TINY = str(ROOT / "configs" / "char_lstm" / "tiny.yaml")
WORDS = ["the king", "my lord", "good night", "sweet prince", "to be", "or not", "and so", "farewell"]


def write_text(path, n_lines: int = 300, seed: int = 0) -> str:
    """A learnable text: lines of a few fixed phrases in random order."""
    rng = random.Random(seed)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(3)) + rng.choice([".", "!", "?"])
                     for _ in range(n_lines)) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def tiny_model(**kw) -> CharLSTM:
    defaults = dict(embedding_dim=8, hidden=16, num_layers=1, dropout=0.0, lr=0.01, sample_length=20)
    return CharLSTM(**{**defaults, **kw})


def trainer(tmp_path, **kw) -> L.Trainer:
    defaults = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                    default_root_dir=tmp_path, num_sanity_val_steps=0, enable_checkpointing=False)
    return L.Trainer(**{**defaults, **kw})


# ---- vocabulary and streams --------------------------------------------------------------------------------------


def test_vocabulary_is_sorted_after_the_unknown_symbol_and_unseen_characters_map_to_it():
    vocab = build_vocabulary("banana")
    assert vocab == [UNKNOWN, "a", "b", "n"]
    assert encode("bandana!", vocab).tolist() == [2, 1, 3, 0, 1, 3, 1, 0]
    assert decode(encode("nab", vocab), vocab) == "nab"
    assert build_vocabulary("a" + UNKNOWN).count(UNKNOWN) == 1


def test_streams_continue_from_batch_to_batch_and_processes_take_consecutive_blocks():
    data = torch.arange(1000)
    one = TextStreams(data, batch_size=4, seq_len=10)
    batches = list(one)
    assert len(batches) == len(one) == (999 // 4) // 10 == 24
    inputs = torch.cat([b[0] for b in batches], 1)  # (4, 240): each row one contiguous stream
    targets = torch.cat([b[1] for b in batches], 1)
    stream = 999 // 4
    for s in range(4):
        assert inputs[s].tolist() == list(range(s * stream, s * stream + 240))
    assert torch.equal(targets, inputs + 1)  # the next character
    assert [bool(b[2].all()) for b in batches] == [True] + [False] * 23
    assert not any(bool(b[2].any()) for b in batches[1:])
    # two processes with 2 streams each = one process with 4 streams, split in blocks
    parts = [list(TextStreams(data, batch_size=2, seq_len=10, rank=r, world_size=2)) for r in (0, 1)]
    for b, b0, b1 in zip(batches, *parts):
        assert torch.equal(b[0], torch.cat([b0[0], b1[0]])) and torch.equal(b[1], torch.cat([b0[1], b1[1]]))


def test_training_streams_shift_by_a_seeded_offset_per_epoch_and_resume_skips_the_done_batches():
    data = torch.arange(1000)
    shifted = TextStreams(data, batch_size=4, seq_len=10, shift_seed=3)
    assert len(shifted) == (999 // 4 - 9) // 10
    offsets = [shifted.offset(e) for e in range(8)]
    assert all(0 <= o < 10 for o in offsets) and len(set(offsets)) > 1
    assert offsets == [TextStreams(data, 4, 10, shift_seed=3).offset(e) for e in range(8)]  # the same every run
    shifted.epoch = 5
    first = next(iter(shifted))[0]
    assert first[0, 0] == offsets[5]
    loader = StreamLoader(shifted)
    loader.load_state_dict({"epoch": 5, "batches_done": 3})
    resumed = list(loader)
    assert len(resumed) == len(shifted) - 3 and resumed[0][0][0, 0] == offsets[5] + 30
    assert not resumed[0][2].any()  # the streams continue: no reset
    loader.load_state_dict({"epoch": 5, "batches_done": len(shifted)})  # a finished epoch: the next starts at 0
    assert len(list(loader)) == len(shifted)


def test_chartext_splits_by_position_and_builds_the_vocabulary_from_the_training_split(tmp_path):
    (tmp_path / "a.txt").write_text("abcabcabc" * 20 + "xyz", encoding="utf-8")
    dm = CharText(path=str(tmp_path / "a.txt"), seq_len=4, batch_size=2, val_fraction=0.1)
    dm.setup("fit")
    assert dm.train_text + dm.val_text == "abcabcabc" * 20 + "xyz"
    assert len(dm.val_text) == round(183 * 0.1)
    assert dm.vocabulary == [UNKNOWN, "a", "b", "c"]  # x, y, z only in the validation split
    assert dm.val_data[-3:].tolist() == [0, 0, 0]
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second " * 30, encoding="utf-8")
    (folder / "sub" / "a.md").write_text("first " * 30, encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\xff\xfe")
    dm = CharText(path=str(folder), seq_len=4, batch_size=2)
    dm.setup("fit")
    assert (dm.train_text + dm.val_text).startswith("second ") and "\nfirst " in dm.train_text


def test_the_real_tiny_shakespeare_loads():
    path = shared_data("text", "tinyshakespeare", "input.txt")
    dm = CharText(path=str(path), seq_len=128, batch_size=64)
    dm.setup("fit")
    assert len(dm.train_text) + len(dm.val_text) == 1_115_394
    assert len(dm.vocabulary) == 66  # 65 characters and the unknown symbol
    inputs, targets, starts = next(iter(dm.val_dataloader()))
    assert inputs.shape == targets.shape == (64, 128) and starts.all()


@pytest.mark.parametrize(
    "content, kw, message",
    [
        (b"", {}, "is empty"),
        (b"caf\xe9 au lait " * 10, {}, "is not UTF-8 (byte 3"),
        (b"aaaa" * 100, {}, "1 distinct character"),
        (b"abcd" * 10, {"seq_len": 32}, "Lower --data.seq_len"),
    ],
)
def test_bad_text_is_refused_before_training_with_the_fix(tmp_path, content, kw, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    dm = CharText(path=str(path), **{"seq_len": 4, "batch_size": 2, **kw})
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        dm.setup("fit")
    with pytest.raises(DataError, match="does not exist"):
        CharText(path=str(tmp_path / "missing.txt")).setup("fit")
    with pytest.raises(DataError, match="seq_len must be at least 1"):
        CharText(path=str(path), seq_len=0)


# ---- baselines -------------------------------------------------------------------------------------------------


def test_unigram_baseline_is_the_add_one_closed_form():
    nats = unigram_nats("aab", "ab", vocab_size=3)  # P(a) = 3/6, P(b) = 2/6
    assert nats == pytest.approx(-(math.log(3 / 6) + math.log(2 / 6)) / 2)


def test_kneser_ney_is_a_distribution_for_every_context_and_matches_a_hand_computed_bigram():
    text = "abracadabra" * 3 + "cab"
    vocab = sorted(set(text)) + ["z"]
    for order in (1, 2, 3, 5):
        model = KneserNey(text, order, vocab_size=len(vocab))
        for context in ["", "a", "ab", "zz", "abra", "cadab", "qq"]:
            assert sum(model.prob(ch, context) for ch in vocab) == pytest.approx(1.0, abs=1e-12), (order, context)
    # bigram by hand: "xyxyxz"; P(y | x) = max(c(xy) - D2, 0) / c(x.) + D2 * N1+(x.) / c(x.) * P1(y)
    model = KneserNey("xyxyxz", 2, vocab_size=4)
    d2, d1 = model.discounts[2], model.discounts[1]
    # continuation counts of order 1: y follows {x}, x follows {y}, z follows {x} -> 1 each, total 3, 3 types
    p1_y = (1 - d1) / 3 + d1 * 3 / 3 * (1 / 4)
    assert model.prob("y", "x") == pytest.approx((2 - d2) / 3 + d2 * 2 / 3 * p1_y)
    assert model.prob("y", "q") == pytest.approx(p1_y)  # unseen context: the lower order alone


def test_kneser_ney_beats_the_unigram_on_structured_text(tmp_path):
    text = write_text(tmp_path / "t.txt", 400)
    train, held_out = text[:-2000], text[-2000:]
    vocab = len(set(text)) + 1
    assert kneser_ney_nats(train, held_out, 5, vocab) < 0.5 * unigram_nats(train, held_out, vocab)


# ---- sampling ----------------------------------------------------------------------------------------------------


def test_sampling_follows_softmax_with_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n = 4000
    grid = (torch.arange(n) + 0.5) / n  # evenly spread numbers: the frequencies are the probabilities within 1/n
    for tau in (0.5, 1.0, 1.5):
        drawn = sample_next(logits.expand(n, -1), torch.full((n,), tau), None, grid)
        freq = torch.bincount(drawn, minlength=4).float() / n
        assert torch.allclose(freq, torch.softmax(logits[0] / tau, 0), atol=2 / n), tau
    top2 = sample_next(logits.expand(n, -1), torch.ones(n), 2, grid)
    assert set(top2.tolist()) == {0, 1}
    assert float(torch.bincount(top2)[0]) / n == pytest.approx(float(torch.softmax(torch.tensor([2.0, 1.0]), 0)[0]),
                                                             abs=1e-3)
    greedy = sample_next(torch.tensor([[0.0, 3.0, 1.0]] * 3), torch.zeros(3), None, torch.rand(3))
    assert greedy.tolist() == [1, 1, 1]


def test_reset_rows_zeroes_the_rows_whose_stream_starts_and_cuts_the_graph():
    h = torch.ones(2, 3, 4, requires_grad=True) * 2
    out = reset_rows((h, h + 1), torch.tensor([False, True, False]))
    assert out[0][:, 1].abs().sum() == 0 and (out[0][:, 0] == 2).all() and (out[1][:, 2] == 3).all()
    assert not out[0].requires_grad
    assert reset_rows(None, torch.tensor([True])) is None


def test_generated_text_starts_with_the_prompt_and_text_i_does_not_depend_on_the_batch(tmp_path):
    text = write_text(tmp_path / "t.txt")
    model = tiny_model(prompt="the", sample_length=30)
    model.vocabulary = build_vocabulary(text)
    model.hparams.vocab_size = len(model.vocabulary)
    model.configure_model()
    alone = model.generate(torch.tensor([2]), torch.tensor([1.0]))
    together = model.generate(torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0, 1.0]))
    assert together[2] == alone[0] and together[0] != together[2]
    assert all(t.startswith("the") and len(t) == 33 for t in together)
    assert model.net.training  # the network's mode is restored


# ---- training ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, precision", [("lstm", "32-true"), ("gru", "32-true"), ("lstm", "bf16-mixed"),
                                             ("lstm", "16-mixed")])
def test_training_brings_the_loss_below_the_unigram_baseline(tmp_path, cell, precision):
    text = write_text(tmp_path / "t.txt", 400)
    torch.manual_seed(0)
    dm = CharText(path=str(tmp_path / "t.txt"), seq_len=16, batch_size=8)
    model = tiny_model(cell=cell, hidden=32, lr=0.02)
    plugins = [fp16_on_cpu()] if precision == "16-mixed" else None
    t = trainer(tmp_path, max_epochs=2, precision=None if plugins else precision, plugins=plugins)
    t.fit(model, dm)
    val = float(t.callback_metrics["val/loss"])
    assert val == pytest.approx(float(t.callback_metrics["val/bpc"]) * math.log(2))
    baseline = unigram_nats(dm.train_text, dm.val_text, len(dm.vocabulary))
    assert val < 0.75 * baseline, (val, baseline)
    assert len(text) > 0


def test_samples_at_every_temperature_are_written_after_each_validation(tmp_path):
    write_text(tmp_path / "t.txt")
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=2)
    t.fit(tiny_model(sample_temperatures=[0.2, 0.5, 1.0, 1.2], prompt="my"),
          CharText(path=str(tmp_path / "t.txt"), seq_len=8, batch_size=4))
    written = (tmp_path / "samples" / "samples_epoch0000.txt").read_text(encoding="utf-8")
    headers = [line for line in written.splitlines() if line.startswith("### ")]
    assert headers == ["### temperature: 0.2", "### temperature: 0.5", "### temperature: 1.0", "### temperature: 1.2"]
    assert written.count("\nmy") == 4  # every sample starts from the prompt


def test_a_resumed_run_continues_its_streams_and_state_exactly(tmp_path):
    """Six batches in one run, and three + a checkpoint + three more: the same weights."""
    write_text(tmp_path / "t.txt")

    def fit(max_steps: int, root, ckpt_path=None, checkpoint_every: int | None = None) -> CharLSTM:
        torch.manual_seed(0)
        model = tiny_model(hidden=16, dropout=0.0)
        callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=checkpoint_every, save_top_k=-1,
                                     filename="{step}")] if checkpoint_every else []
        t = trainer(root, max_steps=max_steps, callbacks=callbacks, enable_checkpointing=bool(callbacks),
                    limit_val_batches=0)
        t.fit(model, CharText(path=str(tmp_path / "t.txt"), seq_len=8, batch_size=4), ckpt_path=ckpt_path)
        return model

    straight = fit(6, tmp_path / "a")
    fit(3, tmp_path / "b", checkpoint_every=3)
    saved = torch.load(tmp_path / "b" / "step=3.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches_done": 3}]
    assert "char_lstm_state" in saved and "lightning_gen_vocabulary" in saved
    resumed = fit(6, tmp_path / "c", ckpt_path=str(tmp_path / "b" / "step=3.ckpt"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    without_state = fit(6, tmp_path / "d", ckpt_path=str(_drop_state(saved, tmp_path / "nostate.ckpt")))
    assert not torch.allclose(straight.net.head.weight, without_state.net.head.weight, atol=1e-6)


def _drop_state(saved: dict, path):
    saved = dict(saved)
    saved.pop("char_lstm_state")
    torch.save(saved, path)
    return path


def test_resuming_on_text_with_another_vocabulary_is_refused(tmp_path):
    write_text(tmp_path / "t.txt")
    t = trainer(tmp_path, max_steps=2, limit_val_batches=0, enable_checkpointing=True)
    t.fit(tiny_model(), CharText(path=str(tmp_path / "t.txt"), seq_len=8, batch_size=4))
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    (tmp_path / "other.txt").write_text("completely different characters: XYZ 123 " * 40, encoding="utf-8")
    with pytest.raises(ConfigError, match="vocabulary .* is not the checkpoint's"):
        trainer(tmp_path / "r", max_steps=4).fit(
            tiny_model(), CharText(path=str(tmp_path / "other.txt"), seq_len=8, batch_size=4), ckpt_path=str(ckpt))


def test_a_checkpoint_samples_without_data(tmp_path):
    write_text(tmp_path / "t.txt")
    t = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    model = tiny_model(prompt="to", sample_length=12)
    t.fit(model, CharText(path=str(tmp_path / "t.txt"), seq_len=8, batch_size=4))
    t.save_checkpoint(tmp_path / "m.ckpt")
    loaded = CharLSTM.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.vocabulary == model.vocabulary
    assert loaded.generate(torch.tensor([0]), torch.tensor([0.5])) == model.generate(torch.tensor([0]),
                                                                                     torch.tensor([0.5]))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"prompt": ""}, "prompt must hold at least one character"),
        ({"temperature": -1.0}, "temperatures must be 0"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"hidden": 0}, "hidden must be at least 1"),
    ],
)
def test_bad_model_options_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        CharLSTM(**kw)


def test_a_model_without_text_data_says_what_it_needs(tmp_path):
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        tiny_model().configure_model()


# ---- the CLI: fit, predict from the checkpoint, DDP -------------------------------------------------------------


def test_cli_fit_then_predict_from_a_prompt_writes_and_prints_the_text(tmp_path):
    write_text(tmp_path / "t.txt")
    args = ["--config", TINY, "--data.path", str(tmp_path / "t.txt"), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"), *QUIET]
    fit = run_cli(["fit", *args], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    predict = run_cli(["predict", *args, "--ckpt_path", "last", "--model.prompt", "ROMEO:", "--model.temperature",
                       "0.5", "--model.num_samples", "2", "--data.path", str(tmp_path / "gone.txt")], tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    written = (tmp_path / "run" / "predictions" / "samples.txt").read_text(encoding="utf-8")
    assert written.count("### ") == 2 and "(temperature 0.5, seed 0)" in written
    assert written.count("\nROMEO:") == 2 and "ROMEO:" in predict.stdout


def test_samples_reach_wandb_as_a_table_offline(tmp_path, monkeypatch):
    from lightning_gen.core.cli import GenCLI

    write_text(tmp_path / "t.txt")
    monkeypatch.chdir(tmp_path)
    GenCLI(args=["fit", "--config", TINY, "--data.path", str(tmp_path / "t.txt"), "--trainer.logger",
                 "lightning_gen.core.loggers.AutoWandbLogger", "--trainer.logger.mode", "offline",
                 "--trainer.default_root_dir", str(tmp_path / "out"), *QUIET])
    tables = list((tmp_path / "runs" / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["temperature", "text"] and [row[0] for row in table["data"]] == [0.2, 0.5, 1.0, 1.2]


def test_ddp_trains_and_evaluates_like_one_process_with_the_same_streams(tmp_path):
    """Two processes with 2 streams each see the 4 streams of one process with 4: the same weights after training,
    the same validation loss (of the trained weights, at the end of the fit)."""
    write_text(tmp_path / "t.txt")
    common = ["--config", TINY, "--data.path", str(tmp_path / "t.txt"), "--trainer.logger", "false", *QUIET,
              "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "1.0", "--model.dropout", "0.0",
              "--trainer.callbacks+=tests.helpers.SaveTestMetrics"]
    for name, devices, batch in (("one", "1", "4"), ("two", "2", "2")):
        strategy = ["--trainer.strategy", "ddp"] if devices == "2" else []
        result = run_cli(["fit", *common, "--trainer.devices", devices, *strategy, "--data.batch_size", batch,
                          "--trainer.default_root_dir", str(tmp_path / name)], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    weights = [torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for n in ("one", "two")]
    for key in weights[0]:
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-5), key
    losses = [json.loads((tmp_path / n / "fit_metrics.json").read_text())["val/loss"] for n in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
