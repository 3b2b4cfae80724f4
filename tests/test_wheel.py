"""Packaging: a wheel built from the checkout carries the shipped model and works from anywhere."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_model_and_runs_outside_checkout(tmp_path):
    if not (ROOT / "best.pt").is_file():
        pytest.skip("no shipped best.pt at the repository root")
    # Build from a copy, so the checkout gets no build/ or egg-info; no build isolation: no network.
    src = tmp_path / "src-copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "best.pt"):
        shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, timeout=300)
    (wheel,) = wheels.glob("pokemon_classifier-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    assert (target / "pokemon_classifier" / "best.pt").read_bytes() == (ROOT / "best.pt").read_bytes()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from PIL import Image

    Image.new("RGB", (120, 90), (250, 210, 40)).save(elsewhere / "photo.jpg")
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run([sys.executable, "-c", "import pokemon_classifier.models as m; "
                            "print(m.__file__); print(m.default_weights())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    mod, weights = probe.stdout.split()
    assert Path(mod).is_relative_to(target) and Path(weights) == target / "pokemon_classifier" / "best.pt"

    cli = [sys.executable, "-m", "pokemon_classifier"]
    r = subprocess.run(cli + ["predict", "photo.jpg", "--json"], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"topk"' in r.stdout and "train one" not in r.stderr

    srv = subprocess.Popen(cli + ["serve", "--port", "0"], cwd=elsewhere, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), line + srv.stderr.read()
        url = line.split()[2]
        for _ in range(100):
            try:
                health = requests.get(f"{url}/api/health", timeout=5).json()
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health["classes"] == 151 and health["backend"] == "onnx"  # serve exports best.pt once on the CPU
        with open(elsewhere / "photo.jpg", "rb") as f:
            p = requests.post(f"{url}/api/predict", files={"file": ("photo.jpg", f, "image/jpeg")}, timeout=60)
        assert p.status_code == 200 and len(p.json()["topk"]) == 5
    finally:
        srv.terminate()
        srv.wait(30)
