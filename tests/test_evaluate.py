import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import assert_one_line_error, run_cli, tiny_checkpoint
from pokemon_classifier.calibrate import fit_temperature, unknown_threshold
from pokemon_classifier.models import load_checkpoint


@pytest.fixture
def tiny_ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "tiny.pt", 32)


def test_json_schema_and_unreadable_counted(synth_data, tiny_ckpt):
    (synth_data / "images" / "abra003.jpg").write_bytes(b"<html>nope</html>")
    code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data, "--json")
    assert code == 0, err
    r = json.loads(out)  # exactly one JSON object, nothing else
    assert r["n"] == 83 and r["unreadable"] == 1
    for k in ("top1", "top5", "macro_f1", "nll", "ece"):
        assert isinstance(r[k], float) and r[k] >= 0
    assert 0 <= r["top1"] <= r["top5"] <= 1
    assert set(r["per_class"]) == {"1", "4", "7", "25", "63", "151"}
    assert r["per_class"]["63"]["n"] == 13 and 0 <= r["per_class"]["63"]["top1"] <= 1


def test_report_files_written(synth_data, tiny_ckpt, tmp_path):
    run_cli("split", synth_data, "--embed-threshold", "0")  # hash pass only: synthetic shapes of a class embed alike
    code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data, "--split", "test",
                             "--out", tmp_path / "rep")
    assert code == 0, err
    assert "weakest classes" in out and "most confused pairs" in out
    for f in ("metrics.json", "confusion.png", "top_losses.png", "reliability.png", "report.md"):
        assert (tmp_path / "rep" / f).stat().st_size > 200, f
    per = pd.read_csv(tmp_path / "rep" / "per_class.csv")
    assert len(per) == 6 and set(per.columns) >= {"pokemon_id", "name", "n", "top1"}
    n_test = (pd.read_csv(synth_data / "splits.csv")["split"] == "test").sum()
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["n"] == n_test


def test_onnx_export_evaluates_like_its_checkpoint(synth_data, tiny_ckpt, tmp_path):
    """evaluate goes through predict.Classifier, so an ONNX export is evaluated like the checkpoint."""
    pytest.importorskip("onnxruntime")
    (synth_data / "images" / "abra003.jpg").write_bytes(b"<html>nope</html>")
    code, _, err = run_cli("export", "--weights", tiny_ckpt, "--onnx", tmp_path / "m.onnx")
    assert code == 0, err
    results = []
    for w in (tiny_ckpt, tmp_path / "m.onnx"):
        code, out, err = run_cli("evaluate", "--weights", w, "--data", synth_data, "--json", "--device", "cpu")
        assert code == 0, err
        results.append(json.loads(out))
    pt, onnx = results
    assert onnx["weights"].endswith("m.onnx") and onnx["n"] == pt["n"] == 83 and onnx["unreadable"] == 1
    assert onnx["top1"] == pt["top1"] and onnx["top5"] == pt["top5"]
    assert onnx["nll"] == pytest.approx(pt["nll"], abs=1e-4)
    assert onnx["per_class"] == pt["per_class"]


def test_original_format_checkpoint_evaluates(synth_data, tmp_path):
    import torchvision

    p = tmp_path / "orig_best.pt"
    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), p)
    code, out, err = run_cli("evaluate", "--weights", p, "--data", synth_data, "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 84


def test_leak_report(synth_data, tiny_ckpt):
    """A hand-made split whose leak is known: per class, test holds the near-duplicates of 001 and 002
    (made by synthetic.make_dataset as 013 and 014, with 001/002 in train) and two unrelated images."""
    ann = pd.read_csv(synth_data / "annotations.csv")
    num = ann["img_name"].str.extract(r"(\d{3})\.jpg$")[0]
    split = np.where(num.isin(["013", "014", "003", "004"]), "test", np.where(num == "005", "val", "train"))
    pd.DataFrame({"img_name": ann["img_name"], "split": split}).to_csv(synth_data / "splits.csv", index=False)
    code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data, "--leak-report", "--json")
    assert code == 0, err
    r = json.loads(out)
    w, wo = r["with_duplicate_in_train"], r["without_duplicate_in_train"]
    # the hash measure sees exactly the planted copies; the embedding measure also joins 003/004 to their
    # class (the synthetic shapes of one class are near-identical renders), so the merged count is larger
    assert r["n"] == 24 and r["by_measure"]["hash"] == 12 and w["n"] >= 12 and w["n"] + wo["n"] == 24
    assert {f"{n}{k}.jpg" for n in ("bulbasaur", "pikachu", "mew") for k in ("013", "014")} <= set(r["leaked_images"])
    assert len(r["leaked_images"]) == w["n"]
    assert w["n"] * w["top1"] + wo["n"] * wo["top1"] == pytest.approx(r["n"] * r["top1"])
    code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data, "--leak-report")
    assert code == 0 and f"with a near-duplicate in train:    {w['n']:5d} images" in out, out
    assert "near-duplicate measures: hash 12, embedding" in out


