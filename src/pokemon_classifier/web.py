"""Export the classifier as a static web site that runs the model in the browser, offline and installable.

    pokemon-classifier export --web site/                             # the shipped best.pt
    pokemon-classifier export --weights runs/x/best.pt --web site/    # any checkpoint (exported to ONNX)
    pokemon-classifier export --weights model.onnx --web site/        # an exported model as it is (e.g. int8)
    pokemon-classifier export --web site/ --web-weights fp16          # a smaller site (answers within 2e-3)
    python -m http.server -d site 8000                                # then open http://localhost:8000

The site is plain files: the page (static/web/), the ONNX model with its open-set score, ONNX Runtime
Web's JavaScript and WebAssembly (vendored in vendor/onnxruntime-web/, refreshed by
scripts/refresh_onnxruntime_web.sh; never a CDN), the Pokédex facts in every language, the page's own
strings in the same languages (static/i18n.json, shared with the server's page), a web app manifest,
icons and a service worker that keeps all of it for use without a network. Pictures are decoded,
resized and classified in the page: nothing is uploaded. The page's preprocessing is
presets.eval_transform's, re-done exactly (static/web/preprocess.js), and its verdict is
Classifier.is_unknown's, so its answers are predict's (tests/test_web.py checks that in Chromium).
`serve` mounts the same site of its model at /device/ (served_site; app.DeviceSite).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from pokemon_classifier import pokedex
from pokemon_classifier.errors import UserError

HERE = Path(__file__).resolve().parent
PAGE = HERE / "static" / "web"
VENDOR = HERE / "vendor" / "onnxruntime-web"
# The ES-module bundle has ORT's loader inside; it fetches the one wasm beside it. That wasm is built
# with thread support but runs on one thread where the page is not cross-origin isolated (any plain
# static server), so no special headers are needed.
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm", "LICENSE", "VERSION")
# The site stores the WebAssembly gzip-compressed (3.8 of 14.8 MB: the site's size budget, docs/web.md); the
# page unpacks it (DecompressionStream) and hands it to ORT (env.wasm.wasmBinary). Not left to HTTP
# compression: `python -m http.server` and many static hosts send files as they are.
WASM = "ort-wasm-simd-threaded.wasm"
WASM_GZ = WASM + ".gz"
PAGE_FILES = ("index.html", "app.js", "preprocess.js", "style.css")
STRINGS = HERE / "static" / "i18n.json"  # the page's own strings in every language (both pages share it)
MARKER = "pokedex-site.json"  # the site's config; its presence says a folder is a site this command wrote
# how the site's model stores its weights (--web-weights): fp32, the checkpoint's exactly (predict's answers);
# fp16, rounded to half precision (a smaller site; the answers move a little, docs/web.md)
WEIGHTS = ("fp32", "fp16")
FP16_MIN = 1024  # elements: smaller float tensors (biases, scales, scalars) stay float32, they weigh little
FP16_MAX = 65504.0  # float16's largest finite value: a tensor with a larger one stays float32


def pokedex_json() -> dict:
    """Names, genus and types of the 151 in every language the package has, for the page."""
    langs = list(pokedex.LANGUAGES)
    type_ids = sorted({t for i in pokedex.IDS for t in pokedex.types(i)})
    return {
        "languages": pokedex.LANGUAGES,
        "default": pokedex.DEFAULT_LANGUAGE,
        "pokemon": {str(i): {"slug": pokedex.name(i), "name": pokedex.display_name(i),
                             "names": {lang: pokedex.localized_name(i, lang) for lang in langs},
                             "genus": {lang: pokedex.genus(i, lang) for lang in langs},
                             "types": pokedex.types(i)} for i in pokedex.IDS},
        "types": {t: {lang: pokedex.type_name(t, lang) for lang in langs} for t in type_ids},
    }


def model_config(meta: dict, model_name: str, weights: str = "fp32") -> dict:
    """What the page needs to turn the graph's outputs into predict's verdict (Classifier.__init__)."""
    openset = meta.get("openset")
    return {
        "model": model_name,
        "weights": weights,
        "class_ids": [int(i) for i in meta["class_ids"]],
        "preprocessing": meta["preprocessing"],
        "temperature": float(meta.get("temperature", 1.0) or 1.0),
        # the top-probability floor: 0 when the open-set score decides, as in predict
        "threshold": 0.0 if openset else float(meta.get("unknown_threshold", 0.0)),
        "open_set_threshold": float(openset["threshold"]) if openset else None,
        "source": Path(str(meta.get("source", ""))).name,
    }


def icon(size: int, maskable: bool = False):
    """A ball drawn here (red top, white bottom, black band and button); maskable icons keep it inside
    the safe zone, the central 80%."""
    from PIL import Image, ImageDraw

    scale = 4  # drawn large and shrunk: smooth edges
    s = size * scale
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0) if not maskable else (255, 255, 255, 255))
    d = ImageDraw.Draw(im)
    pad = s * (0.16 if maskable else 0.04)
    box = (pad, pad, s - pad, s - pad)
    line = max(2, int(s * 0.05))
    d.pieslice(box, 180, 360, fill=(227, 53, 13, 255))
    d.pieslice(box, 0, 180, fill=(255, 255, 255, 255))
    d.ellipse(box, outline=(20, 20, 20, 255), width=line)
    mid = s / 2
    d.rectangle((pad, mid - line / 2, s - pad, mid + line / 2), fill=(20, 20, 20, 255))
    r = (s - 2 * pad) * 0.16
    d.ellipse((mid - r, mid - r, mid + r, mid + r), fill=(255, 255, 255, 255), outline=(20, 20, 20, 255), width=line)
    return im.resize((size, size), Image.LANCZOS)


def manifest() -> dict:
    return {
        "name": "Pokédex — Pokémon recogniser", "short_name": "Pokédex",
        "description": "Recognises the 151 first-generation Pokémon in pictures and the camera, on this device.",
        "start_url": "./", "scope": "./", "display": "standalone",
        "background_color": "#ffffff", "theme_color": "#e3350d",
        "icons": [{"src": "icons/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
                  {"src": "icons/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
                  {"src": "icons/maskable-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"}],
    }


def _model_file(weights) -> tuple[Path, dict]:
    """(ONNX file, its metadata): an .onnx as given, a checkpoint through export's cache."""
    from pokemon_classifier.onnx_graph import cached_onnx, load_onnx

    path = Path(weights)
    onnx = path if path.suffix == ".onnx" else cached_onnx(path)
    _, meta = load_onnx(onnx, threads=1)  # also checks it loads and carries the metadata
    return onnx, meta


