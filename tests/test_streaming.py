"""Streaming datasets (datamodules/streaming.py, datamodules/shard.py): litdata shards made from image folders, pairs
and torchvision datasets give the batches of the folder datamodules; techniques train from them; DDP processes read
disjoint shares covering the epoch once; a run resumed mid-epoch continues where it stopped; bad folders are refused
before training."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from datamodules import DataError, ImageFolder, PairedImages
from datamodules.shard import FORMAT_FILE, main, make_shards, parser
from datamodules.streaming import StreamingImages, StreamingPairs
from tests.conftest import ROOT, shared_data

pytest.importorskip("litdata", reason='streaming needs litdata: pip install "lightning-gen[streaming]"')


def write_images(root: Path, count: int = 40, size: int = 8) -> Path:
    """`count` RGB PNGs in class folders a/ and b/; pixel (0, 0, red) of image i is 5 * i: its fingerprint."""
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        pixels[0, 0, 0] = 5 * i
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def fingerprints(images: torch.Tensor) -> list[int]:
    """The image index each image of a `(B, 3, H, W)` batch in [-1, 1] was written with (see `write_images`)."""
    return [round(v / 5) for v in ((images[:, 0, 0, 0] + 1) / 2 * 255).round().long().tolist()]


def trainer(root: Path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=root)
    return L.Trainer(**{**options, **kwargs})


def test_converter_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for action in parser()._actions:
        assert action.help, f"{action.dest} has no help"
        assert (action.option_strings[-1] if action.option_strings else action.dest) in text
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'lightning-gen-shard = "datamodules.shard:main"' in scripts


def test_folder_shards_give_the_image_folder_batches(tmp_path):
    folder = write_images(tmp_path / "images")
    assert main([str(folder), str(tmp_path / "pixels"), "--val-fraction", "0.2", "--quiet"]) == 0
    make_shards(str(folder), str(tmp_path / "files"), storage="files", val_fraction=0.2, verbose=False)
    reference = ImageFolder(root=str(folder), val_fraction=0.2, batch_size=8)
    reference.setup("fit")
    # `local:<folder>` streams the folder through the cache, as from object storage (the code path of s3:// URLs)
    for root in (tmp_path / "pixels", tmp_path / "files", f"local:{tmp_path / 'pixels'}"):
        dm = StreamingImages(root=str(root), batch_size=8, cache_dir=str(tmp_path / "cache"))
        dm.setup("fit")
        assert dm.image_shape == reference.image_shape == (3, 8, 8)
        assert dm.num_classes == 2 and dm.class_names == reference.class_names == ["a", "b"]
        assert len(dm.train_set) == 32 and len(dm.val_set) == len(dm.test_set) == 8
        for i in range(len(reference.val_set)):  # the same held-out images, bit for bit, with their labels
            (x, y), (x_ref, y_ref) = dm.val_set[i], reference.val_set[i]
            assert y == y_ref and torch.equal(x, x_ref)
        images, labels = next(iter(dm.train_dataloader()))
        assert images.shape == (8, 3, 8, 8) and images.dtype == torch.float32 and labels.shape == (8,)
        assert -1 <= images.min() and images.max() <= 1
    assert list((tmp_path / "cache").rglob("chunk-*.bin"))  # streamed chunks are kept in the cache
    small = StreamingImages(root=str(tmp_path / "pixels"), image_size=4, batch_size=8)  # resized when read
    small.setup("fit")
    assert small.image_shape == (3, 4, 4) and small.val_set[0][0].shape == (3, 4, 4)
    # an epoch of the training loader covers the training split once
    seen = [i for images, _ in dm.train_dataloader() for i in fingerprints(images)]
    assert sorted(seen) == sorted(fingerprints(torch.stack([x for x, _ in dm.train_set])))


def write_pairs(root: Path, count: int = 6) -> Path:
    """Aligned A | B pairs (16x8 PNGs) in train/ and val/."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
    return root


def test_pair_shards_give_the_paired_datamodule_batches(tmp_path):
    folder = write_pairs(tmp_path / "facades")
    # B (the input, direction BtoA) read as grey: one channel, converted as PairedImages converts it
    make_shards(str(folder), str(tmp_path / "pixels"), pairs=True, channels_b=1, verbose=False)
    make_shards(str(folder), str(tmp_path / "files"), pairs=True, channels_b=1, storage="files", verbose=False)
    reference = PairedImages(root=str(folder), direction="BtoA", load_size=8, crop_size=8, batch_size=2, channels_b=1)
    reference.setup("fit")
    for storage in ("pixels", "files"):
        dm = StreamingPairs(root=str(tmp_path / storage), direction="BtoA", load_size=8, crop_size=8, batch_size=2)
        dm.setup("fit")
        assert dm.input_channels == reference.input_channels == 1 and dm.image_shape == reference.image_shape
        for i in range(len(reference.val_set)):
            assert all(torch.equal(a, b) for a, b in zip(dm.val_set[i], reference.val_set[i]))
        assert len(dm.reference_set) == 6 and dm.reference_set[0].shape == (3, 8, 8)  # the training targets
        inputs, targets = next(iter(dm.train_dataloader()))
        assert inputs.shape == (2, 1, 8, 8) and targets.shape == (2, 3, 8, 8)


