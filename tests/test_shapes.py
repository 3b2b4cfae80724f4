"""Tiny files that would cost gigabytes: every entry point refuses 1xN-shaped pictures through the one
guard in images.load_image, and accepts a long picture at the limit (issue 28).

Resizing the shorter side to ~240 px turns a 204-byte 1x30000 PNG into 238 x 7,140,000 px; the
matrix below calls the real functions of predict, serve, collect, annotate and train's cache."""

import io
import json

import pytest
from PIL import Image

from helpers import run_cli, tiny_checkpoint
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.images import MAX_ASPECT

# (width, height): refused, each a few hundred bytes
EXTREME = [(1, 30000), (30000, 1), (2, 30000), (1, 1_000_000)]
LEGAL = (MAX_ASPECT * 200, 200)  # the longest shape accepted, and not small: 4000x200


def _png(w, h) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (w, h), (200, 40, 40)).save(b, "PNG", optimize=True)
    return b.getvalue()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt", 64, unknown_threshold=0.0)


@pytest.fixture(scope="module")
def clf(ckpt):
    from pokemon_classifier.predict import Classifier

    return Classifier.load(ckpt)


@pytest.mark.parametrize("shape", EXTREME)
def test_load_image_refuses_extreme_shapes_from_the_header(shape):
    from pokemon_classifier.images import load_image

    data = _png(*shape)
    assert len(data) < 4000
    with pytest.raises(ImageError, match=f"{shape[0]}x{shape[1]} px, too long and thin"):
        load_image(data)
    with pytest.raises(ImageError, match="too long and thin"):  # an already decoded picture (video frames, arrays)
        load_image(Image.new("RGB", shape))


def test_predict_cli_reports_each_and_goes_on_with_the_batch(ckpt, tmp_path):
    paths = []
    for w, h in EXTREME + [LEGAL, (96, 96)]:
        p = tmp_path / f"p{w}x{h}.png"
        p.write_bytes(_png(w, h))
        paths.append(p)
    code, out, err = run_cli("predict", "--weights", ckpt, "--json", *paths)
    assert code == 0, err
    rows = {json.loads(line)["path"]: json.loads(line) for line in out.splitlines()}
    assert len(rows) == len(paths)
    for p, (w, h) in zip(paths, EXTREME):
        assert "too long and thin" in rows[str(p)]["error"]
    assert "error" not in rows[str(paths[-2])] and "error" not in rows[str(paths[-1])]
    assert f"{len(EXTREME)} of {len(paths)} inputs could not be read" in err
    code, out, _ = run_cli("predict", "--weights", ckpt, paths[0], paths[-1])
    assert code == 0 and out.splitlines()[0] == f"{paths[0]}: error: {paths[0]}: image is 1x30000 px, too long " \
                                                f"and thin to classify (at most {MAX_ASPECT}:1 is accepted)"


@pytest.mark.parametrize("shape", EXTREME)
def test_serve_answers_400_json_one_line(clf, shape):
    from fastapi.testclient import TestClient

    from pokemon_classifier.app import create_app

    r = TestClient(create_app(clf)).post("/api/predict", files={"file": ("x.png", _png(*shape), "image/png")})
    assert r.status_code == 400
    assert r.json() == {"error": f"not a readable image: image is {shape[0]}x{shape[1]} px, too long and thin "
                                 f"to classify (at most {MAX_ASPECT}:1 is accepted)"}


def test_serve_and_feedback_accept_the_longest_legal_shape(clf, tmp_path):
    from fastapi.testclient import TestClient

    from pokemon_classifier.app import create_app

    c = TestClient(create_app(clf, collect_dir=tmp_path / "col"))
    assert c.post("/api/predict", files={"file": ("x.png", _png(*LEGAL), "image/png")}).status_code == 200
    r = c.post("/api/feedback", files={"file": ("x.png", _png(*LEGAL), "image/png")}, data={"dex_id": "25"})
    assert r.status_code == 200, r.text
    r = c.post("/api/feedback", files={"file": ("x.png", _png(2, 30000), "image/png")}, data={"dex_id": "25"})
    assert r.status_code == 400 and "too long and thin" in r.json()["error"]


@pytest.mark.parametrize("shape", EXTREME)
def test_collect_stores_nothing(tmp_path, shape):
    from pokemon_classifier.collect import Collector

    c = Collector(tmp_path / "col")
    with pytest.raises(ImageError, match="too long and thin"):
        c.save(_png(*shape), 25)
    assert not list((tmp_path / "col" / "images").iterdir())


def test_annotate_leaves_them_out_and_train_cache_refuses_them(tmp_path):
    from pokemon_classifier import annotations
    from pokemon_classifier.data import build_cache, decode_resized
    from pokemon_classifier.models import preprocessing

    img = tmp_path / "data" / "images"
    img.mkdir(parents=True)
    for i, shape in enumerate(EXTREME + [LEGAL, (96, 96)], 1):
        (img / f"pikachu{i:03d}.png").write_bytes(_png(*shape))
    df = annotations.annotate(tmp_path / "data", plot=False).df
    assert list(df.img_name) == [f"pikachu{len(EXTREME) + 1:03d}.png", f"pikachu{len(EXTREME) + 2:03d}.png"]
    report = (tmp_path / "data" / "annotate_report.csv").read_text()
    assert report.count("too long and thin") == len(EXTREME)
    assert decode_resized(img / f"pikachu{len(EXTREME) + 1:03d}.png", 73).shape == (3, 73, 73)
    for i, shape in enumerate(EXTREME, 1):
        with pytest.raises(ImageError, match="too long and thin"):
            decode_resized(img / f"pikachu{i:03d}.png", 238)
    # a hand-written annotations.csv listing one: train's cache stops with one line before any work
    import pandas as pd

    bad = pd.DataFrame({"img_name": ["pikachu001.png", "pikachu006.png"], "pokemon_id": [25, 25]})
    with pytest.raises(UserError, match="1 unreadable images .*too long and thin"):
        build_cache(tmp_path / "data", bad, preprocessing("mobilenet_v3_small", 64), workers=1,
                    root=tmp_path / "cache", progress=False)
