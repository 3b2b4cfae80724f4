"""One line describing the machine, printed with every benchmark figure (runtime.machine)."""

from pokemon_classifier.runtime import machine  # noqa: F401