def test_bad_shard_folders_and_caches_are_refused_before_training(tmp_path):
    images, pairs = write_images(tmp_path / "images", count=10), write_pairs(tmp_path / "pairs", count=2)
    make_shards(str(images), str(tmp_path / "image_shards"), verbose=False)
    make_shards(str(pairs), str(tmp_path / "pair_shards"), pairs=True, verbose=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not shards")
    cases = [
        (StreamingImages(root=str(tmp_path / "missing")), "does not exist"),
        (StreamingImages(root=str(tmp_path / "empty")), "is empty"),
        (StreamingImages(root=str(tmp_path / "other")), "holds no litdata shards"),
        (StreamingImages(root=str(tmp_path / "image_shards" / "train")), "single litdata dataset"),
        (StreamingImages(root=str(tmp_path / "pair_shards")), "hold pairs.*StreamingPairs"),
        (StreamingPairs(root=str(tmp_path / "image_shards")), "hold images.*StreamingImages"),
        (StreamingImages(root=str(tmp_path / "image_shards"), cache_dir=str(tmp_path / "other" / "notes.txt")),
         "cache folder .* is not writable"),
    ]
    for dm, message in cases:
        with pytest.raises(DataError, match=message):
            dm.setup("fit")
    if os.geteuid() != 0:  # root writes to read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(DataError, match="not writable"):
            StreamingImages(root=str(tmp_path / "image_shards"), cache_dir=str(locked)).setup("fit")
    # a description that lies about what the items hold: the first item is read before training
    info = json.loads((tmp_path / "pair_shards" / FORMAT_FILE).read_text())
    (tmp_path / "pair_shards" / FORMAT_FILE).write_text(json.dumps({**info, "kind": "images", "size": [8, 8],
                                                                     "channels": 3, "classes": ["x"]}))
    with pytest.raises(DataError, match="are not images"):
        StreamingImages(root=str(tmp_path / "pair_shards"), batch_size=1).setup("fit")
    # items of another size than the description says
    info = json.loads((tmp_path / "image_shards" / FORMAT_FILE).read_text())
    (tmp_path / "image_shards" / FORMAT_FILE).write_text(json.dumps({**info, "size": [16, 16]}))
    with pytest.raises(DataError, match=r"shape \(\(3, 8, 8\),\), but .* describes \(\(3, 16, 16\),\)"):
        StreamingImages(root=str(tmp_path / "image_shards"), batch_size=1).setup("fit")
    # the converter never writes into its source, nor over files that are not its shards
    with pytest.raises(DataError, match="inside the source"):
        make_shards(str(images), str(images / "shards"), verbose=False)
    with pytest.raises(DataError, match="holds no shards"):
        make_shards(str(images), str(tmp_path / "other"), verbose=False)
    with pytest.raises(DataError, match="--overwrite"):
        make_shards(str(images), str(tmp_path / "image_shards"), verbose=False)
    with pytest.raises(DataError, match="unknown option"):
        StreamingImages(root=str(tmp_path / "x"), convert={"source": str(images), "colour": True})


def test_dcgan_trains_from_mnist_shards(tmp_path):
    from lightning_gen import DCGAN

    data = shared_data("MNIST")
    make_shards(str(data.parent), str(tmp_path / "mnist"), dataset="MNIST", limit=256, verbose=False)
    dm = StreamingImages(root=str(tmp_path / "mnist"), batch_size=32)
    model = DCGAN(latent_dim=16, g_features=8, d_features=8, num_samples=16)
    run = trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    run.fit(model, dm)
    assert dm.image_shape == (1, 28, 28) and dm.num_classes == 10
    assert run.global_step == 6  # 3 batches, a D and a G step each
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())
    assert torch.isfinite(run.callback_metrics["val/g_loss"])  # validated on the val shards


