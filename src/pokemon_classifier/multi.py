"""Every Gen-1 Pokemon in a picture, with boxes: class-activation proposals checked by the classifier.

    pokemon-classifier predict shelf.jpg --multi --json   # "detections": [{dex_id, name, probability, box}]
    pokemon-classifier predict clip.mp4 --multi           # the story lists every Pokemon found per sampled frame

Python:
    det = Detector.load("best.pt", Classifier.load("best.pt"))   # from pokemon_classifier.predict import Classifier
    det.detect("team.jpg")  # [{'dex_id': 25, 'name': 'Pikachu', 'probability': 0.97, 'box': [x0, y0, x1, y1]}, ...]

How (measured in benchmarks/multi.py; docs/explain.md):
1. one forward pass of the whole picture (long side PROPOSAL_SIDE px) through the convolutional trunk;
   the head applied to every cell of the last feature map gives per-cell class evidence (a class
   activation map per class);
2. seeds: for the TOP_CLASSES classes with the strongest evidence, the boxes of the connected regions
   of their map above a few fractions of its peak; a region mostly inside a larger one is dropped;
3. each seed is cut out of the picture at a few scales (CAM regions are tighter than the Pokemon) and
   classified like a whole picture (same preprocessing, same open-set score): only Gen-1 verdicts count,
   and a seed keeps the scale with the best open-set score (the crop that looks most like a picture of
   one Pokemon);
4. suppression across seeds (overlap, or one mostly inside another), best first. When the whole picture
   is a Gen-1 verdict whose open-set score beats every survivor's, the picture is one Pokemon (its parts
   can be named apart: a Vulpix's tail as Charmander): one detection, the whole picture's name, the box
   around its survivors of that name (the whole picture without any). A picture where no seed survives
   but the whole picture is a Gen-1 Pokemon gives that one detection too (the whole box).

Boxes are in the upright picture's pixels (EXIF orientation applied, as load_image returns it). Needs
the torch checkpoint: the per-cell evidence comes from the network's layers, which ONNX does not expose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pokemon_classifier.errors import UserError
from pokemon_classifier.images import load_image

PROPOSAL_SIDE = 448  # long side of the proposal pass: 14 cells of 32 px
STRIDE = 32
THRESHOLDS = (0.2, 0.35, 0.5)  # fractions of a class map's peak whose regions become proposals
TOP_CLASSES = 6  # classes whose maps give region proposals
MAX_SEEDS = 8
OBJECTNESS = True  # also seed from the class-agnostic map (a Pokemon whose class is not among the strongest)
SAME_SEED = 0.7  # seeds overlapping this much are one
CONTAIN = 0.6  # a box this much inside another is the same Pokemon
GROW = (0.8, 1.0, 1.3, 1.6)  # each seed is tried at these scales about its centre (CAM regions are tighter than the Pokemon)
NMS_IOU = 0.3


def box_iou(a, b) -> np.ndarray:
    """IoU of every box of a (N,4) with every box of b (M,4), boxes (x0, y0, x1, y1)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _area(b) -> float:
    return float((b[2] - b[0]) * (b[3] - b[1]))


