"""The `pokemon-classifier` command: one subcommand per step of the workflow.

    pokemon-classifier annotate data/          # images/ -> annotations.csv
    pokemon-classifier dedup data/             # near-duplicate groups -> dedup.csv
    pokemon-classifier split data/             # group-aware train/val/test -> splits.csv
    pokemon-classifier train --data data/ --out runs/exp1
    pokemon-classifier evaluate --weights runs/exp1/best.pt --data data/ --split test
    pokemon-classifier predict photo.jpg

Every subcommand is a module with `add_arguments(parser)` and `main(args)` (and optionally
`config_defaults(path, parser)` for a --config file); its docstring is its --help. User errors print one line (`error: ...`) and exit 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pokemon_classifier.errors import UserError

# subcommand -> (module, one-line help). The modules are imported only for the subcommand that runs
# (or whose --help is asked for): the top-level --help must not pay for importing torch.
COMMANDS = {
    "download": ("pokemon_classifier.scrape", "collect images from an image search engine"),
    "annotate": ("pokemon_classifier.annotate", "scan DATA/images and write annotations.csv"),
    "dedup": ("pokemon_classifier.dedup", "find near-duplicate groups (perceptual hashes)"),
    "split": ("pokemon_classifier.splits", "group-aware stratified train/val/test split"),
    "clean": ("pokemon_classifier.clean", "find broken files, duplicates, wrong labels; review; apply/undo"),
    "train": ("pokemon_classifier.train", "train a classifier (resumable, torchrun-ready)"),
    "evaluate": ("pokemon_classifier.evaluate", "honest metrics, plots and the duplicate-leak report"),
    "soup": ("pokemon_classifier.soup", "average the weights of several runs (greedy choice on val)"),
    "calibrate": ("pokemon_classifier.calibrate", "fit temperature scaling on val, store in checkpoint"),
    "predict": ("pokemon_classifier.predict", "classify images, folders, globs and videos"),
    "export": ("pokemon_classifier.export", "export to ONNX, checked with ONNX Runtime"),
    "serve": ("pokemon_classifier.app", "the web app + JSON API (http://127.0.0.1:7860)"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and shows a default only when it says something: not for
    None (the help text says what happens instead) and not for on/off flags."""

    def _get_help_string(self, action):
        help_ = action.help or ""
        if ("%(default)" in help_ or action.default in (None, argparse.SUPPRESS) or not action.option_strings
                or action.nargs == 0):
            return help_
        return f"{help_} (default: %(default)s)" if help_ else "default: %(default)s"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's errors as the project's one line on stderr (`error: argument --lr: ...`), exit 2,
    instead of a usage block followed by `prog: error: ...`."""

    def error(self, message):
        self.exit(2, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def one_line(text) -> str:
    """A message folded onto one line; an exception whose str() is empty still says what it was."""
    if isinstance(text, BaseException):
        text = str(text) or type(text).__name__
    return " ".join(str(text).split()) or "unknown error"


def command_module(name: str):
    return importlib.import_module(COMMANDS[name][0])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser for `only` (its module imported); every other subcommand is a stub with its
    one-line help, which is all the top-level --help shows."""
    parser = ArgumentParser(prog="pokemon-classifier", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        if name != only:
            sub.add_parser(name, help=help_)
            continue
        mod = command_module(name)
        p = sub.add_parser(name, help=help_, description=mod.__doc__, formatter_class=HelpFormatter)
        mod.add_arguments(p)
        parser.command_parser = p
    return parser


def with_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """`args` again with a --config file's keys as the command's defaults, read before the real
    parse (timm's way): any flag given wins. The one place a config file is read."""
    mod = command_module(args.command)
    if getattr(args, "config", None) and hasattr(mod, "config_defaults"):
        parser.command_parser.set_defaults(**mod.config_defaults(args.config, parser.command_parser))
        args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        args = with_config(parser, args, argv)
        return int(command_module(args.command).main(args) or 0)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a file the user named: a bug, keep the traceback
            raise
        # an unreadable input, a full disk, a folder where a file should be: the user's to fix
        where = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
        print(f"error: {where}: {one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
