#!/usr/bin/env python
"""Thin wrapper kept under the original project's script name: same as `pokemon-classifier annotate ...`.

    python scripts/create_annotations.py --help
"""

import sys

from pokemon_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["annotate", *sys.argv[1:]]))
