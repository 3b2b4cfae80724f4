"""Style renditions (styles.py), the `evaluate --styles` section, `calibrate --style-positives` and the
leave-one-style-out tool (tools/styles_cv.py): a new drawing style of the 151 must be kept."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import run_cli, tiny_checkpoint
from pokemon_classifier import openset, styles
from pokemon_classifier.synthetic import draw_shape

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _colours(img):
    return {tuple(c) for c in np.asarray(img).reshape(-1, 3)}


def _blocks(img, side):
    """True when the picture is made of nearest-upscaled blocks of a picture at most `side` px wide."""
    a = np.asarray(img)
    changes = (np.abs(np.diff(a.astype(int), axis=1)).sum(-1) > 0).any(0).sum()
    return changes < side


@pytest.mark.parametrize("kind", styles.STYLE_KINDS)
def test_renditions_are_deterministic_and_keep_the_size(kind):
    img = draw_shape("circle", (40, 160, 60), 120, np.random.default_rng(1)).resize((120, 90))
    a, b, c = (styles.render(img, kind, s) for s in (5, 5, 6))
    assert a.size == img.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))  # the same seed, the same picture
    assert not np.array_equal(np.asarray(a), np.asarray(img))
    assert styles.seed_for("x.jpg", kind, 0) == styles.seed_for("x.jpg", kind, 0) != styles.seed_for("y.jpg", kind, 0)
    others = [np.array_equal(np.asarray(styles.render(img, kind, s)), np.asarray(a)) for s in range(7, 12)]
    assert not all(others)  # the seed does change the rendition


def test_each_style_has_its_palette_and_resolution():
    img = draw_shape("square", (230, 90, 30), 128, np.random.default_rng(2))
    for seed in range(4):
        gb = styles.render(img, "gameboy", seed)
        assert _colours(gb) <= set(styles.GAMEBOY_PALETTE) and _blocks(gb, 65)
        px = styles.render(img, "pixel", seed)
        assert 2 <= len(_colours(px)) <= 16 and _blocks(px, 65)
        ic = styles.render(img, "icon", seed)
        assert styles.OUTLINE in _colours(ic) and _blocks(ic, 41) and len(_colours(ic)) <= 16 + 2
        corner = np.asarray(ic)[0, 0]
        assert (corner >= 200).all()  # a plain light background
        fl = styles.render(img, "flat", seed)
        assert styles.OUTLINE in _colours(fl) and len(_colours(fl)) < len(_colours(img)) // 4
    with pytest.raises(ValueError, match="unknown style"):
        styles.render(img, "oil", 0)


def test_parse_kinds_refuses_an_unknown_style_in_one_line():
    from pokemon_classifier.errors import UserError

    assert styles.parse_kinds("all") == list(styles.STYLE_KINDS) and styles.parse_kinds("none") == []
    assert styles.parse_kinds("icon,gameboy,icon") == ["icon", "gameboy"]
    with pytest.raises(UserError, match=r"--style-positives icon,oil: unknown style 'oil'"):
        styles.parse_kinds("icon,oil")
    rr = styles.round_robin(["a", "b", "c", "d", "e"], ["icon", "flat"])
    assert [k for _, k, _ in rr] == ["icon", "flat", "icon", "flat", "icon"]


def _negatives(folder):
    images, kinds = openset.degenerate_set(4, seed=7, size=64)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, (im, k) in enumerate(zip(images, kinds)):
        im.save(folder / "images" / f"neg{i:03d}.png")
        rows.append((f"neg{i:03d}.png", "photo" if i % 2 else k))
    pd.DataFrame(rows, columns=["img_name", "kind"]).to_csv(folder / "manifest.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from pokemon_classifier.synthetic import make_dataset

    root = tmp_path_factory.mktemp("styles")
    data = make_dataset(root / "data", per_class=10)
    assert run_cli("split", data)[0] == 0
    neg = _negatives(root / "neg")
    base = tiny_checkpoint(root / "m.pt", 64)
    ck = root / "styled.pt"
    code, out, err = run_cli("calibrate", "--weights", base, "--data", data, "--negatives", neg, "--device", "cpu",
                             "--style-positives", "gameboy,icon", "--out", ck)
    assert code == 0, err
    assert "rendered as gameboy, icon" in err
    code, out, err = run_cli("calibrate", "--weights", base, "--data", data, "--negatives", neg, "--device", "cpu",
                             "--out", root / "plain.pt")
    assert code == 0, err
    return data, neg, ck, root / "plain.pt", root


def test_make_styles_writes_renditions_with_kinds_and_reads_no_other_split(setup, tmp_path):
    data, *_ = setup
    out = tmp_path / "st"
    assert _tool("make_styles").main(["--data", str(data), "--split", "test", "--out", str(out),
                                      "--kinds", "gameboy,flat", "--real", str(data)]) == 0
    ann = pd.read_csv(out / "annotations.csv")
    test = pd.read_csv(data / "splits.csv").query("split == 'test'")
    assert list(ann.columns) == ["img_name", "pokemon_id", "kind"]
    assert set(ann["kind"]) == {"gameboy", "flat", "real"}
    for kind in ("gameboy", "flat"):
        part = ann[ann["kind"] == kind]
        assert sorted(Path(n).stem for n in part["img_name"]) == sorted(Path(n).stem for n in test["img_name"])
    assert all((out / "images" / n).is_file() for n in ann["img_name"])
    again = tmp_path / "st2"  # the same folder on every run
    assert _tool("make_styles").main(["--data", str(data), "--split", "test", "--out", str(again), "--kinds", "gameboy"]) == 0
    n = pd.read_csv(again / "annotations.csv")["img_name"].iloc[0]
    assert (again / "images" / n).read_bytes() == (out / "images" / n).read_bytes()
    assert _tool("make_styles").main(["--data", str(data), "--out", str(tmp_path / "x"), "--kinds", "oil"]) == 2


def test_evaluate_styles_reports_accepted_share_and_top1_per_kind(setup, tmp_path):
    data, neg, ck, plain, root = setup
    styled = tmp_path / "st"
    assert _tool("make_styles").main(["--data", str(data), "--split", "val", "--out", str(styled),
                                      "--kinds", "pixel,icon"]) == 0
    code, out, err = run_cli("evaluate", "--weights", ck, "--data", data, "--split", "val", "--negatives", neg,
                             "--styles", styled, "--json", "--out", tmp_path / "rep")
    assert code == 0, err
    result = json.loads(out)
    st = result["styles"]
    assert set(st["kinds"]) == {"pixel", "icon"} and st["open_set"] is True
    n_val = len(pd.read_csv(data / "splits.csv").query("split == 'val'"))
    assert st["kinds"]["icon"]["n"] == st["kinds"]["pixel"]["n"] == n_val and st["all"]["n"] == 2 * n_val
    # recompute the figures by hand from predict's own verdicts
    from pokemon_classifier.predict import Classifier

    ann = pd.read_csv(styled / "annotations.csv")
    clf = Classifier.load(ck)
    for kind in ("pixel", "icon"):
        part = ann[ann["kind"] == kind]
        res = clf.predict_batch([styled / "images" / n for n in part["img_name"]], 5)
        accepted = np.array([not r["unknown"] for r in res])
        top1 = np.array([r["topk"][0]["dex_id"] == d for r, d in zip(res, part["pokemon_id"])])
        assert st["kinds"][kind]["accepted"] == pytest.approx(accepted.mean())
        assert st["kinds"][kind]["top1"] == pytest.approx(top1.mean())
    assert "open_set" in result  # beside the negatives section
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Styles" in report and "| icon |" in report and "| all |" in report
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["styles"] == st
    code, out, err = run_cli("evaluate", "--weights", ck, "--data", data, "--split", "val", "--styles", styled)
    assert code == 0 and "styles (" in out and "icon" in out and "accepted" in out
    code, out, err = run_cli("evaluate", "--weights", ck, "--data", data, "--styles", tmp_path / "missing")
    assert code == 2 and "styles folder not found" in err and "Traceback" not in err


def test_style_positives_are_recorded_and_scored_the_same_by_onnx(setup, tmp_path):
    from pokemon_classifier.predict import Classifier

    data, neg, ck, plain, root = setup
    state = torch.load(ck, weights_only=True)["openset"]
    n_train = state["n_train"]
    assert state["style_positives"] == ["gameboy", "icon"] and state["n_style_positives"] == n_train
    old = torch.load(plain, weights_only=True)["openset"]
    assert old["style_positives"] == [] and old["n_style_positives"] == 0
    assert not torch.allclose(state["oe_weight"], old["oe_weight"])  # the head did see them
    # the scoring graph is the one of every fitted state (only the head's numbers differ); pictures the
    # tiny random model's features vary on (its oe_scale is ~1e-6 in most columns, so a rendition far
    # from the training pictures amplifies float rounding beyond any tolerance)
    images, _ = openset.degenerate_set(1, seed=3, size=64)
    a = Classifier.load(ck).predict_batch(images)
    if importlib.util.find_spec("onnxruntime"):
        code, _, err = run_cli("export", "--weights", ck, "--onnx", tmp_path / "m.onnx")
        assert code == 0, err
        b = Classifier.load(tmp_path / "m.onnx").predict_batch(images)
        assert [r["open_set_score"] for r in b] == pytest.approx([r["open_set_score"] for r in a], abs=1e-3)
        assert [r["unknown"] for r in a] == [r["unknown"] for r in b]


def test_calibrate_refuses_a_bad_style_positives_value_in_one_line(setup, tmp_path):
    data, neg, ck, plain, root = setup
    code, out, err = run_cli("calibrate", "--weights", plain, "--data", data, "--negatives", neg, "--device", "cpu",
                             "--style-positives", "watercolour", "--out", tmp_path / "x.pt")
    assert code == 2 and "watercolour" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.pt").exists()
    code, out, err = run_cli("calibrate", "--weights", plain, "--data", data, "--device", "cpu",
                             "--style-positives", "icon", "--out", tmp_path / "x.pt")
    assert code == 2 and "needs --negatives" in err and len(err.strip().splitlines()) == 1


def test_styles_cv_never_reads_test_rows_nor_fits_on_the_held_out_style(setup, capsys, monkeypatch):
    """tools/styles_cv.py: each held-out style is out of everything fitted; test split and the
    reporting half of the negatives are never read."""
    data, neg, ck, plain, root = setup
    mod = _tool("styles_cv")
    read_paths, views, fits = [], {}, []
    extract, style_features, fit, collect = openset.extract, openset.style_features, openset.fit, mod.collect

    def spy_extract(model, meta, items, *a, **k):
        read_paths.extend(str(i) for i in items if isinstance(i, (str, Path)))
        return extract(model, meta, items, *a, **k)

    def spy_style(model, meta, paths, *a, **k):
        read_paths.extend(str(p) for p in paths)
        return style_features(model, meta, paths, *a, **k)

    def spy_fit(train_feats, neg_feats, val_logits, val_feats, *a, **k):
        fits.append((train_feats, neg_feats, val_feats, k.get("style_feats"), k.get("style_kinds")))
        return fit(train_feats, neg_feats, val_logits, val_feats, *a, **k)

    monkeypatch.setattr(openset, "extract", spy_extract)
    monkeypatch.setattr(openset, "style_features", spy_style)
    monkeypatch.setattr(openset, "fit", spy_fit)
    monkeypatch.setattr(mod, "collect", lambda *a: views.update(collect(*a)) or views)
    assert mod.main(["--weights", str(ck), "--data", str(data), "--splits", str(data / "splits.csv"),
                     "--negatives", str(neg), "--kinds", "gameboy,icon,flat",
                     "--settings", "baseline", "style-positives", "--confidence", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [l for l in out if l.startswith("setting ")]
    assert len(lines) == 2 and all("gameboy accepted" in l and "flat accepted" in l and "rejected" in l for l in lines)
    assert out[-1].startswith("rule: eligible ") and "chosen " in out[-1]
    splits = pd.read_csv(data / "splits.csv")
    test = {str(data / "images" / n) for n in splits.loc[splits["split"] == "test", "img_name"]}
    table = openset.read_negatives(neg)
    report = {str(p) for p in table.loc[table["half"] == "report", "path"]}
    assert read_paths and not set(read_paths) & (test | report)
    # 3 held-out styles x 2 folds x 2 sides for each setting
    assert len(fits) == 2 * 3 * 2 and sum(f[3] is not None for f in fits) == 6

    def rows(a):
        return {r.tobytes() for r in np.asarray(a, np.float32)}

    val_styled = rows(views["val_styled"]["feats"])
    missing = []
    for train_feats, neg_feats, val_feats, sf, sk in fits:
        for a in (train_feats, neg_feats, val_feats) + ((sf,) if sf is not None else ()):
            assert not rows(a) & val_styled  # held-out renditions are only ever scored
        if sf is not None:
            seen = rows(sf)
            absent = [k for k in ("gameboy", "icon", "flat")
                      if not rows(views["train_styled"]["feats"][views["train_styled"]["kind"] == k]) & seen]
            assert len(absent) == 1 and absent[0] not in sk
            missing += absent
    assert sorted(set(missing)) == ["flat", "gameboy", "icon"]  # each style held out in turn


def test_styles_cv_rule_keeps_rejection_then_maximises_held_out_acceptance():
    """The rule of docs/unknown.md, written before any look: no negative kind more than 1 point
    below baseline's rejection; then the highest mean accepted share; ties to the earlier setting."""
    choose = _tool("styles_cv").choose
    rej = {"photo": 0.95, "gen3-art": 0.90}
    results = {"baseline": ({"icon": (0.6, 0.9, 10)}, rej),
               "style-positives": ({"icon": (0.9, 0.9, 10)}, {"photo": 0.945, "gen3-art": 0.93}),
               "no-texture": ({"icon": (0.99, 0.9, 10)}, {"photo": 0.93, "gen3-art": 0.95}),
               "no-texture+style-positives": ({"icon": (0.9, 0.9, 10)}, rej)}
    best, eligible = choose(results)
    assert eligible == ["baseline", "style-positives", "no-texture+style-positives"] and best == "style-positives"
