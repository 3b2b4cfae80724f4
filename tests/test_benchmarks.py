"""The benchmarks run end to end on a synthetic set (their figures come from the shared data)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_throughput_prints_both_pipelines(synth_data):
    r = subprocess.run([sys.executable, ROOT / "benchmarks" / "train_throughput.py", synth_data, "--arch",
                        "mobilenet_v3_small", "--size", "32", "--batch", "8", "--batches", "1", "--micro-batch", "8", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "original-style" in r.stdout
    assert r.stdout.count("x the original-style") == 2  # one line per micro-batch size


def test_compare_runs_row_splits_scraped_and_sprites(synth_data, tmp_path):
    import pandas as pd

    from helpers import run_cli, tiny_checkpoint

    assert run_cli("split", synth_data)[0] == 0
    run = tmp_path / "runA"
    run.mkdir()
    tiny_checkpoint(run / "best.pt", args={"arch": "mobilenet_v3_small", "pretrained": False, "augment": "light"},
                    epoch=2)
    pd.DataFrame({"epoch": [1, 2], "train_seconds": [60.0, 60.0]}).to_csv(run / "metrics.csv", index=False)
    ann = pd.read_csv(synth_data / "annotations.csv")
    ann.assign(kind=["gen1-back-sprite" if i % 4 == 0 else "scraped" for i in range(len(ann))])[
        ["img_name", "kind"]].to_csv(synth_data / "manifest.csv", index=False)
    r = subprocess.run([sys.executable, ROOT / "benchmarks" / "compare_runs.py", synth_data,
                        synth_data / "splits.csv", run], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if line.startswith("| runA |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:7] == ["mobilenet_v3_small", "scratch", "32", "light", "2 (best 2)", "2"]
    assert all(0 <= float(c) <= 1 for c in cells[7:])  # val, test top-1/top-5, scraped, sprites: no nan
