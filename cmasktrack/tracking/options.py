"""Test-time tracking options: one small frozen object, validated in one place.

Every entry point takes it as ``options`` (:meth:`CMaskTrack.track_video
<cmasktrack.model.CMaskTrack.track_video>`, :meth:`~cmasktrack.model.CMaskTrack.new_tracker`,
:class:`~cmasktrack.tracking.VideoTracker`, :func:`~cmasktrack.tracking.track_frames`,
:func:`~cmasktrack.tracking.track_dataset`, ``cmasktrack track``); the individual keyword
arguments (``num_refs=2``, ...) remain accepted there and are combined with it by
:meth:`TrackOptions.build`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

__all__ = ["TrackOptions", "PRECISIONS"]

#: The values of :attr:`TrackOptions.precision`.
PRECISIONS: Tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class TrackOptions:
    """How a video is tracked (the network and its weights are the model's).

    Attributes:
        num_refs: reference frames before and, unless ``causal``, after each frame that
            calibrate its features; ``None``: the model config's (5 for the official model);
            0 runs without calibration (MaskTrack R-CNN).
        causal: past frames only as references (live streams): each frame's result is ready
            as soon as it is pushed.
        score_threshold: detection score threshold in [0, 1]; ``None``: the model config's
            (0.05).
        batch_refs: calibrate at most this many references at once (memory); ``None``: all.
        precision: ``"fp32"`` (default; on CUDA with TF32 off for matmuls and cuDNN),
            ``"tf32"`` (CUDA: TF32 on for matmuls and cuDNN during the call, restored after; on
            the CPU the same as fp32), ``"bf16"`` / ``"fp16"``: autocast of the backbone, the
            RPN head and the box / mask / track heads to that type (CUDA; on the CPU the CPU's
            autocast, fast only on CPUs with bf16 / fp16 units such as AMX). The correlation,
            the deformable conv, RoI pooling, box decoding, NMS, mask paste and the tracker
            stay float32 (network outputs are cast to float32 before softmax / decoding /
            sigmoid).
        compile: ``torch.compile`` the per-frame network (backbone + FPN, RPN head, the
            calibration, the box / mask / track heads) with the default backend
            (``True``) or the named backend (``"inductor"``, ``"eager"``, ...); compiles on
            the first frames (minutes on a CPU), cached for the model's later videos.
        share_heads: average the calibrated features over the references and run the box and
            mask heads once per frame instead of once per reference (the official model
            averages the heads' outputs): much faster with many references, **a departure
            from the official model** (its speed is in BENCHMARKS.md, "Fast mode"; its AP cost
            needs a model whose calibration works and is not measured yet).
        prefetch: frames decoded and preprocessed ahead in a background thread (a queue of
            this many; pinned memory on CUDA) while the network runs; 0: none; ``None``
            (default): 2 on CUDA, 0 on the CPU (there the thread competes with the network's
            threads for the cores: measured 6-12 % slower on a 2-core CPU, BENCHMARKS.md).
            Used by :func:`~cmasktrack.tracking.track_frames` / ``track_video`` (``push``
            takes frames one by one).
        channels_last: run the backbone + FPN on a channels-last input; ``None`` (auto): only
            with bf16 / fp16 (measured faster; fp32 keeps the reference layout, so its results
            stay bit-identical; ``True`` was faster in fp32 too on the CPUs measured, see
            BENCHMARKS.md).

    Raises:
        ValueError: a value out of range; TypeError: a value of the wrong type.
    """

    num_refs: Optional[int] = None
    causal: bool = False
    score_threshold: Optional[float] = None
    batch_refs: Optional[int] = None
    precision: str = "fp32"
    compile: Union[bool, str] = False
    share_heads: bool = False
    prefetch: Optional[int] = None
    channels_last: Optional[bool] = None

    def __post_init__(self) -> None:
        for name, low in (("num_refs", 0), ("batch_refs", 1), ("prefetch", 0)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be a whole number, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
            object.__setattr__(self, name, int(value))
        for name in ("causal", "share_heads"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise TypeError(f"channels_last must be True, False or None (auto), got {self.channels_last!r}")
        if not isinstance(self.precision, str):
            raise TypeError(f"precision must be a string, one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.precision.lower() not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        object.__setattr__(self, "precision", self.precision.lower())
        if not isinstance(self.compile, (bool, str)):
            raise TypeError(f"compile must be True, False or a torch.compile backend name, got {self.compile!r}")
        if self.compile == "":
            raise ValueError("compile: an empty backend name (use True for the default backend)")
        t = self.score_threshold
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, numbers.Real):
                raise TypeError(f"score_threshold must be a number, got {t!r}")
            if not (math.isfinite(t) and 0.0 <= t <= 1.0):
                raise ValueError(f"score_threshold must be in [0, 1], got {t}")
            object.__setattr__(self, "score_threshold", float(t))

    def prefetch_for(self, device: Any) -> int:
        """The prefetch depth on ``device`` (a ``torch.device`` or its name): ``prefetch``, or
        when it is None, 2 on CUDA and 0 elsewhere."""
        if self.prefetch is not None:
            return self.prefetch
        kind = getattr(device, "type", None) or str(device).split(":")[0]
        return 2 if kind == "cuda" else 0

    @classmethod
    def build(cls, options: Optional["TrackOptions"] = None, **changes: Any) -> "TrackOptions":
        """``options`` (default: every default) with the ``changes`` that are not None applied:
        how an entry point combines its ``options`` with individual keyword arguments.

        Raises:
            TypeError: ``options`` is not a :class:`TrackOptions`, or a change names no option.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"options must be a TrackOptions, got {type(options).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown tracking option(s) {unknown}; the options are {sorted(names)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(options, **changes) if changes else options
