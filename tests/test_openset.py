"""Open set: generated degenerate pictures, the tune/report split of negatives."""

import numpy as np
import pandas as pd

from pokemon_classifier import openset


def test_every_degenerate_kind_is_a_distinct_rgb_picture():
    images, kinds = openset.degenerate_set(3, seed=1, size=64)
    assert len(images) == 3 * len(openset.DEGENERATE_KINDS) and set(kinds) == set(openset.DEGENERATE_KINDS)
    for im in images:
        assert im.mode == "RGB" and im.size == (64, 64)
    arrays = [np.asarray(im) for im in images]
    # different seeds give different pictures (tune and report sets never share one)
    other, _ = openset.degenerate_set(3, seed=2, size=64)
    assert sum(np.array_equal(a, np.asarray(b)) for a, b in zip(arrays, other)) < len(arrays) // 4
    assert np.asarray(images[kinds.index("noise")]).std() > 20
    assert np.asarray(images[kinds.index("blank")]).std() == 0


def test_negatives_split_halves_each_kind_and_keeps_a_species_on_one_side():
    rows = [(f"photo{i:03d}.jpg", "photo") for i in range(40)]
    rows += [(f"gen3art{d}.jpg", "gen3-art") for d in range(252, 282)]
    rows += [(f"gen3icon{d}.jpg", "gen3-icon") for d in range(252, 282)]
    t = pd.DataFrame(rows, columns=["img_name", "kind"])
    t["half"] = openset.split_negatives(t)
    counts = t.groupby(["kind", "half"]).size()
    assert counts["photo"]["tune"] == counts["photo"]["report"] == 20
    assert counts["gen3-art"]["tune"] == 15
    art = t[t.kind == "gen3-art"].set_index(t[t.kind == "gen3-art"].img_name.str[7:10])["half"]
    icon = t[t.kind == "gen3-icon"].set_index(t[t.kind == "gen3-icon"].img_name.str[8:11])["half"]
    assert (art.sort_index() == icon.sort_index()).all()
    # the same table always splits the same way
    assert (openset.split_negatives(t) == t["half"]).all()


# ------------------------------------------------------------ fitted end to end on generated data

import io  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import run_cli, tiny_checkpoint  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


