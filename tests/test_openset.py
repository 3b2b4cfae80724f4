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
    # random re-splits (tools/openset_cv.py --repeats) keep both rules and differ from the fixed split
    rng = np.random.default_rng(0)
    for _ in range(3):
        t["again"] = openset.split_negatives(t, rng)
        assert (t.groupby(["kind", "again"]).size() == counts).all()
        art, icon = (t[t.kind == k].set_index(t[t.kind == k].img_name.str.extract(r"(\d+)")[0])["again"]
                     for k in ("gen3-art", "gen3-icon"))
        assert (art.sort_index() == icon.sort_index()).all()
        assert (t["again"] != t["half"]).any()


# ------------------------------------------------------------ fitted end to end on generated data

import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import run_cli, tiny_checkpoint  # noqa: E402
from pokemon_classifier.models import load_checkpoint  # noqa: E402
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
    model, meta = load_checkpoint(ck)  # recompute the score by hand: network features -> head
    assert not meta["openset"]["flip"]
    with torch.no_grad():
        score = openset.OpenSetHead(meta["openset"])(*openset.WithFeatures(model)(x)).numpy()
    assert [r["open_set_score"] for r in results] == pytest.approx(score, abs=1e-3)
    assert [r["unknown"] for r in results] == list(score < meta["openset"]["threshold"])
    assert all(r["name"] == "unknown" for r, s in zip(results, score) if s < meta["openset"]["threshold"])
    off = Classifier.load(ck, open_set=False).predict_tensors(x, 3)
    assert all("open_set_score" not in r and not r["unknown"] for r in off)


def test_score_is_the_weighted_sum_of_z_scored_parts(fitted):
    """calibrate stores the CV-chosen weights; a state written before them scores as a plain sum."""
    data, neg, ck = fitted
    state = torch.load(ck, weights_only=True)["openset"]
    assert state["weights"] == openset.WEIGHTS and state["C"] == openset.OE_C
    # mobilenet_v3_small: 1024 penultimate features for the kNN bank, + mean and std of the 48
    # channels of its last stride-16 stage for the outlier-exposure head
    assert state["features"] == {"penultimate": 1024, "oe": 1024 + 2 * 48}
    assert state["pca_mean"].numel() == 1024 and state["oe_mean"].numel() == 1120
    g = torch.Generator().manual_seed(0)
    logits, feats = torch.randn(5, 151, generator=g), torch.randn(5, 1120, generator=g)
    head = openset.OpenSetHead(state)
    z = (head.raw(logits, feats) - head.norm[:, 0]) / head.norm[:, 1]
    w = torch.tensor([openset.WEIGHTS[p] for p in head.parts])
    assert head(logits, feats).numpy() == pytest.approx((z * w).sum(1).numpy(), abs=1e-4)
    old = openset.OpenSetHead({k: v for k, v in state.items() if k != "weights"})
    assert old(logits, feats).numpy() == pytest.approx(z.sum(1).numpy(), abs=1e-4)



def test_threshold_for_keeps_the_promised_share_of_new_pictures_with_the_promised_confidence():
    """The plain 5% quantile of 300 validation scores lets fewer than 95% of new pictures through
    about half the time; the tolerance bound keeps >= 95% in about 90% of draws."""
    from scipy.stats import beta, norm

    rng = np.random.default_rng(0)
    bounded, plain = [], []
    for _ in range(400):
        val = rng.normal(size=300)
        t, share = openset.threshold_for(val, 0.95, 0.9)
        assert share == (val >= t).mean() and 0.95 < share < 0.99
        r = int((val < t).sum()) + 1  # the threshold is the r-th smallest score: the largest rank the bound allows
        assert beta.sf(0.95, 301 - r, r) >= 0.9 > beta.sf(0.95, 300 - r, r + 1)
        bounded.append(norm.sf(t) >= 0.95)  # the true share of new N(0, 1) scores accepted
        plain.append(norm.sf(openset.threshold_for(val, 0.95, None)[0]) >= 0.95)
    assert 0.85 <= np.mean(bounded) <= 0.95 and 0.35 <= np.mean(plain) <= 0.65
    # too few images for the bound: accept them all (and calibrate warns); 0 = the plain quantile
    assert openset.threshold_for([3.0, 1.0, 2.0], 0.95, 0.9) == (1.0, 1.0)
    assert not openset.bound_met(44, 0.95, 0.9) and openset.bound_met(45, 0.95, 0.9)
    assert openset.threshold_for(val, 0.95, 0) == openset.threshold_for(val, 0.95, None)


