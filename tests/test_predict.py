import csv
import io
import json
import os
import time

import numpy as np
import pytest
import torch

from helpers import CLASSES, draw_shape, run_cli, tiny_checkpoint
from pokemon_classifier import pokedex
from pokemon_classifier.predict import Classifier


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "m.pt", 48, unknown_threshold=0.0)


def test_predict_inputs_of_every_kind(ckpt, tmp_path):
    clf = Classifier.load(ckpt)
    img = draw_shape("circle", (40, 160, 60))
    img.save(tmp_path / "a.png")
    by_path = clf.predict(tmp_path / "a.png", topk=3)
    assert len(by_path["topk"]) == 3 and by_path["name"] == pokedex.display_name(by_path["dex_id"])
    assert sum(t["probability"] for t in by_path["topk"]) <= 1.0 + 1e-6
    for item in (img, np.asarray(img), (tmp_path / "a.png").read_bytes(), str(tmp_path / "a.png")):
        assert clf.predict(item)["topk"][0]["probability"] == pytest.approx(by_path["topk"][0]["probability"], abs=1e-5)
    batch = clf.predict_batch([tmp_path / "a.png", tmp_path / "missing.png", img])
    assert "error" in batch[1] and "missing.png" in batch[1]["error"]
    assert batch[0]["dex_id"] == batch[2]["dex_id"]


def test_unknown_threshold(ckpt, tmp_path):
    img = draw_shape("circle", (40, 160, 60))
    assert Classifier.load(ckpt, threshold=1.01).predict(img)["name"] == "unknown"
    assert Classifier.load(ckpt, threshold=0.0).predict(img)["name"] != "unknown"
    img.save(tmp_path / "c.png")
    code, out, _ = run_cli("predict", "--weights", ckpt, "--threshold", "1.01", tmp_path / "c.png")
    assert code == 0 and "unknown (not confident" in out and "guesses:" in out


