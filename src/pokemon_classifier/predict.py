"""Classify pictures, folders, globs and videos with a trained checkpoint (or its ONNX export).

    pokemon-classifier predict photo.jpg                       # uses the best.pt shipped at the repo root
    pokemon-classifier predict --weights runs/x/best.pt photos/ "shots/*.png" --topk 3 --json
    pokemon-classifier predict clip.mp4 --fps 2                # per-segment timeline + overall top-k
    pokemon-classifier predict --backend onnx --weights model.onnx photo.jpg

Python:
    clf = Classifier.load("best.pt")
    clf.predict("pikachu.jpg")  # {'dex_id': 25, 'name': 'Pikachu', 'probability': 0.98, 'unknown': False, 'topk': [...]}

Open set: a picture whose open-set score (feature-space, stored in the checkpoint by
`pokemon-classifier calibrate --negatives DIR`, see openset/) is under its threshold is reported as
`unknown`, with its guesses. Checkpoints without that score fall back to a top-probability threshold
(`unknown_threshold`); --threshold sets a top-probability floor either way (0 disables it) and
--no-open-set turns the score off.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

from pokemon_classifier import pokedex
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.presets import eval_transform, resize_size
from pokemon_classifier.runtime import DEVICE_HELP

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


class Classifier:
    """A loaded model plus its preprocessing, class names, temperature and unknown threshold."""

    def __init__(self, run, meta: dict, threshold: float | None = None, backend: str = "torch"):
        # run: float tensor (N,3,H,W) -> (logits numpy (N,C), open-set score numpy (N,) or None)
        self._run = run
        self.meta = meta
        self.backend = backend
        self.class_ids = [int(i) for i in meta["class_ids"]]
        self.names = [pokedex.display_name(i) for i in self.class_ids]
        self.temperature = float(meta.get("temperature", 1.0) or 1.0)
        self.open_set = meta.get("openset")  # None when absent or turned off
        self.open_set_threshold = float(self.open_set["threshold"]) if self.open_set else None
        default = 0.0 if self.open_set else float(meta.get("unknown_threshold", 0.0))
        self.threshold = default if threshold is None else float(threshold)
        self.transform = eval_transform(meta["preprocessing"])
        # the file and torch device it was loaded from (Classifier.load): the app's "Why?" and "Find every
        # Pokemon" load the torch model of the same checkpoint when they are first asked for (where.py)
        self.weights, self.device = None, "cpu"

    @classmethod
    def load(cls, path=None, backend: str = "torch", device: str = "cpu", threshold: float | None = None,
             threads: int | None = None, open_set: bool = True, precision: str = "fp32") -> "Classifier":
        from pokemon_classifier.models import resolve_weights

        path = source = resolve_weights(path)
        if precision != "fp32":  # the checkpoint's gated int8 graph (quantize.py), or fp32 as below
            from pokemon_classifier.quantize import int8_model

            path = int8_model(path, precision, device) or path
        if threads:
            torch.set_num_threads(threads)
        if backend == "auto":  # serve's default: ONNX Runtime on the CPU (~2x faster here), else torch
            backend = "torch"
            if Path(path).suffix != ".onnx" and str(device) == "cpu":
                try:
                    from pokemon_classifier.onnx_graph import cached_onnx

                    path, backend = cached_onnx(path), "onnx"
                except UserError:
                    raise
                except Exception as e:  # noqa: BLE001 - an export that fails must not stop the app
                    print(f"warning: serving with torch: ONNX export of {path} failed "
                          f"({' '.join(str(e).split())[:160] or type(e).__name__})", flush=True)
        if backend == "onnx" or Path(path).suffix == ".onnx":
            from pokemon_classifier.onnx_graph import load_onnx

            run, meta = load_onnx(path, threads=threads)
            if not open_set:
                meta.pop("openset", None)
            clf = cls(run, meta, threshold, "onnx")
            clf.weights = source
            return clf
        if backend != "torch":
            raise UserError(f"--backend {backend!r}: choose torch, onnx or auto")
        from pokemon_classifier.models import load_checkpoint
        from pokemon_classifier.runtime import pick_device

        device = pick_device(device)
        model, meta = load_checkpoint(path, device)
        if not open_set:
            meta.pop("openset", None)
        clf = cls.from_model(model, meta, device, threshold)
        clf.weights, clf.device = source, device
        return clf

    @classmethod
    def from_model(cls, model, meta: dict, device="cpu", threshold: float | None = None) -> "Classifier":
        """Wrap a loaded torch model (in eval mode, already on `device`) and its checkpoint metadata;
        with an open-set state in `meta` the score comes from the same forward pass."""
        from pokemon_classifier.openset.scoring import OpenSetHead, Scored

        net = model.to(memory_format=torch.channels_last)
        if meta.get("openset"):
            net = Scored(model, OpenSetHead(meta["openset"])).to(device).eval()

        @torch.inference_mode()
        def run(x: torch.Tensor):
            out = net(x.to(device).contiguous(memory_format=torch.channels_last))
            if isinstance(out, tuple):
                return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
            return out.float().cpu().numpy(), None

        return cls(run, meta, threshold, "torch")

    def with_meta(self, **changes) -> "Classifier":
        """The same network with other metadata, e.g. `preprocessing=` (another crop size) or
        `temperature=1.0` (raw probabilities, as calibration needs)."""
        clf = type(self)(self._run, {**self.meta, **changes}, self.threshold, self.backend)
        clf.weights, clf.device = self.weights, self.device
        return clf

    # ------------------------------------------------------------------ inputs
    def preprocess(self, item) -> torch.Tensor:
        """Path, bytes, PIL image or HxWx3 uint8 array -> normalised (3,H,W) tensor."""
        from pokemon_classifier.data import to_tensor

        return to_tensor(item, self.transform)

    def forward(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N,C) after temperature scaling, open-set scores (N,) or None)."""
        logits, scores = self._run(batch)
        return torch.softmax(torch.from_numpy(logits).float() / self.temperature, 1).numpy(), scores

    def is_unknown(self, p: np.ndarray, score: float | None = None) -> bool:
        low = float(np.max(p)) < self.threshold
        return bool(low or (score is not None and self.open_set_threshold is not None
                            and score < self.open_set_threshold))

    def result(self, p: np.ndarray, topk: int, score: float | None = None) -> dict:
        """One row of probabilities (+ its open-set score) -> {'dex_id', 'name', 'probability',
        'unknown', 'topk'[, 'open_set_score']}; an unknown verdict keeps its guesses in topk."""
        k = min(topk, len(p))
        order = np.argsort(-p)[:k]
        top = [{"dex_id": self.class_ids[i], "name": self.names[i], "probability": float(p[i])} for i in order]
        best = top[0]
        unknown = self.is_unknown(p, score)
        out = {"dex_id": None if unknown else best["dex_id"], "name": "unknown" if unknown else best["name"],
               "probability": best["probability"], "unknown": unknown, "topk": top}
        if score is not None:
            out["open_set_score"] = round(float(score), 4)
        return out

    def predict_tensors(self, batch: torch.Tensor, topk: int | list[int] = 5) -> list[dict]:
        """Preprocessed (N,3,H,W) -> one result per row: the batched core of every predict path.

        `topk` may be one k per row (the app batches requests that asked for different k)."""
        ks = [topk] * len(batch) if isinstance(topk, int) else list(topk)
        probs, scores = self.forward(batch)
        scores = [None] * len(probs) if scores is None else scores
        return [self.result(p, k, s) for p, k, s in zip(probs, ks, scores)]

    def probs_paths(self, paths, batch_size: int = 64, workers: int | None = None, progress: bool = False,
                    desc: str = "predicting") -> tuple[np.ndarray, dict[int, str]]:
        """Probabilities (N,C) for images (paths, or anything preprocess takes), decoded by DataLoader
        workers: the one batched path of predict, evaluate, calibrate and soup. An unreadable image's
        row is NaN and its message is in errors {row: '<file>: <reason>'} (never an exception)."""
        probs, _, errors = self.outputs_paths(paths, batch_size, workers, progress, desc)
        return probs, errors

    def outputs_paths(self, paths, batch_size: int = 64, workers: int | None = None, progress: bool = False,
                      desc: str = "predicting") -> tuple[np.ndarray, np.ndarray | None, dict[int, str]]:
        """probs_paths plus the open-set scores (N,) (NaN where unreadable; None without a score)."""
        from pokemon_classifier.data import readable_batches

        n = len(paths)
        out = np.full((n, len(self.class_ids)), np.nan, dtype=np.float32)
        scores = np.full(n, np.nan, dtype=np.float64) if self.open_set else None
        errors: dict[int, str] = {}
        for idx, x in readable_batches(paths, self.meta["preprocessing"], errors, batch_size, workers, progress, desc):
            p, s = self.forward(x)
            out[idx] = p
            if scores is not None and s is not None:
                scores[idx] = s
        return out, scores, errors

    def predict(self, item, topk: int = 5) -> dict:
        return self.predict_tensors(self.preprocess(item)[None], topk)[0]

    def predict_batch(self, items, topk: int = 5, batch_size: int = 32, progress: bool = False) -> list[dict]:
        """One result per item; unreadable items give {'error': '<file>: <reason>'} instead of raising."""
        probs, scores, errors = self.outputs_paths(items, batch_size, progress=progress)
        return [{"error": errors[i]} if i in errors else self.result(p, topk, None if scores is None else scores[i])
                for i, p in enumerate(probs)]

    # ------------------------------------------------------------------ video
    def predict_video(self, path, fps: float = 2.0, topk: int = 5, batch_size: int = 32,
                      min_duration: float = 1.0, max_gap: float = 1.0) -> dict:
        """Sample frames at `fps`, classify in batches; returns {frames, fps, segments, pokemon,
        headline, overall}: the story of the clip (video.tell) and the mean-probability top-k."""
        times, frames, probs = [], [], []
        batch, batch_t = [], []

        def flush():
            p, s = self.forward(torch.stack(batch))
            probs.append(p)
            frames.extend(self.result(row, topk, None if s is None else s[i]) for i, row in enumerate(p))
            times.extend(batch_t)
            batch.clear(), batch_t.clear()

        for t, frame in iter_video_frames(path, fps, resize_size(self.meta["preprocessing"])):
            batch.append(self.transform(frame))
            batch_t.append(t)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if not times:
            raise ImageError(f"{path}: no frames could be decoded")
        return video_result(self, times, frames, np.concatenate(probs), fps, topk, min_duration, max_gap)


