"""The story of a clip: segments, the ordered list of Pokemon seen, the headline."""

from pokemon_classifier.video import tell


def _frame(dex, p=0.99):
    if dex is None:
        return {"dex_id": None, "name": "unknown", "probability": 0.3, "unknown": True}
    return {"dex_id": dex, "name": {25: "Pikachu", 6: "Charizard", 94: "Gengar"}[dex], "probability": p, "unknown": False}


def _clip(plan, step=0.5):
    frames = [_frame(d) for d, n in plan for _ in range(n)]
    return [i * step for i in range(len(frames))], frames


def test_three_pokemon_with_blank_fades_tell_their_story_in_order():
    times, frames = _clip([(None, 2), (25, 4), (None, 2), (6, 4), (None, 2), (94, 4), (None, 1)])
    s = tell(times, frames, 0.5)
    assert [p["name"] for p in s["pokemon"]] == ["Pikachu", "Charizard", "Gengar"]
    assert s["pokemon"][0]["ranges"] == [[1.0, 3.0]]
    assert s["pokemon"][2]["ranges"] == [[7.0, 9.0]]
    assert s["headline"] == "Pikachu 1–3 s, Charizard 4–6 s, Gengar 7–9 s"
    assert [g["unknown"] for g in s["segments"]] == [True, False, True, False, True, False, True]


def test_blips_are_dropped_and_short_gaps_merged():
    times, frames = _clip([(25, 4), (94, 1), (25, 3), (None, 1), (25, 2)])
    s = tell(times, frames, 0.5, min_duration=1.0, max_gap=1.0)
    assert [p["name"] for p in s["pokemon"]] == ["Pikachu"]  # the one-frame Gengar is a blip
    assert s["pokemon"][0]["ranges"] == [[0.0, 5.5]]


def test_a_long_gap_gives_two_ranges_of_one_pokemon():
    times, frames = _clip([(25, 3), (None, 6), (25, 3)])
    s = tell(times, frames, 0.5)
    assert s["pokemon"][0]["ranges"] == [[0.0, 1.5], [4.5, 6.0]]
    assert s["headline"] == "Pikachu 0–1.5 s, 4.5–6 s"


def test_nothing_confident_says_so():
    times, frames = _clip([(None, 10)])
    s = tell(times, frames, 0.5)
    assert s["pokemon"] == [] and s["headline"] == "no Gen-1 Pokémon found"


def test_one_frame_clip_is_not_a_blip():
    s = tell([0.0], [_frame(25)], 0.5)
    assert [p["name"] for p in s["pokemon"]] == ["Pikachu"]
    assert s["pokemon"][0]["probability"] == 0.99


# ------------------------------------------------------------ generated clips, end to end

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pokemon_classifier import pokedex  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

COLOURS = {25: (250, 220, 30), 6: (240, 120, 20), 94: (110, 60, 150)}


def _oracle():
    """A stand-in network that knows three colours: decoding, sampling, batching and the story are
    what is under test here (the models are tested elsewhere). Dark or unfamiliar frames give flat
    logits, i.e. an unknown verdict."""
    ids = list(pokedex.IDS)
    mean, std = torch.tensor([0.5] * 3), torch.tensor([0.5] * 3)

    def run(x):
        rgb = ((x.mean((2, 3)) * std + mean) * 255).numpy()
        logits = np.zeros((len(x), len(ids)), np.float32)
        for i, c in enumerate(rgb):
            d = {dex: np.abs(c - np.array(col)).max() for dex, col in COLOURS.items()}
            dex = min(d, key=d.get)
            if d[dex] < 40:
                logits[i, ids.index(dex)] = 12.0
        return logits, None

    pre = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "crop_pct": 1.0}
    return Classifier(run, {"class_ids": ids, "preprocessing": pre, "unknown_threshold": 0.5})


