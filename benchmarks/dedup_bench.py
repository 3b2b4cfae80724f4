"""python benchmarks/dedup_bench.py ../shared/data/pokemon

Times `dedup` over a data folder twice: with an empty hash cache (first run) and again (cached).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402


def main():
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/pokemon")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["POKEMON_CLASSIFIER_CACHE"] = cache
        from pokemon_classifier import dedup

        for label in ("first run (cold cache)", "re-run (cached)"):
            t = time.perf_counter()
            groups = dedup.find_groups(data, progress=False)
            dt = time.perf_counter() - t
            s = dedup.summarize(groups)
            print(f"dedup {label}: {dt:.1f} s for {s['images']} images -> {s['groups']} groups, "
                  f"{s['images_in_groups']} images in groups, {s['cross_class_groups']} cross-class")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
