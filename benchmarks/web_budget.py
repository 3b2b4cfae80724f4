"""python benchmarks/web_budget.py [--weights best.pt | --site DIR] [--pictures 100] [--camera-seconds 10]

The on-device site's budget (issue 26), in headless Chromium on this machine: the site's size (raw and
gzip-compressed), the time from navigation to the first verdict with a warm cache (second visit, served
by the service worker), per-picture latency (decode + preprocessing + model; p50, p90) over shared test
pictures (generated ones without the shared data), and live camera frames per second (Chromium's fake
camera). The site is served by a loopback http.server, as `python -m http.server` would.
"""

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _machine import machine  # noqa: E402

BUDGET = {"site_mb": 25, "first_verdict_s": 3, "p50_ms": 80, "camera_fps": 8}


def site_size(site: Path) -> tuple[float, float]:
    files = [p for p in site.rglob("*") if p.is_file() and not p.relative_to(site).as_posix().startswith("_")]
    raw = sum(p.stat().st_size for p in files)
    packed = sum(len(gzip.compress(p.read_bytes(), 6)) for p in files)
    return raw / 1e6, packed / 1e6


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="checkpoint or .onnx (default: the shipped best.pt)")
    ap.add_argument("--site", type=Path, help="an existing site (from `export --web`) instead of building one")
    ap.add_argument("--pictures", type=int, default=100)
    ap.add_argument("--visits", type=int, default=3, help="warm-cache visits timed (median reported)")
    ap.add_argument("--camera-seconds", type=float, default=10.0)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright
    from helpers import CHROMIUM, FLAGS
    from test_web import parity_pictures, static_server

    from pokemon_classifier import web
    from pokemon_classifier.models import resolve_weights

    tmp = Path(tempfile.mkdtemp(prefix="web-budget-"))
    site = args.site
    if site is None:
        site = tmp / "site"
        web.build_site(site, resolve_weights(args.weights))
    raw_mb, gz_mb = site_size(site)
    model_mb = (site / "model.onnx").stat().st_size / 1e6
    pics = parity_pictures(site / "_bench", args.pictures)
    urls = [p.relative_to(site).as_posix() for p in pics]
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"# {machine()}; {version} headless; load average {os.getloadavg()[0]:.1f} at start")
    print(f"site: {raw_mb:.1f} MB ({gz_mb:.1f} MB gzip-compressed; model {model_mb:.1f} MB, ONNX Runtime Web "
          f"{(site / 'ort' / 'ort-wasm-simd-threaded.wasm.gz').stat().st_size / 1e6:.1f} MB gzip-compressed)  "
          f"budget <= {BUDGET['site_mb']} MB")

    with static_server(site) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        ctx = browser.new_context(viewport={"width": 390, "height": 844})
        ctx.grant_permissions(["camera"], origin=url.rstrip("/"))
        page = ctx.new_page()
        t = time.perf_counter()
        page.goto(url)
        page.evaluate("window.pokedex.ready")
        cold = time.perf_counter() - t
        page.evaluate("window.pokedex.offlineReady")
        page.close()
        firsts = []
        for _ in range(args.visits):  # warm: the service worker serves everything from its cache
            page = ctx.new_page()
            page.goto(url)
            firsts.append(page.evaluate("""async (u) => {
                await window.pokedex.ready;
                await window.pokedex.classifyUrls([u]);
                return performance.now() / 1000;  // since navigation started
            }""", urls[0]))
            page.close()
        print(f"first verdict after navigation: {statistics.median(firsts):.2f} s warm cache (median of "
              f"{len(firsts)}: {', '.join(f'{x:.2f}' for x in firsts)}; first visit ready in {cold:.1f} s)  "
              f"budget <= {BUDGET['first_verdict_s']} s")

        page = ctx.new_page()
        page.goto(url)
        page.evaluate("window.pokedex.ready")
        page.evaluate("(u) => window.pokedex.classifyUrls(u)", urls[:3])  # warm-up (JIT, first runs)
        res = page.evaluate("(u) => window.pokedex.classifyUrls(u)", urls)
        total = [r["ms"]["total"] for r in res]
        model = [r["ms"]["model"] for r in res]
        print(f"per picture: p50 {pct(total, .5):.0f} ms, p90 {pct(total, .9):.0f} ms (model alone p50 "
              f"{pct(model, .5):.0f} ms) over {len(res)} pictures  budget p50 <= {BUDGET['p50_ms']} ms")

        page.click("#camera")
        page.wait_for_function("window.pokedex.live.frames >= 1", timeout=60000)
        f0 = page.evaluate("[window.pokedex.live.frames, performance.now()]")
        time.sleep(args.camera_seconds)
        f1 = page.evaluate("[window.pokedex.live.frames, performance.now()]")
        fps = (f1[0] - f0[0]) / ((f1[1] - f0[1]) / 1000)
        print(f"live camera: {fps:.1f} frames/s (fake 640x480 device, {f1[0] - f0[0]} frames in "
              f"{(f1[1] - f0[1]) / 1000:.1f} s)  budget >= {BUDGET['camera_fps']}")
        browser.close()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end (this machine is shared: figures are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
