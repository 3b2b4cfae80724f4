"""The story of a clip: which Pokemon appear, in order, and when.

    story = tell(times, frame_results, step=0.5)
    story["headline"]   # "Pikachu 0–2 s, Charizard 2.5–4.5 s" or "no Gen-1 Pokémon found"

A verdict that averages every frame (blank fades included) says "unknown" for a clip of three
Pokemon each shown perfectly; a story is built from confident frames only: runs of one verdict
become segments, segments shorter than `min_duration` are dropped as blips, runs of one Pokemon
separated by at most `max_gap` seconds of unknown frames are merged, and unknown stretches are
left out of the list.
"""

from __future__ import annotations

import numpy as np


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
