#!/usr/bin/env python
"""Thin wrapper kept under the original project's script name: same as `pokemon-classifier download ...`.

    python scripts/download_dataset.py --help
"""

import sys

from pokemon_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["download", *sys.argv[1:]]))
