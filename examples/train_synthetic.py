"""Train a small model on the synthetic occlusion benchmark for a few minutes on the CPU, then
evaluate it on held-out synthetic videos.

    python examples/train_synthetic.py [--minutes 5] [--out work/synthetic]

For real training on OVIS use the "ovis" preset (the official recipe) on GPUs:
    cmasktrack train --preset ovis --init mask_rcnn_r50_fpn_1x_20181010-069fa190.pth \
        --data annotations_train.json --image-root train_images --out work/ovis
    torchrun --nproc_per_node 4 -m cmasktrack.train --preset ovis ...   # 4 GPUs
"""

import argparse
import os

from cmasktrack import CMaskTrack, VISDataset, evaluate_vis, track_dataset
from cmasktrack.data.synthetic import generate
from cmasktrack.evaluation import format_results_table
from cmasktrack.train import TrainConfig, train

ap = argparse.ArgumentParser()
ap.add_argument("--minutes", type=float, default=5)
ap.add_argument("--out", default="work/synthetic")
args = ap.parse_args()

train_ann = generate(os.path.join(args.out, "train"), num_videos=40, seed=1, overwrite=True)
val_ann = generate(os.path.join(args.out, "val"), num_videos=5, seed=2, overwrite=True)
cfg = TrainConfig.preset("cpu_small")
cfg.max_time_s = args.minutes * 60
result = train(cfg, train_ann, os.path.join(args.out, "train", "frames"), os.path.join(args.out, "run"),
               device="cpu")
model = CMaskTrack.from_pretrained(result.out_dir, device="cpu")
val = VISDataset.from_json(val_ann, image_root=os.path.join(args.out, "val", "frames"))
entries = track_dataset(model, val, os.path.join(args.out, "val_results.json"))
print(format_results_table(evaluate_vis(val, entries)))
