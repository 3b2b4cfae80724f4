#!/usr/bin/env python
"""Thin wrapper kept under the original project's script name: same as `pokemon-classifier serve ...`.

    python scripts/app.py --help
"""

import sys

from pokemon_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *sys.argv[1:]]))
