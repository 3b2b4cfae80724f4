"""Training on a tiny synthetic set: learns, best != last, resume == uninterrupted, DDP, errors."""

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from helpers import assert_one_line_error, run_cli, stale_temp_files, wait_for_line

FAST = ["--arch", "mobilenet_v3_small", "--img-size", "32", "--batch-size", "16", "--no-progress",
        "--threads", "1"]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_three_epochs_learn_well_above_chance(synth_session, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", "--data", synth_session, "--out", out, "--arch", "efficientnet_lite0",
                                "--pretrained", "--img-size", "64", "--epochs", "3", "--batch-size", "16",
                                "--freeze", "2", "--no-progress", "--lr", "0.003")
    assert code == 0, err
    m = pd.read_csv(out / "metrics.csv")
    assert list(m["epoch"]) == [1, 2, 3]
    assert m["val_acc"].max() >= 0.6  # chance is 1/6
    for f in ("best.pt", "last.pt", "curves.png", "splits.csv"):
        assert (out / f).stat().st_size > 0
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    for key in ("arch", "class_ids", "names", "preprocessing", "metrics", "args", "data_fingerprint", "versions"):
        assert key in ck
    assert ck["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and ck["preprocessing"]["size"] == 64
    assert ck["metrics"]["val_loss"] == m["val_loss"].min()
    assert "optimizer" not in ck
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert {"optimizer", "scheduler", "epoch", "rng"} <= set(last)
    # the split made on the fly is group-aware: planted duplicates stay together
    sp = pd.read_csv(out / "splits.csv").set_index("img_name")["split"]
    assert sp["pikachu017.jpg"] == sp["pikachu001.jpg"]


def test_best_is_a_true_copy_not_the_last_epoch(synth_data, tmp_path, monkeypatch):
    """The original stored model.state_dict() without copying, so its 'best' held the last weights."""
    from pokemon_classifier import train

    real = train.evaluate
    losses = iter([1.0, 0.5, 2.0])

    def fake_eval(*a, **k):
        r = real(*a, **k)
        r["val_loss"] = next(losses)
        return r

    monkeypatch.setattr(train, "evaluate", fake_eval)
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "a", "--epochs", "3", *FAST)
    assert code == 0, err
    monkeypatch.setattr(train, "evaluate", real)
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "b", "--epochs", "2", *FAST)
    assert code == 0, err
    best_a, last_a, last_b = (_weights(tmp_path / p) for p in ("a/best.pt", "a/last.pt", "b/last.pt"))
    assert torch.load(tmp_path / "a/best.pt", weights_only=True)["epoch"] == 2
    assert _same(best_a, last_b)  # epoch-2 weights, bit for bit (CPU runs are repeatable)
    assert not _same(best_a, last_a)


def test_a_run_sweeps_only_its_own_stale_temp_files(synth_data, tmp_path):
    """A killed run's ".last.pt.XXXXXXXX.tmp" goes; a user's `.notes.tmp` and look-alikes stay (the
    run used to delete every `.*.tmp` in --out)."""
    out = tmp_path / "run"
    swept = stale_temp_files([out / ".last.pt.k3j_x9ab.tmp", out / ".metrics.csv.a1b2c3d4.tmp"],
                             [out / ".notes.tmp", out / ".last.pt.tmp", out / ".mine.csv.a1b2c3d4.tmp"])
    code, _, err = run_cli("train", "--data", synth_data, "--out", out, "--epochs", "1", "--max-batches", "1", *FAST)
    assert code == 0, err
    assert swept()


