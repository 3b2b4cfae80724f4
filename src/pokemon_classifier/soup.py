"""Model soup: average the weights of several fine-tuned runs into one model (no extra inference cost).

    pokemon-classifier soup runs/E/best.pt runs/F/best.pt --out soup.pt                       # uniform
    pokemon-classifier soup runs/*/best.pt --data data/ --splits data/splits.csv --out soup.pt  # greedy on val

Runs fine-tuned from the same ImageNet initialisation stay in one basin of the loss, so the
average of their weights is itself a good model, usually better than each (Wortsman et al. 2022,
"Model soups"). The greedy soup tries the runs in order of validation top-1 and keeps each one only
if the soup's validation top-1 does not drop, so the choice is made on val and test stays untouched.
The soup has no temperature or unknown threshold yet: run `calibrate` on it.
"""

from __future__ import annotations

from pathlib import Path

from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import atomic_torch_save, sha256_file
from pokemon_classifier.models import read_checkpoint


def read_ingredient(path) -> dict:
    ck = read_checkpoint(path)
    if not ("model" in ck and "arch" in ck):
        raise UserError(f"{path}: not a pokemon-classifier checkpoint (soups need best.pt files of this project)")
    return ck


def _check_compatible(cks: list[dict], paths) -> None:
    first = cks[0]
    for ck, p in zip(cks[1:], paths[1:]):
        for key in ("arch", "class_ids"):
            if ck.get(key) != first.get(key):
                raise UserError(f"{p}: {key} {ck.get(key)!r:.60} differs from {paths[0]}'s {first.get(key)!r:.60}")
        if (ck.get("preprocessing") or {}).get("size") != (first.get("preprocessing") or {}).get("size"):
            raise UserError(f"{p}: trained at another image size than {paths[0]}")
        if ck["model"].keys() != first["model"].keys():
            raise UserError(f"{p}: its tensors do not match {paths[0]}'s")


def average(states: list[dict]) -> dict:
    """Uniform average of float tensors (weights and BatchNorm statistics); counters come from the first."""
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def make_soup(paths, out, data=None, splits=None, greedy: bool = True, batch_size: int = 64,
              progress: bool = True) -> dict:
    """Write the soup of `paths` to `out`; returns a summary (ingredients used, val figures if data given)."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise UserError("soup needs at least two checkpoints")
    cks = [read_ingredient(p) for p in paths]
    _check_compatible(cks, paths)
    report = {"ingredients": [str(p) for p in paths], "used": [str(p) for p in paths]}
    chosen = list(range(len(paths)))
    if data is not None:
        from pokemon_classifier.evaluate import evaluate_frame, select
        from pokemon_classifier.models import build_model
        from pokemon_classifier.predict import Classifier

        df = select(data, splits, "val")
        # temperature 1: every ingredient and every soup is scored on its raw probabilities
        meta = {"preprocessing": cks[0]["preprocessing"], "class_ids": [int(i) for i in cks[0]["class_ids"]],
                "temperature": 1.0}
        model = build_model(cks[0]["arch"], num_classes=len(meta["class_ids"])).eval()
        clf = Classifier.from_model(model, meta)

        def val_of(state):
            model.load_state_dict(state)
            s = evaluate_frame(clf, data, df, batch_size, progress=progress).summary
            return s["top1"], s["nll"]

        scores = [val_of(ck["model"]) for ck in cks]
        report["val_each"] = {str(p): {"top1": t, "nll": n} for p, (t, n) in zip(paths, scores)}
        order = sorted(range(len(paths)), key=lambda i: (-scores[i][0], scores[i][1]))
        if greedy:
            chosen, best = [order[0]], scores[order[0]]
            for i in order[1:]:
                trial = val_of(average([cks[j]["model"] for j in chosen + [i]]))
                if trial[0] >= best[0]:
                    chosen, best = chosen + [i], trial
        else:
            best = val_of(average([ck["model"] for ck in cks]))
        report["used"] = [str(paths[i]) for i in chosen]
        report["val_soup"] = {"top1": best[0], "nll": best[1]}
    soup = {k: v for k, v in cks[chosen[0]].items()
            if k not in ("model", "optimizer", "scheduler", "rng", "temperature", "unknown_threshold", "calibration")}
    soup["model"] = average([cks[i]["model"] for i in chosen])
    soup["soup"] = [{"path": str(paths[i]), "sha256": sha256_file(paths[i]),
                     "epoch": cks[i].get("epoch"), "args": cks[i].get("args")} for i in chosen]
    if "val_soup" in report:
        soup["metrics"] = {"val_acc": report["val_soup"]["top1"], "val_nll": report["val_soup"]["nll"]}
    atomic_torch_save(soup, Path(out))
    return report


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_file
    from pokemon_classifier.runtime import positive_int

    p.add_argument("checkpoints", nargs="+", help="best.pt files of runs with the same arch, classes and image size")
    p.add_argument("--out", type=out_file, required=True, help="where to write the soup checkpoint")
    p.add_argument("--data", type=Path, help="with --data: score each run and the soup on the validation split")
    p.add_argument("--splits", type=Path, help="splits.csv (default: DATA/splits.csv)")
    p.add_argument("--uniform", dest="greedy", action="store_false",
                   help="with --data: average every run instead of the greedy choice")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def main(args) -> int:
    r = make_soup(args.checkpoints, args.out, args.data, args.splits, args.greedy, args.batch_size, args.progress)
    for p, v in r.get("val_each", {}).items():
        print(f"  val top-1 {v['top1']:.4f}  NLL {v['nll']:.4f}  {p}{'  (used)' if p in r['used'] else ''}")
    if "val_soup" in r:
        print(f"soup of {len(r['used'])}: val top-1 {r['val_soup']['top1']:.4f}  NLL {r['val_soup']['nll']:.4f}")
    else:
        print(f"soup of {len(r['used'])} (uniform, not scored: pass --data to choose on val)")
    print(f"wrote {args.out}; next: pokemon-classifier calibrate --weights {args.out} --data ... --splits ...")
    return 0
