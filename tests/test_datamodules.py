import pytest
import torch
from PIL import Image

from datamodules import MNIST, DataError, Digits, ImageFolder, TorchvisionData
from datamodules.base import to_signed_tensor
from tests.conftest import shared_data


def make_folder(root, sizes=((12, 12),) * 6, classes=("cat", "dog"), mode="RGB"):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.new(mode, (w, h), color=(i * 40 % 255,) * (1 if mode == "L" else 3)).save(root / c / f"{i}.png")
    return root


def test_digits_shapes_range_and_seeded_split():
    dm = Digits(batch_size=16)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and dm.image_shape == (1, 8, 8) and dm.num_classes == 10
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9  # [0, 16] -> [-1, 1]
    assert int(y.max()) < 10
    total = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert total == 1797 and len(dm.test_set) == round(1797 * 0.2)
    again = Digits(batch_size=16)
    again.setup("fit")
    assert again.val_set.indices == dm.val_set.indices  # same split_seed, same split
    other = Digits(batch_size=16, split_seed=1)
    other.setup("fit")
    assert other.val_set.indices != dm.val_set.indices


def test_digits_resize():
    dm = Digits(image_size=16, batch_size=8)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape == (8, 1, 16, 16) and dm.image_shape == (1, 16, 16)


def test_image_folder_with_classes_and_filter(tmp_path):
    root = make_folder(tmp_path / "imgs")
    dm = ImageFolder(root=str(root), batch_size=2, val_fraction=0.25)
    dm.setup("fit")
    assert dm.image_shape == (3, 12, 12) and dm.class_names == ["cat", "dog"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 12, 12) and x.min() >= -1 and x.max() <= 1
    only = ImageFolder(root=str(root), classes=["dog"], batch_size=2, val_fraction=0.25, image_size=8, channels=1)
    only.setup("fit")
    assert len(only.train_set) + len(only.val_set) == 6 and only.image_shape == (1, 8, 8)
    assert {int(label) for _, label in only.train_set} == {0}


