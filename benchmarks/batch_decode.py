"""python benchmarks/batch_decode.py FP32.onnx INT8.onnx [--reps 5]

Batch-32 throughput of `Classifier.predict_batch` (32 JPEGs of 320x240 decoded, preprocessed, run),
as int8_gate.speed measures it, decoded by two or more threads (data.readable_batches; its default
is 1 thread under 4 cores) and serially (threads=1), for an fp32 and an int8 graph: the four measured
interleaved in one run, so a busy machine slows all alike.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from predict_latency import jpeg  # noqa: E402

from pokemon_classifier import data  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fp32")
    p.add_argument("int8")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    clfs = {"fp32": Classifier.load(args.fp32), "int8": Classifier.load(args.int8)}
    batch = [jpeg(i) for i in range(8)] * 4
    default = data.decode_threads
    modes = {"serial": lambda items: 1, "threaded": lambda items: max(2, default(items))}
    spent = {(c, m): 0.0 for c in clfs for m in modes}
    for rep in range(args.reps + 1):  # the first round warms up
        for (c, m) in spent:
            data.decode_threads = modes[m]
            t = time.perf_counter()
            clfs[c].predict_batch(batch, batch_size=32)
            if rep:
                spent[c, m] += time.perf_counter() - t
    data.decode_threads = default
    for (c, m), s in spent.items():
        print(f"{c:<5} {m:<9} {32 * args.reps / s:7.1f} img/s")
    for m in modes:
        print(f"int8/fp32 {m}: x{spent['fp32', m] / spent['int8', m]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