def cell_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(1,3,H,W) -> per-cell logits (C,h,w) of the last feature map: the head applied to every cell
    (exact for a linear head on a mean pool, as EfficientNet-Lite's; an approximation for MobileNetV3's MLP)."""
    m = getattr(model, "model", model)
    n = getattr(model, "n", None)  # the original format keeps its first n outputs
    with torch.inference_mode():
        if hasattr(m, "forward_features"):
            f = m.forward_features(x.to(next(m.parameters()).device))
            head = m.get_classifier()
        else:
            f = m.features(x.to(next(m.parameters()).device))
            head = m.classifier
        c, h, w = f.shape[1:]
        out = head(f[0].reshape(c, h * w).T).T.reshape(-1, h, w).cpu()
    return out[:n] if n else out


def region_boxes(heat: np.ndarray, fraction: float) -> list[tuple[int, int, int, int]]:
    """Cell boxes (y0, x0, y1, x1) of the 8-connected regions of heat >= fraction x its peak."""
    from scipy import ndimage

    top = heat.max()
    if top <= 0:
        return []
    labels, n = ndimage.label(heat >= fraction * top, structure=np.ones((3, 3)))
    return [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(labels)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order, keep = list(np.argsort(-scores)), []
    while order:
        i = order.pop(0)
        keep.append(i)
        if order:
            over = box_iou(boxes[i], boxes[order])[0]
            order = [j for j, o in zip(order, over) if o < iou]
    return keep


class Detector:
    """A Classifier (verdicts, open-set score) plus its torch model (the per-cell evidence)."""

    def __init__(self, clf, model: torch.nn.Module):
        self.clf, self.model = clf, model.eval()
        self.pre = clf.meta["preprocessing"]

    @classmethod
    def load(cls, path=None, clf=None, device: str = "cpu") -> "Detector":
        """From a checkpoint and the Classifier of the same file (`Classifier.load(path)`, ONNX backend
        included). predict's command imports this module, so it takes the Classifier rather than
        importing predict to make one."""
        from pokemon_classifier.models import load_checkpoint, resolve_weights

        path = resolve_weights(path)
        if Path(path).suffix == ".onnx":
            raise UserError(f"{path}: --multi needs the torch checkpoint (.pt); an ONNX graph does not expose "
                            f"the per-cell evidence")
        if clf is None:
            raise UserError(f"{path}: Detector.load needs the Classifier of the same file (Classifier.load(path))")
        model, _ = load_checkpoint(path, device)
        return cls(clf, model)

    def _input(self, img: Image.Image) -> tuple[torch.Tensor, float, float]:
        """The proposal pass's input (long side PROPOSAL_SIDE, sides multiples of STRIDE) and the x, y
        scales from its pixels to the picture's."""
        from pokemon_classifier.presets import interp
        from torchvision.transforms import v2 as T

        w, h = img.size
        k = PROPOSAL_SIDE / max(w, h)
        rw, rh = (max(STRIDE, int(round(s * k / STRIDE)) * STRIDE) for s in (w, h))
        t = T.functional.pil_to_tensor(img)
        t = T.functional.resize(t, [rh, rw], interpolation=interp(self.pre["interpolation"]), antialias=True)
        x = T.functional.normalize(t.float() / 255, self.pre["mean"], self.pre["std"])
        return x[None], w / rw, h / rh

    def seeds(self, img: Image.Image) -> np.ndarray:
        """Seed boxes (N,4) in the picture's pixels: the regions of the strongest classes' maps and of the
        class-agnostic map (each cell's strongest class), near-duplicates dropped, larger first."""
        x, sx, sy = self._input(img)
        cells = cell_logits(self.model, x).float().numpy()
        c = cells.shape[0]
        strongest = np.argsort(-cells.reshape(c, -1).max(1))[:TOP_CLASSES]
        maps = [cells[k] for k in strongest]
        if OBJECTNESS:
            top = cells.max(0)
            maps.append(top - top.min())
        cand = [r for m in maps for f in THRESHOLDS for r in region_boxes(m, f)]
        cand = np.unique(np.array(cand, dtype=int).reshape(-1, 4), axis=0)
        y0, x0, y1, x1 = cand.T * STRIDE
        boxes = np.stack([x0 * sx, y0 * sy, x1 * sx, y1 * sy], 1)
        keep = []
        for i in np.argsort(-_areas(boxes), kind="stable"):
            if all(box_iou(boxes[i], boxes[j])[0, 0] < SAME_SEED for j in keep):
                keep.append(i)
        return boxes[keep][:MAX_SEEDS]

    def detect(self, item, whole: dict | None = None) -> list[dict]:
        """Path, bytes or PIL image -> detections [{dex_id, name, probability, box}], best first.
        `whole`: the whole picture's result when the caller has it (saves a forward pass)."""
        img = load_image(item)
        seeds = self.seeds(img)
        boxes = np.array([grow(b, f, img.width, img.height) for b in seeds for f in GROW]).reshape(-1, 4)
        crops = [img.crop(tuple(int(round(v)) for v in b)) for b in boxes]
        tensors = [self.clf.preprocess(c) for c in crops] + ([] if whole else [self.clf.preprocess(img)])
        results = self.clf.predict_tensors(torch.stack(tensors), 1) if tensors else []
        if whole is None:
            whole = results.pop()
        return select(boxes, results, len(GROW), whole, (0, 0, img.width, img.height))


