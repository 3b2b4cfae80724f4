"""Export a checkpoint to ONNX (dynamic batch, preprocessing embedded) and check it with ONNX Runtime.

    pokemon-classifier export --weights best.pt --onnx model.onnx
    pokemon-classifier predict --backend onnx --weights model.onnx photo.jpg
    pokemon-classifier evaluate --weights model.onnx --data data/ --split test   # same figures as best.pt
    pokemon-classifier export --int8 --data data/ --splits s.csv --negatives neg/ --out best.pt  # int8_gate.py
    pokemon-classifier export --web site/       # a static site that classifies in the browser (web.py)
"""

from __future__ import annotations

from pokemon_classifier.errors import UserError
from pokemon_classifier.models import resolve_weights
from pokemon_classifier.onnx_graph import export_onnx  # noqa: F401  (the graph itself: onnx_graph.py)


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir, out_file
    from pokemon_classifier.runtime import positive_int

    p.add_argument("--weights", help="checkpoint (default: best.pt at the repository root)")
    p.add_argument("--onnx", type=out_file, help="output .onnx file (required without --int8 or --web)")
    p.add_argument("--web", type=out_dir, metavar="DIR",
                   help="write a static site that classifies in the browser, offline (see web.py)")
    p.add_argument("--web-weights", choices=("fp32", "fp16"), default="fp32",
                   help="the site's model: fp32, predict's answers exactly (default); fp16, a smaller site whose "
                        "answers move a little (docs/web.md)")
    p.add_argument("--opset", type=positive_int, default=17)
    from pokemon_classifier import int8_gate

    int8_gate.add_arguments(p)


def main(args) -> int:
    if args.web is None and args.onnx is None and not getattr(args, "int8", False):
        raise UserError("export needs --onnx FILE, --int8 or --web DIR")
    if args.web is not None:  # the site carries its own ONNX export (web.py)
        from pokemon_classifier import web

        web.main(args)
        if args.onnx is None and not getattr(args, "int8", False):
            return 0
    weights = resolve_weights(args.weights)
    if getattr(args, "int8", False):  # quantise, gate and record: quantize.py
        from pokemon_classifier import int8_gate

        return int8_gate.main(args, weights)
    if not args.onnx:
        raise UserError("export needs --onnx FILE (or --int8)")
    delta = export_onnx(weights, args.onnx, args.opset)
    print(f"wrote {args.onnx} ({args.onnx.stat().st_size / 1e6:.1f} MB); ONNX Runtime vs PyTorch max |Δprob| = {delta:.2e}")
    return 0