def compact_weights(src, dst, dtype: str) -> dict:
    """Write ONNX model `src` to `dst` with large float32 tensors (initializers and Constant nodes)
    stored as float16, each followed by a Cast back to float32, so the browser still computes in
    float32 (ONNX Runtime folds the Casts into float32 weights when it loads the model). dtype "fp32"
    stores so only the tensors whose every value is a float16 (the kNN bank, kept as float16 in the
    checkpoint): the graph computes exactly what `src` does. "fp16" rounds every large tensor to float16:
    half the file, answers moved by the rounding (docs/web.md gives the measured differences).
    Returns {'tensors': how many are stored as float16, 'bytes_saved': ...}."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    done = {"tensors": 0, "bytes_saved": 0}

    def half(t):
        """The float16 copy of tensor `t`, or None where it stays float32."""
        if t.data_type != TensorProto.FLOAT or int(np.prod(t.dims)) < FP16_MIN:
            return None
        a = numpy_helper.to_array(t)
        if not np.isfinite(a).all() or np.abs(a).max() > FP16_MAX:
            return None
        h = a.astype(np.float16)
        if dtype == "fp32" and not np.array_equal(h.astype(np.float32), a):
            return None
        done["tensors"] += 1
        done["bytes_saved"] += a.nbytes - h.nbytes
        return numpy_helper.from_array(h, f"{t.name}_fp16" if t.name else "")

    def cast(name: str, to: str):
        return helper.make_node("Cast", [name], [to], name=f"{to}_to_fp32", to=TensorProto.FLOAT)

    casts = []  # the initializers' Casts go first: their inputs exist before any node runs
    for t in graph.initializer:
        name, h = t.name, half(t)
        if h is not None:
            t.CopyFrom(h)
            casts.append(cast(h.name, name))
    nodes = []
    for node in graph.node:  # a Constant's Cast goes right after it: the graph stays in topological order
        value = next((a for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        h = half(value.t) if value is not None else None
        nodes.append(node)
        if h is not None:
            value.t.CopyFrom(h)
            out, node.output[0] = node.output[0], f"{node.output[0]}_fp16"
            nodes.append(cast(node.output[0], out))
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return done


def _vendor_check() -> None:
    missing = [f for f in ORT_FILES if not (VENDOR / f).is_file()]
    if missing:
        raise UserError(f"{VENDOR}: ONNX Runtime Web files missing ({', '.join(missing)}); "
                        "run scripts/refresh_onnxruntime_web.sh")


def _gzipped(path: Path) -> bytes:
    st = path.stat()
    return _gzip(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _gzip(path: Path, size: int, mtime_ns: int) -> bytes:
    """Compressed once per process (two seconds at level 9); mtime=0 so the same file gives the same bytes
    (and the service worker's version changes only when a file does)."""
    return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


def _service_worker(files: list[str], version: str) -> str:
    template = (PAGE / "sw.js").read_text(encoding="utf-8")
    return (template.replace("__VERSION__", version)
            .replace("__FILES__", json.dumps(["./"] + files, indent=1)))


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"{out}: folder is not empty and not a site written by `export --web`; choose another")


