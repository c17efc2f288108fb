"""The user-facing model: ``CMaskTrack.from_pretrained(...)`` and ``model.track_video(...)``."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional, Union

import torch

from .model_config import CMaskTrackConfig
from .modeling.cmasktrack_rcnn import CMaskTrackRCNN
from .video_result import VideoResult
from .tracking import TrackOptions, VideoTracker, track_frames
from .weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    convert_official_state_dict,
    fit_and_load,
    infer_config,
    load_official_state_dict,
    read_model_dir,
)

OFFICIAL_SUFFIXES = (".pth", ".pt", ".pkl", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class CMaskTrack(CMaskTrackRCNN):
    """CMaskTrack R-CNN with loading, saving and video tracking.

    >>> model = CMaskTrack.from_pretrained("path/or/hub-id")          # doctest: +SKIP
    >>> result = model.track_video("frames/")                          # doctest: +SKIP
    >>> result.to_ytvis(video_id=1)                                    # doctest: +SKIP
    """

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(
        cls,
        source: Union[str, os.PathLike],
        device: Optional[Union[str, torch.device]] = None,
        revision: Optional[str] = None,
        dtype: torch.dtype = torch.float32,
        **config_overrides: Any,
    ) -> "CMaskTrack":
        """Load a model from

        - a local directory with ``config.json`` + ``model.safetensors`` (``save_pretrained``),
        - an official mmdetection checkpoint file (``.pth`` with a ``state_dict``) of
          CMaskTrack R-CNN (26 classes, OVIS) or MaskTrack R-CNN (41 classes, YouTube-VIS; it has
          no calibration weights and runs without calibration),
        - a Hugging Face hub repo id (``owner/name``), downloaded through ``huggingface_hub`` and
          cached; ``HF_HUB_OFFLINE=1`` reads the cache only. ``revision`` picks a branch/tag/commit.

        ``device`` defaults to CUDA when available. ``config_overrides`` change test-time
        settings (e.g. ``score_threshold=0.1``, ``num_refs=2``). The model is in eval mode.
        """
        src = os.fspath(source)
        if os.path.isdir(src):
            model = cls._from_directory(src, dtype, config_overrides)
        elif os.path.isfile(src):
            if src.endswith(".safetensors"):
                model = cls._from_directory(os.path.dirname(src) or ".", dtype, config_overrides)
            else:
                model = cls.from_official_checkpoint(src, dtype=dtype, **config_overrides)
        elif not _HUB_ID.match(src) or src.endswith(OFFICIAL_SUFFIXES + (".safetensors", ".json")):
            raise FileNotFoundError(f"no such model file or directory: {src}")
        else:
            model = cls._from_hub(src, revision, dtype, config_overrides)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device).eval()

    @classmethod
    def _from_directory(cls, path: str, dtype: torch.dtype, overrides: Dict[str, Any]) -> "CMaskTrack":
        config, state = read_model_dir(path)
        if overrides:
            config = CMaskTrackConfig.from_dict({**config.to_dict(), **overrides})
        model = cls(config).to(dtype)
        model.load_weights(state, source=os.path.join(path, WEIGHTS_NAME))
        return model

    @classmethod
    def _from_hub(cls, repo_id: str, revision: Optional[str], dtype: torch.dtype,
                  overrides: Dict[str, Any]) -> "CMaskTrack":
        from huggingface_hub import hf_hub_download

        try:
            cfg = hf_hub_download(repo_id, CONFIG_NAME, revision=revision)
            hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision)
        except Exception as e:
            raise OSError(
                f"could not get model {repo_id!r} (revision {revision or 'main'}) from the Hugging Face hub or its "
                f"cache: {type(e).__name__}: {e}. Pass a local directory or an official .pth file instead, or set "
                "HF_HUB_OFFLINE=1 to use only the local cache."
            ) from None
        return cls._from_directory(os.path.dirname(cfg), dtype, overrides)

    @classmethod
    def from_official_checkpoint(cls, path: str, dtype: torch.dtype = torch.float32, **config_overrides: Any) -> "CMaskTrack":
        """Build the model an official ``.pth`` describes and load its weights (see
        :mod:`cmasktrack.weights`)."""
        sd = load_official_state_dict(path)
        config = infer_config(sd, **config_overrides)
        if "track_head.fcs.0.weight" not in sd:
            raise CheckpointError(
                f"{path} has no tracking head (track_head.fcs.*): it is a plain Mask R-CNN checkpoint, not a "
                "(C)MaskTrack R-CNN one; use it to initialise training (cmasktrack.train) instead"
            )
        model = cls(config).to(dtype)
        converted = convert_official_state_dict(sd, model.state_dict())
        model.load_state_dict(converted, strict=True)
        return model

    def load_weights(self, state: Dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Strictly load a cmasktrack state dict (any float dtype; cast to the model's); a
        :class:`~cmasktrack.weights.CheckpointError` lists every missing, unexpected or
        mis-shaped key."""
        fit_and_load(self, state, source)

    def save_pretrained(self, path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path`` (created).
        ``dtype=torch.float16`` halves the file (the weights are cast back on load)."""
        from safetensors.torch import save_file

        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.config.save(os.path.join(path, CONFIG_NAME))
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                 for k, v in self.state_dict().items()}
        save_file(state, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})

    # ------------------------------------------------------------------ inference
    def new_tracker(self, options: Optional[TrackOptions] = None, **option_kwargs: Any) -> VideoTracker:
        """A fresh per-video streaming state (``push`` frames, then ``finish``); ``options`` as
        in :meth:`track_video` (``new_tracker(num_refs=5, precision="bf16")`` works too)."""
        return VideoTracker(self, options, **option_kwargs)

    @torch.no_grad()
    def track_video(
        self,
        frames: Any,
        options: Optional[TrackOptions] = None,
        *,
        num_refs: Optional[int] = None,
        causal: Optional[bool] = None,
        score_threshold: Optional[float] = None,
        batch_refs: Optional[int] = None,
        precision: Optional[str] = None,
        compile: Optional[Union[bool, str]] = None,
        share_heads: Optional[bool] = None,
        prefetch: Optional[int] = None,
        channels_last: Optional[bool] = None,
        progress: bool = True,
    ) -> VideoResult:
        """Detect, segment and track the objects of one video.

        ``frames``: a folder of frames (natural order; jpg/png/...), a list of paths, a list or
        (T, H, W, 3) array of uint8 RGB frames, any iterable of them (streamed), or a video file
        (needs PyAV: ``pip install cmasktrack[video]``).

        ``options``: a :class:`~cmasktrack.tracking.TrackOptions`; the keyword arguments
        override its fields (None: keep them). ``num_refs`` (default: the config's, 5 for the
        official model) reference frames before and, unless ``causal`` (default False), after
        each frame calibrate its features; 0 runs without calibration (MaskTrack R-CNN).
        ``score_threshold`` overrides the detection threshold (0.05). ``batch_refs`` caps how
        many references are calibrated at once (memory). ``precision`` (``"fp32"``, ``"tf32"``,
        ``"bf16"``, ``"fp16"``), ``compile`` (``torch.compile``), ``channels_last``,
        ``share_heads`` (one box / mask head pass on the references' mean calibrated features:
        faster, not the official model) and ``prefetch`` (frames decoded ahead in a
        background thread) are described in :class:`~cmasktrack.tracking.TrackOptions`.
        """
        from .data.frames import read_frames

        if self.training:
            raise RuntimeError("track_video needs eval mode: call model.eval() first")
        options = TrackOptions.build(options, num_refs=num_refs, causal=causal, score_threshold=score_threshold,
                                     batch_refs=batch_refs, precision=precision, compile=compile,
                                     share_heads=share_heads, prefetch=prefetch, channels_last=channels_last)
        source = read_frames(frames)
        return track_frames(self, source, options=options, progress=progress, total=source.length_hint)
