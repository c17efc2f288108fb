"""Loading of the compiled extension ``cmasktrack._C`` and its Python-side registrations.

Importing ``cmasktrack._C`` registers the operator schemas and the CPU (and, when built, CUDA)
kernels with the PyTorch dispatcher (``csrc/``).  This module adds what is written in Python:
fake-tensor/meta implementations (so the ops work under ``torch.compile``/``torch.export`` and on
the meta device) and autograd formulas, including a double backward.  If the extension is
missing, nothing is registered and :func:`has_extension` is False.
"""

from __future__ import annotations

import os
import warnings

import torch

__all__ = ["extension_info", "extension_devices", "has_extension"]

try:
    from cmasktrack import _C  # noqa: F401  (import registers torch.ops.cmasktrack.*)
except ImportError as error:  # not built, or built against another torch
    _C = None
    _LOAD_ERROR: str | None = f"{type(error).__name__}: {error}"
else:
    _LOAD_ERROR = None


def has_extension(device: str | torch.device | None = None) -> bool:
    """Whether the compiled correlation op is available (for ``device``'s type, if given).

    Args:
        device: a device or device type ("cpu", "cuda", "meta", ...); None asks whether the
            extension is loaded at all.
    """
    if _C is None:
        return False
    if device is None:
        return True
    return torch.device(device).type in extension_devices()


def extension_devices() -> tuple[str, ...]:
    """Device types the compiled op runs on: ("cpu", "meta"[, "cuda"]); () without the extension."""
    if _C is None:
        return ()
    return ("cpu", "meta", "cuda") if _C.with_cuda else ("cpu", "meta")


def extension_info() -> dict[str, object]:
    """A summary of the compiled extension for users, bug reports and tests.

    Keys: ``available`` (bool), ``cuda`` (bool, CUDA kernels compiled in), ``cuda_version``
    (e.g. "13.0" or None), ``cpu_kernel_isa`` (the CPU kernel variant chosen at load time:
    "avx512", "avx2" or "generic"; None without the extension), ``cpu_kernel_isas`` (the
    variants this CPU can run, widest first, e.g. ``("avx2", "generic")``; the environment
    variable ``CMASKTRACK_CPU_ISA`` picks one of them, read when the extension is loaded),
    ``error`` (why the extension could not be imported, or None).
    """
    if _C is None:
        return {"available": False, "cuda": False, "cuda_version": None, "cpu_kernel_isa": None,
                "cpu_kernel_isas": (), "error": _LOAD_ERROR}
    version = int(_C.cuda_version)
    return {
        "available": True,
        "cuda": bool(_C.with_cuda),
        "cuda_version": f"{version // 1000}.{version % 1000 // 10}" if version else None,
        "cpu_kernel_isa": str(_C.cpu_kernel_isa),
        "cpu_kernel_isas": _cpu_kernel_isas(),
        "error": None,
    }


def _cpu_kernel_isas() -> tuple[str, ...]:
    # Extensions built before the AVX-512 variant have no cpu_kernel_isas.
    names = getattr(_C, "cpu_kernel_isas", None)
    return tuple(names.split(",")) if names else (str(_C.cpu_kernel_isa),)


def _check_isa_request() -> None:
    """Warn when CMASKTRACK_CPU_ISA names a variant the extension did not pick (the C++ side
    ignores names it does not know and variants this CPU cannot run)."""
    request = os.environ.get("CMASKTRACK_CPU_ISA")
    if not request:
        return
    chosen = str(_C.cpu_kernel_isa)
    if {"baseline": "generic"}.get(request, request) != chosen:
        warnings.warn(f"CMASKTRACK_CPU_ISA={request!r} was ignored: the correlation kernel variants this "
                      f"CPU can run are {', '.join(_cpu_kernel_isas())} (names: avx512, avx2, generic = "
                      f"baseline); using {chosen!r}", RuntimeWarning, stacklevel=2)


