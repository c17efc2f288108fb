"""Evaluate a results json against OVIS / YouTube-VIS ground truth with the official metric.

    python examples/evaluate.py annotations_valid.json results.json

Prints the official 12 numbers, per-category AP and the occlusion breakdown (the same as
`cmasktrack eval --gt annotations_valid.json --pred results.json`).
"""

import sys

from cmasktrack import evaluate_vis
from cmasktrack.evaluation import format_results_table

result = evaluate_vis(sys.argv[1], sys.argv[2])  # ground truth and results json paths
print(format_results_table(result))
print("AP =", result.to_dict()["AP"])
