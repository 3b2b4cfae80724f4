"""Export the classifier as a static web site that runs the model in the browser, offline and installable.

    pokemon-classifier export --web site/                             # the shipped best.pt
    pokemon-classifier export --weights runs/x/best.pt --web site/    # any checkpoint (exported to ONNX)
    pokemon-classifier export --weights model.onnx --web site/        # an exported model as it is (e.g. int8)
    python -m http.server -d site 8000                                # then open http://localhost:8000

The site is plain files: the page (static/web/), the ONNX model with its open-set score, ONNX Runtime
Web's JavaScript and WebAssembly (vendored in vendor/onnxruntime-web/, refreshed by
scripts/refresh_onnxruntime_web.sh; never a CDN), the Pokédex facts in every language, the page's own
strings in the same languages (static/i18n.json, shared with the server's page), a web app manifest,
icons and a service worker that keeps all of it for use without a network. Pictures are decoded,
resized and classified in the page: nothing is uploaded. The page's preprocessing is
presets.eval_transform's, re-done exactly (static/web/preprocess.js), and its verdict is
Classifier.is_unknown's, so its answers are predict's (tests/test_web.py checks that in Chromium).
"""

from __future__ import annotations

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
PAGE_FILES = ("index.html", "app.js", "preprocess.js", "style.css")
STRINGS = HERE / "static" / "i18n.json"  # the page's own strings in every language (both pages share it)
MARKER = "pokedex-site.json"  # the site's config; its presence says a folder is a site this command wrote


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


def model_config(meta: dict, model_name: str) -> dict:
    """What the page needs to turn the graph's outputs into predict's verdict (Classifier.__init__)."""
    openset = meta.get("openset")
    return {
        "model": model_name,
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


def _vendor_check() -> None:
    missing = [f for f in ORT_FILES if not (VENDOR / f).is_file()]
    if missing:
        raise UserError(f"{VENDOR}: ONNX Runtime Web files missing ({', '.join(missing)}); "
                        "run scripts/refresh_onnxruntime_web.sh")


def _service_worker(files: list[str], version: str) -> str:
    template = (PAGE / "sw.js").read_text(encoding="utf-8")
    return (template.replace("__VERSION__", version)
            .replace("__FILES__", json.dumps(["./"] + files, indent=1)))


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"{out}: folder is not empty and not a site written by `export --web`; choose another")


def build_site(out, weights) -> dict:
    """Write the site to folder `out` (replacing a site written here before, never anything else);
    returns {'files': {name: bytes}, 'bytes': total}."""
    out = Path(out)
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
            shutil.copyfile(VENDOR / name, tmp / "ort" / name)
        shutil.copyfile(onnx, tmp / "model.onnx")
        (tmp / "icons").mkdir()
        icon(192).save(tmp / "icons" / "icon-192.png")
        icon(512).save(tmp / "icons" / "icon-512.png")
        icon(512, maskable=True).save(tmp / "icons" / "maskable-512.png")
        icon(32).save(tmp / "favicon.png")
        (tmp / "manifest.webmanifest").write_text(json.dumps(manifest(), ensure_ascii=False, indent=1), encoding="utf-8")
        (tmp / "pokedex.json").write_text(json.dumps(pokedex_json(), ensure_ascii=False, separators=(",", ":")),
                                          encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(model_config(meta, "model.onnx"), indent=1), encoding="utf-8")
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
    info = build_site(args.web, weights)
    model_mb = info["files"]["model.onnx"] / 1e6
    print(f"wrote {args.web}/ ({len(info['files'])} files, {info['bytes'] / 1e6:.1f} MB, model {model_mb:.1f} MB); "
          f"try it: python -m http.server -d {args.web} 8000  ->  http://localhost:8000")
    return 0