def grow(box, factor: float, width: int, height: int) -> list[float]:
    """`box` scaled by `factor` about its centre, kept inside the picture."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return [max(0.0, cx - hw), max(0.0, cy - hh), min(float(width), cx + hw), min(float(height), cy + hh)]


def _inside(a, b) -> float:
    """The fraction of box a that lies inside box b."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max(_area(a), 1e-9)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def select(boxes: np.ndarray, results: list[dict], per_seed: int, whole: dict, full_box) -> list[dict]:
    """The grown seeds' verdicts (per_seed consecutive boxes each) -> detections: Gen-1 verdicts only; per
    seed the scale with the best open-set score; then suppression across seeds
    (overlap or one mostly inside the other); best first; the whole picture's answer when nothing survives."""
    picked = []
    for s in range(0, len(results), per_seed):
        ok = [i for i in range(s, s + per_seed) if not results[i]["unknown"]]
        if not ok:
            continue
        best = max(ok, key=lambda i: results[i]["probability"])
        p = results[best]["probability"]
        same = [i for i in ok if results[i]["dex_id"] == results[best]["dex_id"]]
        i = max(same, key=lambda j: results[j].get("open_set_score", results[j]["probability"]))
        picked.append((boxes[i], results[best]["dex_id"], results[best]["name"], p,
                       results[i].get("open_set_score", p)))
    picked.sort(key=lambda t: -t[4])  # the crop most like a picture of one Pokemon wins an overlap
    kept = []
    for t in picked:
        if all(box_iou(t[0], k[0])[0, 0] < NMS_IOU and _inside(t[0], k[0]) < CONTAIN
               and _inside(k[0], t[0]) < CONTAIN for k in kept):
            kept.append(t)
    score = whole.get("open_set_score")
    if kept and not whole["unknown"] and score is not None and score >= max(k[4] for k in kept):
        # the whole picture looks more like a picture of one Pokemon than any part of it does: it is one
        # (a single picture's parts can be named apart: Vulpix's tail as Charmander)
        same = np.array([k[0] for k in kept if k[1] == whole["dex_id"]]).reshape(-1, 4)
        box = np.r_[same[:, :2].min(0), same[:, 2:].max(0)] if len(same) else np.asarray(full_box, dtype=float)
        kept = [(box, whole["dex_id"], whole["name"], whole["probability"], score)]
    if not kept and not whole["unknown"]:
        kept.append((np.asarray(full_box, dtype=float), whole["dex_id"], whole["name"], whole["probability"], 0))
    kept.sort(key=lambda t: -t[3])
    return [{"dex_id": int(d), "name": n, "probability": float(p), "box": [int(round(v)) for v in b]}
            for b, d, n, p, _ in kept]


# ---------------------------------------------------------------- predict's --explain and --multi

def add_where_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir

    p.add_argument("--explain", metavar="DIR", type=out_dir,
                   help="write DIR/<stem>.explain.png, a heat map of what drove the top class (Grad-CAM; torch "
                        "checkpoints only), and add its peak in the picture's pixels to the JSON")
    p.add_argument("--multi", action="store_true",
                   help="every Gen-1 Pokemon in the picture: JSON gains \"detections\" with boxes in the picture's pixels; "
                        "on a video the story names every Pokemon found in the sampled frames (the detector on each "
                        "frame: seconds per frame on a CPU)")


