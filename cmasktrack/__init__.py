"""cmasktrack: CMaskTrack R-CNN video instance segmentation under occlusion, in modern PyTorch."""

__version__ = "0.1.0.dev0"
