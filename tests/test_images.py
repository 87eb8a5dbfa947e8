"""The one image reader of the datamodules (datamodules/images.py), on files the tests write."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from datamodules import DataError, ImageFolder
from datamodules.files import load_image
from datamodules.images import read_image, read_size

ORIENTATION = 0x0112


def upright(width=20, height=40) -> Image.Image:
    """A picture with a known way up: the top half white, the bottom half black."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[: height // 2] = 255
    return Image.fromarray(pixels)


def test_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    eight = np.arange(256, dtype=np.uint16).reshape(16, 16)
    sixteen = np.concatenate([eight * 257, eight * 256 + 200])  # exact multiples of 257, and some in between
    Image.fromarray(sixteen).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # PIL opens it as a 16-bit mode; convert("L") would clip it to 255
        assert (np.asarray(im.convert("L")) == 255).mean() > 0.9
    grey = np.asarray(read_image(tmp_path / "deep.png", "L"))
    expected = np.rint(sixteen / 257.0).astype(np.uint8)
    assert grey.dtype == np.uint8 and np.array_equal(grey, expected)
    assert np.array_equal(grey[:16], eight)  # 257 * v reads back as v
    assert (grey == 255).mean() < 0.01
    rgb = np.asarray(read_image(tmp_path / "deep.png", "RGB"))
    assert rgb.shape == (32, 16, 3) and all(np.array_equal(rgb[..., c], expected) for c in range(3))


def test_16_bit_pngs_train_as_their_picture_in_an_image_folder(tmp_path):
    for i in range(4):
        (tmp_path / "grey").mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8), 20000 + 1000 * i, dtype=np.uint16)).save(tmp_path / "grey" / f"{i}.png")
    dm = ImageFolder(root=str(tmp_path / "grey"), channels=1, batch_size=2, val_fraction=0.25)
    dm.setup("fit")
    x, _ = dm.train_set[0]
    assert x.shape == (1, 8, 8) and -0.9 < x.mean() < 0.0  # ~20000/65535 of white, not clipped to 1


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    picture = upright(20, 40)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display": cameras store portraits this way
    picture.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "phone.jpg") as im:
        assert im.size == (40, 20)  # stored sideways
    image = read_image(tmp_path / "phone.jpg")
    assert image.size == (20, 40) and read_size(tmp_path / "phone.jpg") == (20, 40)
    pixels = np.asarray(image).astype(float)
    assert pixels[:18].mean() > 240 and pixels[22:].mean() < 15  # white on top: upright
    tensor = load_image(tmp_path / "phone.jpg")  # the single-image reader of the style techniques uses it too
    assert tensor.shape == (1, 3, 40, 20) and tensor[0, :, :18].mean() > 0.9


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent...
    rgba[:2, :, 3] = 255  # ...except the top half: opaque black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    pixels = np.asarray(read_image(tmp_path / "rgba.png"))
    assert (pixels[:2] == 0).all() and (pixels[2:] == 255).all()
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    la.save(tmp_path / "la.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "la.png", "L")), pixels[..., 0])
    palette = Image.fromarray(rgba, "RGBA").convert("P")  # a palette with a transparent entry
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 3)))
    assert np.array_equal(np.asarray(read_image(tmp_path / "palette.png")), pixels)


def test_modes_are_converted(tmp_path):
    Image.new("1", (4, 4), 1).save(tmp_path / "bits.png")
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    bits = read_image(tmp_path / "bits.png")
    assert bits.mode == "RGB" and np.asarray(bits).min() == 255
    assert read_image(tmp_path / "cmyk.jpg", "L").mode == "L"
    assert np.asarray(read_image(tmp_path / "red.png", "L")).max() == 76  # ITU-R 601-2 luma of pure red
    with pytest.raises(DataError, match="1 .greyscale. or 3"):
        from datamodules.images import mode_for

        mode_for(4)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_broken_file_raises_data_error_naming_it(tmp_path, damage):
    path = tmp_path / f"{damage}.jpg"
    upright(64, 64).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xff\xd8 not a jpeg", "empty": b""}[damage])
    with pytest.raises(DataError, match=rf"cannot read image .*{damage}\.jpg.*Remove or replace it"):
        read_image(path)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never papered over globally


