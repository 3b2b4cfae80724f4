import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import draw_shape, run_cli, tiny_checkpoint
from pokemon_classifier import multi
from pokemon_classifier.errors import UserError
from pokemon_classifier.images import load_image
from pokemon_classifier.multi import Detector, box_iou, select

PRE = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "crop_pct": 0.875}
RED, BLUE = (230, 20, 20), (20, 20, 230)


class ColourClassifier:
    """A stand-in Classifier: a crop is Pikachu (25) when mostly red, Squirtle (7) when mostly blue,
    unknown otherwise; its open-set score is how pure the colour is (a tight crop scores best)."""

    meta = {"preprocessing": PRE}
    temperature = 1.0

    def preprocess(self, crop):
        a = np.asarray(crop.convert("RGB"), dtype=int)
        red = ((a[..., 0] > 150) & (a[..., 2] < 100)).mean()
        blue = ((a[..., 2] > 150) & (a[..., 0] < 100)).mean()
        return torch.tensor([red, blue, 0.0])

    def predict_tensors(self, batch, topk=1):
        out = []
        for red, blue, _ in batch.tolist():
            dex, name, p, s = (25, "Pikachu", 0.95, red) if red > 0.3 else (7, "Squirtle", 0.8, blue) if blue > 0.3 \
                else (None, "unknown", 0.4, 0.0)
            out.append({"dex_id": dex, "name": name, "probability": p, "unknown": dex is None, "open_set_score": s})
        return out


def colour_cells(model, x):
    """Per-cell evidence from colour (what a trained network's class maps would show)."""
    red = ((x[0, 0] > 0.5) & (x[0, 2] < -0.5)).float()
    blue = ((x[0, 2] > 0.5) & (x[0, 0] < -0.5)).float()
    pooled = F.avg_pool2d(torch.stack([red, blue])[None], multi.STRIDE)[0]
    return torch.cat([pooled * 10, torch.zeros(1, *pooled.shape[1:])])


def scene(size=(900, 600), rects=(((100, 100, 300, 350), RED), ((550, 300, 800, 520), BLUE))):
    img = Image.new("RGB", size, (128, 128, 128))
    for box, colour in rects:
        img.paste(colour, box)
    return img


@pytest.fixture
def detector(monkeypatch):
    monkeypatch.setattr(multi, "cell_logits", colour_cells)
    return Detector(ColourClassifier(), torch.nn.Identity())


def test_boxes_in_the_upright_pictures_pixels_best_first(detector, tmp_path):
    # stored rotated, EXIF orientation 6 shows it upright: boxes are in the upright picture's pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    scene().transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rot.png", exif=exif)
    assert load_image(tmp_path / "rot.png").size == (900, 600)
    dets = detector.detect(tmp_path / "rot.png")
    assert [d["name"] for d in dets] == ["Pikachu", "Squirtle"]  # best first
    assert [d["probability"] for d in dets] == sorted((d["probability"] for d in dets), reverse=True)
    assert box_iou(dets[0]["box"], (100, 100, 300, 350))[0, 0] >= 0.5
    assert box_iou(dets[1]["box"], (550, 300, 800, 520))[0, 0] >= 0.5
    assert all(isinstance(v, int) for d in dets for v in d["box"])


def test_a_single_pokemon_gives_one_detection(detector):
    dets = detector.detect(scene((500, 700), [((120, 200, 380, 520), RED)]))
    assert len(dets) == 1 and dets[0]["dex_id"] == 25
    assert box_iou(dets[0]["box"], (120, 200, 380, 520))[0, 0] >= 0.5


def test_nothing_found_falls_back_to_the_whole_pictures_gen1_answer():
    boxes = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    unknown = [{"dex_id": None, "name": "unknown", "probability": 0.3, "unknown": True}] * 3
    whole = {"dex_id": 1, "name": "Bulbasaur", "probability": 0.9, "unknown": False}
    assert select(boxes, unknown, 3, whole, (0, 0, 40, 30)) == [
        {"dex_id": 1, "name": "Bulbasaur", "probability": 0.9, "box": [0, 0, 40, 30]}]
    assert select(boxes, unknown, 3, {**whole, "unknown": True, "dex_id": None}, (0, 0, 40, 30)) == []


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "m.pt", 48, unknown_threshold=0.0)


def test_cli_multi_json_and_text(ckpt, tmp_path):
    draw_shape("circle", (40, 160, 60), size=300).resize((320, 200)).save(tmp_path / "a.jpg")
    code, out, err = run_cli("predict", "--weights", ckpt, tmp_path / "a.jpg", "--multi", "--json")
    assert code == 0, err
    dets = json.loads(out)["detections"]
    assert dets and all(set(d) == {"dex_id", "name", "probability", "box"} for d in dets)
    assert all(0 <= d["box"][0] < d["box"][2] <= 320 and 0 <= d["box"][1] < d["box"][3] <= 200 for d in dets)
    assert [d["probability"] for d in dets] == sorted((d["probability"] for d in dets), reverse=True)
    code, out, _ = run_cli("predict", "--weights", ckpt, tmp_path / "a.jpg", "--multi")
    assert code == 0 and "box [" in out


