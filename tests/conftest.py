"""Shared fixtures: synthetic datasets generated in the test, a no-network guard, the shared data, the
tiny classifier the app tests serve. Helpers that are not fixtures live in helpers.py."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from helpers import SHARED, make_dataset, tiny_checkpoint


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


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """A tiny random classifier (64 px, no top-probability floor); one per test module."""
    from pokemon_classifier.predict import Classifier

    return Classifier.load(tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt", 64, unknown_threshold=0.0))


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
