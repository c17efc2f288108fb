"""Compiled operators of cmasktrack and their pure-PyTorch fallbacks.

``correlation`` runs the compiled op ``torch.ops.cmasktrack.correlation`` (built from
``csrc/`` into ``cmasktrack._C``) when it is available for the inputs' device and the
PyTorch implementation ``correlation_torch`` otherwise; ``has_extension()`` and
``extension_info()`` say which one is active; ``with use_backend("torch"):`` makes the calls
inside the block (those of the model too) use the fallback.
"""

from cmasktrack.ops._extension import extension_devices, extension_info, has_extension
from cmasktrack.ops.correlation import (
    correlation,
    correlation_torch,
    displacements,
    resolve_backend,
    use_backend,
)

__all__ = [
    "correlation",
    "correlation_torch",
    "displacements",
    "extension_devices",
    "extension_info",
    "has_extension",
    "resolve_backend",
    "use_backend",
]
