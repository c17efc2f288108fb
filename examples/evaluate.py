"""Evaluate a results json against OVIS / YouTube-VIS ground truth with the official metric.

    python examples/evaluate.py annotations_valid.json results.json

Prints the official 12 numbers, per-category AP and the occlusion breakdown (the same as
`cmasktrack eval --gt annotations_valid.json --pred results.json`).
"""

import sys

from cmasktrack.data.results import load_results
from cmasktrack.data.ytvis import VISDataset
from cmasktrack.evaluation import evaluate_vis, format_results_table

dataset = VISDataset.from_json(sys.argv[1])
result = evaluate_vis(dataset, load_results(sys.argv[2], dataset))
print(format_results_table(result))
print("AP =", result.to_dict()["AP"])
