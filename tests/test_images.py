"""The bad-image corpus: every case is generated here and must load as RGB or fail with a clear error."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pokemon_classifier.errors import ImageError
from pokemon_classifier.images import load_image


def _jpeg_bytes(img, **kw):
    b = io.BytesIO()
    img.save(b, "JPEG", **kw)
    return b.getvalue()


@pytest.fixture
def corpus(tmp_path):
    c = {}
    (tmp_path / "zero.jpg").write_bytes(b"")
    c["zero"] = tmp_path / "zero.jpg"
    full = _jpeg_bytes(Image.new("RGB", (200, 200), (200, 30, 30)))
    (tmp_path / "truncated.jpg").write_bytes(full[: len(full) // 2])
    c["truncated"] = tmp_path / "truncated.jpg"
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    c["text"] = tmp_path / "text.jpg"
    (tmp_path / "page.png").write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    c["html"] = tmp_path / "page.png"
    (tmp_path / "vector.svg").write_text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    c["svg"] = tmp_path / "vector.svg"
    # palette PNG with a transparent index -> composited on white
    p = Image.new("P", (20, 20), 0)
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.paste(1, (0, 0, 10, 20))
    p.save(tmp_path / "palette.png", transparency=0)
    c["palette"] = tmp_path / "palette.png"
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(tmp_path / "sixteen.png")
    c["16bit"] = tmp_path / "sixteen.png"
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    c["cmyk"] = tmp_path / "cmyk.jpg"
    # EXIF orientation 6 (rotate 90 CW to display): a 40x20 stored image displays as 20x40
    img = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rotated.jpg", exif=exif)
    c["exif"] = tmp_path / "rotated.jpg"
    frames = [Image.new("RGB", (24, 24), col) for col in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    c["gif"] = tmp_path / "anim.gif"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "one.png")
    c["1x1"] = tmp_path / "one.png"
    c["bomb"] = tmp_path / "bomb.png"
    c["bomb"].write_bytes(_png_header_only(100_000, 100_000))
    name = os.fsdecode(b"caf\xe9-\xff.jpg") if os.name != "nt" else "cafe.jpg"
    path = tmp_path / name
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, "JPEG")
    c["nonutf8"] = path
    return c


def _png_header_only(w, h) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb by dimensions)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case,reason", [("zero", "empty file"), ("truncated", "truncated"),
                                         ("text", "text file"), ("html", "HTML"), ("svg", "SVG"),
                                         ("bomb", "too large")])
def test_bad_files_raise_clear_error_naming_the_file(corpus, case, reason):
    with pytest.raises(ImageError) as e:
        load_image(corpus[case])
    msg = str(e.value)
    assert msg.startswith(str(corpus[case])) and reason in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_palette_transparency_on_white(corpus):
    im = load_image(corpus["palette"])
    assert im.mode == "RGB"
    assert im.getpixel((15, 2)) == (255, 255, 255)  # transparent index 0 -> white
    assert im.getpixel((2, 2)) == (0, 0, 255)


def test_rgba_on_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(im).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_scaled_not_clipped(corpus):
    im = load_image(corpus["16bit"])
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_to_rgb(corpus):
    im = load_image(corpus["cmyk"])
    r, g, b = im.getpixel((5, 5))
    assert im.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_exif_rotation_applied(corpus):
    assert load_image(corpus["exif"]).size == (20, 40)


def test_animated_gif_first_frame(corpus):
    r, g, b = load_image(corpus["gif"]).getpixel((5, 5))
    assert r > 200 and b < 50


def test_one_pixel_and_non_utf8_name(corpus):
    assert load_image(corpus["1x1"]).size == (1, 1)
    assert load_image(corpus["nonutf8"]).size == (8, 8)


def test_opens_by_content_not_extension(tmp_path):
    p = tmp_path / "actually_png.jpg"
    Image.new("L", (5, 5), 128).save(p, "PNG")
    assert load_image(p).mode == "RGB"


def test_bytes_and_file_objects():
    data = _jpeg_bytes(Image.new("RGB", (9, 9)))
    assert load_image(data).size == (9, 9)
    assert load_image(io.BytesIO(data)).size == (9, 9)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_read_everywhere(tmp_path, fmt):
    """iPhone photos (HEIC, via pillow-heif registered in images.py) and AVIF (Pillow) load like any image."""
    import subprocess
    import sys

    src = Image.new("RGB", (64, 48), (220, 40, 40))
    src.paste((30, 60, 230), (32, 0, 64, 48))
    path = tmp_path / ("photo.heic" if fmt == "HEIF" else "photo.avif")
    src.save(path, fmt, quality=95)
    assert path.read_bytes()[4:12] in (b"ftypheic", b"ftypmif1", b"ftypavif")
    for item in (path, path.read_bytes()):
        im = load_image(item)
        assert im.mode == "RGB" and im.size == (64, 48)
        a = np.asarray(im).astype(int)
        assert abs(a[24, 10] - [220, 40, 40]).max() < 30 and abs(a[24, 50] - [30, 60, 230]).max() < 30
    # A fresh interpreter that imports only images.py reads it too: registration happens on import.
    code = f"from pokemon_classifier.images import load_image; print(load_image({str(path)!r}).size)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "(64, 48)", out.stderr


# ------------------------------------------------------------------ draft decoding (the app's uploads)
def test_large_jpeg_decodes_at_a_reduced_scale_and_keeps_its_top1(tmp_path):
    """A 1664x1248 photo for a model that needs 104 px is decoded at 1/8 (208x156), not in full, and the
    tiny model's verdict is the one it gives on the fully decoded picture."""
    from helpers import CLASSES, draw_shape, tiny_checkpoint
    from pokemon_classifier.predict import Classifier
    from pokemon_classifier.presets import resize_size

    clf = Classifier.load(tiny_checkpoint(tmp_path / "m.pt", 91))
    side = resize_size(clf.meta["preprocessing"])
    assert side == 104
    for shape, colour in CLASSES.values():
        data = _jpeg_bytes(draw_shape(shape, colour, 1248).resize((1664, 1248), Image.BICUBIC), quality=92)
        full, small = load_image(data), load_image(data, min_side=side)
        assert full.size == (1664, 1248) and small.size == (208, 156)
        a = clf.predict_tensors(torch_stack([clf.transform(full)]))[0]
        b = clf.predict_tensors(torch_stack([clf.transform(small)]))[0]
        assert a["topk"][0]["dex_id"] == b["topk"][0]["dex_id"]


def test_draft_only_when_the_picture_is_at_least_twice_the_needed_size():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    data = _jpeg_bytes(img)
    # shorter side 300 < 2 x 151: decoded exactly as without min_side (same pixels)
    same = load_image(data, min_side=151)
    assert same.size == (400, 300) and np.array_equal(np.asarray(same), np.asarray(load_image(data)))
    assert load_image(data, min_side=150).size == (200, 150)  # 300 >= 2 x 150: half scale
    assert load_image(data, min_side=37).size == (50, 38)  # 1/8 is the smallest scale JPEG offers
    png = io.BytesIO()
    img.save(png, "PNG")
    assert load_image(png.getvalue(), min_side=37).size == (400, 300)  # not a JPEG: decoded in full


def torch_stack(xs):
    import torch

    return torch.stack(xs)