def where_model(args, clf):
    """(torch model, meta) of predict's checkpoint, loaded once per Classifier."""
    from pokemon_classifier.models import load_checkpoint, resolve_weights

    if getattr(clf, "_where_model", None) is None:
        weights = resolve_weights(args.weights)
        if Path(weights).suffix == ".onnx":
            raise UserError(f"{weights}: --explain and --multi need the torch checkpoint (.pt): an ONNX graph has "
                            f"no gradients and does not expose the network's layers")
        clf._where_model = load_checkpoint(weights, clf_device(args))
    return clf._where_model


def add_where(args, clf, path, r: dict) -> dict:
    """predict's result `r` for the picture at `path` plus "explain" and/or "detections" as asked; the
    torch model is loaded once per Classifier."""
    model, meta = where_model(args, clf)
    r = dict(r)
    if args.explain:
        from pokemon_classifier.explain import Explainer, write_explanation

        r["explain"] = write_explanation(Explainer(model, meta, clf_device(args)), path, args.explain)
    if args.multi:
        r["detections"] = Detector(clf, model).detect(path, whole=r)
    return r


def video_where(args, clf, path, r: dict) -> dict:
    """predict CLIP --multi: the video verdict `r` plus video_story (its "pokemon" / "headline" replace the
    whole-frame story's; "segments" stay the whole-frame verdicts)."""
    return {**r, **video_story(Detector(clf, where_model(args, clf)[0]), path, args.fps)}


def video_story(det: Detector, path, fps: float) -> dict:
    """The detector on every frame sampled at `fps` (full size): {"frame_detections": [{time, detections}],
    "pokemon", "headline"} told from them (every Pokemon found, not one name per frame)."""
    from pokemon_classifier.video import sample_frames

    times, per = [], []
    for t, frame in sample_frames(path, fps, name=str(path)):
        times.append(float(t))
        per.append(det.detect(frame))
    return {"frame_detections": [{"time": round(t, 3), "detections": d} for t, d in zip(times, per)],
            **tell_detections(times, per, 1.0 / fps)}


def tell_detections(times: list[float], per_frame: list[list[dict]], step: float, min_duration: float = 1.0,
                    max_gap: float = 1.0) -> dict:
    """{pokemon, headline} of a clip from each sampled frame's detections: every Pokemon is told on its
    own track (present in a frame when detected there; the video story's rules for blips and gaps), in
    order of first appearance."""
    from pokemon_classifier.video import headline, pokemon_seen, segments_of

    ids = list(dict.fromkeys(d["dex_id"] for dets in per_frame for d in dets))
    seen = []
    for dex in ids:
        frames = []
        for dets in per_frame:
            hit = [d for d in dets if d["dex_id"] == dex]
            frames.append({"dex_id": dex if hit else None, "name": hit[0]["name"] if hit else "unknown",
                           "unknown": not hit, "probability": max((d["probability"] for d in hit), default=0.0)})
        seen += pokemon_seen(segments_of(times, frames, step), min_duration, max_gap)
    seen.sort(key=lambda p: p["ranges"][0][0])  # stable: Pokemon appearing together keep the detector's order
    return {"pokemon": seen, "headline": headline(seen)}


def clf_device(args) -> str:
    from pokemon_classifier.runtime import pick_device

    return pick_device(getattr(args, "device", "cpu"))


def describe_where(r: dict) -> str:
    """The text lines predict prints for "explain" and "detections"."""
    lines = []
    if "explain" in r:
        x, y = r["explain"]["peak"]
        lines.append(f"  why: {r['explain']['png']} (strongest evidence at x={x}, y={y})")
    if "detections" in r:
        if not r["detections"]:
            lines.append("  no Gen-1 Pokemon found")
        for d in r["detections"]:
            lines.append(f"  {d['name']:<12} {d['probability']:.2f}  box {d['box']}")
    return "\n".join(lines)