def video_result(clf: Classifier, times, frames, probs: np.ndarray, fps: float, topk: int,
                 min_duration: float = 1.0, max_gap: float = 1.0) -> dict:
    """The JSON of a video verdict, shared by `predict` and the app."""
    from pokemon_classifier.video import tell

    story = tell(times, frames, 1.0 / fps, min_duration, max_gap)
    overall = clf.result(probs.mean(0), topk)
    return {"frames": len(times), "fps": fps, **story, "overall": overall}


def iter_video_frames(path, fps: float = 2.0, min_side: int | None = None):
    """(time in s, PIL RGB frame) every 1/fps seconds: video.sample_frames, the app's sampler too."""
    from pokemon_classifier.video import sample_frames

    try:
        import av  # noqa: F401
    except ImportError:
        raise UserError("video needs PyAV: pip install av") from None
    if fps <= 0:
        raise UserError(f"--fps {fps} must be positive")
    yield from sample_frames(path, fps, min_side=min_side, name=str(path))


def expand_inputs(specs) -> list[Path]:
    """Files, folders (recursive) and globs -> sorted unique paths; a spec that matches nothing is an error."""
    out, seen = [], set()
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
        elif p.exists():
            found = [p]
        else:
            found = sorted(Path(q) for q in glob.glob(str(spec), recursive=True) if Path(q).is_file())
            if not found:
                raise UserError(f"{spec}: no such file, folder or glob match")
        for q in found:
            if q not in seen:
                seen.add(q)
                out.append(q)
    return out


