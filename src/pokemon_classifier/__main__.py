"""`python -m pokemon_classifier ...` == `pokemon-classifier ...` (and what torchrun launches)."""

from pokemon_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