def _train_cmd(data, out, epochs, extra=()):
    return [sys.executable, "-m", "pokemon_classifier", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), *FAST, *extra]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(synth_data, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = tmp_path / "killed"
    # slow the epochs down so the kill lands mid-epoch 2 (one thread, small batches)
    slow = ["--batch-size", "4", "--img-size", "64"]
    p = subprocess.Popen(_train_cmd(synth_data, out, 3, slow), env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        # the epoch line is printed after epoch 1's last.pt, metrics and curves are written: epoch 2 has begun
        wait_for_line(p, "epoch 1/3:", timeout=300)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1  # killed in epoch 2
    # resume continues with the run's own recipe; compare against an uninterrupted run of it
    ref4 = subprocess.run(_train_cmd(synth_data, tmp_path / "ref4", 3, slow), env=env,
                          capture_output=True, text=True)
    assert ref4.returncode == 0
    res = subprocess.run([sys.executable, "-m", "pokemon_classifier", "train", "--resume", str(out / "last.pt"),
                          "--no-progress", "--threads", "1"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resumed" in res.stdout
    assert _same(_weights(out / "last.pt"), _weights(tmp_path / "ref4" / "last.pt"))
    assert len(pd.read_csv(out / "metrics.csv")) == 3
    assert not list(out.glob(".*.tmp"))  # temp files of a killed run are swept on resume


def test_resume_with_more_epochs_extends_a_finished_run(synth_data, tmp_path):
    """2 epochs, then --resume --epochs 3 == 3 epochs straight (the LR schedule just continues)."""
    for out, n in (("short", "2"), ("ref", "3")):
        code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / out, "--epochs", n, *FAST)
        assert code == 0, err
    code, _, err = run_cli("train", "--resume", tmp_path / "short" / "last.pt", cwd=tmp_path)
    assert code == 2 and "already finished its 2 epochs" in err and "--epochs" in err
    # a moved (here: copied) run folder goes on where it is now, not where it was trained
    import shutil

    shutil.copytree(tmp_path / "short", tmp_path / "moved")
    code, out, err = run_cli("train", "--resume", tmp_path / "moved" / "last.pt", "--epochs", "3", "--no-progress",
                             cwd=tmp_path)
    assert code == 0, err
    assert "resumed" in out and "epoch 3/3" in out
    assert _same(_weights(tmp_path / "moved" / "last.pt"), _weights(tmp_path / "ref" / "last.pt"))
    assert len(pd.read_csv(tmp_path / "moved" / "metrics.csv")) == 3
    assert len(pd.read_csv(tmp_path / "short" / "metrics.csv")) == 2  # the original is untouched


def test_ddp_two_gloo_processes(synth_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "pokemon_classifier", "train", "--data", str(synth_data), "--out", str(out), "--epochs", "2",
           "--device", "cpu", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "best.pt").is_file() and len(list(out.glob("*.pt"))) == 2
    m = pd.read_csv(out / "metrics.csv")
    assert len(m) == 2 and m["val_n"].iloc[0] == (pd.read_csv(out / "splits.csv")["split"] == "val").sum()


@pytest.mark.parametrize("args,msg", [
    (["--out", "x"], "--data"), (["--data", "nowhere", "--out", "x"], "annotations.csv"),
    (["--resume", "missing.pt"], "not found"),
])
def test_user_errors(tmp_path, args, msg):
    code, _, err = run_cli("train", *args, cwd=tmp_path)
    assert code == 2 and msg in err and "Traceback" not in err


def test_micro_batches_give_the_same_update_as_the_full_batch():
    """Gradient accumulation over micro-batches == one step on the whole batch (no BatchNorm here)."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from pokemon_classifier.train import EpochOptions, train_one_epoch

    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 4, 4), torch.randint(0, 5, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    results = []
    for micro in (None, 16):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        m = train_one_epoch(model, loader, nn.CrossEntropyLoss(), opt, torch.device("cpu"),
                            EpochOptions(progress=False, micro_batch=micro))
        results.append((model[1].weight.detach().clone(), m["train_loss"]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)


def test_config_file_sets_options_and_flags_win(tmp_path):
    from pathlib import Path

    from pokemon_classifier.cli import build_parser, with_config

    def parse_args(argv):  # what `pokemon-classifier train ARGV` reads (cli.main, the path users run)
        argv = ["train", *argv]
        parser = build_parser("train")
        return with_config(parser, parser.parse_args(argv), argv)

    repo = Path(__file__).resolve().parents[1]
    args = parse_args(["--config", str(repo / "configs" / "shipped.yaml"), "--augment", "retro"])
    assert (args.arch, args.pretrained, args.img_size, args.freeze, args.epochs) == ("efficientnet_lite0", True, 192, 2, 10)
    assert args.lr == 5e-4 and args.label_smoothing == 0.1 and args.augment == "retro"  # the flag won
    # a flag equal to its parser default still wins over the YAML (the shipped YAML says style)
    args = parse_args(["--config", str(repo / "configs" / "shipped.yaml"), "--augment", "light", "--lr", "1e-3"])
    assert args.augment == "light" and args.lr == 1e-3 and args.arch == "efficientnet_lite0"
    (tmp_path / "c.yaml").write_text("data: somewhere\nepochs: 3\n")
    args = parse_args(["--config", str(tmp_path / "c.yaml"), "--epochs", "25"])
    assert args.data == Path("somewhere") and args.epochs == 25
    (tmp_path / "bad.yaml").write_text("learning_rate: 0.1\n")
    code, _, err = run_cli("train", "--config", tmp_path / "bad.yaml", "--data", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and "unknown option 'learning_rate'" in err
    (tmp_path / "bad2.yaml").write_text("augment: sparkles\n")
    code, _, err = run_cli("train", "--config", tmp_path / "bad2.yaml", "--data", tmp_path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "augment: 'sparkles' is not one of")


def test_config_through_the_cli_flag_equal_to_default_wins(synth_data, tmp_path):
    """The same through `pokemon-classifier train`: the YAML says style, the flag says light (the default)."""
    (tmp_path / "c.yaml").write_text("augment: style\nepochs: 1\nmax_batches: 0\n")
    code, _, err = run_cli("train", "--config", tmp_path / "c.yaml", "--data", synth_data, "--out", tmp_path / "o",
                           "--augment", "light", *FAST)
    assert code == 0, err
    ck = torch.load(tmp_path / "o" / "best.pt", weights_only=True)
    assert ck["args"]["augment"] == "light" and ck["args"]["epochs"] == 1


def test_shipped_config_is_the_recipe_of_the_shipped_model():
    """configs/shipped.yaml must not drift from what best.pt (or each run in its soup) was trained with.

    The runs of the soup differ only in --augment and --epochs (MODEL_CARD.md gives each command)."""
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    if not (repo / "best.pt").is_file():
        pytest.skip("no best.pt")
    cfg = yaml.safe_load((repo / "configs" / "shipped.yaml").read_text())
    ck = torch.load(repo / "best.pt", map_location="cpu", weights_only=True)
    runs = [s["args"] for s in ck.get("soup", [])] or [ck["args"]]
    for run in runs:
        differing = {k: (v, run.get(k)) for k, v in cfg.items() if k not in ("augment", "epochs") and run.get(k) != v}
        assert not differing, differing


def test_max_batches_stops_before_loading_the_next_batch():
    """train_one_epoch(max_batches=n) trains on n batches and loads no more (the benchmark times it)."""
    from pokemon_classifier.train import EpochOptions, train_one_epoch

    loaded = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            loaded.append(i)
            return torch.randn(3, 8, 8), i % 2

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    loader = torch.utils.data.DataLoader(Counting(), batch_size=4)
    m = train_one_epoch(model, loader, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), 0.1),
                        torch.device("cpu"), EpochOptions(progress=False, max_batches=3, micro_batch=2))
    assert len(loaded) == 12 and m["img_per_s"] > 0


def test_init_seed_fixes_the_initial_weights_whatever_the_seed(synth_data, tmp_path):
    """--init-seed: same starting weights for soup ingredients that differ in --seed (no batch trained here)."""
    def init_weights(name, *seed):
        code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / name, "--epochs", "1",
                               "--max-batches", "0", *seed, *FAST)
        assert code == 0, err
        return _weights(tmp_path / name / "best.pt")

    a = init_weights("a", "--seed", "1", "--init-seed", "0")
    b = init_weights("b", "--seed", "2", "--init-seed", "0")
    c = init_weights("c", "--seed", "1")
    zero = init_weights("zero", "--seed", "0")
    assert _same(a, b) and _same(a, zero)
    assert not _same(a, c)


def test_init_fine_tunes_from_a_checkpoint_and_refuses_a_mismatch(synth_data, tmp_path):
    """--init: the run starts from another checkpoint's weights (whatever the seed), and says where from."""
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "a", "--epochs", "1",
                           "--max-batches", "2", "--seed", "1", *FAST)
    assert code == 0, err
    src = tmp_path / "a" / "last.pt"
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "b", "--epochs", "1",
                           "--max-batches", "0", "--seed", "2", "--init", src, *FAST)
    assert code == 0, err
    assert _same(_weights(tmp_path / "b" / "best.pt"), _weights(src))
    ck = torch.load(tmp_path / "b" / "best.pt", map_location="cpu", weights_only=True)
    assert ck["init"]["file"] == str(src) and len(ck["init"]["sha256"]) == 64
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "c", "--epochs", "1", "--max-batches", "0",
                           "--init", src, *[a if a != "mobilenet_v3_small" else "efficientnet_lite0" for a in FAST])
    assert code == 2 and "--init" in err and "mobilenet_v3_small" in err and "Traceback" not in err
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "d", "--init", tmp_path / "nope.pt", *FAST)
    assert code == 2 and "nope.pt" in err and "not found" in err
    assert ck["args"]["pretrained"] is False  # with --init, no ImageNet weights are loaded (whatever a config says)
    code, _, err = run_cli("train", "--resume", tmp_path / "b" / "last.pt", "--init", src, "--epochs", "2")
    assert code == 2 and "--init" in err and "drop --init" in err and "Traceback" not in err


