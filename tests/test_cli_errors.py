"""Every subcommand over a corpus of bad inputs: exit code 2, exactly one line on stderr, starting with
`error:` and naming the offending file or flag, and never a traceback.

The cases run in-process (helpers.run_cli) on one shared corpus built once: a small synthetic data
folder, a good checkpoint and the bad files. The `serve` cases that get past argument parsing run as a
subprocess with a timeout, so that one that wrongly gets past validation fails the test instead of
serving forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_cli, tiny_checkpoint
from pokemon_classifier.synthetic import make_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import torch

    from pokemon_classifier.models import build_model, preprocessing

    t = tmp_path_factory.mktemp("bad")
    make_dataset(t / "data", per_class=3, dups=0)
    good = tiny_checkpoint(t / "good.pt")
    (t / "empty.pt").write_bytes(b"")
    (t / "truncated.pt").write_bytes(good.read_bytes()[:4096])
    (t / "text.pt").write_text("this is not a checkpoint\n")
    (t / "empty.onnx").write_bytes(b"")
    (t / "ckdir.pt").mkdir()
    # a checkpoint that knows 3 classes: evaluating 6-class data names the extra dex ids (as plain ints)
    torch.save({"model": build_model("mobilenet_v3_small", num_classes=3).state_dict(), "arch": "mobilenet_v3_small",
                "class_ids": [1, 4, 7], "preprocessing": preprocessing("mobilenet_v3_small", 32)}, t / "three.pt")
    (t / "empty.csv").write_bytes(b"")
    (t / "latin1.csv").write_bytes("img_name,split\nétourneau001.jpg,train\n".encode("latin-1"))
    (t / "ragged.csv").write_text('img_name,split\n"a.jpg,train\nb.jpg,val,x,"y\n')
    (t / "foreign.csv").write_text("name,age\nbob,3\n")
    (t / "bad.yaml").write_text("epochs: [1,\n")
    (t / "latin1.yaml").write_bytes("arch: é\n".encode("latin-1"))
    (t / "zero_batch.yaml").write_text("batch_size: 0\n")
    (t / "unknown_key.yaml").write_text("epochs: 1\nwarp_speed: 9\n")
    (t / "a_file").write_text("not a folder\n")
    (t / "a_folder").mkdir()
    (t / "empty_folder").mkdir()
    (t / "header_only" / "images").mkdir(parents=True)
    (t / "header_only" / "annotations.csv").write_text("img_name,pokemon_id\n")
    return t


# (id, argv with {T} = the corpus folder, text the error line must contain). Each needle is the file or
# flag a user has to fix.
CASES = [
    # ---- checkpoints: every command that takes --weights (or checkpoints), x every kind of bad file
    *[(f"{cmd}-{kind}", argv.replace("W", f"{{T}}/{kind}.pt"), f"{kind}.pt: not a loadable checkpoint")
      for kind in ("empty", "truncated", "text")
      for cmd, argv in (("evaluate", "evaluate --weights W --data {T}/data"),
                        ("predict", "predict --weights W {T}/data/images"),
                        ("export", "export --weights W --onnx {T}/out/x.onnx"),
                        ("export-web", "export --weights W --web {T}/out/site"),
                        ("calibrate", "calibrate --weights W --data {T}/data"),
                        ("soup", "soup {T}/good.pt W --out {T}/out/soup.pt"),
                        ("clean", "clean {T}/data --weights W --no-progress"),
                        ("train-resume", "train --data {T}/data --out {T}/out/r --resume W --epochs 2"))],
    ("evaluate-missing-weights", "evaluate --weights {T}/nope.pt --data {T}/data", "nope.pt: checkpoint not found"),
    ("predict-weights-folder", "predict --weights {T}/ckdir.pt {T}/data/images", "ckdir.pt: checkpoint not found"),
    ("train-resume-not-last", "train --data {T}/data --out {T}/out/r --resume {T}/good.pt --epochs 2",
     "good.pt: not a last.pt"),
    *[(f"train-weights-file-{kind}", f"train --data {{T}}/data --out {{T}}/out/r --weights-file {{T}}/{kind}.pt "
       "--arch mobilenet_v3_small --epochs 1", f"{kind}.pt: not a loadable weights file")
      for kind in ("empty", "truncated", "text")],
    ("train-resume-missing", "train --data {T}/data --out {T}/out/r --resume {T}/nope.pt", "nope.pt"),
    # ---- CSVs given by the user
    *[(f"{cmd}-{kind}", argv.replace("C", f"{{T}}/{kind}.csv"), f"{kind}.csv: {why}")
      for kind, why in (("empty", "empty file"), ("latin1", "not UTF-8"))
      for cmd, argv in (("train-splits", "train --data {T}/data --out {T}/out/r --splits C"),
                        ("evaluate-splits", "evaluate --weights {T}/good.pt --data {T}/data --split test --splits C"),
                        ("calibrate-splits", "calibrate --weights {T}/good.pt --data {T}/data --splits C"),
                        ("soup-splits", "soup {T}/good.pt {T}/good.pt --out {T}/out/s.pt --data {T}/data --splits C"),
                        ("clean-apply", "clean {T}/data --apply C"),
                        ("clean-undo", "clean {T}/data --undo C"))],
    ("train-splits-ragged", "train --data {T}/data --out {T}/out/r --splits {T}/ragged.csv", "ragged.csv: "),
    ("train-splits-foreign", "train --data {T}/data --out {T}/out/r --splits {T}/foreign.csv",
     "foreign.csv: header must be img_name,split"),
    ("clean-apply-ragged", "clean {T}/data --apply {T}/ragged.csv", "ragged.csv: "),
    ("clean-apply-foreign", "clean {T}/data --apply {T}/foreign.csv", "foreign.csv: needs columns"),
    ("clean-undo-foreign", "clean {T}/data --undo {T}/foreign.csv", "foreign.csv"),
    ("evaluate-by-missing", "evaluate --weights {T}/good.pt --data {T}/data --by {T}/nope.csv:kind", "nope.csv"),
    # ---- header-only / missing data
    *[(f"{cmd}-header-only", argv, "header_only/annotations.csv")
      for cmd, argv in (("clean", "clean {T}/header_only"),
                        ("evaluate", "evaluate --weights {T}/good.pt --data {T}/header_only"),
                        ("dedup", "dedup {T}/header_only --out {T}/out/dd"),
                        ("split", "split {T}/header_only --out {T}/out/hs.csv"),
                        ("train", "train --data {T}/header_only --out {T}/out/hr"),
                        ("calibrate", "calibrate --weights {T}/good.pt --data {T}/header_only"),
                        ("soup", "soup {T}/good.pt {T}/good.pt --out {T}/out/s.pt --data {T}/header_only"))],
    *[(f"{cmd}-missing-data", argv, "nodata")
      for cmd, argv in (("annotate", "annotate {T}/nodata"), ("dedup", "dedup {T}/nodata"),
                        ("split", "split {T}/nodata"), ("clean", "clean {T}/nodata"),
                        ("train", "train --data {T}/nodata --out {T}/out/r"),
                        ("evaluate", "evaluate --weights {T}/good.pt --data {T}/nodata"),
                        ("calibrate", "calibrate --weights {T}/good.pt --data {T}/nodata"),
                        ("soup", "soup {T}/good.pt {T}/good.pt --out {T}/out/s.pt --data {T}/nodata"),
                        ("annotate-from-folders", "annotate --from-folders {T}/nodata --out {T}/out/imp"))],
    ("evaluate-unknown-classes", "evaluate --weights {T}/three.pt --data {T}/data",
     "data/annotations.csv: dex ids [25, 63, 151] are not among the model's classes"),
    # ---- --out: a folder where a file is expected, a file where a folder is expected, a path under a file
    ("split-out-folder", "split {T}/data --out {T}/a_folder", "argument --out: {T}/a_folder: is a folder"),
    ("split-out-under-file", "split {T}/data --out {T}/a_file/s.csv", "argument --out: {T}/a_file/s.csv"),
    ("soup-out-folder", "soup {T}/good.pt {T}/good.pt --out {T}/a_folder", "argument --out: {T}/a_folder: is a folder"),
    ("export-onnx-folder", "export --weights {T}/good.pt --onnx {T}/a_folder",
     "argument --onnx: {T}/a_folder: is a folder"),
    ("calibrate-out-folder", "calibrate --weights {T}/good.pt --data {T}/data --out {T}/a_folder",
     "argument --out: {T}/a_folder: is a folder"),
    ("evaluate-out-file", "evaluate --weights {T}/good.pt --data {T}/data --out {T}/a_file",
     "argument --out: {T}/a_file: is a file"),
    ("train-out-file", "train --data {T}/data --out {T}/a_file", "argument --out: {T}/a_file: is a file"),
    ("dedup-out-file", "dedup {T}/data --out {T}/a_file", "argument --out: {T}/a_file: is a file"),
    ("clean-out-file", "clean {T}/data --out {T}/a_file", "argument --out: {T}/a_file: is a file"),
    ("annotate-out-file", "annotate --from-folders {T}/data --out {T}/a_file", "argument --out: {T}/a_file: is a file"),
    # ---- --config
    ("train-config-bad-yaml", "train --config {T}/bad.yaml --data {T}/data --out {T}/out/r", "bad.yaml: not valid YAML"),
    ("train-config-not-utf8", "train --config {T}/latin1.yaml --data {T}/data --out {T}/out/r", "latin1.yaml: not UTF-8"),
    ("train-config-zero-batch", "train --config {T}/zero_batch.yaml --data {T}/data --out {T}/out/r",
     "zero_batch.yaml: batch_size"),
    ("train-config-unknown-key", "train --config {T}/unknown_key.yaml --data {T}/data --out {T}/out/r",
     "unknown_key.yaml: unknown option 'warp_speed'"),
    ("train-config-missing", "train --config {T}/nope.yaml --data {T}/data --out {T}/out/r", "nope.yaml"),
    # ---- numbers: one argparse type= per kind, the flag named
    ("train-batch-size-0", "train --data {T}/data --out {T}/out/r --batch-size 0", "argument --batch-size: '0'"),
    ("train-batch-size-x", "train --data {T}/data --out {T}/out/r --batch-size x", "argument --batch-size: 'x'"),
    ("train-lr-nan", "train --data {T}/data --out {T}/out/r --lr nan", "argument --lr: 'nan'"),
    ("train-lr-inf", "train --data {T}/data --out {T}/out/r --lr inf", "argument --lr: 'inf'"),
    ("train-lr-negative", "train --data {T}/data --out {T}/out/r --lr=-1", "argument --lr: '-1'"),
    ("train-epochs-0", "train --data {T}/data --out {T}/out/r --epochs 0", "argument --epochs: '0'"),
    ("train-label-smoothing-2", "train --data {T}/data --out {T}/out/r --label-smoothing 2",
     "argument --label-smoothing: '2'"),
    ("predict-fps-nan", "predict --weights {T}/good.pt --fps nan {T}/data/images", "argument --fps: 'nan'"),
    ("predict-batch-size-0", "predict --weights {T}/good.pt --batch-size 0 {T}/data/images",
     "argument --batch-size: '0'"),
    ("predict-topk-0", "predict --weights {T}/good.pt --topk 0 {T}/data/images", "argument --topk: '0'"),
    ("evaluate-batch-size-0", "evaluate --weights {T}/good.pt --data {T}/data --batch-size 0",
     "argument --batch-size: '0'"),
    ("calibrate-confidence-1", "calibrate --weights {T}/good.pt --data {T}/data --negatives {T}/data --confidence 1",
     "--confidence 1.0: choose a probability in [0, 1)"),
    ("soup-batch-size-0", "soup {T}/good.pt {T}/good.pt --out {T}/out/s.pt --batch-size 0", "argument --batch-size: '0'"),
    ("calibrate-keep-2", "calibrate --weights {T}/good.pt --data {T}/data --keep 2", "argument --keep: '2'"),
    ("calibrate-sizes-0", "calibrate --weights {T}/good.pt --data {T}/data --sizes 0", "argument --sizes: '0'"),
    ("export-opset-0", "export --weights {T}/good.pt --onnx {T}/out/x.onnx --opset 0", "argument --opset: '0'"),
    ("split-val-nan", "split {T}/data --val nan", "--val nan"),
    ("split-test-1.5", "split {T}/data --test 1.5", "--test 1.5"),
    ("split-workers-0", "split {T}/data --workers 0", "argument --workers: '0'"),
    ("dedup-workers-0", "dedup {T}/data --workers 0", "argument --workers: '0'"),
    ("dedup-threshold-99", "dedup {T}/data --threshold 99", "--threshold 99"),
    ("annotate-workers-0", "annotate {T}/data --workers 0", "argument --workers: '0'"),
    ("clean-folds-0", "clean {T}/data --folds 0", "argument --folds: '0'"),
    ("download-per-class-0", "download {T}/out/dl --classes pikachu --per-class 0 --dry-run",
     "argument --per-class: '0'"),
    ("download-timeout-nan", "download {T}/out/dl --classes pikachu --timeout nan --dry-run",
     "argument --timeout: 'nan'"),
    ("download-unknown-class", "download {T}/out/dl --classes pikachuu --dry-run", "pikachuu"),
    # ---- devices
    ("train-device-bogus", "train --data {T}/data --out {T}/out/r --device bogus", "--device bogus"),
    ("evaluate-device-bogus", "evaluate --weights {T}/good.pt --data {T}/data --device bogus", "--device bogus"),
    ("calibrate-device-bogus", "calibrate --weights {T}/good.pt --data {T}/data --device bogus", "--device bogus"),
    ("predict-device-bogus", "predict --weights {T}/good.pt --device bogus {T}/data/images", "--device bogus"),
    ("train-device-cuda9", "train --data {T}/data --out {T}/out/r --device cuda:9", "--device cuda:9"),
    # ---- predict inputs
    ("predict-empty-folder", "predict --weights {T}/good.pt {T}/empty_folder", "empty_folder: no files to classify"),
    ("predict-missing-input", "predict --weights {T}/good.pt {T}/nope.jpg", "nope.jpg: no such file"),
    ("predict-empty-onnx", "predict --weights {T}/empty.onnx --backend onnx {T}/data/images", "empty.onnx"),
    ("serve-port-99999", "serve --weights {T}/good.pt --port 99999", "--port 99999: not a TCP port"),
    ("serve-max-batch-0", "serve --weights {T}/good.pt --max-batch 0", "argument --max-batch: '0'"),
    ("serve-collect-max-mb-0", "serve --weights {T}/good.pt --collect-max-mb 0", "argument --collect-max-mb: '0'"),
    ("serve-collect-per-minute-0", "serve --weights {T}/good.pt --collect-per-minute 0",
     "argument --collect-per-minute: '0'"),
    # ---- argparse's own errors are one line too
    ("train-unknown-flag", "train --data {T}/data --out {T}/out/r --warp-speed", "--warp-speed"),
    ("evaluate-missing-required", "evaluate --weights {T}/good.pt", "--data"),
    ("split-bad-choice", "evaluate --weights {T}/good.pt --data {T}/data --split holdout", "--split"),
]

# `--device cuda` can only be refused where there is no CUDA (the device machine has one)
try:
    import torch

    if not torch.cuda.is_available():
        CASES.append(("train-device-cuda", "train --data {T}/data --out {T}/out/r --device cuda", "--device cuda"))
        CASES.append(("evaluate-device-cuda", "evaluate --weights {T}/good.pt --data {T}/data --device cuda",
                      "--device cuda"))
except ImportError:  # pragma: no cover - torch is a dependency
    pass


@pytest.mark.parametrize("case,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(corpus, case, argv, needle):
    args = [a.replace("{T}", str(corpus)) for a in argv.split()]
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, needle.replace("{T}", str(corpus)), case=case)


def test_no_output_left_behind_by_refused_runs(corpus):
    """The refused runs above write nothing where the user pointed them (soup/export/split outputs)."""
    for name in ("out/x.onnx", "out/site", "out/soup.pt", "out/s.pt", "out/hs.csv", "a_folder/splits.csv"):
        assert not (corpus / name).exists(), name
    assert (corpus / "a_file").read_text() == "not a folder\n"


SERVE_CASES = [
    ("serve-empty-weights", "serve --weights {T}/empty.pt --port 0", "empty.pt: not a loadable checkpoint"),
    ("serve-device-bogus", "serve --weights {T}/good.pt --device bogus --port 0", "--device bogus"),
]


@pytest.mark.parametrize("case,argv,needle", SERVE_CASES, ids=[c[0] for c in SERVE_CASES])
def test_serve_bad_input_is_one_line_error(corpus, case, argv, needle):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [a.replace("{T}", str(corpus)) for a in argv.split()]
    r = subprocess.run([sys.executable, "-m", "pokemon_classifier", *args], capture_output=True, text=True,
                       env=env, timeout=120)
    assert_one_line_error(r.returncode, r.stderr, needle.replace("{T}", str(corpus)), case=case)


def test_predict_contract_for_unreadable_inputs(corpus):
    """predict reports each unreadable file on its own line in the output and goes on; the exit code is
    1 only when every input failed (0 when some were classified)."""
    bad = corpus / "not_an_image.jpg"
    bad.write_text("hello\n")
    code, out, err = run_cli("predict", "--weights", corpus / "good.pt", "--csv", bad)
    assert code == 1 and "Traceback" not in err
    rows = out.strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{bad},") and "not a supported image format" in rows[1]
    assert err.strip() == "1 of 1 inputs could not be read"
    code, out, err = run_cli("predict", "--weights", corpus / "good.pt", "--csv", bad, corpus / "data/images/pikachu001.jpg")
    assert code == 0 and len(out.strip().splitlines()) == 3 and err.strip() == "1 of 2 inputs could not be read"