def test_a_missing_file_and_a_broken_header(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.png does not exist"):
        read_image(tmp_path / "nowhere.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n nothing")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png"):
        read_size(tmp_path / "bad.png")


def test_read_size_reads_only_the_header(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((30, 50), dtype=np.uint8)).save(tmp_path / "a.png")
    upright(20, 40).save(tmp_path / "b.jpg")

    def no_decoding(self):
        raise AssertionError("decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert read_size(tmp_path / "a.png") == (50, 30) and read_size(tmp_path / "b.jpg") == (20, 40)


def test_images_are_8_bit_tensors_in_range(tmp_path):
    Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)).save(tmp_path / "white.png")
    x = load_image(tmp_path / "white.png")
    assert torch.all(x == 1.0)


# ---- every reader of the project goes through read_image -------------------------------------------------------------
def test_no_module_decodes_images_but_the_shared_reader():
    """`read_image` is the one place that opens image files (so 16-bit scaling, EXIF orientation, transparency and
    the one-line error apply everywhere): no other module of datamodules/ or lightning_gen/ calls `Image.open`,
    torchvision's decoders, or a PIL `.convert(` on a file it opened itself."""
    from tests.conftest import ROOT

    allowed = {"datamodules/images.py"}
    opened = []
    for folder in ("datamodules", "lightning_gen"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            if rel not in allowed and any(call in text for call in ("Image.open(", "decode_image(", "read_file(",
                                                                    "pil_loader(", "default_loader(", "imread(")):
                opened.append(rel)
    assert not opened, f"{opened} decode image files themselves: read them with datamodules.images.read_image"


def sixteen_bit_and_rotated(folder):
    """A 16-bit grey PNG whose values read back as 8-bit v where stored as 257 * v, and an EXIF-rotated JPEG whose
    upright picture is white on top: both 16 wide and 8 high once read."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 16), 257 * 100, dtype=np.uint16)).save(folder / "deep.png")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright(16, 8).transpose(Image.Transpose.ROTATE_90).save(folder / "phone.jpg", exif=exif.tobytes(), quality=95)
    return folder / "deep.png", folder / "phone.jpg"


def check_read(tensor, kind, size=(8, 16)):
    """`tensor` in [-1, 1] of `size` (height, width), with any leading dimensions: the 16-bit file as grey 100, the
    JPEG upright (white on top; stored sideways, it would be white on the left)."""
    x = tensor.reshape(-1, *tensor.shape[-2:]).float()
    assert tuple(x.shape[-2:]) == size, (kind, x.shape)
    if kind == "deep":
        assert torch.allclose((x + 1) * 127.5, torch.full_like(x, 100.0), atol=0.6), kind
    else:
        third = size[0] // 3
        assert x[:, :third].mean() > 0.8 and x[:, -third:].mean() < -0.8, kind


def test_every_reader_scales_16_bits_and_turns_exif_upright(tmp_path):
    from datamodules.files import ImageFiles
    from datamodules.paired import InputImages, load_pair
    from datamodules.super_resolution import LowResImages, WholeImages

    deep, phone = sixteen_bit_and_rotated(tmp_path / "in")
    for kind, path in (("deep", deep), ("phone", phone)):
        check_read(load_image(path), kind)  # style, content, DeepDream and fast-style images
        check_read(ImageFiles(str(path))[0]["image"], kind)  # DeepDream / fast-style predict inputs
        for pair in ((path, path), (path, None)):  # pix2pix, layout: folders and aligned (A | B, 8x8 each)
            a, b = load_pair(pair, (3, 1))
            size = (8, 16) if pair[1] is not None else (8, 8)
            check_read(a.float() / 127.5 - 1, kind, size), check_read(b.float() / 127.5 - 1, kind, size)
        check_read(InputImages([path], 3, 8, aligned=False, swap=False)[0]["input"], kind, (8, 8))  # pix2pix predict
        check_read(WholeImages([path], scale=2)[0]["hr"], kind)  # super-resolution evaluation
        check_read(LowResImages([path], scale=2)[0]["lr"], kind)  # super-resolution predict