@pytest.mark.parametrize("arch,tap,dim,channels", [("efficientnet_lite0", 4, 1280, 112), ("mobilenet_v3_large", 12, 1280, 112)])
def test_network_features_tap_the_last_stride_16_stage(arch, tap, dim, channels):
    from pokemon_classifier.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, pretrained=False).eval()
    net = openset.WithFeatures(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits, feats = net(x)
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert (net.tap, net.dim, feats.shape[1]) == (tap, dim, dim + 2 * channels)


def test_network_features_and_a_head_without_texture_statistics():
    """WithFeatures returns the model's own logits; a head fitted on the penultimate columns only
    (style=False, or a checkpoint calibrated before the texture statistics) ignores the rest."""
    from pokemon_classifier.models import build_model

    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", pretrained=False).train()
    model.features[:4].eval()  # frozen stages, as train --freeze leaves them
    modes = [m.training for m in model.modules()]
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    net = openset.WithFeatures(model)
    # building it (a probe forward pass) moves no batch-norm statistic and no module's mode
    assert [m.training for m in model.modules()] == modes and net.tap == 8 and net.dim == 1024
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    model.eval()
    taps = []
    model.features[8].register_forward_hook(lambda m, i, o: taps.append(o))
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        logits, feats = net(x)
        assert torch.allclose(logits, model(x), atol=1e-5) and feats.shape == (4, 1120)
    # the texture statistics: mean, then (population) std of each channel of the tapped stage
    s = taps[0]
    assert torch.allclose(feats[:, 1024:1072], s.mean((2, 3)), atol=1e-5)
    assert torch.allclose(feats[:, 1072:], s.std((2, 3), unbiased=False), atol=1e-5)
    rng = np.random.default_rng(0)
    tf, nf, vf = (rng.normal(size=(n, 1120)).astype(np.float32) for n in (60, 20, 30))
    vl = rng.normal(size=(30, 151)).astype(np.float32)
    st = openset.fit(tf, nf, vl, vf, 1.0, dim=1024, opts=openset.FitOptions(pca_dim=16, style=False))
    assert st["oe_mean"].numel() == 1024 and st["features"] == {"penultimate": 1024, "oe": 1024}
    head = openset.OpenSetHead(st)
    wide, narrow = torch.from_numpy(vf), torch.from_numpy(vf[:, :1024])
    assert torch.allclose(head(torch.from_numpy(vl), wide), head(torch.from_numpy(vl), narrow), atol=1e-5)


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
                     "--negatives", str(neg), "--without", str(data), "--accept", "0.9", "0.95",
                     "--part-weights", "1,1,1", "1.5,2,1", "--style", "on", "off", "--flip", "on", "off",
                     "--repeats", "2"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("bank ")]
    assert len(lines) == 32 and all("mean over the negative kinds" in l and "degenerate" in l for l in lines)
    assert sum("weights 1.5,2,1, texture off, mirror image on:" in l for l in lines) == 4
    assert all(l.endswith("(2 splits)") for l in lines)
    table = openset.read_negatives(neg)
    assert not set(seen) & {str(p) for p in table.loc[table["half"] == "report", "path"]}
    assert set(seen) >= {str(p) for p in table.loc[table["half"] == "tune", "path"]}


def test_flip_scores_the_mean_over_the_image_and_its_mirror_image(fitted, tmp_path):
    """calibrate --flip: the score is the mean of the head over the image and its left-right mirror
    (one batch; the prediction is the image's own), in torch and in the ONNX graph alike."""
    data, neg, _ = fitted
    ck = tmp_path / "flip.pt"
    code, _, err = run_cli("calibrate", "--weights", fitted[2], "--data", data, "--negatives", neg, "--device", "cpu",
                           "--flip", "--out", ck)
    assert code == 0, err
    model, meta = load_checkpoint(ck)
    state = meta["openset"]
    assert state["flip"] is True and state["val_accepted"] >= 0.95  # the threshold is set on the mean score
    scored = openset.Scored(model, openset.OpenSetHead(state)).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, score = scored(x)
        net, head = openset.WithFeatures(model).eval(), openset.OpenSetHead(state)
        l1, f1 = net(x)
        l2, f2 = net(x.flip(3))
        assert torch.allclose(logits, l1, atol=1e-5)
        assert torch.allclose(score, (head(l1, f1) + head(l2, f2)) / 2, atol=1e-4)
        assert not torch.allclose(score, head(l1, f1), atol=1e-4)  # the mirror image really counts
    images, _ = openset.degenerate_set(1, seed=4, size=64)
    a = Classifier.load(ck).predict_batch(images)
    assert [r["open_set_score"] for r in a] != [r["open_set_score"] for r in Classifier.load(fitted[2]).predict_batch(images)]
    if importlib.util.find_spec("onnxruntime"):
        code, _, err = run_cli("export", "--weights", ck, "--onnx", tmp_path / "flip.onnx")
        assert code == 0, err
        b = Classifier.load(tmp_path / "flip.onnx").predict_batch(images)
        assert [r["open_set_score"] for r in b] == pytest.approx([r["open_set_score"] for r in a], abs=1e-3)


def test_fit_sets_the_threshold_on_the_mean_over_both_views():
    rng = np.random.default_rng(1)
    tf, nf, vf, vf2 = (rng.normal(size=(n, 40)).astype(np.float32) for n in (80, 30, 50, 50))
    vl, vl2 = (rng.normal(size=(50, 151)).astype(np.float32) for _ in range(2))
    kw = dict(dim=32, opts=openset.FitOptions(pca_dim=8, accept=0.9, confidence=None))
    one = openset.fit(tf, nf, vl, vf, 1.0, **kw)
    both = openset.fit(tf, nf, vl, vf, 1.0, val_flipped=(vl2, vf2), **kw)
    assert not one["flip"] and both["flip"]
    head = openset.OpenSetHead(both)
    with torch.no_grad():
        mean = (head(torch.from_numpy(vl), torch.from_numpy(vf)) + head(torch.from_numpy(vl2), torch.from_numpy(vf2))) / 2
    assert both["threshold"] == pytest.approx(openset.threshold_for(mean.numpy(), 0.9, None)[0], abs=1e-5)
    assert both["threshold"] != pytest.approx(one["threshold"], abs=1e-3)