def test_pix2pix_trains_from_facades_shards(tmp_path):
    from lightning_gen import Pix2Pix

    data = shared_data("facades")
    make_shards(str(data), str(tmp_path / "facades"), pairs=True, storage="files", limit=8, verbose=False)
    dm = StreamingPairs(root=str(tmp_path / "facades"), direction="BtoA", load_size=36, crop_size=32, batch_size=4)
    model = Pix2Pix(g_features=8, d_features=8, num_triplets=4, constant_epochs=1, decay_epochs=1)
    run = trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    run.fit(model, dm)
    assert dm.input_channels == 3 and dm.image_shape == (3, 32, 32)
    assert run.global_step == 4
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


class Recorder(L.LightningModule):
    """Records the images of every training batch (their fingerprints); learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        images, _ = batch
        self.seen.append(fingerprints(images))
        return self.w.sum() * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_resumed_run_continues_mid_epoch_where_it_stopped(tmp_path):
    make_shards(str(write_images(tmp_path / "images")), str(tmp_path / "shards"), val_fraction=0.2, verbose=False)

    def data():
        return StreamingImages(root=str(tmp_path / "shards"), batch_size=4)  # 32 training images: 8 batches

    whole = Recorder()  # two epochs, a checkpoint after batch 11 (epoch 1, batch 3)
    save = ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=11, save_top_k=-1)
    trainer(tmp_path, max_epochs=2, limit_val_batches=0, enable_checkpointing=True, callbacks=[save]).fit(whole, data())
    assert len(whole.seen) == 16 and sorted(sum(whole.seen[:8], [])) == sorted(sum(whole.seen[8:], []))
    assert whole.seen[:8] != whole.seen[8:]  # each epoch in its own order
    resumed = Recorder()
    save = ModelCheckpoint(tmp_path / "ckpt2", every_n_train_steps=11, save_top_k=-1)
    trainer(tmp_path, max_epochs=2, limit_val_batches=0, enable_checkpointing=True, callbacks=[save]).fit(
        resumed, data(), ckpt_path=tmp_path / "ckpt" / "epoch=1-step=11.ckpt")
    assert resumed.seen == whole.seen[11:]  # the rest of epoch 2, not its start again


def ddp_rank(rank: int, port: int, shards: str, out: str) -> None:
    """One of two gloo processes (as torchrun starts them): the fingerprints its training loader yields in two epochs,
    and those of the validation items Lightning's distributed sampler gives it, written to `out` as JSON."""
    import traceback

    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo")
        dm = StreamingImages(root=shards, batch_size=4)
        dm.setup("fit")
        loader = dm.train_dataloader()
        epochs = [[i for images, _ in loader for i in fingerprints(images)] for _ in range(2)]
        val = DataLoader(dm.val_set, batch_size=4, sampler=DistributedSampler(dm.val_set, shuffle=False))
        seen = {"epochs": epochs, "batches": len(loader), "val": [i for x, _ in val for i in fingerprints(x)]}
        Path(out).write_text(json.dumps(seen))
        dist.destroy_process_group()
    except BaseException:
        Path(out).with_suffix(".err").write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def test_ddp_processes_read_disjoint_shares_that_cover_each_epoch_once(tmp_path):
    make_shards(str(write_images(tmp_path / "images")), str(tmp_path / "shards"), val_fraction=0.2,
                chunk_bytes="400B", verbose=False)  # several chunks (32 training images of 192 bytes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # two processes forked from a server that has imported the package once (as tests/conftest.py's run_cli does:
    # the same preload, so either may start it), each set up as torchrun sets up a rank
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["lightning_gen.core.cli"])
    procs = [context.Process(target=ddp_rank, args=(r, port, str(tmp_path / "shards"), str(tmp_path / f"rank{r}.json")))
             for r in range(2)]
    for proc in procs:
        proc.start()
    for r, proc in enumerate(procs):
        proc.join(120)
        if proc.is_alive():
            proc.kill()
        error = tmp_path / f"rank{r}.err"
        assert proc.exitcode == 0, error.read_text() if error.exists() else f"rank {r}: exit code {proc.exitcode}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    shards = StreamingImages(root=str(tmp_path / "shards"), batch_size=4)
    shards.setup("fit")
    train = set(fingerprints(torch.stack([x for x, _ in shards.train_set])))
    val = set(fingerprints(torch.stack([x for x, _ in shards.val_set])))
    for epoch in range(2):
        first, second = (set(rank["epochs"][epoch]) for rank in ranks)
        assert len(ranks[0]["epochs"][epoch]) == len(ranks[1]["epochs"][epoch]) == 16  # 4 batches of 4 each
        assert not first & second  # disjoint
        assert first | second == train and len(train) == 32  # together, the training split once
    assert ranks[0]["batches"] == ranks[1]["batches"] == 4
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == sorted(val) and len(val) == 8  # each validation image once
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # reshuffled each epoch
