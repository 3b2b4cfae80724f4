import json

import pandas as pd
import torch

from helpers import assert_one_line_error, run_cli, tiny_checkpoint
from pokemon_classifier.models import load_checkpoint
from pokemon_classifier.soup import average


def _ckpt(path, seed, **extra):
    """tiny_checkpoint with other weights (a different seed) and extra meta."""
    tiny_checkpoint(path, 32, **extra)
    ck = torch.load(path, weights_only=True)
    torch.manual_seed(seed)
    ck["model"] = {k: (v + torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in ck["model"].items()}
    torch.save(ck, path)
    return path


def test_average_is_the_mean_of_float_tensors_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    s = average([a, b])
    assert torch.equal(s["w"], torch.tensor([2.0, 4.0])) and s["n"].item() == 5


def test_uniform_soup_loads_and_predicts(tmp_path):
    a = _ckpt(tmp_path / "a.pt", 1, temperature=0.5, unknown_threshold=0.7, args={"lr": 1e-3})
    b = _ckpt(tmp_path / "b.pt", 2)
    code, out, err = run_cli("soup", a, b, "--out", tmp_path / "soup.pt")
    assert code == 0, err
    assert "uniform" in out
    model, meta = load_checkpoint(tmp_path / "soup.pt")
    sa, sb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    k = next(k for k, v in sa.items() if v.is_floating_point() and v.numel() > 10)
    assert torch.allclose(model.state_dict()[k], (sa[k] + sb[k]) / 2, atol=1e-6)
    # calibration belongs to one model, not to the soup: dropped so that `calibrate` is run again
    assert meta["temperature"] == 1.0 and "unknown_threshold" not in meta
    assert [i["path"] for i in meta["soup"]] == [str(a), str(b)] and len(meta["soup"][0]["sha256"]) == 64
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 151)


def test_greedy_soup_scores_on_val(synth_data, tmp_path):
    run_cli("split", synth_data)
    paths = [_ckpt(tmp_path / f"{i}.pt", i) for i in range(3)]
    code, out, err = run_cli("soup", *paths, "--data", synth_data, "--out", tmp_path / "soup.pt", "--no-progress")
    assert code == 0, err
    assert out.count("val top-1") == 4 and "soup of" in out
    ck = torch.load(tmp_path / "soup.pt", weights_only=True)
    n_val = (pd.read_csv(synth_data / "splits.csv")["split"] == "val").sum()
    assert 0 <= ck["metrics"]["val_acc"] <= 1 and 1 <= len(ck["soup"]) <= 3
    # the greedy soup is never worse on val than its best ingredient
    code, out, err = run_cli("evaluate", "--weights", tmp_path / "soup.pt", "--data", synth_data, "--split", "val",
                             "--json")
    r = json.loads(out)
    assert r["n"] == n_val and abs(r["top1"] - ck["metrics"]["val_acc"]) < 1e-9
    best_each = max(json.loads(run_cli("evaluate", "--weights", p, "--data", synth_data, "--split", "val",
                                       "--json")[1])["top1"] for p in paths)
    assert r["top1"] >= best_each


def test_incompatible_or_bad_inputs_are_one_line_errors(tmp_path):
    a = _ckpt(tmp_path / "a.pt", 1)
    big = tiny_checkpoint(tmp_path / "big.pt", 64)
    other = tiny_checkpoint(tmp_path / "other.pt", 32, arch="mobilenet_v3_large")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for args, needle in (([a, other], "arch"), ([a, big], "image size"), ([a], "at least two"),
                         ([a, tmp_path / "junk.pt"], "not a loadable checkpoint"), ([a, tmp_path / "no.pt"], "not found")):
        code, _, err = run_cli("soup", *args, "--out", tmp_path / "s.pt")
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "s.pt").exists()