def test_multi_bad_input_is_one_line(ckpt, tmp_path):
    draw_shape("circle", (40, 160, 60)).save(tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_text("nope")
    code, out, _ = run_cli("predict", "--weights", ckpt, tmp_path / "a.png", tmp_path / "broken.jpg", "--multi", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and "detections" in rows[0] and "broken.jpg" in rows[1]["error"] and "detections" not in rows[1]
    with pytest.raises(UserError, match="torch checkpoint"):
        Detector.load(tmp_path / "m.onnx")


def test_benchmark_runs_end_to_end(synth_data, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from test_explain import synthetic_benchmark_inputs

    neg, ckpt = synthetic_benchmark_inputs(synth_data, tmp_path)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, root / "benchmarks" / "multi.py", "--data", synth_data, "--splits",
                        synth_data / "splits.csv", "--negatives", neg, "--weights", ckpt, "--composites", "2",
                        "--singles", "2", "--clips", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "recall" in r.stdout and "precision" in r.stdout and "seconds per picture" in r.stdout
    assert "story from every frame's --multi" in r.stdout


def test_parts_of_one_picture_named_apart_are_one_detection():
    # two parts of one Vulpix picture, the tail taken for Charmander: the whole picture looks more like
    # a picture of one Pokemon than either part (open-set score), so it is one detection, the whole's name
    boxes = np.array([[10, 10, 50, 50], [60, 60, 90, 90]], dtype=float)
    parts = [{"dex_id": 37, "name": "Vulpix", "probability": 0.9, "unknown": False, "open_set_score": 1.0},
             {"dex_id": 4, "name": "Charmander", "probability": 0.8, "unknown": False, "open_set_score": 0.5}]
    whole = {"dex_id": 37, "name": "Vulpix", "probability": 0.97, "unknown": False, "open_set_score": 2.0}
    assert select(boxes, parts, 1, whole, (0, 0, 100, 100)) == [
        {"dex_id": 37, "name": "Vulpix", "probability": 0.97, "box": [10, 10, 50, 50]}]
    # a picture of several: each part looks more like one Pokemon than the whole does
    several = select(boxes, parts, 1, {**whole, "open_set_score": 0.2}, (0, 0, 100, 100))
    assert [d["name"] for d in several] == ["Vulpix", "Charmander"]


def test_video_story_from_detections_names_every_pokemon_on_screen():
    pika, squirtle = ({"dex_id": 25, "name": "Pikachu", "probability": 0.9, "box": [0, 0, 9, 9]},
                      {"dex_id": 7, "name": "Squirtle", "probability": 0.8, "box": [10, 0, 19, 9]})
    # 3 s at 2 fps: both on screen for the first 2 s, then Squirtle alone; a one-frame Pikachu blip is no sighting
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    per = [[pika, squirtle], [squirtle, pika], [pika, squirtle], [pika, squirtle], [squirtle], [squirtle]]
    told = multi.tell_detections(times, per, 0.5)
    assert [(p["name"], p["ranges"]) for p in told["pokemon"]] == [("Pikachu", [[0.0, 2.0]]), ("Squirtle", [[0.0, 3.0]])]
    assert told["headline"] == "Pikachu 0–2 s, Squirtle 0–3 s"
    blip = multi.tell_detections(times, [[squirtle]] * 3 + [[squirtle, pika]] + [[squirtle]] * 2, 0.5)
    assert [p["name"] for p in blip["pokemon"]] == ["Squirtle"]
    assert multi.tell_detections(times, [[]] * 6, 0.5) == {"pokemon": [], "headline": "no Gen-1 Pokémon found"}


def test_cli_video_multi_tells_from_every_sampled_frame(ckpt, tmp_path):
    from test_predict import _write_video

    from helpers import CLASSES

    _write_video(tmp_path / "v.mp4", [CLASSES[1], CLASSES[4]])
    code, out, err = run_cli("predict", "--weights", ckpt, tmp_path / "v.mp4", "--multi", "--json", "--fps", "1")
    assert code == 0, err
    r = json.loads(out)
    assert [f["time"] for f in r["frame_detections"]] == [0.0, 1.0] and r["segments"]
    found = {d["dex_id"] for f in r["frame_detections"] for d in f["detections"]}
    assert {p["dex_id"] for p in r["pokemon"]} <= found and r["headline"]
    assert all(0 <= d["box"][0] < d["box"][2] <= 64 for f in r["frame_detections"] for d in f["detections"])
