"""The user-facing model: ``CMaskTrack.from_pretrained(...)`` and ``model.track_video(...)``."""

from __future__ import annotations

import errno
import os
import re
from typing import Any, Dict, Optional, Union

import torch

from .model_config import CMaskTrackConfig
from .modeling.cmasktrack_rcnn import CMaskTrackRCNN
from .video_result import VideoResult
from .tracking import TrackOptions, TrackStream, VideoTracker, track_frames
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
#: File suffixes that make a model argument a path, never a hub id.
MODEL_FILE_SUFFIXES = OFFICIAL_SUFFIXES + (".safetensors", ".json", ".pth.tar", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_path(source: str) -> bool:
    """Whether a model argument names a local file or directory rather than a hub id: it starts
    with ``.``, ``~`` or a path separator, ends in a separator or a model-file suffix
    (:data:`MODEL_FILE_SUFFIXES`), or is not of the hub's ``name`` / ``owner/name`` form (more
    than one separator, a backslash, spaces, ...)."""
    seps = ("/", "\\") + ((os.sep,) if os.sep not in "/\\" else ())
    return (source.startswith((".", "~") + seps) or source.endswith(seps)
            or source.lower().endswith(MODEL_FILE_SUFFIXES) or not _HUB_ID.match(source))


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    """``device`` as a ``torch.device`` (default: ``cuda`` when a GPU is visible, else ``cpu``),
    checked: CUDA asked for without a visible GPU, or a GPU index out of range, is a
    ``RuntimeError`` that names the torch build."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} (cpu, cuda, cuda:1, ...): {exc}") from None
    if dev.type == "cuda":
        build = f"torch {torch.__version__.split('+')[0]}, CUDA build {torch.version.cuda or 'none: a CPU-only torch'}"
        if not torch.cuda.is_available():
            raise RuntimeError(f"CUDA requested but no GPU is visible ({build})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(f"{dev} requested but only {count} GPU{'s are' if count != 1 else ' is'} visible "
                               f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}; {build})")
    return dev


def _hub_unreachable(timeout: float = 3.0) -> Optional[str]:
    """Why the hub's endpoint cannot be reached (a quick TCP connection), or None when it can
    (or a proxy is configured, which a direct connection cannot judge)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{url.scheme}://{url.netloc} cannot be reached: {exc.strerror or exc}"
    return None


def download_from_hub(repo_id: str, revision: Optional[str] = None) -> str:
    """Fetch a model directory's files from the Hugging Face hub (or its cache) and return the
    local path of its ``config.json``. When the hub cannot be reached only the cache is read
    (no retries); ``HF_HUB_OFFLINE=1`` reads only the cache.

    Raises:
        OSError: one line saying that ``repo_id`` is not a local path and why the hub did not
            give it (not in the cache, with the cache's folder; no such model; unreachable).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    rev = f" (revision {revision})" if revision else ""
    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES",
                                                                                                  "TRUE")
    unreachable = None if offline else _hub_unreachable()
    local_only = offline or unreachable is not None
    not_local = f"{repo_id!r} is not a local file or directory"
    try:
        cfg = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, local_files_only=local_only)
        hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, local_files_only=local_only)
    except LocalEntryNotFoundError:
        if offline:
            why = "HF_HUB_OFFLINE is set, so the hub was not asked"
        elif unreachable:
            why = f"the hub was not asked: {unreachable}"
        else:
            why = "the hub could not be reached"
        raise OSError(f"{not_local}, and model {repo_id!r}{rev} is not in the Hugging Face cache "
                      f"({constants.HF_HUB_CACHE}); {why}") from None
    except RepositoryNotFoundError:
        raise OSError(f"{not_local}, nor a model on the Hugging Face hub ({constants.ENDPOINT}/{repo_id} "
                      "does not exist or is private)") from None
    except RevisionNotFoundError:
        raise OSError(f"{not_local}; the hub model has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise OSError(f"{not_local}; the hub repository {repo_id!r}{rev} has no {CONFIG_NAME} and "
                      f"{WEIGHTS_NAME}: it is not a cmasktrack model") from None
    except Exception as e:  # noqa: BLE001 - HTTP errors, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise OSError(f"{not_local}, and model {repo_id!r}{rev} could not be fetched from the Hugging Face hub: "
                      f"{type(e).__name__}{': ' + first if first else ''}") from None
    return cfg


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

        A ``source`` that looks like a path (:func:`looks_like_path`: it starts with ``.``, ``~``
        or ``/``, ends in a model-file suffix or ``/``, or is no valid hub id) and does not exist
        raises ``FileNotFoundError`` at once, without asking the hub. A name that is neither
        local nor found on the hub (or in its cache, when the hub cannot be reached or
        ``HF_HUB_OFFLINE=1``) is an ``OSError`` that says both in one line.

        ``device`` defaults to CUDA when available; ``"cuda"`` without a visible GPU is an error
        that says which torch build this is (:func:`resolve_device`). ``config_overrides`` change test-time
        settings (e.g. ``score_threshold=0.1``, ``num_refs=2``). The model is in eval mode.
        """
        src = os.fspath(source)
        device = resolve_device(device)  # before any work: "cuda" without a GPU fails here
        local = os.path.expanduser(src)
        if os.path.isdir(local):
            model = cls._from_directory(local, dtype, config_overrides)
        elif os.path.isfile(local):
            if local.endswith(".safetensors"):
                model = cls._from_directory(os.path.dirname(local) or ".", dtype, config_overrides)
            else:
                model = cls.from_official_checkpoint(local, dtype=dtype, **config_overrides)
        elif looks_like_path(src):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", src)
        else:
            model = cls._from_hub(src, revision, dtype, config_overrides)
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
        cfg = download_from_hub(repo_id, revision)
        return cls._from_directory(os.path.dirname(cfg), dtype, overrides)

    @classmethod
    def from_official_checkpoint(cls, path: str, dtype: torch.dtype = torch.float32, **config_overrides: Any) -> "CMaskTrack":
        """Build the model an official ``.pth`` describes and load its weights (see
        :mod:`cmasktrack.weights`)."""
        return cls.from_official_state_dict(load_official_state_dict(path), path, dtype, **config_overrides)

    @classmethod
    def from_official_state_dict(cls, sd: Dict[str, torch.Tensor], path: str = "the state dict",
                                 dtype: torch.dtype = torch.float32, **config_overrides: Any) -> "CMaskTrack":
        """:meth:`from_official_checkpoint` on an official state dict already read
        (:func:`~cmasktrack.weights.load_official_state_dict`); ``path`` names it in errors."""
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

    def track_stream(
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
        channels_last: Optional[bool] = None,
        images: bool = False,
        progress: bool = False,
    ) -> TrackStream:
        """Track a live or long source frame by frame: a :class:`~cmasktrack.tracking.TrackStream`
        that yields each frame's :class:`~cmasktrack.video_result.FrameResult` as soon as it is
        ready, with its ``timestamp`` and ``source_index``, keeping nothing (flat memory).

        >>> src = read_frames("rtsp://camera/stream", fps=5)                    # doctest: +SKIP
        >>> for res in model.track_stream(src, causal=True):                     # doctest: +SKIP
        ...     print(res.index, res.timestamp, res.track_ids)

        ``frames``: anything :meth:`track_video` takes, a network stream (``rtsp://``,
        ``http(s)://``), a camera (``/dev/video0``), or a
        :class:`~cmasktrack.data.frames.FrameSource` (sampling with ``stride`` / ``fps`` /
        ``start`` / ``max_frames``, raw frames on a pipe, FFmpeg formats). ``causal=True`` is
        the mode for live sources: each result is ready when its frame arrives. ``options``
        and the keyword arguments as in :meth:`track_video`; ``images=True`` yields
        ``(result, image)`` pairs (for drawing). Stop it cleanly with ``stream.stop()`` or
        ``with stream.stop_on_signals(): ...`` (Ctrl-C then ends the iteration normally).
        """
        options = TrackOptions.build(options, num_refs=num_refs, causal=causal, score_threshold=score_threshold,
                                     batch_refs=batch_refs, precision=precision, compile=compile,
                                     share_heads=share_heads, channels_last=channels_last)
        return TrackStream(self, frames, options, images=images, progress=progress)