def _fmt_time(t: float) -> str:
    return f"{int(t // 60):02d}:{t % 60:04.1f}"


def add_arguments(p) -> None:
    from pokemon_classifier.runtime import nonnegative_float, positive_float, positive_int

    p.add_argument("paths", nargs="+", help="images, folders (recursive), globs, or videos")
    p.add_argument("--weights", help="checkpoint or .onnx (default: best.pt at the repository root)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--precision", choices=["auto", "int8", "fp32"], default="auto",
                   help="auto: the checkpoint's int8 model when it records passed gates (CPU), else fp32")
    p.add_argument("--topk", type=positive_int, default=5)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per input (JSON Lines)")
    fmt.add_argument("--csv", action="store_true", help="CSV: path,dex_id,name,probability,unknown,error")
    p.add_argument("--threshold", type=nonnegative_float,
                   help="top-probability floor for an answer (default: the checkpoint's; 0 disables)")
    p.add_argument("--no-open-set", dest="open_set", action="store_false",
                   help="ignore the checkpoint's open-set score (unknown only by --threshold)")
    p.add_argument("--lang", help="names, genus and types in this language (en de fr es it ja ko zh-Hans zh-Hant ...; "
                                  "default: English); JSON gains display_name, genus, types")
    p.add_argument("--fps", type=positive_float, default=2.0, help="frames per second sampled from videos")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    from pokemon_classifier.multi import add_where_arguments

    add_where_arguments(p)  # --explain DIR, --multi (explain.py, multi.py)


