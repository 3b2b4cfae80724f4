"""The frames of a clip and its story: which Pokemon appear, in order, and when.

    for t, frame in sample_frames("clip.mp4", fps=2, min_side=238): ...   # the one video sampler
    story = tell(times, frame_results, step=0.5)
    story["headline"]   # "Pikachu 0–2 s, Charizard 2.5–4.5 s" or "no Gen-1 Pokémon found"

sample_frames is used by both `predict` (a file) and the app (an upload in memory): one frame every
1/fps seconds, each shrunk while it is converted to RGB (a 4K frame never becomes a 4K RGB picture
when the model needs 238 px), decoded on one thread (one clip costs at most one core), and held to
the limits (duration, frames, pixels per frame) from the header before any frame is decoded and
again on every frame (headers can lie).

A verdict that averages every frame (blank fades included) says "unknown" for a clip of three
Pokemon each shown perfectly; a story is built from confident frames only: runs of one verdict
become segments, segments shorter than `min_duration` are dropped as blips, runs of one Pokemon
separated by at most `max_gap` seconds of unknown frames are merged, and unknown stretches are
left out of the list.
"""

from __future__ import annotations

import io
import math

import numpy as np

from pokemon_classifier.errors import ImageError


class LimitExceeded(Exception):
    """A video is well-formed but over a configured limit (the app answers 413)."""


def sample_frames(src, fps: float, *, min_side: int | None = None, max_seconds: float = math.inf,
                  max_frames: int | None = None, max_pixels: int | None = None, name: str | None = None):
    """(time in s, PIL RGB frame) every 1/fps seconds of a video file (path) or upload (bytes).

    `min_side`: frames whose shorter side is at least twice this are scaled while converted to RGB
    so that the shorter side is exactly `min_side` (what the model's resize would make of them).
    Raises ImageError (not a video, no stream, decoding failed; prefixed with `name` when given) or
    LimitExceeded (longer than max_seconds, more than max_frames sampled, frames over max_pixels)."""
    import av

    prefix = f"{name}: " if name else ""
    if not (math.isfinite(fps) and fps > 0):
        raise ImageError(f"{prefix}fps must be a positive number, got {fps}")
    try:
        container = av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else str(src), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise ImageError(f"{name}: not a readable video ({_av_reason(e)})" if name else _av_reason(e)) from None
    with container:
        if not container.streams.video:
            raise ImageError(f"{prefix}no video stream")
        stream = container.streams.video[0]
        # One decoding thread: a clip may hold one core, never every core the model needs too.
        stream.codec_context.thread_count = 1
        _check_pixels(stream.codec_context.width or 0, stream.codec_context.height or 0, max_pixels)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if duration is not None and duration > max_seconds:
            raise LimitExceeded(f"video is {duration:.0f} s long; the limit is {max_seconds:g} s")
        # A cap on decoded frames too: a 1000-fps stream costs decoding time even if few are sampled.
        max_decoded = int(max_seconds * 240) + 1 if math.isfinite(max_seconds) else None
        next_t, sampled, decoded = 0.0, 0, 0
        try:
            for frame in container.decode(stream):
                decoded += 1
                _check_pixels(frame.width, frame.height, max_pixels)
                t = float(frame.time) if frame.time is not None else next_t
                if t > max_seconds:
                    raise LimitExceeded(f"video is longer than the limit of {max_seconds:g} s")
                if max_decoded is not None and decoded > max_decoded:
                    raise LimitExceeded(f"video has more than {max_decoded} frames")
                if t + 1e-6 >= next_t:
                    sampled += 1
                    if max_frames is not None and sampled > max_frames:
                        raise LimitExceeded(f"more than {max_frames} frames at {fps:g} fps; lower fps or send a "
                                            "shorter clip")
                    yield t, to_rgb(frame, min_side)
                    next_t += 1.0 / fps
        except av.error.FFmpegError as e:
            raise ImageError(f"{prefix}video decoding failed ({_av_reason(e)})") from None


