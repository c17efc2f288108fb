"""Track one video (a folder of frames or a video file) and write the results json + an overlay.

    python examples/track_folder.py FRAMES_OR_VIDEO --model MODEL [--out out] [--num-refs 5]

MODEL is a cmasktrack model directory, a Hugging Face hub id, or an official CMaskTrack R-CNN
.pth checkpoint (converted on the fly); default: the demo model shipped with the package.
"""

import argparse
import json
import os

import cmasktrack
from cmasktrack import CMaskTrack

ap = argparse.ArgumentParser()
ap.add_argument("input")
ap.add_argument("--model", default=cmasktrack.DEMO_MODEL)
ap.add_argument("--out", default="out")
ap.add_argument("--num-refs", type=int, default=None)
ap.add_argument("--device", default=None)
args = ap.parse_args()

model = CMaskTrack.from_pretrained(args.model, device=args.device)
result = model.track_video(args.input, num_refs=args.num_refs)
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result.to_ytvis(video_id=1), f)
for track in result.tracks:
    print(f"track {track.track_id}: {track.category_name} {track.score:.2f} in {len(track.frames)} frames")
    first = track.frame_indices[0]
    mask = track.mask(first)  # dense (H, W) bool mask of its first frame
    print(f"    first frame {first}: box {track.box(first).round(1).tolist()}, {int(mask.sum())} px")
print("overlay:", result.render(args.input, os.path.join(args.out, "overlay.gif")))
