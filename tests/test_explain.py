import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers import draw_shape, run_cli, tiny_checkpoint
from pokemon_classifier.errors import UserError
from pokemon_classifier.explain import Explainer, crop_box, to_original
from pokemon_classifier.presets import eval_transform

PRE = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.875}


class Brightness(torch.nn.Module):
    """A model whose Grad-CAM is the picture's brightness: a 1x1 conv summing RGB, a mean pool, and a head
    whose class 0 grows with it. Its peak is where the picture is brightest, a place the test knows."""

    def __init__(self):
        super().__init__()
        conv = torch.nn.Conv2d(3, 1, 1)
        torch.nn.init.constant_(conv.weight, 1.0)
        torch.nn.init.constant_(conv.bias, 3.0)  # normalised pixels are -1..1: keep the map positive
        self.features = torch.nn.Sequential(conv)
        self.head = torch.nn.Linear(1, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[5.0], [0.0], [-5.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def blob_picture(w, h, x, y, r=5) -> Image.Image:
    """A dark picture with one smooth bright spot at (x, y) (a single brightest pixel, no plateau)."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = 30 + 225 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r))
    return Image.fromarray(np.repeat(a[..., None], 3, 2).round().astype(np.uint8))


def bright_spot(img: Image.Image) -> tuple[int, int]:
    a = np.asarray(img.convert("L"), dtype=float)
    y, x = np.unravel_index(int(a.argmax()), a.shape)
    return int(x), int(y)


@pytest.mark.parametrize("w,h", [(300, 200), (200, 300), (97, 97), (1000, 61)])
def test_to_original_inverts_resize_and_centre_crop(w, h):
    x0, y0, x1, y1 = crop_box(w, h, PRE)
    x, y = int(x0 + (x1 - x0) * 0.3), int(y0 + (y1 - y0) * 0.7)
    t = eval_transform(PRE)(blob_picture(w, h, x, y, r=max(1, int(max(w, h) / 40))))
    v, u = np.unravel_index(int(t.sum(0).argmax()), t.shape[1:])
    px, py = to_original(u, v, w, h, PRE)
    step = max(w, h) / 37  # one model pixel in the picture's pixels (resize side 37)
    assert abs(px - x) <= step and abs(py - y) <= step


def test_peak_is_in_the_upright_pictures_pixels(tmp_path):
    # stored 120x80 with EXIF orientation 6: viewers (and load_image) show it 80x120, rotated
    stored = blob_picture(120, 80, 50, 25, r=6)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    upright = ImageOps.exif_transpose(Image.open(tmp_path / "rot.jpg"))
    expect = bright_spot(upright)
    assert upright.size == (80, 120) and expect != bright_spot(stored)
    ex = Explainer(Brightness(), {"preprocessing": PRE}).explain(tmp_path / "rot.jpg")
    assert ex["class_index"] == 0
    step = 80 / 37 + 1
    assert abs(ex["peak"][0] - expect[0]) <= step and abs(ex["peak"][1] - expect[1]) <= step


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "m.pt", 48, unknown_threshold=0.0)


def test_cli_explain_writes_the_overlay_and_the_json(ckpt, tmp_path):
    img = draw_shape("circle", (40, 160, 60), size=150)
    img.save(tmp_path / "a.png")
    img.resize((90, 60)).save(tmp_path / "wide.jpg")
    code, out, err = run_cli("predict", "--weights", ckpt, tmp_path / "a.png", tmp_path / "wide.jpg",
                             "--explain", tmp_path / "why", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    for r, size in zip(rows, [(150, 150), (90, 60)]):
        assert set(r["explain"]) == {"peak", "png"}
        x, y = r["explain"]["peak"]
        assert 0 <= x < size[0] and 0 <= y < size[1]
        with Image.open(r["explain"]["png"]) as png:
            assert png.format == "PNG" and png.size == size
    assert rows[0]["explain"]["png"].endswith("a.explain.png")
    code, out, _ = run_cli("predict", "--weights", ckpt, tmp_path / "a.png", "--explain", tmp_path / "why")
    assert code == 0 and "why: " in out and "a.explain.png" in out


def test_explain_bad_input_is_one_line(ckpt, tmp_path):
    draw_shape("circle", (40, 160, 60)).save(tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_text("nope")
    code, out, err = run_cli("predict", "--weights", ckpt, tmp_path / "a.png", tmp_path / "broken.jpg",
                             "--explain", tmp_path / "why", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and "explain" in rows[0] and "broken.jpg" in rows[1]["error"] and "explain" not in rows[1]
    code, _, err = run_cli("predict", "--weights", ckpt, tmp_path / "a.png", "--explain", tmp_path / "a.png")
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="no gradients"):
        Explainer.load(tmp_path / "m.onnx")


def synthetic_benchmark_inputs(synth_data, tmp_path):
    """A synthetic set with its split, a negatives folder of generated 'photos' and a tiny checkpoint."""
    neg = tmp_path / "negatives"
    (neg / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(neg / "images" / f"photo{i}.jpg")
    (neg / "manifest.csv").write_text("img_name,kind\n" + "".join(f"photo{i}.jpg,photo\n" for i in range(3)))
    assert run_cli("split", synth_data)[0] == 0
    return neg, tiny_checkpoint(tmp_path / "b.pt", 48, unknown_threshold=0.0)


def test_benchmark_runs_end_to_end(synth_data, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    neg, ckpt = synthetic_benchmark_inputs(synth_data, tmp_path)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, root / "benchmarks" / "explain.py", "--data", synth_data, "--splits",
                        synth_data / "splits.csv", "--negatives", neg, "--weights", ckpt, "--n", "4", "--every"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pointing game" in r.stdout and "most salient first" in r.stdout
