"""python benchmarks/download_bench.py [N] [DELAY_S]

N images (default 300) from a loopback server that delays each by DELAY_S (default 0.05):
one-at-a-time downloading vs the concurrent downloader (16 workers, 16 per host), in one run.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _machine import machine  # noqa: E402
from fake_web import FakeWeb  # noqa: E402

from pokemon_classifier.scrape import BingProvider, DownloadOptions, Downloader, HttpClient  # noqa: E402


def run(web, workers, per_host, n):
    client = HttpClient(per_host=per_host, backoff=0.01)
    with tempfile.TemporaryDirectory() as d:
        dl = Downloader(d, [BingProvider(client, web.url)], client,
                        DownloadOptions(per_class=n, workers=workers, progress=False, max_pages=100))
        t = time.perf_counter()
        got = dl.run([25])
        return got, time.perf_counter() - t


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    with FakeWeb({"Pikachu pokemon": [f"/img/ok-{i}.jpg" for i in range(1, n + 1)]}, image_delay=delay) as web:
        got1, t1 = run(web, 1, 1, n)
        got2, t2 = run(web, 16, 16, n)
    print(f"one at a time: {got1} images in {t1:.2f} s ({got1 / t1:.1f} img/s)")
    print(f"concurrent (16 workers, 16 per host): {got2} images in {t2:.2f} s ({got2 / t2:.1f} img/s)")
    print(f"speed-up: {t1 / t2:.1f}x  (loopback, {delay * 1000:.0f} ms delay per image)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
