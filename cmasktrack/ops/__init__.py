"""Compiled operators of cmasktrack and their pure-PyTorch fallbacks.

``correlation`` runs the compiled op ``torch.ops.cmasktrack.correlation`` (built from
``csrc/`` into ``cmasktrack._C``) when it is available for the inputs' device and the
PyTorch implementation ``correlation_torch`` otherwise; ``has_extension()`` and
``extension_info()`` say which one is active.
"""

from cmasktrack.ops._extension import extension_devices, extension_info, has_extension
from cmasktrack.ops.correlation import correlation, correlation_torch, displacements, resolve_backend

__all__ = [
    "correlation",
    "correlation_torch",
    "displacements",
    "extension_devices",
    "extension_info",
    "has_extension",
    "resolve_backend",
]