def test_temperature_and_threshold():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 5))
    p = torch.softmax(torch.from_numpy(logits), 1).numpy()
    y = np.array([rng.choice(5, p=row / row.sum()) for row in p])  # labels drawn from softmax(logits): T=1 is calibrated
    t = fit_temperature(logits * 3.0, y)  # over-confident logits -> T near 3
    assert 2.5 < t < 3.5
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    thr = unknown_threshold(probs, y, 0.95)
    correct = probs.argmax(1) == y
    assert abs((probs.max(1)[correct] >= thr).mean() - 0.95) < 0.01


def test_calibrate_writes_into_checkpoint(synth_data, tiny_ckpt):
    from pokemon_classifier.annotations import safe_image_path
    from pokemon_classifier.calibrate import fit_temperature, unknown_threshold
    from pokemon_classifier.predict import Classifier

    run_cli("split", synth_data)
    code, out, err = run_cli("calibrate", "--weights", tiny_ckpt, "--data", synth_data, "--keep", "0.9")
    assert code == 0, err
    _, meta = load_checkpoint(tiny_ckpt)
    # the stored figures are the ones fitted on val: recompute them independently
    sp = pd.read_csv(synth_data / "splits.csv").merge(pd.read_csv(synth_data / "annotations.csv"))
    val = sp[sp["split"] == "val"]
    clf = Classifier.load(tiny_ckpt).with_meta(temperature=1.0)
    p, errors = clf.probs_paths([safe_image_path(synth_data, n) for n in val["img_name"]])
    assert not errors
    y = val["pokemon_id"].map({d: i for i, d in enumerate(clf.class_ids)}).to_numpy()
    logits = np.log(p)
    t = fit_temperature(logits, y)
    assert meta["temperature"] == pytest.approx(t, rel=1e-6) and meta["temperature"] != 1.0
    pt = torch.softmax(torch.from_numpy(logits) / t, 1).numpy()
    assert meta["unknown_threshold"] == pytest.approx(unknown_threshold(pt, y, 0.9), rel=1e-5)
    assert meta["calibration"]["n"] == len(val) and meta["calibration"]["keep"] == 0.9
    assert Classifier.load(tiny_ckpt).temperature == meta["temperature"]  # predict uses it
    bad = synth_data / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    code, out, err = run_cli("calibrate", "--weights", bad, "--data", synth_data)
    assert_one_line_error(code, err, "broken.pt: not a loadable checkpoint")


def test_calibrate_chooses_inference_size_on_val(synth_data, tiny_ckpt, tmp_path):
    run_cli("split", synth_data)
    out_ck = tmp_path / "sized.pt"
    code, out, err = run_cli("calibrate", "--weights", tiny_ckpt, "--data", synth_data, "--sizes", "32", "48", "64",
                             "--out", out_ck)
    assert code == 0, err
    ck = torch.load(out_ck, weights_only=True)
    scores = ck["calibration"]["size_scores"]
    assert [r["size"] for r in scores] == [32, 48, 64]
    best = min(scores, key=lambda r: (-r["top1"], r["nll"], r["size"]))
    assert ck["preprocessing"]["size"] == best["size"] and f"inference size {best['size']} px" in out
    # the stored size is the one predict/evaluate now use: evaluating val gives the recorded top-1
    code, out, err = run_cli("evaluate", "--weights", out_ck, "--data", synth_data, "--split", "val", "--json")
    assert code == 0, err
    assert json.loads(out)["top1"] == pytest.approx(best["top1"])
    assert torch.load(tiny_ckpt, weights_only=True)["preprocessing"]["size"] == 32  # --out leaves the input as it was
    code, out, err = run_cli("calibrate", "--weights", tiny_ckpt, "--data", synth_data, "--sizes", "8")
    assert code != 0 and "8 px is too small" in err