def main(args) -> int:
    if args.lang is not None and pokedex.normalize_language(args.lang) is None:
        raise UserError(f"--lang {args.lang}: not a supported language ({', '.join(pokedex.LANGUAGES)})")
    paths = expand_inputs(args.paths)
    if not paths:  # an empty folder: nothing was tried, so no per-file lines would say why it printed nothing
        raise UserError(f"{' '.join(map(str, args.paths))}: no files to classify (empty folder)")
    clf = Classifier.load(args.weights, backend=args.backend, device=args.device, threshold=args.threshold,
                          open_set=args.open_set, precision=args.precision)
    videos = [p for p in paths if p.suffix.lower() in VIDEO_EXTENSIONS]
    images = [p for p in paths if p.suffix.lower() not in VIDEO_EXTENSIONS]
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow(["path", "dex_id", "name", "probability", "unknown", "error"])
    failures = 0
    results = clf.predict_batch(images, args.topk, args.batch_size, progress=len(images) > 50 and sys.stderr.isatty())
    for path, r in zip(images, results):
        failures += "error" in r
        if args.lang and "error" not in r:
            r = pokedex.localize_result(r, args.lang)
        if "error" not in r and (args.explain or args.multi):
            from pokemon_classifier.multi import add_where

            r = add_where(args, clf, path, r)
        _emit(args, writer, str(path), r)
    for v in videos:
        try:
            r = clf.predict_video(v, args.fps, args.topk, args.batch_size)
        except ImageError as e:
            failures += 1
            _emit(args, writer, str(v), {"error": str(e)})
            continue
        if args.multi:  # every Pokemon of every sampled frame (multi.video_where): the story names them all
            from pokemon_classifier.multi import video_where

            r = video_where(args, clf, v, r)
        if args.lang:
            r = pokedex.localize_video(r, args.lang)
        if args.json:
            print(json.dumps({"path": str(v), **r}, ensure_ascii=False))
        elif writer:
            seen = r["pokemon"]
            writer.writerow([str(v), seen[0]["dex_id"] if len(seen) == 1 else "", r["headline"],
                             f"{seen[0]['probability']:.4f}" if len(seen) == 1 else "", not seen, ""])
        else:
            print(f"{v}: {r['headline']}  ({r['frames']} frames at {r['fps']:g} fps)")
            for s in r["segments"]:
                print(f"  {_fmt_time(s['start'])}-{_fmt_time(s['end'])}  {s['name']:<12} {s['probability']:.2f}")
    if failures:
        print(f"{failures} of {len(paths)} inputs could not be read", file=sys.stderr)
    return 1 if failures == len(paths) else 0


def _emit(args, writer, path: str, r: dict) -> None:
    if args.json:
        print(json.dumps({"path": path, **r}, ensure_ascii=False))
    elif writer:
        if "error" in r:
            writer.writerow([path, "", "", "", "", r["error"]])
        else:
            writer.writerow([path, r["dex_id"] or "", r["name"], f"{r['probability']:.4f}", r["unknown"], ""])
    elif "error" in r:
        print(f"{path}: error: {r['error']}")
    elif r["unknown"]:
        guesses = ", ".join(f"{t.get('display_name') or t['name']} {t['probability']:.2f}" for t in r["topk"])
        print(f"{path}: unknown (not confident it is a Gen-1 Pokemon; guesses: {guesses})")
    else:
        alts = ", ".join(f"{t.get('display_name') or t['name']} {t['probability']:.2f}" for t in r["topk"][1:])
        name = r.get("display_name") or r["name"]
        facts = f"  #{r['dex_id']:03d} {r['genus']}, {'/'.join(t['name'] for t in r['types'])}" if r.get("genus") else ""
        print(f"{path}: {name} {r['probability']:.2f}{facts}" + (f"  ({alts})" if alts else ""))
    if not args.json and not writer and ("explain" in r or "detections" in r):
        from pokemon_classifier.multi import describe_where

        print(describe_where(r))