def _write_clip(path, plan, fps=10, size=64):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for colour, seconds in plan:
            a = np.zeros((size, size, 3), np.uint8)
            a[:] = colour
            for _ in range(int(round(seconds * fps))):
                for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_three_pokemon_with_black_fades_in_a_real_clip(tmp_path):
    black = (0, 0, 0)
    v = _write_clip(tmp_path / "three.mp4", [(COLOURS[25], 2), (black, 1), (COLOURS[6], 2), (black, 1), (COLOURS[94], 2)])
    r = _oracle().predict_video(v, fps=2)
    assert [p["name"] for p in r["pokemon"]] == ["Pikachu", "Charizard", "Gengar"]
    assert all(p["probability"] > 0.9 for p in r["pokemon"])
    assert r["pokemon"][1]["ranges"] == [[3.0, 5.0]]
    assert r["headline"] == "Pikachu 0–2 s, Charizard 3–5 s, Gengar 6–8 s"
    assert r["overall"]["unknown"]  # the old verdict: the mean of every frame is not confident


def test_one_pokemon_only(tmp_path):
    v = _write_clip(tmp_path / "one.mp4", [(COLOURS[94], 3)])
    r = _oracle().predict_video(v, fps=2)
    assert r["headline"] == "Gengar 0–3 s" and len(r["segments"]) == 1


def test_a_clip_of_noise_finds_no_pokemon(tmp_path):
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    with av.open(str(tmp_path / "noise.mp4"), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for _ in range(30):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), format="rgb24")
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    r = _oracle().predict_video(tmp_path / "noise.mp4", fps=2)
    assert r["pokemon"] == [] and r["headline"] == "no Gen-1 Pokémon found"


def test_a_one_frame_clip(tmp_path):
    v = _write_clip(tmp_path / "single.mp4", [(COLOURS[25], 0.1)])
    r = _oracle().predict_video(v, fps=2)
    assert r["frames"] == 1 and [p["name"] for p in r["pokemon"]] == ["Pikachu"]


# ------------------------------------------------------------------ the one sampler
def _plain_clip(path, w=128, h=96, seconds=1.0, fps=10):
    import numpy as np

    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            a = np.full((h, w, 3), 40 + 20 * i, dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_predict_and_the_app_use_the_one_sampler(tmp_path, monkeypatch):
    from pokemon_classifier import predict, serving, video

    v = _plain_clip(tmp_path / "v.mp4")
    calls = []
    real = video.sample_frames

    def spy(src, fps, **kw):
        calls.append((type(src).__name__, fps, kw.get("min_side")))
        return real(src, fps, **kw)

    monkeypatch.setattr(video, "sample_frames", spy)
    a = list(predict.iter_video_frames(v, 2.0, min_side=40))
    b = list(serving.video_frames(v.read_bytes(), 2.0, 60, 100, min_side=40))
    assert calls == [("PosixPath", 2.0, 40), ("bytes", 2.0, 40)]
    assert [t for t, _ in a] == [t for t, _ in b] == [0.0, 0.5]
    assert all(np.array_equal(np.asarray(f), np.asarray(g)) for (_, f), (_, g) in zip(a, b))


def test_large_frames_are_shrunk_as_they_are_decoded(tmp_path):
    from pokemon_classifier.video import reduced_size, sample_frames

    v = _plain_clip(tmp_path / "v.mp4", 128, 96)
    assert [f.size for _, f in sample_frames(v, 2.0, min_side=40)] == [(53, 40)] * 2  # 96 >= 2 x 40
    assert [f.size for _, f in sample_frames(v, 2.0, min_side=49)] == [(128, 96)] * 2  # 96 < 2 x 49: as decoded
    assert [f.size for _, f in sample_frames(v, 2.0)] == [(128, 96)] * 2
    assert reduced_size(3840, 2160, 238) == (423, 238) and reduced_size(2160, 3840, 238) == (238, 423)
    # the model's own resize of the shrunk frame is then a no-op: same size torchvision computes
    import torch
    from torchvision.transforms import v2 as T

    assert T.Resize(238)(torch.zeros(3, 2160, 3840, dtype=torch.uint8)).shape[1:] == (238, 423)


def test_shrunk_frame_keeps_the_picture(tmp_path):
    """Shrinking at decode is area averaging: the frame looks like the full frame resized."""
    from PIL import Image

    from pokemon_classifier.video import sample_frames

    v = _plain_clip(tmp_path / "v.mp4", 128, 96)
    (_, full), = list(sample_frames(v, 1.0))[:1]
    (_, small), = list(sample_frames(v, 1.0, min_side=40))[:1]
    ref = np.asarray(full.resize(small.size, Image.BICUBIC), dtype=float)
    assert np.abs(np.asarray(small, dtype=float) - ref).mean() < 3
