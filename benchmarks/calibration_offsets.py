"""Diagnostic: how the calibration's offsets evolve while the ``cpu_synthetic`` recipe trains
(why the demo model's calibration is inert, BENCHMARKS.md, training section).

Trains ``TrainConfig.preset("cpu_synthetic")`` for ``ITERS`` iterations (learning-rate steps at
75 % / 90 % of them) on the 60-video synthetic training set of ``bench_train_synthetic.py``
(seed 0, 320x192; generated into ``--out`` once) and, at iteration 1 and every 25, prints the
median |offset| in pixels per head level (P2-P5) for the second training frame calibrated with
the first, and the share of the deformable conv's samples inside the map
(``bench_fast_mode.calibration_effect``; model in eval mode, no gradient).

    python benchmarks/calibration_offsets.py --out work/calibration_offsets --iters 150
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path


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
    from bench_fast_mode import calibration_effect
    from bench_train_synthetic import make_split
    from cmasktrack.train import TrainConfig, train

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
    images = sorted(p for p in (data / "frames").rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    frames = [str(p) for p in images[:3]]

    def probe(it, losses):
        if it != 1 and it % args.every:
            return
        model = models[-1]
        was = model.training
        model.eval()
        levels = calibration_effect(model, frames)  # frame 1 calibrated with frame 0
        model.train(was)
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))
        print(f"iteration {it:5d}  loss {loss:6.3f}  median |offset| px (samples inside): " + "  ".join(
            f"{e['level']} {e['median_abs_offset_px']:8.2f} ({100 * e['samples_inside']:3.0f}%)" for e in levels),
            flush=True)

    t0 = time.time()
    train(cfg, data / "annotations.json", data / "frames", out / f"run_{args.iters}", progress=False, callback=probe)
    print(f"{args.iters} iterations in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
