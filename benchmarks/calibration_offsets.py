"""Diagnostic: how the calibration's offsets evolve while the ``cpu_synthetic`` recipe trains
(why the demo model's calibration is inert, BENCHMARKS.md, training section).

Trains ``TrainConfig.preset("cpu_synthetic")`` for ``ITERS`` iterations (learning-rate steps at
75 % / 90 % of them) on the 60-video synthetic training set of ``bench_train_synthetic.py``
(seed 0, 320x192; generated into ``--out`` once) and, at iteration 1 and every 25, prints the
median |offset| in pixels per head level (P2-P5) for the second training frame calibrated with
the first (model in eval mode, no gradient).

    python benchmarks/calibration_offsets.py --out work/calibration_offsets --iters 150
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="work/calibration_offsets")
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--every", type=int, default=25)
    args = ap.parse_args()

    import cmasktrack.train.loop as loop
    from bench_train_synthetic import make_split
    from cmasktrack.train import TrainConfig, train
    from cmasktrack.transforms import preprocess_frame

    out = Path(args.out)
    data = make_split(out, "train", 60, 0, size=(320, 192))
    cfg = dataclasses.replace(TrainConfig.preset("cpu_synthetic"), by_epoch=False, max_iters=args.iters,
                              lr_steps=(int(args.iters * 0.75), int(args.iters * 0.9)), checkpoint_interval=0)
    models = []
    build_model = loop.build_model

    def capture(*a, **k):  # the model train() builds
        models.append(build_model(*a, **k))
        return models[-1]

    loop.build_model = capture
    frames = sorted(p for p in (data / "frames").rglob("*") if p.suffix.lower() in (".jpg", ".png"))[:2]

    def probe(it, losses):
        if it != 1 and it % args.every:
            return
        model = models[-1]
        c = model.config
        xs = [preprocess_frame(np.asarray(Image.open(p).convert("RGB")), c.image_scale, c.pixel_mean, c.pixel_std,
                               c.size_divisor)[0] for p in frames]
        was = model.training
        model.eval()
        with torch.no_grad():
            feats = [model.extract_features(x[None]) for x in xs]
            medians = [float(model.calibration.offsets(a, b).abs().median())
                       for a, b in zip(model.head_levels(feats[1]), model.head_levels(feats[0]))]
        model.train(was)
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))
        print(f"iteration {it:5d}  loss {loss:6.3f}  median |offset| px: "
              + "  ".join(f"P{i + 2} {m:8.2f}" for i, m in enumerate(medians)), flush=True)

    t0 = time.time()
    train(cfg, data / "annotations.json", data / "frames", out / f"run_{args.iters}", progress=False, callback=probe)
    print(f"{args.iters} iterations in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