def test_cli_json_csv_folders_globs(ckpt, synth_data, tmp_path):
    (synth_data / "images" / "broken.jpg").write_text("nope")
    code, out, err = run_cli("predict", "--weights", ckpt, synth_data / "images", "--json", "--topk", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 85 and sum("error" in r for r in rows) == 1
    assert all(len(r["topk"]) == 2 for r in rows if "error" not in r)
    code, out, err = run_cli("predict", "--weights", ckpt, str(synth_data / "images" / "abra00*.jpg"), "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 9 and rows[0]["name"]


def test_cli_errors(ckpt, tmp_path):
    code, _, err = run_cli("predict", "--weights", ckpt, tmp_path / "nothing*.jpg")
    assert code == 2 and "no such file" in err
    code, _, err = run_cli("predict", "--weights", tmp_path / "none.pt", tmp_path)
    assert code == 2 and "not found" in err


def _write_video(path, colors, seconds_each=1.0, fps=10):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for shape, col in colors:
            for _ in range(int(seconds_each * fps)):
                frame = av.VideoFrame.from_image(draw_shape(shape, col, 64))
                for pkt in s.encode(frame):
                    c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_video_timeline(ckpt, tmp_path):
    v = tmp_path / "clip.mp4"
    _write_video(v, [CLASSES[1], CLASSES[4], CLASSES[7]])
    clf = Classifier.load(ckpt)
    r = clf.predict_video(v, fps=2)
    assert r["frames"] == 6
    assert r["segments"][0]["start"] == 0 and r["segments"][-1]["end"] == pytest.approx(3.0, abs=0.2)
    assert len(r["overall"]["topk"]) == 5
    assert r["headline"] and isinstance(r["pokemon"], list)
    code, out, err = run_cli("predict", "--weights", ckpt, v, "--fps", "4")
    story = Classifier.load(ckpt).predict_video(v, fps=4)
    assert code == 0 and "12 frames at 4 fps" in out and f"clip.mp4: {story['headline']}" in out


def test_onnx_export_matches_torch(ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    code, out, err = run_cli("export", "--weights", ckpt, "--onnx", tmp_path / "m.onnx")
    assert code == 0, err
    assert "max |Δprob|" in out
    img = draw_shape("ring", (240, 120, 180))
    a = Classifier.load(ckpt).predict(img)
    b = Classifier.load(tmp_path / "m.onnx", backend="onnx").predict(img)
    assert a["dex_id"] == b["dex_id"] and abs(a["probability"] - b["probability"]) < 1e-4
    code, out, _ = run_cli("predict", "--backend", "onnx", "--weights", tmp_path / "m.onnx", tmp_path / "m.onnx")
    assert "error" in out  # an .onnx file is not an image: reported, not fatal


def test_auto_backend_exports_once_into_the_cache_and_matches_torch(ckpt, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    img = draw_shape("ring", (240, 120, 180))
    auto = Classifier.load(ckpt, backend="auto")  # serve's default on the CPU
    (onnx,) = (tmp_path / "cache" / "onnx").glob("*.onnx")  # conftest points the user cache here
    stamp = onnx.stat().st_mtime_ns
    again = Classifier.load(ckpt, backend="auto")
    assert auto.backend == again.backend == "onnx" and onnx.stat().st_mtime_ns == stamp  # not exported twice
    a, b = Classifier.load(ckpt).predict(img), again.predict(img)
    assert a["dex_id"] == b["dex_id"] and abs(a["probability"] - b["probability"]) < 1e-4
    # an export that fails does not stop the app: it serves with torch and says why
    import pokemon_classifier.onnx_graph as export  # the graph and its cache (export.py is the command)

    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no such op")))
    changed = tmp_path / "other.pt"
    changed.write_bytes(ckpt.read_bytes())  # same bytes under another name: cached, no export needed
    assert Classifier.load(changed, backend="auto").backend == "onnx"
    # new code that builds the graph differently (a release) is a new key: exported again
    monkeypatch.setattr(export, "graph_code", lambda: "0123456789")
    assert Classifier.load(ckpt, backend="auto").backend == "torch"
    tiny_checkpoint(tmp_path / "fresh.pt", extra_note="other bytes")
    assert Classifier.load(tmp_path / "fresh.pt", backend="auto").backend == "torch"
    assert "serving with torch: ONNX export of" in capsys.readouterr().out


def test_a_corrupted_cached_export_is_made_again_not_fatal_at_every_start(ckpt, tmp_path):
    """A truncated or overwritten cache file (a full disk, a crash) used to make every serve exit 2."""
    pytest.importorskip("onnxruntime")
    img = draw_shape("ring", (240, 120, 180))
    ref = Classifier.load(ckpt, backend="auto").predict(img)
    (onnx,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    stale = onnx.parent / f".{onnx.name}.k3j_x9ab.tmp"  # an export killed mid-write, an hour or more ago
    stale.write_bytes(b"half a graph")
    os.utime(stale, (time.time() - 7200,) * 2)
    fresh = onnx.parent / f".{onnx.name}.a1b2c3d4.tmp"  # another serve exporting right now: left alone
    fresh.write_bytes(b"half a graph")
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:-64] + bytes(64)):
        onnx.write_bytes(damage(onnx.read_bytes()))
        again = Classifier.load(ckpt, backend="auto")
        assert again.backend == "onnx"
        got = again.predict(img)
        assert got["dex_id"] == ref["dex_id"] and abs(got["probability"] - ref["probability"]) < 1e-6
    assert not stale.exists() and fresh.exists()


def test_predict_lang_localizes_names_genus_and_types(ckpt, tmp_path):
    img = tmp_path / "shape.png"
    draw_shape("ring", (240, 120, 180)).save(img)
    code, out, err = run_cli("predict", "--weights", ckpt, img, "--json", "--lang", "de", "--threshold", "0")
    assert code == 0, err
    r = json.loads(out)
    from pokemon_classifier import pokedex

    assert r["lang"] == "de" and r["genus"] == pokedex.genus(r["dex_id"], "de")
    assert r["display_name"] == pokedex.localized_name(r["dex_id"], "de") and r["types"]
    assert all("display_name" in t for t in r["topk"])
    code, out, err = run_cli("predict", "--weights", ckpt, img, "--lang", "de", "--threshold", "0")
    assert code == 0 and f"#{r['dex_id']:03d} {r['genus']}" in out
    code, out, err = run_cli("predict", "--weights", ckpt, img, "--lang", "xx")
    assert code == 2 and err.startswith("error: --lang xx")


def test_threaded_decoding_gives_the_serial_batches(ckpt, tmp_path):
    """readable_batches decodes with a thread pool one batch ahead: same rows, tensors and errors as serially."""
    from pokemon_classifier.data import decode_threads, readable_batches

    colors = [(40 * i % 255, 90, 200 - 20 * i) for i in range(7)]
    items = []
    for i, c in enumerate(colors):
        draw_shape("circle" if i % 2 else "square", c).save(tmp_path / f"{i}.png")
        items.append(tmp_path / f"{i}.png" if i % 3 else (tmp_path / f"{i}.png").read_bytes())
    items.insert(3, tmp_path / "missing.png")
    pre = Classifier.load(ckpt).meta["preprocessing"]
    assert decode_threads(items) >= 1 and decode_threads(items[:1]) == 1 == decode_threads([draw_shape("circle", colors[0])] * 2)
    runs = {}
    for threads in (1, 3):
        errors = {}
        runs[threads] = ([(idx.tolist(), x) for idx, x in readable_batches(items, pre, errors, 3, 0, threads=threads)],
                         errors)
    (serial, e1), (threaded, e3) = runs[1], runs[3]
    assert e1 == e3 and list(e1) == [3]
    assert [i for i, _ in serial] == [i for i, _ in threaded] == [[0, 1, 2], [4, 5], [6, 7]]
    for (_, a), (_, b) in zip(serial, threaded):
        assert torch.equal(a, b)