def test_checkpoints_have_a_version_one_epoch_convention_and_the_real_split(synth_data, tmp_path):
    run_cli("split", synth_data, "--random")
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "r", "--epochs", "1",
                           "--max-batches", "1", *FAST)
    assert code == 0, err
    best, last = (torch.load(tmp_path / "r" / f, weights_only=True) for f in ("best.pt", "last.pt"))
    assert best["version"] == last["version"] == 2
    assert best["epoch"] == last["epoch"] == 1  # both count epochs completed
    assert best["split"] == last["split"] == "random" and best["split_file"] == str(synth_data / "splits.csv")
    (synth_data / "splits.csv").unlink()  # no split file: one is made group-aware into OUT
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "g", "--epochs", "1",
                           "--max-batches", "1", *FAST)
    assert code == 0, err
    g = torch.load(tmp_path / "g" / "best.pt", weights_only=True)
    assert g["split"] == "group-aware" and g["split_file"] == str(tmp_path / "g" / "splits.csv")
    pd.read_csv(tmp_path / "g" / "splits.csv")[["img_name", "split"]].to_csv(tmp_path / "own.csv", index=False)
    code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / "o", "--epochs", "1",
                           "--max-batches", "1", "--splits", tmp_path / "own.csv", *FAST)
    assert code == 0, err
    assert torch.load(tmp_path / "o" / "best.pt", weights_only=True)["split"] == "unknown"  # a file of unknown making


