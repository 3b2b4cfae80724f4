"""pokemon-classifier: recognise the 151 first-generation Pokemon, evaluated honestly.

Data flows one way: download -> annotate -> clean/dedup/split -> train -> evaluate -> predict/serve.
"""

__version__ = "0.1.0"
