"""Does this installation work on this machine's CPU and GPUs?  ``python -m cmasktrack.selftest``
(also ``cmasktrack selftest``).

On every device present (the CPU always, each CUDA device; ``--device`` picks), prints a table
of checks and exits non-zero when one fails.  It needs nothing beyond the package: the clips
come from :mod:`cmasktrack.data.synthetic`, the models are the shipped demo model and a
random-weight R50 model with the official layout.

Checks, per device:

* **correlation**: the compiled op (``cmasktrack._C``) against the pure-PyTorch fallback
  computed in float64 on the same device from the same (rounded) inputs: forward and both input
  gradients, in float64 and float32 (and float16 / bfloat16), on odd sizes, batches of 1-3,
  patch 3-16 and strided, channels-last and batch-expanded inputs; plus
  ``torch.autograd.gradcheck`` in float64 (``gradgradcheck`` too in the full run).
  Error measure: max |result - reference| / max |reference|, at most
  ``TOLERANCES["correlation"][dtype]`` (half and bfloat16: about four roundings of the output).
* **model**: ``track_video`` on a synthetic clip with the demo model and with a random
  official-layout ResNet-50 model at a small input size, (a) on this device against the CPU run
  and (b) with the compiled op against the fallback op on this device
  (:func:`cmasktrack.ops.use_backend`): same track ids and labels in every frame, scores within
  ``TOLERANCES["track_score"]``, mask IoU at least ``TOLERANCES["track_mask_iou"]``.  CUDA runs
  are compared with TF32 off (torch's default lets cuDNN use TF32, which is not fp32
  arithmetic); the full run adds an INFO row with torch's default flags.  On the CPU, (a)
  is the run itself and is reported as ``n/a``; (b) is the real CPU check.
* **train**: one training iteration (``cmasktrack.train.TrainingModule``, official target
  assignment and losses) on a synthetic pair of frames: finite losses and gradients (the demo
  model; the random R50 too in the full run); on CUDA the demo model also under float16
  autocast (the training loop's AMP; bfloat16 too in the full run; not the random R50, whose
  unnormalised features give match logits beyond float16's range), each
  loss within ``amp_loss_rtol`` * |fp32 loss| + ``amp_loss_atol`` of the fp32 one and the
  gradient's cosine similarity with the fp32 gradient at least ``amp_grad_cosine`` (the
  RoI sampling is seeded alike, but proposals can differ at the last bit, hence the margin).
  Training uses AMP on CUDA only, so the CPU row is ``n/a``.
* **ddp**: a one-process DistributedDataParallel step over NCCL on CUDA (gloo on the CPU),
  TCP rendezvous on 127.0.0.1, world size 1, the process group ``torchrun`` sets up; two
  iterations (the second fails if a parameter got no gradient in the first), gradients within
  ``ddp_grad`` (relative norm) of the same step without DDP.

``--quick`` uses small sizes (well under a minute on a GPU; it is part of the test suite on the
CPU); the full run takes a few minutes on one GPU.  Exit status: 0 when no check failed, 1 when
one did (``--require-extension`` also fails checks skipped because the compiled op is missing
for a device), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["TOLERANCES", "CheckResult", "SelftestReport", "run_selftest", "environment", "format_environment",
           "cpu_model", "compare_tracks", "add_arguments", "run_from_args", "main"]

#: Tolerances of every comparison (see the module docstring).
TOLERANCES: Dict[str, Any] = {
    # max |compiled - fallback in float64| / max |fallback|, per input dtype
    "correlation": {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2},
    "track_score": 1e-3,
    "track_mask_iou": 0.99,
    "amp_loss_rtol": 0.05,
    "amp_loss_atol": 0.02,
    "amp_grad_cosine": 0.99,
    "ddp_grad": 1e-3,
}

PASS, FAIL, SKIP, NA, INFO = "PASS", "FAIL", "SKIP", "n/a", "INFO"


@dataclass
class CheckResult:
    """One row of the table: ``status`` is PASS, FAIL, SKIP, n/a (does not apply) or INFO."""

    device: str
    check: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class SelftestReport:
    """What :func:`run_selftest` returns."""

    environment: Dict[str, Any]
    results: List[CheckResult] = field(default_factory=list)
    quick: bool = False
    require_extension: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> List[CheckResult]:
        """The failed checks (with ``require_extension``, also those skipped for a missing op)."""
        return [r for r in self.results
                if r.status == FAIL or (self.require_extension and r.status == SKIP and "compiled op" in r.detail)]

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failed

    def to_dict(self) -> Dict[str, Any]:
        """Plain-json form."""
        return {"ok": self.ok, "quick": self.quick, "seconds": round(self.seconds, 2),
                "tolerances": TOLERANCES, "environment": self.environment,
                "results": [asdict(r) for r in self.results]}

    def format(self) -> str:
        """The environment and the table of checks, as printed."""
        lines = [format_environment(self.environment), ""]
        width = {"device": 7, "check": 5}
        for r in self.results:
            width["device"] = max(width["device"], len(r.device))
            width["check"] = max(width["check"], len(r.check))
        head = f"{'device':<{width['device']}}  {'check':<{width['check']}}  result  {'time':>6}  detail"
        lines += [head, "-" * len(head)]
        failed = {id(r) for r in self.failed}
        for r in self.results:
            status = FAIL if id(r) in failed else r.status
            lines.append(f"{r.device:<{width['device']}}  {r.check:<{width['check']}}  {status:<6}  "
                         f"{r.seconds:5.1f}s  {r.detail}")
        counts = {s: sum(1 for r in self.results if r.status == s) for s in (PASS, SKIP, NA, INFO)}
        lines.append("")
        lines.append(f"{len(self.results)} checks in {self.seconds:.0f} s: {counts[PASS]} passed, "
                     f"{len(self.failed)} failed, {counts[SKIP]} skipped, {counts[NA]} not applicable, "
                     f"{counts[INFO]} informational -> {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# sizes


@dataclass(frozen=True)
class _Plan:
    quick: bool
    # (B, C, H, W, patch, dilation, layout)
    corr_cases: Tuple[Tuple[int, int, int, int, int, int, str], ...]
    gradcheck_cases: Tuple[Tuple[int, int, int, int, int, int], ...]
    gradgradcheck: bool
    clip_frames: int
    demo_num_refs: Optional[int]
    r50_config: Dict[str, Any]
    r50_frames: int
    r50_num_refs: int
    train_scale: Tuple[int, int]
    train_pairs: int
    train_config: Dict[str, Any]
    train_r50: bool
    extra_info: bool


_CORR_QUICK = (
    (2, 33, 13, 23, 16, 2, "contiguous"),  # the real geometry, odd sizes
    (3, 7, 5, 9, 3, 1, "strided"),
    (2, 20, 11, 7, 4, 2, "channels_last"),  # even patch
    (3, 16, 9, 12, 5, 3, "expanded"),  # one target frame against 3 references
)
_CORR_FULL = _CORR_QUICK + (
    (1, 256, 48, 80, 16, 2, "contiguous"),  # P3 of a 640x384 frame
    (2, 64, 37, 61, 16, 2, "expanded"),
    (1, 3, 2, 3, 7, 1, "contiguous"),  # patch wider than the map
    (1, 1, 1, 1, 1, 1, "contiguous"),
)
_GRADCHECK = ((2, 3, 5, 6, 3, 2), (1, 2, 4, 5, 4, 1))

_QUICK = _Plan(
    quick=True, corr_cases=_CORR_QUICK, gradcheck_cases=_GRADCHECK, gradgradcheck=False,
    clip_frames=3, demo_num_refs=1,
    r50_config=dict(image_scale=(192, 112), rpn_pre_nms_top_n=100, rpn_post_nms_top_n=50, rpn_max_num=50,
                    detections_per_img=8),
    r50_frames=2, r50_num_refs=1,
    train_scale=(160, 96), train_pairs=1, train_config=dict(rpn_num_samples=64, rcnn_num_samples=64),
    train_r50=False, extra_info=False,
)
_FULL = _Plan(
    quick=False, corr_cases=_CORR_FULL, gradcheck_cases=_GRADCHECK, gradgradcheck=True,
    clip_frames=8, demo_num_refs=None,  # the model's own (5, the official setting)
    r50_config=dict(image_scale=(384, 224), detections_per_img=30),
    r50_frames=5, r50_num_refs=2,
    train_scale=(320, 192), train_pairs=2, train_config={},  # the official sampling
    train_r50=True, extra_info=True,
)


# ------------------------------------------------------------------------------------------
# environment


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_isa_flags() -> List[str]:
    """The vector / matrix extensions Linux reports (avx2, avx512f, amx_bf16, ...)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "asimd", "sve")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def _nccl_version() -> str:
    import torch

    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int (2708) in older ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def environment() -> Dict[str, Any]:
    """Versions, the extension's build, the CPU and every visible GPU (for reports)."""
    import torch

    from . import __version__
    from .ops import extension_info

    env: Dict[str, Any] = {
        "cmasktrack": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "extension": extension_info(),
        "cpu": {"model": cpu_model(), "isa": _cpu_isa_flags(), "torch_threads": torch.get_num_threads(),
                "cores": os.cpu_count()},
        "cuda_available": torch.cuda.is_available(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        try:
            env["nccl"] = _nccl_version()
        except Exception:  # noqa: BLE001 - informational
            env["nccl"] = None
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            env["gpus"].append({"device": f"cuda:{i}", "name": p.name, "capability": f"{p.major}.{p.minor}",
                                "memory_gib": round(p.total_memory / 2**30, 1),
                                "multiprocessors": p.multi_processor_count})
        env["torch_cuda_arch_list"] = torch.cuda.get_arch_list()
    return env


def format_environment(env: Dict[str, Any]) -> str:
    """:func:`environment` as a few readable lines."""
    ext = env["extension"]
    if ext["available"]:
        kernels = "CPU" + (f" + CUDA {ext['cuda_version']}" if ext["cuda"] else " only (no CUDA kernels)")
        ext_line = (f"compiled op cmasktrack._C: {kernels}; CPU kernel variant {ext['cpu_kernel_isa']} "
                    f"(this CPU runs {', '.join(ext.get('cpu_kernel_isas', ()))})")
    else:
        ext_line = f"compiled op cmasktrack._C: NOT AVAILABLE ({ext['error']}); the PyTorch fallback is used"
    cpu = env["cpu"]
    lines = [
        f"cmasktrack {env['cmasktrack']}, torch {env['torch']} "
        f"({'CUDA ' + env['torch_cuda'] if env['torch_cuda'] else 'CPU-only build'}"
        f"{', cuDNN ' + str(env['cudnn']) if env.get('cudnn') else ''}"
        f"{', NCCL ' + env['nccl'] if env.get('nccl') else ''}), Python {env['python']}",
        ext_line,
        f"CPU: {cpu['model']} ({', '.join(cpu['isa']) or 'no AVX2/AVX-512/AMX'}), {cpu['cores']} cores, "
        f"torch uses {cpu['torch_threads']} threads",
    ]
    for g in env["gpus"]:
        lines.append(f"GPU {g['device']}: {g['name']}, {g['memory_gib']} GiB, compute capability {g['capability']}, "
                     f"{g['multiprocessors']} multiprocessors")
    if not env["gpus"]:
        lines.append("GPU: none visible to torch" + ("" if env["torch_cuda"] else " (CPU-only torch)"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """fp32 arithmetic on CUDA: TF32 off for matmuls and cuDNN inside the block."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| (in float64); inf when got has NaN/inf."""
    got, ref = got.detach().double(), ref.detach().double()
    if not bool(got.isfinite().all()):
        return math.inf
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    err = float((got - ref).abs().max()) if ref.numel() else 0.0
    return err / scale if scale > 0 else err


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _ext_missing(device: str) -> Optional[str]:
    """Why the compiled op cannot run on ``device`` (None when it can)."""
    from .ops import extension_info, has_extension

    if has_extension(device):
        return None
    info = extension_info()
    if not info["available"]:
        return f"compiled op cmasktrack._C not available ({info['error']})"
    return "compiled op cmasktrack._C has no CUDA kernels (built without a CUDA toolkit)"


class _Clip:
    """The synthetic clip (and the data of the training check), written once to a temp dir."""

    def __init__(self, root: str, plan: _Plan):
        import numpy as np
        from PIL import Image

        from .data.synthetic import generate

        self.root = root
        n = max(plan.clip_frames, plan.r50_frames, 4)
        self.annotations = str(generate(os.path.join(root, "clip"), 1, 7, num_frames=n, size=(320, 192),
                                        objects_per_video=(5, 6)))
        self.frames_dir = os.path.join(root, "clip", "frames")
        (video,) = sorted(os.listdir(self.frames_dir))
        paths = sorted(os.listdir(os.path.join(self.frames_dir, video)))
        self.frames = [np.asarray(Image.open(os.path.join(self.frames_dir, video, p)).convert("RGB"))
                       for p in paths]


# ------------------------------------------------------------------------------------------
# correlation


def _corr_inputs(case, dtype, device, seed: int):
    """Leaf tensors (requires_grad) and the op's inputs made from them by ``layout``."""
    import torch

    b, c, h, w, _, _, layout = case
    gen = torch.Generator().manual_seed(seed)
    if layout == "strided":  # every other column; a row/channel-transposed base
        shapes = [(b, c, h, 2 * w), (b, h, c, w)]
    elif layout == "expanded":  # one target frame expanded over the batch, as the calibration does
        shapes = [(1, c, h, w), (b, c, h, w)]
    else:
        shapes = [(b, c, h, w), (b, c, h, w)]
    leaves = [torch.randn(s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype).requires_grad_()
              for s in shapes]

    def views(x1, x2):
        if layout == "strided":
            return x1[..., ::2], x2.transpose(1, 2)
        if layout == "expanded":
            return x1.expand(b, -1, -1, -1), x2
        if layout == "channels_last":
            return x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        return x1, x2

    return leaves, views


def _check_correlation(device: str, dtype, plan: _Plan) -> Tuple[str, str]:
    import torch

    from .ops import correlation, correlation_torch

    why = _ext_missing(device)
    if why:
        return SKIP, why
    name = _dtype_name(dtype)
    tol = TOLERANCES["correlation"][name]
    worst = {"forward": 0.0, "grad1": 0.0, "grad2": 0.0}
    for i, case in enumerate(plan.corr_cases):
        patch, dil = case[4], case[5]
        leaves, views = _corr_inputs(case, dtype, device, seed=100 + i)
        out = correlation(*views(*leaves), patch, dil, backend="ext")
        if out.dtype != dtype:
            return FAIL, f"output dtype {out.dtype} for {name} inputs"
        gen = torch.Generator().manual_seed(200 + i)
        grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        grads = torch.autograd.grad(out, leaves, grad_out)
        ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
        ref = correlation_torch(*views(*ref_leaves), patch, dil)
        ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out.double())
        for key, got, want in (("forward", out, ref), ("grad1", grads[0], ref_grads[0]),
                               ("grad2", grads[1], ref_grads[1])):
            worst[key] = max(worst[key], _rel_err(got, want))
    ok = all(v <= tol for v in worst.values())
    detail = (f"{len(plan.corr_cases)} cases vs fallback (float64): max err/max|ref| forward {worst['forward']:.1e}, "
              f"grad1 {worst['grad1']:.1e}, grad2 {worst['grad2']:.1e} (tol {tol:.0e})")
    return (PASS if ok else FAIL), detail


def _check_gradcheck(device: str, plan: _Plan) -> Tuple[str, str]:
    import torch

    from .ops import correlation

    why = _ext_missing(device)
    if why:
        return SKIP, why
    done = []
    for i, (b, c, h, w, patch, dil) in enumerate(plan.gradcheck_cases):
        gen = torch.Generator().manual_seed(300 + i)
        inputs = tuple(torch.randn(b, c, h, w, generator=gen, dtype=torch.float64).to(device).requires_grad_()
                       for _ in range(2))

        def fn(x1, x2, patch=patch, dil=dil):
            return correlation(x1, x2, patch, dil, backend="ext")

        torch.autograd.gradcheck(fn, inputs)  # raises on a mismatch
        done.append(f"gradcheck {b}x{c}x{h}x{w} patch {patch} dil {dil}")
        if plan.gradgradcheck and i == 0:
            torch.autograd.gradgradcheck(fn, inputs)
            done.append("gradgradcheck")
    return PASS, "; ".join(done)


# ------------------------------------------------------------------------------------------
# model


def _mask_iou(a, b) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def compare_tracks(got, ref) -> Tuple[bool, str]:
    """Compare two :class:`~cmasktrack.video_result.VideoResult` of the same clip: the same track ids
    and labels in every frame, scores within ``TOLERANCES["track_score"]``, mask IoU at least
    ``TOLERANCES["track_mask_iou"]``.  Returns (ok, one-line summary)."""
    from .data.ytvis import decode_rle

    score_tol, iou_tol = TOLERANCES["track_score"], TOLERANCES["track_mask_iou"]
    if got.num_frames != ref.num_frames:
        return False, f"{got.num_frames} frames vs {ref.num_frames}"
    problems: List[str] = []
    n_det, max_score, min_iou = 0, 0.0, 1.0
    for fg, fr in zip(got.frames, ref.frames):
        ids_g, ids_r = [int(t) for t in fg.track_ids], [int(t) for t in fr.track_ids]
        if sorted(ids_g) != sorted(ids_r):
            problems.append(f"frame {fr.index}: track ids {sorted(ids_g)} vs {sorted(ids_r)}")
            continue
        where = {t: i for i, t in enumerate(ids_g)}
        for j, tid in enumerate(ids_r):
            i = where[tid]
            if int(fg.labels[i]) != int(fr.labels[j]):
                problems.append(f"frame {fr.index} track {tid}: label {int(fg.labels[i])} vs {int(fr.labels[j])}")
            max_score = max(max_score, abs(float(fg.scores[i]) - float(fr.scores[j])))
            min_iou = min(min_iou, _mask_iou(decode_rle(fg.masks[i]), decode_rle(fr.masks[j])))
            n_det += 1
    ok = not problems and n_det > 0 and max_score <= score_tol and min_iou >= iou_tol
    detail = (f"{ref.num_frames} frames, {n_det} detections, {len(ref.tracks)} tracks: "
              f"ids/labels {'equal' if not problems else 'DIFFER: ' + '; '.join(problems[:3])}, "
              f"max score diff {max_score:.1e} (tol {score_tol:.0e}), min mask IoU {min_iou:.4f} (tol {iou_tol})")
    if n_det == 0:
        detail += " -- no detections to compare"
    return ok, detail


class _Models:
    """The two models of the model checks, their clip settings and the CPU reference runs."""

    def __init__(self, clip: _Clip, plan: _Plan):
        self.clip = clip
        self.plan = plan
        self._cpu: Dict[str, Any] = {}
        self._reference: Dict[str, Any] = {}

    def cpu_model(self, name: str):
        import torch

        if name not in self._cpu:
            from . import DEMO_MODEL
            from .model_config import ovis_config
            from .model import CMaskTrack

            if name == "demo":
                model = CMaskTrack.from_pretrained(DEMO_MODEL, device="cpu")
            else:  # random weights, official layout (ResNet-50-FPN, 25 OVIS classes)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = CMaskTrack(ovis_config(**self.plan.r50_config)).eval()
            self._cpu[name] = model
        return self._cpu[name]

    def model(self, name: str, device: str):
        cpu = self.cpu_model(name)
        return cpu if device == "cpu" else copy.deepcopy(cpu).to(device)

    def setting(self, name: str) -> Tuple[list, Optional[int]]:
        if name == "demo":
            return self.clip.frames[: self.plan.clip_frames], self.plan.demo_num_refs
        return self.clip.frames[: self.plan.r50_frames], self.plan.r50_num_refs

    def track(self, name: str, device: str, backend: Optional[str] = None, model=None):
        import torch

        from .ops import use_backend

        frames, num_refs = self.setting(name)
        model = self.model(name, device) if model is None else model
        with use_backend(backend), torch.no_grad():
            return model.track_video(frames, num_refs=num_refs, progress=False)

    def cpu_reference(self, name: str):
        """The CPU run (default op: the compiled one when built), computed once."""
        if name not in self._reference:
            self._reference[name] = self.track(name, "cpu")
        return self._reference[name]


def _model_label(name: str, plan: _Plan) -> str:
    if name == "demo":
        return "demo model"
    w, h = plan.r50_config["image_scale"]
    return f"R50 random {w}x{h}"


def _check_tracks_vs_cpu(models: _Models, name: str, device: str) -> Tuple[str, str]:
    if device == "cpu":
        return NA, "this is the CPU run (compared with itself it is trivially equal); see 'op vs fallback'"
    with _no_tf32():
        got = models.track(name, device)
    ok, detail = compare_tracks(got, models.cpu_reference(name))
    return (PASS if ok else FAIL), detail + " [TF32 off]"


def _check_tracks_vs_fallback(models: _Models, name: str, device: str) -> Tuple[str, str]:
    why = _ext_missing(device)
    if why:
        return SKIP, why + ": both runs would use the fallback"
    model = models.model(name, device)
    with _no_tf32():
        ext = models.cpu_reference(name) if device == "cpu" else models.track(name, device, model=model)
        fallback = models.track(name, device, backend="torch", model=model)
    ok, detail = compare_tracks(ext, fallback)
    return (PASS if ok else FAIL), detail


def _info_tf32(models: _Models, device: str) -> Tuple[str, str]:
    got = models.track("demo", device)  # torch's default flags
    import torch

    flags = f"matmul TF32 {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}"
    ok, detail = compare_tracks(got, models.cpu_reference("demo"))
    return INFO, f"{'within' if ok else 'NOT within'} the fp32 tolerances: {detail} [{flags}]"


# ------------------------------------------------------------------------------------------
# training


def _train_batch(clip: _Clip, plan: _Plan, device: str):
    from .train import VISTrainDataset, collate_train

    ds = VISTrainDataset(clip.annotations, clip.frames_dir, scale=plan.train_scale, flip_ratio=0.0, ref_range=2)
    step = max(1, len(ds) // plan.train_pairs)
    return collate_train([ds[(i * step, i)] for i in range(plan.train_pairs)]).to(device)


def _train_step(model, batch, plan: _Plan, autocast_dtype=None) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Losses and gradients (float32 copies) of one training forward/backward."""
    import torch

    from .train import TrainConfig, TrainingModule, prepare_model

    cfg = TrainConfig(**plan.train_config)
    prepare_model(model, cfg)  # what train() trains: frozen stages, BatchNorm policy, train mode
    model.zero_grad(set_to_none=True)
    device_type = batch.images.device.type
    ctx = (torch.autocast(device_type=device_type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        losses = TrainingModule(model, cfg)(batch, torch.Generator().manual_seed(0))
    losses["total_loss"].backward()
    values = {k: float(v.detach()) for k, v in losses.items()}
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return values, grads


def _summarise_step(values: Dict[str, float], grads: Dict[str, Any], n_trainable: int) -> Tuple[bool, str]:
    import torch

    finite_losses = all(math.isfinite(v) for v in values.values())
    finite_grads = all(bool(g.isfinite().all()) for g in grads.values())
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))) if grads else 0.0
    losses = ", ".join(f"{k[5:] if k.startswith('loss_') else k} {v:.3f}" for k, v in values.items()
                       if k.startswith("loss") or k == "total_loss")
    ok = finite_losses and finite_grads and len(grads) > 0
    detail = (f"losses {'finite' if finite_losses else 'NOT FINITE'} ({losses}); {len(grads)}/{n_trainable} parameter "
              f"tensors got {'finite' if finite_grads else 'NON-FINITE'} gradients, norm {norm:.3g}")
    return ok, detail


class _Training:
    """fp32 reference steps per (model, device), computed once."""

    def __init__(self, models: _Models, clip: _Clip, plan: _Plan):
        self.models, self.clip, self.plan = models, clip, plan
        self._fp32: Dict[Tuple[str, str], Any] = {}

    def model(self, name: str, device: str):
        return copy.deepcopy(self.models.cpu_model(name)).to(device)

    def fp32(self, name: str, device: str):
        key = (name, device)
        if key not in self._fp32:
            model = self.model(name, device)
            batch = _train_batch(self.clip, self.plan, device)
            with _no_tf32():
                values, grads = _train_step(model, batch, self.plan)
            n = sum(1 for p in model.parameters() if p.requires_grad)
            self._fp32[key] = (values, grads, n)
        return self._fp32[key]


def _check_train_fp32(training: _Training, name: str, device: str) -> Tuple[str, str]:
    values, grads, n = training.fp32(name, device)
    ok, detail = _summarise_step(values, grads, n)
    return (PASS if ok else FAIL), detail


def _check_train_amp(training: _Training, name: str, device: str, dtype) -> Tuple[str, str]:
    import torch

    if not device.startswith("cuda"):
        return NA, "training uses AMP on CUDA only (TrainConfig.amp)"
    ref_values, ref_grads, n = training.fp32(name, device)
    model = training.model(name, device)
    batch = _train_batch(training.clip, training.plan, device)
    values, grads = _train_step(model, batch, training.plan, autocast_dtype=dtype)
    ok, detail = _summarise_step(values, grads, n)
    rtol, atol = TOLERANCES["amp_loss_rtol"], TOLERANCES["amp_loss_atol"]
    worst_key, worst = "", 0.0
    for k, v in ref_values.items():
        if not (k.startswith("loss") or k == "total_loss"):
            continue
        excess = abs(values[k] - v) / (rtol * abs(v) + atol)
        if not excess <= worst:  # also NaN
            worst_key, worst = k, excess
    common = [k for k in ref_grads if k in grads]
    a = torch.cat([grads[k].flatten() for k in common])
    b = torch.cat([ref_grads[k].flatten() for k in common])
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    ok = ok and worst <= 1.0 and cosine >= TOLERANCES["amp_grad_cosine"]
    worst_diff = abs(values[worst_key] - ref_values[worst_key]) if worst_key else 0.0
    detail += (f"; vs fp32: largest loss difference {worst_diff:.3g} ({worst_key or '-'}; "
               f"tol {rtol:g}*|loss|+{atol:g}), gradient cosine {cosine:.4f} (tol {TOLERANCES['amp_grad_cosine']})")
    return (PASS if ok else FAIL), detail


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_ddp(training: _Training, device: str) -> Tuple[str, str]:
    import datetime

    import torch
    import torch.distributed as dist

    from .train import TrainConfig, TrainingModule, prepare_model

    cuda = device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if not dist.is_available() or (cuda and not dist.is_nccl_available()):
        return FAIL, f"torch.distributed / {backend} is not available in this torch build"
    if dist.is_initialized():
        return SKIP, "a process group already exists in this process"
    index = torch.device(device).index or 0
    ref_values, ref_grads, _ = training.fp32("demo", device)
    plan = training.plan
    batch = _train_batch(training.clip, plan, device)
    model = training.model("demo", device)
    prepare_model(model, TrainConfig(**plan.train_config))
    if cuda:
        torch.cuda.set_device(index)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=120))
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(TrainingModule(model, TrainConfig(**plan.train_config)),
                                                        device_ids=[index] if cuda else None)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        with _no_tf32():
            losses = ddp(batch, torch.Generator().manual_seed(0))
            losses["total_loss"].backward()
            grads = {n: p.grad.detach().float() for n, p in model.named_parameters() if p.grad is not None}
            diff = torch.linalg.vector_norm(torch.stack([(grads[k] - ref_grads[k]).norm() for k in ref_grads]))
            scale = torch.linalg.vector_norm(torch.stack([g.norm() for g in ref_grads.values()]))
            rel = float(diff / scale)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses2 = ddp(batch, torch.Generator().manual_seed(1))  # fails if a parameter was not reduced
            losses2["total_loss"].backward()
            optimizer.step()
        if cuda:
            torch.cuda.synchronize(index)
        finite = math.isfinite(float(losses2["total_loss"].detach()))
        loss_diff = abs(float(losses["total_loss"].detach()) - ref_values["total_loss"])
        version = f"NCCL {_nccl_version()}" if cuda else "gloo"
        ok = set(grads) == set(ref_grads) and rel <= TOLERANCES["ddp_grad"] and finite
        detail = (f"{version}, world size 1, 2 iterations: gradients vs without DDP {rel:.1e} (relative norm, "
                  f"tol {TOLERANCES['ddp_grad']:.0e}), loss diff {loss_diff:.1e}, "
                  f"second loss {'finite' if finite else 'NOT FINITE'}")
        return (PASS if ok else FAIL), detail
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------
# runner


def _resolve_devices(requested: Optional[Sequence[str]]) -> Tuple[List[str], List[CheckResult]]:
    import torch

    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    if not requested or "all" in requested:
        return available, []
    devices: List[str] = []
    problems: List[CheckResult] = []
    for name in requested:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ValueError(f"unknown device {name!r} (use cpu, cuda, cuda:N or all)") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"selftest runs on cpu and cuda devices, not {name!r}")
        label = "cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}"
        if label not in available:
            why = (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                   f"{'built for CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU-only build'}: "
                   "no GPU or no working driver)") if not torch.cuda.is_available() else (
                   f"only {torch.cuda.device_count()} CUDA device(s)")
            problems.append(CheckResult(name, "device", FAIL, why))
        elif label not in devices:
            devices.append(label)
    return devices, problems


def run_selftest(devices: Optional[Sequence[str]] = None, quick: bool = False, require_extension: bool = False,
                 log: Optional[Callable[[str], None]] = None) -> SelftestReport:
    """Run every check on ``devices`` (default: the CPU and each CUDA device) and return the
    report (``report.ok``, ``report.format()``, ``report.to_dict()``).

    Args:
        devices: "cpu", "cuda", "cuda:N" or "all".
        quick: small sizes (the test suite runs ``quick`` on the CPU).
        require_extension: count checks skipped for a missing compiled op as failures.
        log: called with one line per finished check (progress); None prints nothing.
    """
    import torch

    start = time.perf_counter()
    plan = _QUICK if quick else _FULL
    device_list, problems = _resolve_devices(devices)
    report = SelftestReport(environment(), list(problems), quick=quick, require_extension=require_extension)

    def run(device: str, check: str, fn: Callable[[], Tuple[str, str]]) -> None:
        t0 = time.perf_counter()
        try:
            status, detail = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)  # asynchronous CUDA errors surface here, in this check
        except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported on one line
            last = traceback.extract_tb(exc.__traceback__)[-1]
            message = " ".join(str(exc).split())[:300]
            status, detail = FAIL, f"{type(exc).__name__}: {message} ({os.path.basename(last.filename)}:{last.lineno})"
        result = CheckResult(device, check, status, detail, time.perf_counter() - t0)
        report.results.append(result)
        if log is not None:
            log(f"[selftest] {device} {check}: {status} ({result.seconds:.1f} s) {detail}")

    with tempfile.TemporaryDirectory(prefix="cmasktrack-selftest-") as tmp:
        clip = _Clip(tmp, plan)
        models = _Models(clip, plan)
        training = _Training(models, clip, plan)
        for device in device_list:
            is_cuda = device.startswith("cuda")
            dtypes = [torch.float64, torch.float32]
            if is_cuda or not quick:
                dtypes += [torch.float16, torch.bfloat16]
            for dtype in dtypes:
                run(device, f"correlation {_dtype_name(dtype)}", lambda d=dtype: _check_correlation(device, d, plan))
            run(device, "correlation gradcheck float64", lambda: _check_gradcheck(device, plan))
            for name in ("demo", "r50"):
                label = _model_label(name, plan)
                run(device, f"{label}: tracks vs CPU run", lambda n=name: _check_tracks_vs_cpu(models, n, device))
                run(device, f"{label}: op vs fallback", lambda n=name: _check_tracks_vs_fallback(models, n, device))
            if is_cuda and plan.extra_info:
                run(device, "demo model: tracks vs CPU, TF32 default", lambda: _info_tf32(models, device))
            for name in ("demo", "r50") if plan.train_r50 else ("demo",):
                label = _model_label(name, plan).split(" ")[0] if name == "r50" else "demo"
                run(device, f"train {label}: fp32 step", lambda n=name: _check_train_fp32(training, n, device))
                if name != "demo":  # random weights: logits far beyond float16's range (see the docstring)
                    continue
                amp_dtypes = [torch.float16] + ([torch.bfloat16] if plan.extra_info else [])
                for dtype in amp_dtypes if is_cuda else [torch.float16]:
                    check = f"train {label}: AMP {_dtype_name(dtype)} step" if is_cuda else f"train {label}: AMP step"
                    run(device, check, lambda n=name, d=dtype: _check_train_amp(training, n, device, d))
            run(device, f"DDP step ({'NCCL' if is_cuda else 'gloo'}, 1 process)", lambda: _check_ddp(training, device))
            if is_cuda:
                torch.cuda.empty_cache()
    report.seconds = time.perf_counter() - start
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The selftest's options (shared by ``python -m cmasktrack.selftest`` and ``cmasktrack selftest``)."""
    parser.add_argument("--device", action="append", default=None, metavar="DEVICE",
                        help="cpu, cuda, cuda:N or all (repeatable; default: all = the CPU and every CUDA device)")
    parser.add_argument("--quick", action="store_true", help="small sizes: well under a minute on a GPU")
    parser.add_argument("--require-extension", action="store_true",
                        help="fail (instead of skip) the checks of the compiled op where it is missing for a device")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as json")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (only the table)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments; prints the table and returns the exit status (0 or 1)."""
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run_selftest(args.device, quick=args.quick, require_extension=args.require_extension,
                          log=None if args.quiet else log)
    print(report.format(), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m cmasktrack.selftest [--device D] [--quick] [--json PATH]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cmasktrack.selftest",
                                     description="Check this cmasktrack installation on the CPU and every GPU.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ValueError as exc:  # bad --device
        print(f"cmasktrack selftest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
