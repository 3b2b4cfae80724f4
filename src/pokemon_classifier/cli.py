"""The `pokemon-classifier` command: one subcommand per step of the workflow.

    pokemon-classifier annotate data/          # images/ -> annotations.csv
    pokemon-classifier dedup data/             # near-duplicate groups -> dedup.csv
    pokemon-classifier split data/             # group-aware train/val/test -> splits.csv
    pokemon-classifier train --data data/ --out runs/exp1
    pokemon-classifier evaluate --weights runs/exp1/best.pt --data data/ --split test
    pokemon-classifier predict photo.jpg

User errors print one line (`error: ...`) and exit 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pokemon_classifier.errors import UserError

# subcommand -> module with add_arguments(parser) and main(args); imported lazily so that
# `pokemon-classifier annotate --help` does not pay for importing torch.
COMMANDS = {
    "download": ("pokemon_classifier.scrape", None, "collect images from an image search engine"),
    "annotate": ("pokemon_classifier.commands", "annotate", "scan DATA/images and write annotations.csv"),
    "dedup": ("pokemon_classifier.commands", "dedup", "find near-duplicate groups (perceptual hashes)"),
    "split": ("pokemon_classifier.commands", "split", "group-aware stratified train/val/test split"),
    "clean": ("pokemon_classifier.clean", None, "find broken files, duplicates, wrong labels; review; apply/undo"),
    "train": ("pokemon_classifier.train", None, "train a classifier (resumable, torchrun-ready)"),
    "evaluate": ("pokemon_classifier.evaluate", None, "honest metrics, plots and the duplicate-leak report"),
    "soup": ("pokemon_classifier.soup", None, "average the weights of several runs (greedy choice on val)"),
    "calibrate": ("pokemon_classifier.evaluate", "calibrate", "fit temperature scaling on val, store in checkpoint"),
    "predict": ("pokemon_classifier.predict", None, "classify images, folders, globs and videos"),
    "export": ("pokemon_classifier.export", None, "export to ONNX, checked with ONNX Runtime"),
    "serve": ("pokemon_classifier.app", None, "the web app + JSON API (http://127.0.0.1:7860)"),
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _load(name):
    module, prefix, _ = COMMANDS[name]
    mod = importlib.import_module(module)
    add = getattr(mod, f"{prefix}_arguments" if prefix else "add_arguments")
    run = getattr(mod, f"{prefix}_main" if prefix else "main")
    return mod, add, run


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pokemon-classifier", description=__doc__, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_)
            continue
        mod, add, _ = _load(name)
        doc = (getattr(mod, f"{COMMANDS[name][1]}_doc", None) if COMMANDS[name][1] else None) or mod.__doc__
        p = sub.add_parser(name, help=help_, description=doc, formatter_class=_Formatter)
        add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, _, run = _load(args.command)
    try:
        return int(run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
