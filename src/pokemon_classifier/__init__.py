"""pokemon-classifier: recognise the 151 first-generation Pokemon, evaluated honestly.

The commands in the order a dataset goes through them: download -> annotate -> clean/dedup/split ->
train -> calibrate -> evaluate -> predict/export/serve; each reads the files the ones before it wrote.
The modules import one another without a cycle (tests/test_imports.py).
"""

__version__ = "0.1.0"
