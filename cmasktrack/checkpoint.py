"""Deprecated alias of :mod:`cmasktrack.weights`, which holds every weight format (official
mmdetection v1, torchvision, cmasktrack model directories), their key maps and the fit check."""

import warnings

from .weights import (  # noqa: F401
    CheckpointError,
    convert_official_state_dict,
    infer_config,
    load_official_state_dict,
    official_to_cmasktrack_key,
)

__all__ = ["CheckpointError", "convert_official_state_dict", "infer_config", "load_official_state_dict",
           "official_to_cmasktrack_key"]

warnings.warn("cmasktrack.checkpoint is deprecated: use cmasktrack.weights", DeprecationWarning, stacklevel=2)