def test_resume_restores_the_saved_rng_and_reads_version_1_files(synth_data, tmp_path, monkeypatch):
    from pokemon_classifier import train

    for out, n in (("short", "2"), ("ref", "3")):
        code, _, err = run_cli("train", "--data", synth_data, "--out", tmp_path / out, "--epochs", n, *FAST)
        assert code == 0, err
    saved = torch.load(tmp_path / "short" / "last.pt", weights_only=True)
    # the generators' state when the first resumed epoch starts is the saved one
    seen = []
    real_seed = train.seed_epoch
    monkeypatch.setattr(train, "seed_epoch", lambda *a: (seen.append(torch.get_rng_state()), real_seed(*a)))
    code, _, err = run_cli("train", "--resume", tmp_path / "short" / "last.pt", "--epochs", "3", "--no-progress")
    assert code == 0, err
    assert torch.equal(seen[0], saved["rng"]["torch"])
    assert _same(_weights(tmp_path / "short" / "last.pt"), _weights(tmp_path / "ref" / "last.pt"))
    # a version-1 last.pt (0-based epoch, torch + numpy keys only) resumes the same way
    v1 = {k: v for k, v in saved.items() if k != "version"}
    v1["epoch"] = saved["epoch"] - 1
    v1["rng"] = {"torch": saved["rng"]["torch"], "numpy_keys": saved["rng"]["numpy_keys"]}
    (tmp_path / "old").mkdir()
    torch.save(v1, tmp_path / "old" / "last.pt")
    code, out, err = run_cli("train", "--resume", tmp_path / "old" / "last.pt", "--epochs", "3", "--no-progress")
    assert code == 0, err
    assert "at epoch 3/3" in out
    assert _same(_weights(tmp_path / "old" / "last.pt"), _weights(tmp_path / "ref" / "last.pt"))
    assert train.epochs_completed(torch.load(tmp_path / "old" / "last.pt", weights_only=True)) == 3


