"""Shared fixtures: synthetic datasets generated in the test, a no-network guard, the shared data."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pokemon"

# 6 classes, each a distinct shape and colour (dex id -> (shape, rgb))
CLASSES = {1: ("circle", (40, 160, 60)), 4: ("square", (230, 90, 30)), 7: ("triangle", (40, 90, 220)),
           25: ("diamond", (240, 210, 30)), 63: ("cross", (150, 60, 160)), 151: ("ring", (240, 120, 180))}


def draw_shape(shape: str, color, size: int = 96, rng=None, clutter: bool = True) -> Image.Image:
    rng = rng or np.random.default_rng(0)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = int(size * rng.uniform(0.25, 0.4))
    cx, cy = (int(size / 2 + rng.uniform(-0.1, 0.1) * size) for _ in range(2))
    col = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in color)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=col)
    elif shape == "square":
        d.rectangle(box, fill=col)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=col)
    elif shape == "cross":
        w = r // 3
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
    else:
        d.ellipse(box, outline=col, width=max(3, r // 3))
    # random dark blobs: every image gets its own low-frequency layout, so pHashes differ
    for _ in range(4 if clutter else 0):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        s = int(rng.integers(size // 10, size // 6))
        d.ellipse((x, y, x + s, y + s), fill=tuple(int(v) for v in rng.integers(120, 190, 1)) * 3)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_dataset(root: Path, per_class: int = 12, dups: int = 2, seed: int = 0, size: int = 96,
                 clutter: bool = True) -> Path:
    """root/images/<name><NNN>.jpg + annotations.csv; `dups` near-duplicates per class (resized, re-encoded)."""
    from pokemon_classifier import pokedex

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for dex, (shape, color) in CLASSES.items():
        name = pokedex.name(dex)
        for k in range(1, per_class + 1):
            img = draw_shape(shape, color, size, rng, clutter)
            fn = f"{name}{k:03d}.jpg"
            img.save(img_dir / fn, quality=92)
            rows.append((fn, dex))
        for j in range(dups):  # near-duplicates of image j+1: resized and re-encoded
            src = Image.open(img_dir / f"{name}{j + 1:03d}.jpg")
            fn = f"{name}{per_class + j + 1:03d}.jpg"
            src.resize((size + 40, size + 40)).save(img_dir / fn, quality=70)
            rows.append((fn, dex))
    lines = ["img_name,pokemon_id"] + [f"{f},{d}" for f, d in sorted(rows)]
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def synth_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def synth_session(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "data", per_class=16)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POKEMON_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "annotations.csv").is_file():
        pytest.skip(f"shared data not present at {SHARED}")
    return SHARED


# ------------------------------------------------------------ no network in tests
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = ipaddress.ip_address(socket.gethostbyname(host)) if host == "localhost" else None
        if ip is None or not ip.is_loopback:
            raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def pytest_addoption(parser):
    parser.addoption("--run-network", action="store_true", help="run tests marked `network` (live services)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-network"):
        return
    skip = pytest.mark.skip(reason="needs --run-network (talks to live services)")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_network(request, monkeypatch):
    if "network" not in request.keywords:
        monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    yield


def run_cli(*args, cwd=None):
    """Run the CLI in-process; returns (exit code, stdout, stderr) via capsys-free subprocess-like API."""
    import contextlib
    import io

    from pokemon_classifier.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()
