import numpy as np
import pytest
import torch

from pokemon_classifier.data import ImageDataset, TensorDataset8, build_cache
from pokemon_classifier.errors import UserError
from pokemon_classifier.models import preprocessing
from pokemon_classifier.presets import eval_tensor_transform, eval_transform


def test_dataset_items_and_labels(synth_data):
    pre = preprocessing("mobilenet_v3_small", 64)
    ds = ImageDataset(synth_data, eval_transform(pre))
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert y == ds.df["pokemon_id"][0] - 1


def test_missing_files_listed_at_construction(synth_data):
    for n in ("abra001.jpg", "mew003.jpg"):
        (synth_data / "images" / n).unlink()
    with pytest.raises(UserError) as e:
        ImageDataset(synth_data)
    assert "abra001.jpg" in str(e.value) and "mew003.jpg" in str(e.value) and "2 images" in str(e.value)


def test_path_escape_rejected(synth_data):
    (synth_data / "annotations.csv").write_text("img_name,pokemon_id\n../../secret.jpg,1\n")
    with pytest.raises(UserError, match="inside images/"):
        ImageDataset(synth_data)


def test_cache_matches_direct_pipeline_and_is_reused(synth_data, tmp_path):
    from pokemon_classifier.annotations import read_annotations

    pre = preprocessing("efficientnet_lite0", 48)
    df = read_annotations(synth_data)
    a = build_cache(synth_data, df, pre, workers=1, root=tmp_path / "c", progress=False)
    assert a.dtype == np.uint8 and a.shape == (len(df), 3, 55, 55)
    files = list((tmp_path / "c").glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = build_cache(synth_data, df, pre, workers=1, root=tmp_path / "c", progress=False)
    assert np.array_equal(a, b) and files[0].stat().st_mtime_ns == mtime
    # cached eval tensor == PIL eval pipeline (same geometry), up to resize rounding
    ds_cached = TensorDataset8(a, df["pokemon_id"] - 1, eval_tensor_transform(pre))
    ds_direct = ImageDataset(synth_data, eval_transform(pre), df)
    assert (ds_cached[3][0] - ds_direct[3][0]).abs().mean() < 0.05


def test_cache_write_is_atomic(synth_data, tmp_path, monkeypatch):
    """A crash while the cache is written leaves neither a truncated .npy nor a temp file behind."""
    import numpy as np

    from pokemon_classifier.annotations import read_annotations
    from pokemon_classifier.models import preprocessing

    df = read_annotations(synth_data)
    real = np.save

    def dying_save(f, arr, *a, **k):
        f.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        build_cache(synth_data, df, preprocessing("mobilenet_v3_small", 32), root=tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []
    monkeypatch.setattr(np, "save", real)
    a = build_cache(synth_data, df, preprocessing("mobilenet_v3_small", 32), root=tmp_path / "c", progress=False)
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".npy"] and a.shape[0] == len(df)
