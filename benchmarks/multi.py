"""Every Pokemon in a picture (predict --multi): recall and precision of its boxes, single pictures, speed.

    python benchmarks/multi.py --data data/pokemon --splits runs/splits_final.csv \\
        --negatives ../shared/data/negatives --composites 40 --singles 40 --seed 0

Composites: 2-4 test-split pictures of different species pasted, not overlapping, at 28-45% of the
shorter side onto a 640x480, 480x640 or 560x560 crop of a negatives photo the open-set score was not
tuned on (benchmarks/_composites.py). A detection is right when its name is the pasted picture's and
its box overlaps the pasted box with IoU >= 0.5 (each pasted picture matched once, best first).
Single pictures: test-split pictures as they are; the first detection's name against the whole-picture
answer (its top-1, and its Gen-1 verdict: unknown counts as wrong for both). Seconds per picture: the
whole of Detector.detect (decode, proposal pass, crops) with --threads threads, as wall time and as
CPU time / threads (what it takes on that many idle cores: on a shared machine wall time also counts
the other processes).
Clips (--clips N): N still clips (2 s, 10 fps, mpeg4 in a temp folder) of a two-Pokemon 640x480
composite, sampled at 2 fps: how many of the two the video story names (`predict clip.mp4`) and the
story told from every frame's detections (`predict clip.mp4 --multi`, multi.video_story), plus names
that were not pasted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _composites as C  # noqa: E402
from _machine import machine  # noqa: E402

from pokemon_classifier.multi import Detector, box_iou, video_story  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


def match(dets, boxes, dexes, at: float = 0.5) -> int:
    """Right detections: name and IoU >= `at` with a pasted box not matched yet, best detection first."""
    used, hits = set(), 0
    for d in dets:
        iou = box_iou(d["box"], boxes)[0]
        for j in np.argsort(-iou):
            if j not in used and dexes[j] == d["dex_id"] and iou[j] >= at:
                used.add(j)
                hits += 1
                break
    return hits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_arguments(ap)
    ap.add_argument("--composites", type=int, default=40)
    ap.add_argument("--singles", type=int, default=40)
    ap.add_argument("--clips", type=int, default=0, help="two-Pokemon still clips for the video story (0: none)")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    det = Detector.load(a.weights, Classifier.load(a.weights))
    pictures = C.test_pictures(a.data, a.splits)
    photos = C.background_photos(a.negatives, det.clf)
    rng = np.random.default_rng(a.seed)
    hits = loose = n_det = n_gt = 0
    secs, cpu = [], []
    for _ in range(a.composites):
        img, boxes, dexes = C.several(rng, pictures, photos, int(rng.integers(2, 5)))
        t, c = time.perf_counter(), time.process_time()
        d = det.detect(img)
        secs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        hits += match(d, boxes, dexes)
        loose += match(d, boxes, dexes, 0.3)
        n_det += len(d)
        n_gt += len(boxes)
    order = rng.permutation(len(pictures))[: a.singles]
    whole_top1 = whole_ok = first_ok = one = 0
    for i in order:
        path, dex = pictures[int(i)]
        w = det.clf.predict(path, 1)
        whole_top1 += w["topk"][0]["dex_id"] == dex
        whole_ok += w["dex_id"] == dex
        t, c = time.perf_counter(), time.process_time()
        d = det.detect(path)
        secs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        first_ok += bool(d) and d[0]["dex_id"] == dex
        one += len(d) == 1
    n = max(len(order), 1)
    print(f"# {machine()}; {a.threads} threads; seed {a.seed}")
    if a.composites:  # each part prints only when measured: --clips alone measures only the clips
        print(f"composites: {a.composites} with {n_gt} Pokemon; detections {n_det}, right {hits}")
        print(f"  recall    {hits / max(n_gt, 1):.1%}  (IoU >= 0.5 and the right name)")
        print(f"  precision {hits / max(n_det, 1):.1%}")
        print(f"  at IoU >= 0.3 (how much is the box, how much the name): recall {loose / max(n_gt, 1):.1%}, "
              f"precision {loose / max(n_det, 1):.1%}")
    if len(order):
        print(f"single pictures: {n}; first detection right {first_ok / n:.1%}; whole picture top-1 {whole_top1 / n:.1%}, "
              f"whole-picture Gen-1 answer right {whole_ok / n:.1%}; exactly one detection {one / n:.1%}")
    if secs:
        print(f"seconds per picture: median {np.median(secs):.2f}, mean {np.mean(secs):.2f} ({len(secs)} pictures); "
              f"CPU seconds per picture {np.mean(cpu):.2f} (/{a.threads} = {np.mean(cpu) / a.threads:.2f} s of wall "
              f"time on {a.threads} idle cores; load average now {os.getloadavg()[0]:.1f})")
    if a.clips:
        clips(det, pictures, photos, a.clips, np.random.default_rng(a.seed))
    return 0


def still_clip(path: Path, img, seconds: float = 2.0, fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt, s.bit_rate = img.width, img.height, "yuv420p", 2_000_000
        for _ in range(int(seconds * fps)):
            for pkt in s.encode(av.VideoFrame.from_image(img)):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def clips(det, pictures, photos, n: int, rng) -> None:
    """The video story with two Pokemon on screen at once: whole frames vs every frame's detections."""
    import tempfile

    plain, multi, other = np.zeros(3, int), np.zeros(3, int), [0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            img, _, dexes = C.several(rng, pictures, photos, 2, shapes=((640, 480),))
            path = Path(tmp) / f"clip{i}.mp4"
            still_clip(path, img)
            for k, told in enumerate((det.clf.predict_video(path, fps=2.0), video_story(det, path, 2.0))):
                named = {p["dex_id"] for p in told["pokemon"]}
                (plain, multi)[k][len(named & set(dexes))] += 1
                other[k] += len(named - set(dexes))
    print(f"clips: {n} still two-Pokemon clips (640x480, 2 s, sampled at 2 fps); of the two, named 0 / 1 / 2:")
    print(f"  video story (whole frames)       {plain[0]} / {plain[1]} / {plain[2]}; other names {other[0]}")
    print(f"  story from every frame's --multi {multi[0]} / {multi[1]} / {multi[2]}; other names {other[1]}")


if __name__ == "__main__":
    sys.exit(main())