def test_ddp_micro_batches_sync_only_on_the_last_chunk():
    """Under DDP, backward() of every chunk but the last runs in no_sync(): one all-reduce per batch."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from pokemon_classifier.train import EpochOptions, train_one_epoch

    class CountingDDP(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
            self.synced, self.unsynced = 0, 0
            self._in_no_sync = False

        def forward(self, x):
            return self.inner(x)

        def no_sync(self):
            import contextlib

            @contextlib.contextmanager
            def ctx():
                self._in_no_sync = True
                yield
                self._in_no_sync = False
            return ctx()

    model = CountingDDP()
    model.inner[1].weight.register_hook(lambda g: setattr(
        model, "unsynced" if model._in_no_sync else "synced", getattr(model, "unsynced" if model._in_no_sync else "synced") + 1))
    x, y = torch.randn(128, 3, 4, 4), torch.randint(0, 5, (128,))
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    train_one_epoch(model, loader, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    torch.device("cpu"), EpochOptions(progress=False, micro_batch=16))
    assert (model.synced, model.unsynced) == (2, 6)  # 2 batches of 4 chunks: the last chunk of each syncs


def test_resume_rebuilds_metrics_and_curves_that_lag_last_pt(synth_data, tmp_path, monkeypatch):
    """A kill between last.pt and metrics.csv leaves them an epoch behind: --resume rewrites both from
    the checkpoint's history before it trains on (here it is interrupted at once, as by another kill)."""
    from pokemon_classifier import train

    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", synth_data, "--out", out, "--epochs", "2", *FAST)
    assert code == 0, err
    full = pd.read_csv(out / "metrics.csv")
    full.head(1).to_csv(out / "metrics.csv", index=False)  # what a kill right after last.pt leaves
    (out / "curves.png").unlink()

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_one_epoch", killed)
    code, _, err = run_cli("train", "--resume", out / "last.pt", "--epochs", "3", "--no-progress")
    assert code == 130
    assert len(pd.read_csv(out / "metrics.csv")) == 2 and (out / "curves.png").stat().st_size > 1000


def test_outlier_exposure_loss_is_plain_cross_entropy_without_negatives_and_pulls_them_to_uniform():
    from torch import nn

    from pokemon_classifier.train import OutlierExposureLoss

    torch.manual_seed(0)
    out, y = torch.randn(8, 151), torch.randint(0, 151, (8,))
    oe = OutlierExposureLoss(label_smoothing=0.1, weight=0.5)
    assert torch.allclose(oe(out, y), nn.CrossEntropyLoss(label_smoothing=0.1)(out, y), atol=1e-6)
    # a negative with a uniform answer costs nothing; a confident one costs, and its gradient flattens it
    assert oe(torch.zeros(1, 151), torch.tensor([-1])).item() == pytest.approx(0.0, abs=1e-5)
    sharp = torch.zeros(1, 151)
    sharp[0, 3] = 8.0
    sharp.requires_grad_(True)
    loss = oe(sharp, torch.tensor([-1]))
    loss.backward()
    assert loss.item() > 1 and sharp.grad[0, 3] > 0 and (sharp.grad[0, :3] < 0).all()
    mixed = oe(torch.cat([out, sharp.detach()]), torch.cat([y, torch.tensor([-1])]))
    assert mixed.item() == pytest.approx((oe(out, y).item() * 8 + loss.item()) / 9, rel=1e-5)


def test_train_with_negatives_reads_only_their_tuning_half(synth_data, tmp_path):
    import numpy as np
    from PIL import Image

    from pokemon_classifier.openset import read_negatives

    neg = tmp_path / "neg"
    (neg / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(neg / "images" / f"photo{i:02d}.jpg")
    (neg / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", "--data", synth_data, "--out", out, *FAST, "--epochs", "1",
                                "--negatives", neg, "--max-batches", "2")
    assert code == 0, err
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    table = read_negatives(neg)
    tune = table[table["half"] == "tune"]
    readable = int((tune["img_name"] != "broken.jpg").sum())
    assert 0 < readable < len(table) - 1  # the reporting half is never read
    assert ck["outlier_exposure"]["n"] == readable and ck["args"]["negatives"] == str(neg)
    assert "outlier exposure:" in stdout
    if "broken.jpg" in set(tune["img_name"]):
        assert "broken.jpg: skipped" in stdout
