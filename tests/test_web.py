"""`export --web`: the static site, and in real headless Chromium (served by a loopback http.server): the
same answers as `predict` on >= 200 pictures, the JavaScript preprocessing equal to eval_transform, offline
after the first visit (service worker), the install manifest, the live camera. Browser tests skip (with the
reason) where Chromium or Playwright is absent."""

import contextlib
import functools
import gzip
import http.server
import io
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import chromium, CLASSES, SHARED, draw_shape, run_cli, tiny_checkpoint
from pokemon_classifier import pokedex, web

ROOT = Path(__file__).resolve().parents[1]
N_PARITY = 200
# --web-weights fp16 with best.pt, max |Δprob| and |Δopen-set score| against predict, measured (docs/web.md)
# plus a margin: 2.0e-3 and 1.6e-2 on the 200 shared pictures, 3.3e-3 and 2.9e-2 on the generated ones
FP16_BOUNDS = {"shared": (2.5e-3, 2e-2), "generated": (4e-3, 3.5e-2)}


# ------------------------------------------------------------------ the site's files (no browser)
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("web") / "m.pt", 64, unknown_threshold=0.3)


def test_export_web_writes_a_complete_site(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    site = tmp_path / "site"
    code, out, err = run_cli("export", "--weights", tiny, "--web", site)
    assert code == 0, err
    assert "python -m http.server" in out
    for name in ("index.html", "app.js", "preprocess.js", "style.css", "sw.js", "model.onnx", "pokedex.json",
                 "i18n.json", "manifest.webmanifest", "favicon.png", "ort/ort.wasm.bundle.min.mjs",
                 "ort/ort-wasm-simd-threaded.wasm.gz", "ort/LICENSE"):
        assert (site / name).is_file(), name
    assert "MIT License" in (site / "ort" / "LICENSE").read_text()
    wasm = site / "ort" / "ort-wasm-simd-threaded.wasm.gz"  # stored compressed: the page unpacks it
    assert gzip.decompress(wasm.read_bytes()) == (web.VENDOR / "ort-wasm-simd-threaded.wasm").read_bytes()
    assert not (site / "ort" / "ort-wasm-simd-threaded.wasm").exists()
    html = (site / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing from a CDN or anywhere else

    cfg = json.loads((site / web.MARKER).read_text())
    assert cfg["model"] == "model.onnx" and cfg["class_ids"] == list(pokedex.IDS) and cfg["weights"] == "fp32"
    assert cfg["threshold"] == 0.3 and cfg["open_set_threshold"] is None  # predict's rule without a score
    assert cfg["preprocessing"]["interpolation"] == "bilinear"

    dex = json.loads((site / "pokedex.json").read_text())
    assert set(dex["languages"]) == set(pokedex.LANGUAGES) and len(dex["pokemon"]) == 151
    assert dex["pokemon"]["122"]["names"]["de"] == pokedex.localized_name(122, "de")
    assert dex["types"][pokedex.types(25)[0]]["ja"] == pokedex.type_name(pokedex.types(25)[0], "ja")
    assert (site / "i18n.json").read_bytes() == web.STRINGS.read_bytes()  # the page's own strings, all languages

    m = json.loads((site / "manifest.webmanifest").read_text())
    assert m["display"] == "standalone" and m["start_url"] == "./"
    for entry in m["icons"]:
        w, h = map(int, entry["sizes"].split("x"))
        assert Image.open(site / entry["src"]).size == (w, h)

    sw = (site / "sw.js").read_text()
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() and p.name != "sw.js")
    assert all(f'"{f}"' in sw for f in files)  # the service worker keeps every file for offline use
    assert "__VERSION__" not in sw and "__FILES__" not in sw


def test_export_web_replaces_its_own_site_and_refuses_other_folders(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    site = tmp_path / "site"
    assert run_cli("export", "--weights", tiny, "--web", site)[0] == 0
    (site / "stale.txt").write_text("from an older export")
    assert run_cli("export", "--weights", tiny, "--web", site)[0] == 0
    assert not (site / "stale.txt").exists()  # a re-export is the new site, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]  # no temp folders left

    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"mine")
    code, _, err = run_cli("export", "--weights", tiny, "--web", other)
    assert code == 2 and "not empty" in err and str(other) in err and len(err.strip().splitlines()) == 1
    assert (other / "keep.jpg").read_bytes() == b"mine"


def test_compact_weights_stores_exact_float16_tensors_losslessly_and_fp16_rounds_the_rest(tmp_path):
    """fp32: only tensors whose values are all float16 ones (a bank kept as float16) become float16 + Cast,
    so the outputs are the same bits; fp16: every large float tensor, initializers and Constants alike."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    bank = rng.standard_normal((64, 32)).astype(np.float16).astype(np.float32)  # exact float16 values
    proj = rng.standard_normal((32, 64)).astype(np.float32)  # not
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["p"], value=numpy_helper.from_array(proj, "p")),
         helper.make_node("MatMul", ["x", "p"], ["h"]), helper.make_node("MatMul", ["h", "bank"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [numpy_helper.from_array(bank, "bank")])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    x = {"x": rng.standard_normal((1, 32)).astype(np.float32)}
    run = lambda f: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, x)[0]  # noqa: E731
    want = run(src)
    assert web.compact_weights(src, tmp_path / "32.onnx", "fp32")["tensors"] == 1  # the bank only
    assert np.array_equal(run(tmp_path / "32.onnx"), want)
    assert web.compact_weights(src, tmp_path / "16.onnx", "fp16")["tensors"] == 2
    got = run(tmp_path / "16.onnx")
    assert not np.array_equal(got, want) and np.allclose(got, want, rtol=1e-2, atol=1e-2)
    assert (tmp_path / "16.onnx").stat().st_size < 0.6 * src.stat().st_size
    m = onnx.load(str(tmp_path / "16.onnx"))
    assert {i.output[0] for i in m.graph.node if i.op_type == "Cast"} == {"p", "bank"}  # float32 from there on


def test_export_web_weights_fp16_is_recorded_in_the_site(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    code, out, err = run_cli("export", "--weights", tiny, "--web", tmp_path / "s", "--web-weights", "fp16")
    assert code == 0 and "fp16 model" in out, err
    assert json.loads((tmp_path / "s" / web.MARKER).read_text())["weights"] == "fp16"


def test_export_needs_onnx_or_web(tiny):
    code, _, err = run_cli("export", "--weights", tiny)
    assert code != 0 and "--onnx" in err and "--web" in err


def test_vendored_onnxruntime_web_is_complete_and_checksummed():
    import hashlib

    sums = dict(line.split()[::-1] for line in (web.VENDOR / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((web.VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert set(sums) == {f for f in web.ORT_FILES if f not in ("LICENSE", "VERSION")}


def test_the_wheel_carries_the_site_assets():
    import fnmatch
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = Path(web.__file__).parent
    for f in [*(web.PAGE / n for n in (*web.PAGE_FILES, "sw.js")), *(web.VENDOR / n for n in web.ORT_FILES),
              web.STRINGS]:
        assert f.is_file(), f
        rel = f.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs["pokemon_classifier"]), rel


# ------------------------------------------------------------------ in Chromium
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(root: Path):
    """`python -m http.server` in a thread on a free loopback port; yields the base URL."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        t.join(10)


def parity_pictures(folder: Path, n: int = N_PARITY) -> list[Path]:
    """The shared test pictures (every k-th, so all classes take part) or, without them, generated ones
    of varied sizes, aspect ratios and formats (JPEG, PNG with transparency, greyscale)."""
    folder.mkdir(parents=True, exist_ok=True)
    shared = sorted((SHARED / "images").rglob("*.jpg")) if SHARED.is_dir() else []
    out = []
    if len(shared) >= n:
        for i, p in enumerate(shared[:: len(shared) // n][:n]):
            out.append(folder / f"{i}.jpg")
            shutil.copyfile(p, out[-1])
        return out
    rng = np.random.default_rng(0)
    shapes = list(CLASSES.values())
    for i in range(n):
        shape, colour = shapes[i % len(shapes)]
        im = draw_shape(shape, colour, size=int(rng.integers(48, 400)), rng=rng)
        im = im.resize((im.width, int(im.height * rng.uniform(0.5, 2.0))))
        if i % 4 == 1:
            im = im.convert("L")
        if i % 4 == 2:
            im = im.convert("RGBA")
            im.putalpha(Image.fromarray((rng.random(im.size[::-1]) * 255).astype(np.uint8)))
            out.append(folder / f"{i}.png")
            im.save(out[-1])
            continue
        out.append(folder / f"{i}.jpg")
        im.save(out[-1], quality=int(rng.integers(60, 96)))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site of the shipped model (open-set score included) when the checkout has best.pt, else of a
    tiny random one; with the parity pictures beside it and their `predict` answers."""
    pytest.importorskip("onnxruntime")
    from pokemon_classifier.onnx_graph import export_onnx
    from pokemon_classifier.predict import Classifier

    root = tmp_path_factory.mktemp("site")
    weights = ROOT / "best.pt" if (ROOT / "best.pt").is_file() else tiny_checkpoint(root / "m.pt", 64)
    onnx = root / "m.onnx"
    export_onnx(weights, onnx, check=False)  # not the user cache: tests leave it alone
    site = root / "site"
    web.build_site(site, onnx)
    pics = parity_pictures(site / "_pictures")
    kind = "shared" if all(p.suffix == ".jpg" for p in pics) else "generated"  # generated ones include PNGs
    clf = Classifier.load(weights)  # torch, as `predict` runs by default
    expected = []
    for p in pics:
        x = clf.preprocess(p)[None]
        probs, scores = clf.forward(x)
        expected.append({**clf.predict(p), "probs": probs[0],
                         "score": None if scores is None else float(scores[0])})
    with static_server(site) as url:
        yield {"url": url, "dir": site, "pictures": pics, "expected": expected, "clf": clf, "onnx": onnx,
               "shipped": weights == ROOT / "best.pt", "kind": kind}


@pytest.fixture(scope="module")
def site16(site, tmp_path_factory):
    """The same model's site with --web-weights fp16, the same pictures beside it."""
    out = tmp_path_factory.mktemp("site16") / "site"
    web.build_site(out, site["onnx"], "fp16")
    shutil.copytree(site["dir"] / "_pictures", out / "_pictures")
    with static_server(out) as url:
        yield {**site, "url": url, "dir": out, "site32": site["dir"]}


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def _open(browser, site, viewport=(1280, 800)):
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    ctx.grant_permissions(["camera"], origin=site["url"].rstrip("/"))
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site["url"])
    page.evaluate("window.pokedex.ready")
    assert not errors, errors
    return page


def test_the_shipped_models_site_is_within_the_size_budget(site):
    """Issue 26: the site <= 25 MB (10^6 bytes), with the default (fp32) weights."""
    if not site["shipped"]:
        pytest.skip("the checkout has no best.pt")
    files = [p for p in site["dir"].rglob("*") if p.is_file() and not p.relative_to(site["dir"]).as_posix().startswith("_")]
    assert sum(p.stat().st_size for p in files) <= 25_000_000


def test_fp16_site_answers_within_the_measured_rounding(browser, site16):
    """--web-weights fp16: half the model file; the answers move by the weights' rounding. Bounds: the
    largest differences measured (FP16_BOUNDS) with a small margin; top-1 and verdict the same wherever
    predict's own margin exceeds them."""
    FP16_PROB, FP16_SCORE = FP16_BOUNDS[site16["kind"]]
    page = _open(browser, site16)
    assert page.evaluate("window.pokedex.ready.then(() => fetch('pokedex-site.json')).then(r => r.json())")["weights"] == "fp16"
    urls = [p.relative_to(site16["site32"]).as_posix() for p in site16["pictures"]]  # copied beside it
    got = page.evaluate("(urls) => window.pokedex.classifyUrls(urls)", urls)
    page.context.close()
    thr = site16["clf"].open_set_threshold
    worst_p = worst_s = 0.0
    for path, g, e in zip(site16["pictures"], got, site16["expected"]):
        p = np.sort(np.asarray(e["probs"]))
        if p[-1] - p[-2] > 2 * FP16_PROB:
            assert [t["dex_id"] for t in g["topk"]][0] == e["topk"][0]["dex_id"], path
        if e["score"] is None or thr is None or abs(e["score"] - thr) > FP16_SCORE:
            assert g["unknown"] == e["unknown"], path
        worst_p = max(worst_p, float(np.abs(np.array(g["probs"]) - np.asarray(e["probs"])).max()))
        if e["score"] is not None:
            worst_s = max(worst_s, abs(g["open_set_score"] - e["score"]))
    print(f"fp16 site vs predict: max |dprob| {worst_p:.2e}, max |dscore| {worst_s:.2e}")
    assert worst_p <= FP16_PROB and worst_s <= FP16_SCORE, (worst_p, worst_s)


def test_same_answers_as_predict_in_chromium(browser, site):
    page = _open(browser, site)
    urls = [p.relative_to(site["dir"]).as_posix() for p in site["pictures"]]
    got = page.evaluate("(urls) => window.pokedex.classifyUrls(urls)", urls)
    page.context.close()
    assert len(got) == len(site["expected"]) >= N_PARITY
    worst_p = worst_s = 0.0
    for path, g, e in zip(site["pictures"], got, site["expected"]):
        assert (g["name"], g["unknown"], g["dex_id"]) == (e["name"], e["unknown"], e["dex_id"]), path
        assert [t["dex_id"] for t in g["topk"]] == [t["dex_id"] for t in e["topk"]], path
        worst_p = max(worst_p, float(np.abs(np.array(g["probs"]) - e["probs"]).max()))
        if e["score"] is not None:
            worst_s = max(worst_s, abs(g["open_set_score"] - e["score"]))
        else:
            assert "open_set_score" not in g
    print(f"fp32 site vs predict: max |dprob| {worst_p:.2e}, max |dscore| {worst_s:.2e}")
    assert worst_p <= 1e-3 and worst_s <= 1e-3, (worst_p, worst_s)


def test_javascript_preprocessing_equals_eval_transform(browser, site):
    """Odd sizes, up- and downscaling, both interpolations: the page's tensor is eval_transform's."""
    from pokemon_classifier.presets import eval_transform

    page = _open(browser, site)
    rng = np.random.default_rng(1)
    for (w, h), mode in [((640, 480), "bicubic"), ((37, 300), "bicubic"), ((239, 238), "bilinear"),
                         ((100, 80), "bilinear"), ((1001, 999), "bicubic")]:
        pre = {"size": 208 if mode == "bicubic" else 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
               "interpolation": mode, "crop_pct": 0.875}
        a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        want = eval_transform(pre)(Image.fromarray(a)).numpy()
        rgba = np.dstack([a, np.full((h, w, 1), 255, np.uint8)]).ravel().tolist()
        got = page.evaluate("""async ([rgba, w, h, pre]) => {
            const { toInput } = await import('./preprocess.js');
            return Array.from(toInput(new Uint8Array(rgba), w, h, pre));
        }""", [rgba, w, h, pre])
        assert np.abs(np.array(got, np.float32).reshape(want.shape) - want).max() < 1e-5, (w, h, mode)
    page.context.close()


def test_works_offline_after_the_first_visit_and_is_installable(browser, site):
    with static_server(site["dir"]) as url:  # a server of its own, stopped below: really no network
        page = _open(browser, {**site, "url": url})
        assert page.evaluate("window.pokedex.offlineReady") is True  # service worker active, files cached
        manifest = page.evaluate("""async () => {
            const link = document.querySelector('link[rel=manifest]');
            return (await fetch(link.href)).json();
        }""")
    assert manifest["display"] == "standalone" and any(i["sizes"] == "512x512" for i in manifest["icons"])
    page.context.set_offline(True)
    assert page.evaluate("fetch('_pictures/0.jpg?uncached').then(() => 'reached', () => 'failed')") == "failed"
    page.reload()
    page.evaluate("window.pokedex.ready")  # page, ONNX Runtime and the model, all from the cache
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    pic, exp = site["pictures"][0], site["expected"][0]
    page.set_input_files("#file", str(pic))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=30000)
    want = "Not sure" if exp["unknown"] else pokedex.localized_name(exp["dex_id"], "en")
    assert want in page.inner_text("#verdict")
    page.context.close()


def test_live_camera_verdict_on_the_video_on_a_phone(browser, site):
    page = _open(browser, site, viewport=(390, 844))
    page.click("#camera")
    page.wait_for_function("window.pokedex.live.frames >= 3", timeout=60000)
    assert page.inner_text("#overlay").strip()
    video, overlay = page.locator("#video").bounding_box(), page.locator("#overlay").bounding_box()
    assert video["y"] <= overlay["y"] and overlay["y"] + overlay["height"] <= video["y"] + video["height"]
    assert overlay["y"] + overlay["height"] <= 844  # in view on the phone, not below the fold
    page.click("#camera")
    page.wait_for_function("document.getElementById('live').hidden")
    page.context.close()


def test_unreadable_picture_says_which_and_what_to_do(browser, site, tmp_path):
    page = _open(browser, site)
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not a picture at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10000)
    msg = page.inner_text("#error")
    assert "notes.jpg" in msg and "JPEG or PNG" in msg
    png = io.BytesIO()
    draw_shape("square", CLASSES[4][1]).save(png, "PNG")
    ok = tmp_path / "ok.png"
    ok.write_bytes(png.getvalue())
    page.set_input_files("#file", str(ok))
    page.wait_for_function("document.getElementById('error').textContent === ''", timeout=30000)
    page.context.close()


def test_japanese_site_shows_no_english_ui_string(browser, site, tmp_path):
    """The site's own strings follow the browser's language (i18n.json): nothing of EN in app.js shows in
    Japanese, neither the page, a verdict nor an error, and lang="ja" picks a Japanese font."""
    from test_i18n import BRANDS, WEB_EN

    english = [v for v in WEB_EN.values() if len(v) > 3 and v not in BRANDS]
    ctx = browser.new_context(locale="ja-JP", viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    page.goto(site["url"])
    page.evaluate("window.pokedex.ready")
    assert page.input_value("#lang") == "ja" and page.evaluate("document.documentElement.lang") == "ja"
    page.set_input_files("#file", str(site["pictures"][0]))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=30000)
    shown = [page.title(), page.inner_text("body")]
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not a picture at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10000)
    shown.append(page.inner_text("#error"))
    ctx.close()
    assert "notes.jpg" in shown[-1] and "JPEG" in shown[-1]
    for text in shown:
        assert not [e for e in english if e in text], text
