import numpy as np
import pytest
import torch

from cmasktrack.model_config import CMaskTrackConfig


def tiny_config(**kw):
    """A small, fast model: ResNet-18, 3 categories, 128x96 input, few proposals."""
    base = dict(depth=18, num_classes=4, image_scale=(128, 96), category_names=["a", "b", "c"],
                rpn_pre_nms_top_n=200, rpn_post_nms_top_n=100, rpn_max_num=100, num_refs=2,
                detections_per_img=20)
    base.update(kw)
    return CMaskTrackConfig(**base)


@pytest.fixture(scope="session")
def tiny_model():
    from cmasktrack.model import CMaskTrack

    torch.manual_seed(0)
    return CMaskTrack(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (72, 100, 3), dtype=np.uint8)
    frames = []
    for t in range(5):  # a textured background with a bright square moving right
        f = base.copy()
        f[20:45, 10 + 8 * t: 35 + 8 * t] = (250, 30, 30)
        frames.append(f)
    return frames
