"""The one image loader used everywhere (annotate, dedup, training cache, predict, app).

    img = load_image("photo.heic-named.jpg")   # -> PIL RGB image, or ImageError naming the file

Opens by content, not by extension; first frame of animations; EXIF orientation applied;
transparency composited on white; CMYK / 16-bit / greyscale / 1-bit converted to RGB.
HEIC/HEIF (iPhone photos) read through pillow-heif, registered here on import so every reader
(CLI, app, training) gets it; AVIF is read by Pillow itself.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from pokemon_classifier.errors import ImageError

register_heif_opener()

# Pillow warns at MAX_IMAGE_PIXELS and raises at twice that; we refuse anything above it.
MAX_PIXELS = 64_000_000
# Every model input resizes the shorter side to ~240 px, so the work grows with the aspect ratio, not
# with the file: a 204-byte 1x30000 PNG becomes 238x7,140,000 px (6 GB). Longer than 20:1 is refused
# (the shared data tops out at 2.1:1; panoramas are up to ~10:1), which caps a resized picture at
# 20 x 240^2 px whatever its header says.
MAX_ASPECT = 20
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}


def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fsdecode(src)
    return getattr(src, "name", "<bytes>")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit greyscale: scale the real range to 0..255 instead of clipping.
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0, 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA") or (im.mode == "L" and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("RGBa", "La"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im, mask=im.getchannel("A"))
        return white
    if im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im, mask=im.getchannel("A"))
        return white
    return im.convert("RGB") if im.mode != "RGB" else im


def check_shape(w: int, h: int, what: str = "<image>", max_pixels: int = MAX_PIXELS) -> None:
    """The one guard on a picture's size, from its header before any pixel is decoded: ImageError for
    no pixels, more than `max_pixels`, or a shape longer than MAX_ASPECT:1 (see MAX_ASPECT)."""
    if w < 1 or h < 1:
        raise ImageError(f"{what}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"{what}: image too large ({w}x{h} px, limit {max_pixels:,} px)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{what}: image is {w}x{h} px, too long and thin to classify "
                         f"(at most {MAX_ASPECT}:1 is accepted)")


def load_image(src, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """Decode `src` (path, bytes, file object or PIL image) to an RGB PIL image.

    `min_side`: a JPEG whose shorter side is at least twice this is decoded at 1/2, 1/4 or 1/8 scale
    (Image.draft: the DCT is scaled, so most of the decoding is skipped), the smallest that keeps the
    shorter side >= min_side; the model resizes to min_side anyway. Smaller pictures decode as before.
    Raises ImageError("<file>: <reason>") for anything that is not a usable raster image, or whose
    shape check_shape refuses (every entry point decodes through here, so all get the same limits).
    """
    if isinstance(src, Image.Image):
        check_shape(*src.size, "<image>", max_pixels)
        return _to_rgb(ImageOps.exif_transpose(src) or src)
    what = _describe(src)
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    try:
        if isinstance(src, (str, os.PathLike)):
            p = Path(src)
            if not p.exists():
                raise ImageError(f"{what}: file not found")
            if p.is_dir():
                raise ImageError(f"{what}: is a directory, not an image")
            if p.stat().st_size == 0:
                raise ImageError(f"{what}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                check_shape(*im.size, what, max_pixels)
                if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
                    im.draft(None, (min_side, min_side))  # scale = shorter side // min_side, rounded down to 1/2^k
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return _to_rgb(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not a supported image format ({_sniff(src)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{what}: image too large (decompression bomb guard: {e})") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageError(f"{what}: truncated or corrupt image data") from None
        raise ImageError(f"{what}: cannot decode image ({msg})") from None
    except (ValueError, SyntaxError, EOFError, IndexError, MemoryError) as e:
        raise ImageError(f"{what}: corrupt image ({type(e).__name__}: {e})") from None


def _sniff(src) -> str:
    """A hint about what a non-image file really is."""
    try:
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                head = f.read(512)
        else:
            src.seek(0)
            head = src.read(512)
    except OSError:
        return "unreadable"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low[:200]:
        return "looks like an HTML page"
    if low.startswith(b"<?xml") or b"<svg" in low:
        return "looks like SVG, a vector format; convert it to PNG"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "looks like a text file"
    return "unknown binary data"


def image_size(path) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


def is_image_file(path: Path) -> bool:
    """Candidate by name only (hidden/temp files skipped); content is checked by load_image."""
    return path.is_file() and not path.name.startswith(".")