def test_accuracy_by_kind_from_manifest(synth_data, tiny_ckpt, tmp_path):
    """DATA/manifest.csv:kind is picked up by default; the per-kind figures add up to the total."""
    ann = pd.read_csv(synth_data / "annotations.csv")
    kinds = np.where(np.arange(len(ann)) % 3 == 0, "sprite", "scraped")
    ann.assign(kind=kinds)[["img_name", "kind"]].iloc[:-2].to_csv(synth_data / "manifest.csv", index=False)
    code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data, "--json")
    assert code == 0, err
    r = json.loads(out)
    by = r["by"]["kind"]
    assert set(by) == {"sprite", "scraped", "(unlisted)"} and by["(unlisted)"]["n"] == 2
    assert by["sprite"]["n"] == int((kinds[:-2] == "sprite").sum())
    assert sum(v["n"] for v in by.values()) == r["n"]
    assert sum(v["n"] * v["top1"] for v in by.values()) == pytest.approx(r["n"] * r["top1"])
    assert sum(v["n"] * v["top5"] for v in by.values()) == pytest.approx(r["n"] * r["top5"])
    # an explicit FILE:COLUMN, and the report gains a section
    (tmp_path / "src.csv").write_text("img_name,source\n" + "".join(f"{n},web\n" for n in ann["img_name"]))
    code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data,
                             "--by", f"{tmp_path / 'src.csv'}:source", "--out", tmp_path / "rep")
    assert code == 0, err
    assert "by source:" in out and "## By source" in (tmp_path / "rep" / "report.md").read_text()


def test_by_errors_are_one_line(synth_data, tiny_ckpt, tmp_path):
    (tmp_path / "m.csv").write_text("img_name,kind\nabra001.jpg,x\n")
    for spec, needle in ((f"{tmp_path / 'm.csv'}:colour", "no 'colour' column"),
                         (f"{tmp_path / 'nope.csv'}:kind", "file not found"),
                         (f"{tmp_path / 'm.csv'}:", "FILE.csv:COLUMN")):
        code, out, err = run_cli("evaluate", "--weights", tiny_ckpt, "--data", synth_data, "--by", spec)
        assert_one_line_error(code, err, needle)


def test_plots_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive our plots (a library calling matplotlib.use broke it)."""
    import matplotlib

    from pokemon_classifier.annotations import plot_class_counts
    from pokemon_classifier.report import plot_confusion, plot_reliability
    from pokemon_classifier.train import plot_curves

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_class_counts(pd.Series([3, 1, 2], index=[1, 2, 3]), tmp_path / "counts.png")
        plot_curves(pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "val_loss": [2.1, 1.5],
                                  "train_acc": [0.2, 0.5], "val_acc": [0.1, 0.4]}), tmp_path / "curves.png")
        plot_confusion(np.eye(6, dtype=int) * 3 + 1, [1, 4, 7, 25, 63, 151], tmp_path / "cm.png")
        p = np.full((20, 6), 1 / 6)
        plot_reliability(p, np.arange(20) % 6, tmp_path / "rel.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for f in ("counts.png", "curves.png", "cm.png", "rel.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f


ROOT = Path(__file__).resolve().parents[1]
NEGATIVES = ROOT.parent / "shared" / "data" / "negatives"


@pytest.mark.skipif(not (NEGATIVES / "manifest.csv").is_file() or not (ROOT / "best.pt").is_file(),
                    reason="needs ../shared/data/negatives and the shipped best.pt")
def test_shipped_best_pt_turns_away_the_reporting_half_as_its_report_says():
    """The shipped file against the negatives it was never tuned on (+ the reporting seed's degenerate
    pictures): the rates committed in docs/results/test_group_split/metrics.json, within one picture
    per kind, and the issue's targets (photos and degenerate >= 95%, later-generation Pokemon >= 85%).
    Catches a best.pt, a score or a preprocessing change that quietly lets everyday photos through."""
    from pokemon_classifier.evaluate import reporting_negative_scores
    from pokemon_classifier.predict import Classifier

    clf = Classifier.load(ROOT / "best.pt")
    scores, kinds, excluded, unreadable = reporting_negative_scores(clf, NEGATIVES, progress=False)
    assert unreadable == 0 and excluded == len(clf.open_set["tuned_on"])
    rejected = scores < clf.open_set_threshold
    reported = json.loads((ROOT / "docs/results/test_group_split/metrics.json").read_text())["open_set"]["rejected"]
    assert set(reported) == set(kinds)
    for kind, fig in reported.items():
        m = kinds == kind
        assert m.sum() == fig["n"], kind
        assert abs(rejected[m].sum() - round(fig["rate"] * fig["n"])) <= 1, (kind, rejected[m].mean(), fig["rate"])
        goal = 0.85 if kind.startswith("gen3") else 0.95
        assert rejected[m].mean() >= goal, (kind, rejected[m].mean())
