"""Deprecated alias of :mod:`cmasktrack.tracking.dataset` (:func:`track_dataset`)."""

import warnings

from .tracking.dataset import track_dataset  # noqa: F401

__all__ = ["track_dataset"]

warnings.warn("cmasktrack.inference is deprecated: use cmasktrack.track_dataset (cmasktrack.tracking.dataset)",
              DeprecationWarning, stacklevel=2)
