"""Convert an official CMaskTrack R-CNN (OVIS) or MaskTrack R-CNN (YouTube-VIS) checkpoint into
a cmasktrack model directory (config.json + model.safetensors), then load it back.

    python examples/convert_official.py cmasktrack_rcnn_r50_fpn_1x_ovis.pth ovis_model/

The same as `cmasktrack convert official.pth out_dir/`. The file is read with
torch.load(weights_only=True): no arbitrary object is unpickled.
"""

import sys

from cmasktrack import CMaskTrack

src, dst = sys.argv[1], sys.argv[2]
model = CMaskTrack.from_official_checkpoint(src)
model.save_pretrained(dst)
reloaded = CMaskTrack.from_pretrained(dst, device="cpu")
cfg = reloaded.config
print(f"{src} -> {dst}: ResNet-{cfg.depth}, {cfg.num_categories} categories, calibration={cfg.calibration}")