def _negatives(folder):
    images, kinds = openset.degenerate_set(4, seed=7, size=64)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, (im, k) in enumerate(zip(images, kinds)):
        name = f"neg{i:03d}.png"
        im.save(folder / "images" / name)
        rows.append((name, "photo" if i % 2 else k))
    pd.DataFrame(rows, columns=["img_name", "kind"]).to_csv(folder / "manifest.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from pokemon_classifier.synthetic import make_dataset

    root = tmp_path_factory.mktemp("os")
    data = make_dataset(root / "data", per_class=10)
    assert run_cli("split", data)[0] == 0
    neg = _negatives(root / "neg")
    ck = tiny_checkpoint(root / "m.pt", 64)
    code, out, err = run_cli("calibrate", "--weights", ck, "--data", data, "--negatives", neg, "--device", "cpu")
    assert code == 0, err
    return data, neg, ck


def test_calibrate_stores_a_small_state_that_loads_weights_only(fitted):
    data, neg, ck = fitted
    state = torch.load(ck, weights_only=True)["openset"]
    assert state["parts"] == ["knn", "oe", "msp"] and state["bank"].dtype == torch.float16
    tune = openset.read_negatives(neg).query("half == 'tune'")
    assert sorted(state["tuned_on"]) == sorted(openset.file_key(p) for p in tune["path"])
    b = io.BytesIO()
    torch.save(state, b)
    assert len(b.getvalue()) < 2_000_000


def test_predict_uses_the_score_from_the_same_forward_pass(fitted):
    data, neg, ck = fitted
    clf = Classifier.load(ck)
    images, _ = openset.degenerate_set(2, seed=9, size=64)
    x = torch.stack([clf.preprocess(im) for im in images])
    results = clf.predict_tensors(x, 3)
    model, meta = torch.nn.Module(), None  # recompute the score by hand: network features -> head
    from pokemon_classifier.models import load_checkpoint

    model, meta = load_checkpoint(ck)
    with torch.no_grad():
        logits, feats = openset.WithFeatures(model)(x)
        score = openset.OpenSetHead(meta["openset"])(logits, feats).numpy()
    assert [r["open_set_score"] for r in results] == pytest.approx(score, abs=1e-3)
    assert [r["unknown"] for r in results] == list(score < meta["openset"]["threshold"])
    assert all(r["name"] == "unknown" for r, s in zip(results, score) if s < meta["openset"]["threshold"])
    off = Classifier.load(ck, open_set=False).predict_tensors(x, 3)
    assert all("open_set_score" not in r and not r["unknown"] for r in off)


def test_onnx_export_carries_the_same_score(fitted, tmp_path):
    pytest.importorskip("onnxruntime")
    data, neg, ck = fitted
    code, out, err = run_cli("export", "--weights", ck, "--onnx", tmp_path / "m.onnx")
    assert code == 0, err
    images, _ = openset.degenerate_set(1, seed=3, size=64)
    a = Classifier.load(ck).predict_batch(images)
    b = Classifier.load(tmp_path / "m.onnx").predict_batch(images)
    assert [r["open_set_score"] for r in b] == pytest.approx([r["open_set_score"] for r in a], abs=1e-3)
    assert [r["unknown"] for r in a] == [r["unknown"] for r in b]


def test_evaluate_negatives_reports_on_what_calibrate_did_not_see(fitted, tmp_path):
    data, neg, ck = fitted
    code, out, err = run_cli("evaluate", "--weights", ck, "--data", data, "--split", "val", "--negatives", neg,
                             "--json", "--out", tmp_path / "rep")
    assert code == 0, err
    o = json.loads(out)["open_set"]
    table = openset.read_negatives(neg)
    tuned = {openset.file_key(p) for p in table.loc[table["half"] == "tune", "path"]}
    # left out by content: a report-half file identical to a tuning one (two blank pictures) is seen
    seen = sum(openset.file_key(p) in tuned for p in table["path"])
    assert seen >= int((table["half"] == "tune").sum()) and o["excluded_tuning"] == seen
    assert o["n_out"] == len(table) - seen + 10 * len(openset.DEGENERATE_KINDS)
    assert set(o["rejected"]) >= {"degenerate (generated)"}
    assert 0.5 <= o["auroc"] <= 1 or o["auroc"] < 0.5  # a float either way; the shipped model's is in README
    assert o["in_accepted"] == pytest.approx(0.96, abs=0.08)  # the val images the threshold was set on
    assert (tmp_path / "rep" / "open_set_scores.png").stat().st_size > 5000
    assert "## Open set" in (tmp_path / "rep" / "report.md").read_text()
    code, out, err = run_cli("evaluate", "--weights", tiny_checkpoint(tmp_path / "plain.pt", 64), "--data", data,
                             "--negatives", neg)
    assert code == 2 and "calibrate" in err and "Traceback" not in err


def test_openset_cv_tool_scores_each_bank_and_accept_level_on_the_tuning_half_only(fitted, capsys, monkeypatch):
    """tools/openset_cv.py: how README chose --accept 0.95; it must never read the reporting half."""
    import importlib.util
    from pathlib import Path

    from pokemon_classifier import openset

    data, neg, ck = fitted
    spec = importlib.util.spec_from_file_location("openset_cv", Path(__file__).resolve().parents[1] / "tools" / "openset_cv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    read, seen = openset.extract, []

    def spy(model, meta, items, *a, **k):
        seen.extend(str(i) for i in items if isinstance(i, (str, Path)))
        return read(model, meta, items, *a, **k)

    monkeypatch.setattr(openset, "extract", spy)
    assert mod.main(["--weights", str(ck), "--data", str(data), "--splits", str(data / "splits.csv"),
                     "--negatives", str(neg), "--without", str(data), "--accept", "0.9", "0.95"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("bank ")]
    assert len(lines) == 4 and all("mean over the negative kinds" in l and "degenerate" in l for l in lines)
    table = openset.read_negatives(neg)
    assert not set(seen) & {str(p) for p in table.loc[table["half"] == "report", "path"]}
    assert set(seen) >= {str(p) for p in table.loc[table["half"] == "tune", "path"]}
