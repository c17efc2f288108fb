"""Deprecated alias of :mod:`cmasktrack.model_config` (the model configuration;
``cmasktrack.train.config`` is the training configuration)."""

import warnings

from .model_config import CONFIG_NAME, CMaskTrackConfig, ovis_config, read_json  # noqa: F401
from .weights import WEIGHTS_NAME  # noqa: F401

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CMaskTrackConfig", "ovis_config", "read_json"]

warnings.warn("cmasktrack.config is deprecated: use cmasktrack.model_config (or cmasktrack.CMaskTrackConfig)",
              DeprecationWarning, stacklevel=2)
