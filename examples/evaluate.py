"""Evaluate a results json against OVIS / YouTube-VIS ground truth with the official metric
and TrackEval's identity metrics.

    python examples/evaluate.py annotations_valid.json results.json

Prints the official 12 numbers, HOTA / AssA / IDF1 / IDSW / MOTA, the occlusion breakdown and
per-category AP (the same as `cmasktrack eval --gt annotations_valid.json --pred results.json`).
"""

import sys

from cmasktrack import VISDataset, evaluate_vis, load_results
from cmasktrack.evaluation import evaluate_tracking, format_results_table

dataset = VISDataset.from_json(sys.argv[1])
predictions = load_results(sys.argv[2], dataset)
result = evaluate_vis(dataset, predictions)
tracking = evaluate_tracking(dataset, predictions)
print(format_results_table(result, tracking=tracking))
print("AP =", result.to_dict()["AP"], " HOTA =", tracking["HOTA"], " IDF1 =", tracking["IDF1"])