def test_image_folder_flat_layout_and_env_root(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        Image.new("RGB", (8, 8)).save(flat / f"{i}.jpg")
    monkeypatch.setenv("MY_IMAGES", str(tmp_path))
    dm = ImageFolder(root="$MY_IMAGES/flat", batch_size=2)
    dm.setup("fit")
    assert dm.num_classes == 1 and len(dm.train_set) + len(dm.val_set) == 5


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(root=str(tmp_path / "nowhere")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(root=str(tmp_path / "empty")).setup("fit")
    with pytest.raises(DataError, match="not set"):
        ImageFolder(root="$SURELY_UNSET_VARIABLE_42/x").setup("fit")
    root = make_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"classes \['bird'\]"):
        ImageFolder(root=str(root), classes=["bird"]).setup("fit")


def test_an_empty_class_folder_is_refused_not_dropped(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("ant", "bee", "cat"))
    for image in (root / "bee").iterdir():
        image.unlink()
    (root / "bee" / "notes.txt").write_text("not an image")
    for classes in (None, ["bee", "cat"]):  # dropping bee would make cat class 1, not 2 (or 0, not 1)
        with pytest.raises(DataError, match=r"class folder .*imgs/bee is empty: it holds no images .* change the class "
                                            r"indices"):
            ImageFolder(root=str(root), classes=classes).setup("fit")
    only = ImageFolder(root=str(root), classes=["ant", "cat"], batch_size=2)  # not selected: no harm
    only.setup("fit")
    assert only.class_names == ["ant", "cat"]
    (root / ".cache").mkdir()  # hidden folders are not classes
    (root / "bee").rename(tmp_path / "bee")
    dm = ImageFolder(root=str(root), batch_size=2)
    dm.setup("fit")
    assert dm.class_names == ["ant", "cat"]


@pytest.mark.parametrize("channels", [3, 1])
def test_images_of_other_channels_are_used_and_said_in_one_line(tmp_path, caplog, channels):
    """Grey images in a colour folder (or colour ones read as grey) are valid: they are converted, and one line
    says how many and what was done; a folder of the asked kind says nothing."""
    for i in range(3):
        Image.new("RGB", (8, 8), (90 * i, 10, 200)).save(tmp_path / f"rgb{i}.png")
    for i in range(2):
        Image.new("L", (8, 8), 100 + i).save(tmp_path / f"grey{i}.png")
    caplog.set_level("INFO")
    data = ImageFolder(root=str(tmp_path), channels=channels, batch_size=2, val_fraction=0.25)
    data.setup("fit")
    lines = [r.getMessage() for r in caplog.records if " of 5 images in " in r.getMessage()]
    expected = ("2 of 5 images in {} are greyscale: each is used as RGB" if channels == 3
                else "3 of 5 images in {} are in colour: they are converted to greyscale").format(tmp_path)
    assert len(lines) == 1 and lines[0].startswith(expected), caplog.text
    assert next(iter(data.train_dataloader()))[0].shape[1] == channels
    for path in tmp_path.glob("grey*.png" if channels == 3 else "rgb*.png"):
        path.unlink()  # only images of the asked kind: nothing to say
    caplog.clear()
    ImageFolder(root=str(tmp_path), channels=channels, batch_size=1, val_fraction=0.5).setup("fit")
    assert " images in " not in caplog.text


def test_a_folder_error_names_the_option_that_gave_the_folder(tmp_path):
    from datamodules import SuperResolution

    root = make_folder(tmp_path / "imgs", sizes=((16, 16),) * 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="Point `--data.test_root` at a folder"):
        ImageFolder(root=str(root), test_root=str(tmp_path / "empty")).setup("fit")
    for option in ("test_roots", "val_roots"):
        dm = SuperResolution(root=str(root), scale=2, crop_size=8, batch_size=2, **{option: [str(tmp_path / "empty")]})
        with pytest.raises(DataError, match=rf"Point `--data.{option}` at a folder of images"):
            dm.setup("test" if option == "test_roots" else "validate")
    with pytest.raises(DataError, match="Set `--data.test_roots` to a folder"):
        SuperResolution(root=str(root), scale=2, crop_size=8, test_roots=[str(tmp_path / "nowhere")]).setup("test")
    with pytest.raises(DataError, match="Point `--data.predict_root` at a folder"):
        SuperResolution(root=str(root), scale=2, crop_size=8, predict_root=str(tmp_path / "empty")).predict_dataloader()
    with pytest.raises(DataError, match="Point `--data.root` at a folder"):
        SuperResolution(root=str(tmp_path / "empty"), scale=2, crop_size=8).setup("fit")
    (root / "empty-too").mkdir()  # super-resolution folders have no classes: an empty sub-folder is no harm
    dm = SuperResolution(root=str(root), scale=2, crop_size=8, batch_size=2)
    dm.setup("fit")
    assert len(dm.train_set) == 8


def test_corrupt_image_is_reported_before_training(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolder(root=str(root), batch_size=2).setup("fit")


def test_mixed_sizes_need_image_size(tmp_path):
    root = make_folder(tmp_path / "imgs", sizes=[(12, 12)] * 5 + [(16, 12)])
    with pytest.raises(DataError, match="image_size"):
        ImageFolder(root=str(root), batch_size=2).setup("fit")
    dm = ImageFolder(root=str(root), batch_size=2, image_size=8)
    dm.setup("fit")
    assert dm.image_shape == (3, 8, 8)


def test_missing_torchvision_dataset_without_download(tmp_path):
    dm = MNIST(root=str(tmp_path), download=False)
    with pytest.raises(DataError, match="download true"):
        dm.setup("fit")
    assert list(tmp_path.iterdir()) == []  # nothing was written into the data root


def test_bad_options_raise():
    with pytest.raises(DataError, match="val_fraction"):
        Digits(val_fraction=1.5)
    with pytest.raises(DataError, match="batch_size"):
        Digits(batch_size=0)
    with pytest.raises(DataError, match="fewer than batch_size"):
        Digits(batch_size=5000).setup("fit")


def test_torchvision_table_short_names():
    assert MNIST().dataset == "MNIST" and MNIST().image_shape == (1, 28, 28)
    assert TorchvisionData(dataset="CIFAR10").image_shape == (3, 32, 32)
    assert MNIST(image_size=32).image_shape == (1, 32, 32)


def test_real_mnist_from_data_root():
    root = shared_data("MNIST", "raw").parent.parent
    dm = MNIST(root=str(root), batch_size=32)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28)
    assert len(dm.train_set) + len(dm.val_set) == 60000 and len(dm.test_set) == 10000


def test_in_memory_images_equal_the_pil_transform():
    """The fast path gives exactly what torchvision's PIL transform gives, for each pixel layout."""
    from types import SimpleNamespace

    import numpy as np

    from datamodules.torchvision_sets import InMemoryImages

    rng = np.random.default_rng(0)
    for layout, channels in (("NHW", 1), ("NHWC", 3), ("NCHW", 3)):
        hwc = rng.integers(0, 256, size=(4, 5, 6, channels), dtype=np.uint8)
        data = {"NHW": hwc[..., 0], "NHWC": hwc, "NCHW": hwc.transpose(0, 3, 1, 2)}[layout]
        labels = {"targets": [3, 1, 0, 2]} if layout != "NCHW" else {"labels": np.array([3, 1, 0, 2])}
        fast = InMemoryImages.from_torchvision(SimpleNamespace(data=data, **labels))
        slow = to_signed_tensor(channels=channels)
        for i in range(4):
            image = Image.fromarray(hwc[i, ..., 0] if channels == 1 else hwc[i])
            x, y = fast[i]
            assert x.shape == (channels, 5, 6) and y == [3, 1, 0, 2][i]
            assert torch.equal(x, slow(image))


def test_real_mnist_items_are_unchanged_by_the_fast_path():
    from torchvision import datasets

    root = shared_data("MNIST", "raw").parent.parent
    dm = MNIST(root=str(root))
    fast = dm._make(train=False)
    slow = datasets.MNIST(str(root), train=False, transform=to_signed_tensor(channels=1))
    for i in (0, 1, 9999):
        assert torch.equal(fast[i][0], slow[i][0]) and fast[i][1] == slow[i][1]
    assert type(MNIST(root=str(root), image_size=32)._make(train=False)).__name__ == "MNIST"  # resizing: PIL path


def test_real_cifar10_birds_image_folder():
    root = shared_data("cifar10", "train")
    dm = ImageFolder(root=str(root), classes=["bird"], batch_size=16, verify=False)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 5000 and dm.image_shape == (3, 32, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and torch.all(y == 0)


# ---- paired folders: a file of another size is refused in setup, from the headers --------------------------------
def make_aligned(folder, n=4, size=(32, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i * 50, 0, 0)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("verify", [True, False])
def test_paired_folder_refuses_a_file_of_another_size_before_training(tmp_path, monkeypatch, verify):
    from PIL import ImageFile

    from datamodules import PairedImages

    make_aligned(tmp_path / "pairs" / "train")
    Image.new("RGB", (30, 30)).save(tmp_path / "pairs" / "train" / "photo.png")  # a photo, not an A | B pair
    dm = PairedImages(root=str(tmp_path / "pairs"), load_size=18, crop_size=16, batch_size=2, verify=verify)

    def no_decoding(self):
        raise AssertionError("decoded the pixels")

    if not verify:  # the check reads the headers only
        monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "photo.png is 30x30" in message and "are 32x16 (4 of 5 files)" in message
    assert "each half 16x16" in message and "remove it, or replace it with a 32x16 file" in message


@pytest.mark.parametrize("size", [(40, 30), (30, 40), (64, 16)])
def test_aligned_folder_of_single_photos_is_refused_from_the_headers(tmp_path, monkeypatch, size):
    from PIL import ImageFile

    from datamodules import PairedImages

    make_aligned(tmp_path / "photos" / "train", size=size)  # all the same size: only the ratio is wrong
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded the pixels"))
    dm = PairedImages(root=str(tmp_path / "photos"), load_size=18, crop_size=16, batch_size=2, verify=False)
    with pytest.raises(DataError, match=rf"0\.png is {size[0]}x{size[1]} \(width/height {size[0] / size[1]:.2f}\), "
                                        r"but an aligned pair holds A and B side by side.*use layout: folders"):
        dm.setup("fit")
    make_aligned(tmp_path / "pairs" / "train", size=(36, 20))  # 1.8: a pair of slightly tall halves is fine
    PairedImages(root=str(tmp_path / "pairs"), load_size=18, crop_size=16, batch_size=2, verify=False).setup("fit")
    predict = PairedImages(root=str(tmp_path / "pairs"), load_size=18, crop_size=16, predict_aligned=True,
                           predict_root=str(tmp_path / "photos" / "train"))
    with pytest.raises(DataError, match="but an aligned pair holds A and B side by side"):
        predict.setup("predict")


def test_paired_folders_layout_refuses_a_pair_of_another_size(tmp_path):
    from datamodules import PairedImages

    for side in ("A", "B"):
        make_aligned(tmp_path / "pairs" / "train" / side, size=(16, 16))
        Image.new("RGB", (20, 20)).save(tmp_path / "pairs" / "train" / side / "big.png")
    with pytest.raises(DataError, match=r"big\.png is 20x20, but the pairs in .* are 16x16.*resize both of its images"):
        PairedImages(root=str(tmp_path / "pairs"), layout="folders", load_size=18, crop_size=16, batch_size=2,
                     verify=False).setup("fit")


def test_real_facades_pass_the_size_check_and_targets_are_the_reference():
    from datamodules import PairedImages

    root = shared_data("facades")
    dm = PairedImages(root=str(root), direction="BtoA", load_size=36, crop_size=32, batch_size=4, verify=False)
    dm.setup("fit")
    assert len(dm.train_set) == 400 and len(dm.val_set) == 100 and dm.input_channels == 3
    torch.manual_seed(0)
    x, y = dm.train_set[0]
    assert x.shape == y.shape == (3, 32, 32)
    torch.manual_seed(0)  # the same jitter draw
    assert torch.equal(dm.reference_set[0], y)  # sample quality compares with the targets (photos), not the inputs


# ---- options shared by the image datamodules -----------------------------------------------------------------------
def test_multiprocessing_context_is_checked_and_reaches_the_loaders():
    import multiprocessing

    with pytest.raises(DataError, match="multiprocessing_context='threads' is not available"):
        Digits(multiprocessing_context="threads")
    dm = Digits(batch_size=8, num_workers=1, multiprocessing_context="spawn")
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.multiprocessing_context is multiprocessing.get_context("spawn") and loader.persistent_workers
    plain = Digits(batch_size=8, multiprocessing_context="spawn")  # no workers: the context is not passed on
    plain.setup("fit")
    assert plain.train_dataloader().multiprocessing_context is None


def test_transforms_are_torchvision_v2_and_picklable():
    import pickle

    from torchvision.transforms import v2

    for size, channels in ((None, 1), (8, 3), (None, None)):
        transform = to_signed_tensor(size, channels)
        assert isinstance(transform, v2.Compose)
        again = pickle.loads(pickle.dumps(transform))
        image = Image.new("RGB", (10, 12), (255, 0, 0))
        assert torch.equal(again(image), transform(image))
