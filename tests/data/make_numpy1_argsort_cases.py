"""Writes numpy1_argsort_cases.json: argsort results of numpy 1.x (the official code's era) on
float32 arrays with many ties, the reference for tests/test_boxes.py. Not run by the tests: it
needs numpy 1.x (1.23.5 was used: `pip install numpy==1.23.5` in a separate venv), whose
default argsort for float32 is the C introsort the official NMS relied on (numpy 2 may use SIMD
sorts with another tie order).

    python tests/data/make_numpy1_argsort_cases.py tests/data/numpy1_argsort_cases.json
"""
import json
import sys

import numpy as np

assert np.__version__.startswith("1."), np.__version__
rng = np.random.default_rng(0)
cases = []
for n in (2, 5, 16, 17, 18, 40, 100, 333, 1000):
    for k in (1, 2, 7):
        v = (rng.integers(0, k, n) / 4).astype(np.float32)
        cases.append({"values": v.tolist(), "quicksort": v.argsort().tolist()})
v = np.sort(rng.integers(0, 5, 1000))[::-1].astype(np.float32)  # descending with ties (RPN top-k output)
cases.append({"values": v.tolist(), "quicksort": v.argsort().tolist()})
heap = []
for n in (2, 7, 64, 300):
    v = (rng.integers(0, 4, n) / 4).astype(np.float32)
    heap.append({"values": v.tolist(), "heapsort": v.argsort(kind="heapsort").tolist()})
json.dump({"numpy": np.__version__, "argsort": cases, "heapsort": heap}, open(sys.argv[1], "w"), separators=(",", ":"))
