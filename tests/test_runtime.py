"""runtime: one meaning of --device everywhere, worker counts, the cache folder."""

import pytest
import torch

from helpers import run_cli, tiny_checkpoint
from pokemon_classifier.errors import UserError
from pokemon_classifier.runtime import cache_dir, default_workers, loader_workers, pick_device

NO_CUDA = not torch.cuda.is_available()


def test_pick_device_names():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    if NO_CUDA and not torch.backends.mps.is_available():
        assert pick_device("auto") == torch.device("cpu")
    for bogus in ("gpu", "cuda:x", "tpu", "meta"):
        with pytest.raises(UserError, match=rf"^--device {bogus}: not a device"):
            pick_device(bogus)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_user_error():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match=rf"^--device {name}: CUDA is not available"):
            pick_device(name)
    with pytest.raises(UserError, match="^--weights-device cuda:"):
        pick_device("cuda", flag="--weights-device")


@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_cuda_index_checked():
    assert pick_device("cuda").type == "cuda"
    with pytest.raises(UserError, match="CUDA device"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("cmd", ["evaluate", "calibrate", "predict", "train"])
def test_every_command_rejects_a_bogus_device_in_one_line(cmd, synth_data, tmp_path):
    ck = tiny_checkpoint(tmp_path / "t.pt")
    args = {"evaluate": ["--weights", ck, "--data", synth_data],
            "calibrate": ["--weights", ck, "--data", synth_data],
            "predict": ["--weights", ck, synth_data / "images"],
            "train": ["--data", synth_data, "--out", tmp_path / "run", "--epochs", "1"]}[cmd]
    code, out, err = run_cli(cmd, *args, "--device", "gpu7")
    assert code == 2 and err.strip() == "error: --device gpu7: not a device (choose auto, cpu, cuda, cuda:N or mps " \
                                        "(auto: the first GPU, else mps, else cpu))", err


def test_classifier_load_goes_through_pick_device(tmp_path):
    from pokemon_classifier.predict import Classifier

    ck = tiny_checkpoint(tmp_path / "t.pt")
    assert Classifier.load(ck, device="cpu").predict_tensors(torch.zeros(1, 3, 32, 32), 1)[0]["dex_id"] in range(1, 152)
    with pytest.raises(UserError, match="^--device gpu7: not a device"):
        Classifier.load(ck, device="gpu7")


def test_workers_and_cache(monkeypatch, tmp_path):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers() == 2 and loader_workers() == 0
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_workers() == 8 and loader_workers() == 8
    monkeypatch.setenv("POKEMON_CLASSIFIER_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    from pokemon_classifier import annotations, data

    assert annotations.default_workers is default_workers and data.cache_dir is cache_dir  # old homes re-export


def test_number_types_refuse_zero_nan_inf_and_junk():
    import argparse

    from pokemon_classifier.runtime import (finite_float, fraction, nonnegative_float, nonnegative_int, positive_float,
                                            positive_int)

    assert positive_int("3") == 3 and nonnegative_int("0") == 0 and positive_float("1e-3") == 1e-3
    assert nonnegative_float("0") == 0.0 and finite_float("-2.5") == -2.5 and fraction("1") == 1.0
    for fn, bad in ((positive_int, "0"), (positive_int, "-1"), (positive_int, "1.5"), (positive_int, "x"),
                    (nonnegative_int, "-1"), (positive_float, "0"), (positive_float, "nan"), (positive_float, "inf"),
                    (nonnegative_float, "-0.1"), (finite_float, "nan"), (finite_float, "-inf"), (fraction, "1.01"),
                    (fraction, "nan")):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            fn(bad)


def test_out_paths_are_checked_at_parse_time(tmp_path):
    import argparse

    from pokemon_classifier.fileio import out_dir, out_file

    (tmp_path / "f").write_text("x")
    assert out_file(tmp_path / "new" / "a.csv") == tmp_path / "new" / "a.csv"
    assert out_dir(tmp_path / "new") == tmp_path / "new" and out_dir(tmp_path) == tmp_path
    for fn, bad, msg in ((out_file, tmp_path, "is a folder"), (out_dir, tmp_path / "f", "is a file"),
                         (out_file, tmp_path / "f" / "x" / "a.csv", "is a file, not a folder"),
                         (out_dir, tmp_path / "f" / "sub", "is a file, not a folder")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            fn(str(bad))


def test_cli_error_line_never_empty_never_two_lines():
    from pokemon_classifier.cli import one_line

    assert one_line(EOFError()) == "EOFError"
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line("") == "unknown error"