def served_site(weights) -> Path:
    """`serve`'s on-device mode: the site of checkpoint (or .onnx) `weights`, built once into the user
    cache under the hash of its bytes and of this code (build_site is atomic: a crash leaves no half
    site), with a link back to the server's page. app.py mounts it at /device/."""
    from pokemon_classifier.fileio import sha256_file
    from pokemon_classifier.runtime import cache_dir

    h = hashlib.sha256(sha256_file(weights).encode())
    for f in (__file__, *(PAGE / n for n in (*PAGE_FILES, "sw.js")), VENDOR / WASM):
        h.update(Path(f).read_bytes())
    out = cache_dir() / "web" / h.hexdigest()[:20]
    if not (out / MARKER).is_file():
        build_site(out, weights, server="../")
    return out


def build_site(out, weights, dtype: str = "fp32", server: str | None = None) -> dict:
    """Write the site to folder `out` (replacing a site written here before, never anything else), its
    model's weights stored as `dtype` (WEIGHTS) and, when `server` is given, a link to that server's
    page (serve's on-device mode); returns {'files': {name: bytes}, 'bytes': total}."""
    out = Path(out)
    if dtype not in WEIGHTS:
        raise UserError(f"--web-weights {dtype}: choose one of {', '.join(WEIGHTS)}")
    _check_target(out)
    _vendor_check()
    onnx, meta = _model_file(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in PAGE_FILES:
            shutil.copyfile(PAGE / name, tmp / name)
        shutil.copyfile(STRINGS, tmp / "i18n.json")
        (tmp / "ort").mkdir()
        for name in ORT_FILES:
            if name == WASM:
                (tmp / "ort" / WASM_GZ).write_bytes(_gzipped(VENDOR / WASM))
            else:
                shutil.copyfile(VENDOR / name, tmp / "ort" / name)
        compact_weights(onnx, tmp / "model.onnx", dtype)
        (tmp / "icons").mkdir()
        icon(192).save(tmp / "icons" / "icon-192.png")
        icon(512).save(tmp / "icons" / "icon-512.png")
        icon(512, maskable=True).save(tmp / "icons" / "maskable-512.png")
        icon(32).save(tmp / "favicon.png")
        (tmp / "manifest.webmanifest").write_text(json.dumps(manifest(), ensure_ascii=False, indent=1), encoding="utf-8")
        (tmp / "pokedex.json").write_text(json.dumps(pokedex_json(), ensure_ascii=False, separators=(",", ":")),
                                          encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps({**model_config(meta, "model.onnx", dtype), "server": server}, indent=1), encoding="utf-8")
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        h = hashlib.sha256()
        for name in files:  # the cache name changes with any file, so a new export replaces the old cache
            h.update(name.encode() + (tmp / name).read_bytes())
        (tmp / "sw.js").write_text(_service_worker(files, h.hexdigest()[:16]), encoding="utf-8")
        files.append("sw.js")
        for p in (tmp, *tmp.rglob("*")):  # mkdtemp makes 0700; a web server needs to read it
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {name: (out / name).stat().st_size for name in files}
    return {"files": sizes, "bytes": sum(sizes.values())}


def main(args) -> int:
    """`export --web DIR`: the site from --weights (a checkpoint or an .onnx)."""
    from pokemon_classifier.models import resolve_weights

    weights = resolve_weights(args.weights)
    if not Path(weights).is_file():
        raise UserError(f"{weights}: model not found")
    dtype = getattr(args, "web_weights", None) or WEIGHTS[0]
    info = build_site(args.web, weights, dtype)
    model_mb = info["files"]["model.onnx"] / 1e6
    print(f"wrote {args.web}/ ({len(info['files'])} files, {info['bytes'] / 1e6:.1f} MB, {dtype} model {model_mb:.1f} MB); "
          f"try it: python -m http.server -d {args.web} 8000  ->  http://localhost:8000")
    return 0