def _check_fake_args(input1: torch.Tensor, input2: torch.Tensor, patch_size: int,
                     dilation_patch: int) -> None:
    torch._check(input1.dim() == 4, lambda: f"input1 must be 4-D (B, C, H, W), got {input1.dim()}-D")
    torch._check(input1.shape == input2.shape,
                 lambda: f"input1 and input2 must have the same shape, got {tuple(input1.shape)} "
                         f"and {tuple(input2.shape)}")
    torch._check(input1.dtype == input2.dtype,
                 lambda: f"input1 and input2 must have the same dtype, got {input1.dtype} and {input2.dtype}")
    torch._check(patch_size >= 1, lambda: f"patch_size must be >= 1, got {patch_size}")
    torch._check(dilation_patch >= 1, lambda: f"dilation_patch must be >= 1, got {dilation_patch}")


def _register() -> None:
    ops = torch.ops.cmasktrack

    @torch.library.register_fake("cmasktrack::correlation")
    def _correlation_fake(input1, input2, patch_size, dilation_patch):
        _check_fake_args(input1, input2, patch_size, dilation_patch)
        batch, _, height, width = input1.shape
        return input1.new_empty((batch, patch_size, patch_size, height, width))

    @torch.library.register_fake("cmasktrack::correlation_backward")
    def _correlation_backward_fake(grad_output, input1, input2, patch_size, dilation_patch):
        _check_fake_args(input1, input2, patch_size, dilation_patch)
        batch, _, height, width = input1.shape
        torch._check(tuple(grad_output.shape) == (batch, patch_size, patch_size, height, width),
                     lambda: f"grad_output must have shape (B, patch, patch, H, W), got {tuple(grad_output.shape)}")
        return torch.empty_like(input1, memory_format=torch.contiguous_format), torch.empty_like(
            input2, memory_format=torch.contiguous_format)

    def _setup_context(ctx, inputs, output):
        input1, input2, patch_size, dilation_patch = inputs
        ctx.save_for_backward(input1, input2)
        ctx.patch_size = patch_size
        ctx.dilation_patch = dilation_patch

    def _correlation_grad(ctx, grad_output):
        input1, input2 = ctx.saved_tensors
        grad1, grad2 = ops.correlation_backward(grad_output.contiguous(), input1, input2,
                                                ctx.patch_size, ctx.dilation_patch)
        return grad1, grad2, None, None

    torch.library.register_autograd("cmasktrack::correlation", _correlation_grad,
                                    setup_context=_setup_context)

    # correlation_backward(g, a, b) = (G(g, b), H(g, a)) is linear in g, a and b separately, and
    # its adjoint is made of the same two ops: for upstream gradients (u1, u2)
    #   d/dg = correlation(u1, b) + correlation(a, u2),
    #   (d/da, d/db) = (G(g, u2), H(g, u1)) = correlation_backward(g, u1, u2).
    def _setup_backward_context(ctx, inputs, output):
        grad_output, input1, input2, patch_size, dilation_patch = inputs
        ctx.save_for_backward(grad_output, input1, input2)
        ctx.patch_size = patch_size
        ctx.dilation_patch = dilation_patch

    def _correlation_backward_grad(ctx, grad1, grad2):
        grad_output, input1, input2 = ctx.saved_tensors
        p, d = ctx.patch_size, ctx.dilation_patch
        grad1 = torch.zeros_like(input1) if grad1 is None else grad1.contiguous()
        grad2 = torch.zeros_like(input2) if grad2 is None else grad2.contiguous()
        d_grad_output = ops.correlation(grad1, input2, p, d) + ops.correlation(input1, grad2, p, d)
        d_input1, d_input2 = ops.correlation_backward(grad_output, grad1, grad2, p, d)
        return d_grad_output, d_input1, d_input2, None, None

    torch.library.register_autograd("cmasktrack::correlation_backward", _correlation_backward_grad,
                                    setup_context=_setup_backward_context)


if _C is not None:
    _register()
    _check_isa_request()
