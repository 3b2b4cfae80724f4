"""Shared fixtures: synthetic datasets generated in the test, a no-network guard, the shared data."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from pathlib import Path

import pytest

from pokemon_classifier.synthetic import CLASSES, draw_shape, make_dataset  # noqa: F401

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pokemon"
# the developer's cache, read before any test isolates it: shared-data tests reuse its lite0 features
# of 6,555 images (minutes to compute) instead of rebuilding them in every test's temp cache
USER_CACHE = Path(os.environ.get("POKEMON_CLASSIFIER_CACHE", Path.home() / ".cache" / "pokemon-classifier"))


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


def stale_temp_files(stale: list[Path], keep: list[Path]):
    """Plant temp files an hour old, as a killed run leaves them (`stale`, named like the atomic
    writer's `.NAME.XXXXXXXX.tmp`) and look-alikes of the user's (`keep`); returns a check that the
    next run removed exactly the stale ones."""
    import time

    old = time.time() - 3600
    for p in stale + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    return lambda: not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def tiny_checkpoint(path: Path, size: int = 32, arch: str = "mobilenet_v3_small", **extra) -> Path:
    """A randomly initialised checkpoint in the project's format (seeded, so outputs are repeatable)."""
    import torch

    from pokemon_classifier import pokedex
    from pokemon_classifier.models import build_model, preprocessing

    torch.manual_seed(0)
    torch.save({"model": build_model(arch).state_dict(), "arch": arch, "class_ids": list(pokedex.IDS),
                "preprocessing": preprocessing(arch, size), **extra}, path)
    return path


@contextlib.contextmanager
def served_app(app, **config):
    """A real uvicorn on a free loopback port, in a thread; yields the port (config: e.g. ssl files)."""
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **config))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        srv.should_exit = True
        t.join(10)
