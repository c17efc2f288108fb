"""Deprecated alias of :mod:`cmasktrack.train.initialisation` (the name read as ``__init__``)."""

import warnings

from ..weights import CLASS_SPECIFIC  # noqa: F401
from .initialisation import (  # noqa: F401
    InitReport,
    detect_checkpoint_kind,
    initialise_model,
    normalise_frozen_batchnorm,
    torchvision_to_cmasktrack_key,
)

__all__ = ["InitReport", "initialise_model", "detect_checkpoint_kind", "torchvision_to_cmasktrack_key",
           "normalise_frozen_batchnorm"]

warnings.warn("cmasktrack.train.init is deprecated: use cmasktrack.train.initialisation",
              DeprecationWarning, stacklevel=2)