def reduced_size(w: int, h: int, min_side: int | None) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to `min_side` (torchvision's rounding, so the model's own
    resize is then a no-op) when it is at least twice `min_side`; else (w, h) unchanged."""
    short, long = min(w, h), max(w, h)
    if not min_side or short < 2 * min_side:
        return w, h
    other = int(min_side * long / short)
    return (other, min_side) if w >= h else (min_side, other)


def to_rgb(frame, min_side: int | None = None):
    """A decoded frame -> PIL RGB, scaled in the same pass (swscale, area averaging) when large."""
    w, h = reduced_size(frame.width, frame.height, min_side)
    if (w, h) == (frame.width, frame.height):
        return frame.to_image().convert("RGB")
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_image()


def _check_pixels(w: int, h: int, max_pixels: int | None) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise LimitExceeded(f"video frames are {w}x{h} px; the limit is {max_pixels:,} px per frame")


def _av_reason(e: Exception) -> str:
    # FFmpeg errors carry the file name (here a BytesIO repr) after the message: keep the message only.
    return getattr(e, "strerror", None) or str(e).split(":")[0] or type(e).__name__


def segments_of(times: list[float], frames: list[dict], step: float) -> list[dict]:
    """Consecutive sampled frames with one verdict -> {start, end, name, dex_id, unknown, probability, frames}.

    A frame covers [t, t + step); `probability` is the mean top probability over the run."""
    segs: list[dict] = []
    for t, r in zip(times, frames):
        key = None if r["unknown"] else r["dex_id"]
        if segs and segs[-1]["_key"] == key:
            s = segs[-1]
            s["end"] = t + step
            s["_p"].append(r["probability"])
        else:
            segs.append({"_key": key, "start": float(t), "end": float(t) + step, "name": r["name"],
                         "dex_id": r["dex_id"], "unknown": bool(r["unknown"]), "_p": [r["probability"]]})
    for s in segs:
        s.pop("_key")
        p = s.pop("_p")
        s["probability"] = float(np.mean(p))
        s["frames"] = len(p)
    return segs


def pokemon_seen(segments: list[dict], min_duration: float, max_gap: float) -> list[dict]:
    """The distinct Pokemon of confident segments, in order of first appearance, each with its
    merged time ranges and mean confidence (weighted by frames)."""
    clip = (segments[-1]["end"] - segments[0]["start"]) if segments else 0.0
    # a clip shorter than the minimum still has a story: its one confident run is not a blip
    min_duration = min(min_duration, clip)
    runs = [s for s in segments if not s["unknown"] and s["end"] - s["start"] >= min_duration - 1e-9]
    merged: list[dict] = []
    for s in runs:
        last = merged[-1] if merged else None
        if last and last["dex_id"] == s["dex_id"] and s["start"] - last["end"] <= max_gap + 1e-9:
            last["end"] = s["end"]
            last["_w"] += [(s["probability"], s["frames"])]
        else:
            merged.append({"dex_id": s["dex_id"], "name": s["name"], "start": s["start"], "end": s["end"],
                           "_w": [(s["probability"], s["frames"])]})
    seen: dict[int, dict] = {}
    for m in merged:
        e = seen.setdefault(m["dex_id"], {"dex_id": m["dex_id"], "name": m["name"], "ranges": [], "_w": []})
        e["ranges"].append([round(m["start"], 3), round(m["end"], 3)])
        e["_w"] += m.pop("_w")
    out = []
    for e in seen.values():
        w = e.pop("_w")
        e["probability"] = float(sum(p * n for p, n in w) / sum(n for _, n in w))
        e["seconds"] = round(sum(b - a for a, b in e["ranges"]), 3)
        out.append(e)
    return out


def _secs(t: float) -> str:
    return f"{t:.1f}".rstrip("0").rstrip(".")


def headline(pokemon: list[dict]) -> str:
    if not pokemon:
        return "no Gen-1 Pokémon found"
    parts = []
    for p in pokemon:
        ranges = ", ".join(f"{_secs(a)}–{_secs(b)} s" for a, b in p["ranges"])
        parts.append(f"{p['name']} {ranges}")
    return "; ".join(parts) if any(len(p["ranges"]) > 1 for p in pokemon) else ", ".join(parts)


def tell(times: list[float], frames: list[dict], step: float, min_duration: float = 1.0,
         max_gap: float = 1.0) -> dict:
    """{segments, pokemon, headline} for per-frame results sampled every `step` seconds."""
    segs = segments_of(times, frames, step)
    seen = pokemon_seen(segs, min_duration, max_gap)
    return {"segments": segs, "pokemon": seen, "headline": headline(seen)}
