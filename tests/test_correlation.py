"""Tests of cmasktrack.ops.correlation: the compiled op, the PyTorch fallback and their glue.

Both implementations are compared with a naive loop over displacements written here, with
hand-computed tensors, and with each other; gradients with torch.autograd.gradcheck.
Tests of the compiled op skip (with the reason) when cmasktrack._C is not built.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cmasktrack.ops as ops
from cmasktrack.ops import correlation, correlation_torch, displacements, extension_info, has_extension

REPO = Path(__file__).resolve().parents[1]

requires_ext = pytest.mark.skipif(
    not has_extension("cpu"), reason=f"compiled extension cmasktrack._C not available: {extension_info()['error']}"
)
BACKENDS = [pytest.param("ext", marks=requires_ext), "torch"]


def naive_correlation(input1: torch.Tensor, input2: torch.Tensor, patch: int, dil: int) -> torch.Tensor:
    """Reference: one multiply-sum per displacement over the overlapping region (float64)."""
    a, b = input1.double(), input2.double()
    batch, _, height, width = a.shape
    offset = (dil * (patch - 1)) // 2
    out = torch.zeros(batch, patch, patch, height, width, dtype=torch.float64)
    for k in range(patch):
        dy = dil * k - offset
        for l in range(patch):
            dx = dil * l - offset
            y0, y1 = max(0, -dy), min(height, height - dy)
            x0, x1 = max(0, -dx), min(width, width - dx)
            if y0 >= y1 or x0 >= x1:
                continue
            out[:, k, l, y0:y1, x0:x1] = (
                a[:, :, y0:y1, x0:x1] * b[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
            ).sum(1)
    return out


def run(backend: str, input1, input2, patch, dil):
    if backend == "torch":
        return correlation_torch(input1, input2, patch, dil)
    return correlation(input1, input2, patch, dil, backend="ext")


# --------------------------------------------------------------------------- conventions


def test_displacements():
    assert displacements(16, 2) == list(range(-15, 16, 2))
    assert displacements(3, 1) == [-1, 0, 1]
    assert displacements(4, 1) == [-1, 0, 1, 2]
    assert displacements(2, 2) == [-1, 1]
    assert displacements(1, 3) == [0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_patch3(backend):
    # input1 = 1 everywhere, so each output map is input2 shifted by (d_k, d_l), zero filled.
    input1 = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    input2 = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.float64).view(1, 1, 3, 3)
    expected = torch.tensor(
        [
            [  # k = 0, dy = -1
                [[0, 0, 0], [0, 1, 2], [0, 4, 5]],
                [[0, 0, 0], [1, 2, 3], [4, 5, 6]],
                [[0, 0, 0], [2, 3, 0], [5, 6, 0]],
            ],
            [  # k = 1, dy = 0
                [[0, 1, 2], [0, 4, 5], [0, 7, 8]],
                [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
                [[2, 3, 0], [5, 6, 0], [8, 9, 0]],
            ],
            [  # k = 2, dy = +1
                [[0, 4, 5], [0, 7, 8], [0, 0, 0]],
                [[4, 5, 6], [7, 8, 9], [0, 0, 0]],
                [[5, 6, 0], [8, 9, 0], [0, 0, 0]],
            ],
        ],
        dtype=torch.float64,
    ).unsqueeze(0)
    torch.testing.assert_close(run(backend, input1, input2, 3, 1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_two_channels_even_patch(backend):
    # patch 2, dilation 1: displacements (0, 1); out[k, l, y, x] = sum_c in1[c,y,x] in2[c,y+k,x+l].
    input1 = torch.tensor([[[1.0, 2], [3, 4]], [[1, 0], [0, -1]]]).unsqueeze(0)
    input2 = torch.tensor([[[1.0, 0], [2, 1]], [[3, 1], [0, 2]]]).unsqueeze(0)
    expected = torch.tensor(
        [[[[4.0, 0], [6, 2]], [[1, 0], [3, 0]]], [[[2, 2], [0, 0]], [[3, 0], [0, 0]]]]
    ).unsqueeze(0)
    torch.testing.assert_close(run(backend, input1, input2, 2, 1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_official_geometry_impulse(backend):
    # patch 16, dilation 2: d = -15, -13, ..., +15.  With input1 = 1 and a single 1 in input2 at
    # (y0, x0), out[k, l, y, x] = 1 exactly where (y + d_k, x + d_l) = (y0, x0).
    height, width, y0, x0 = 37, 41, 18, 20
    input1 = torch.ones(1, 1, height, width)
    input2 = torch.zeros(1, 1, height, width)
    input2[0, 0, y0, x0] = 1.0
    out = run(backend, input1, input2, 16, 2)
    assert out.shape == (1, 16, 16, height, width)
    assert out.sum().item() == 256
    for k, dy in [(0, -15), (7, -1), (8, 1), (15, 15)]:
        for l, dx in [(0, -15), (9, 3), (15, 15)]:
            assert out[0, k, l, y0 - dy, x0 - dx].item() == 1.0


# --------------------------------------------------------------------------- values

SHAPES = [
    # (B, C, H, W, patch, dilation)
    (2, 5, 7, 9, 3, 1),
    (1, 3, 6, 5, 4, 2),
    (2, 17, 9, 13, 5, 3),
    (1, 20, 11, 12, 16, 2),
    (3, 8, 1, 1, 3, 1),
    (1, 4, 2, 3, 7, 1),  # patch wider than the map
    (2, 33, 5, 21, 2, 2),
    (1, 1, 4, 4, 1, 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_naive_float64(backend, shape):
    batch, channels, height, width, patch, dil = shape
    gen = torch.Generator().manual_seed(hash(shape) % 2**31)
    input1 = torch.randn(batch, channels, height, width, dtype=torch.float64, generator=gen)
    input2 = torch.randn(batch, channels, height, width, dtype=torch.float64, generator=gen)
    out = run(backend, input1, input2, patch, dil)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, naive_correlation(input1, input2, patch, dil), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_sizes_float32(backend):
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        batch, channels = (int(v) for v in torch.randint(1, 4, (2,), generator=gen))
        channels *= 11
        height, width = (int(v) for v in torch.randint(1, 24, (2,), generator=gen))
        patch = int(torch.randint(1, 10, (1,), generator=gen))
        dil = int(torch.randint(1, 4, (1,), generator=gen))
        input1 = torch.randn(batch, channels, height, width, generator=gen)
        input2 = torch.randn(batch, channels, height, width, generator=gen)
        expected = naive_correlation(input1, input2, patch, dil).float()
        out = run(backend, input1, input2, patch, dil)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4, msg=lambda m: f"{input1.shape} {patch} {dil}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cmasktrack_level_shape_float32(backend):
    # The real configuration (patch 16, dilation 2) on a small FPN-like map, both odd sizes.
    gen = torch.Generator().manual_seed(1)
    input1 = torch.randn(2, 64, 13, 23, generator=gen)
    input2 = torch.randn(2, 64, 13, 23, generator=gen)
    expected = naive_correlation(input1, input2, 16, 2).float()
    torch.testing.assert_close(run(backend, input1, input2, 16, 2), expected, rtol=1e-4, atol=1e-4)


@requires_ext
def test_backends_agree():
    gen = torch.Generator().manual_seed(2)
    input1 = torch.randn(2, 40, 10, 14, generator=gen)
    input2 = torch.randn(2, 40, 10, 14, generator=gen)
    torch.testing.assert_close(
        correlation(input1, input2, 16, 2, backend="ext"), correlation(input1, input2, 16, 2, backend="torch"),
        rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    gen = torch.Generator().manual_seed(3)
    base1 = torch.randn(2, 12, 9, 22, dtype=torch.float64, generator=gen)
    base2 = torch.randn(2, 9, 12, 11, dtype=torch.float64, generator=gen)
    input1 = base1[:, :, :, ::2]  # strided in x
    input2 = base2.transpose(1, 2)  # (2, 12, 9, 11), permuted strides
    assert not input1.is_contiguous() and not input2.is_contiguous()
    expected = naive_correlation(input1.contiguous(), input2.contiguous(), 5, 2)
    torch.testing.assert_close(run(backend, input1, input2, 5, 2), expected, rtol=1e-12, atol=1e-12)
    cl1 = input1.contiguous(memory_format=torch.channels_last)
    cl2 = input2.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(run(backend, cl1, cl2, 5, 2), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expanded_input_and_its_gradient(backend):
    # The calibration module correlates one target frame, expanded over the batch, with R refs.
    gen = torch.Generator().manual_seed(11)
    cur = torch.randn(1, 7, 6, 9, dtype=torch.float64, generator=gen, requires_grad=True)
    refs = torch.randn(3, 7, 6, 9, dtype=torch.float64, generator=gen, requires_grad=True)
    grad_out = torch.randn(3, 5, 5, 6, 9, dtype=torch.float64, generator=gen)
    out = run(backend, cur.expand(3, -1, -1, -1), refs, 5, 2)
    expected = naive_correlation(cur.expand(3, -1, -1, -1), refs, 5, 2)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(out, (cur, refs), grad_out)
    want = torch.autograd.grad(expected, (cur, refs), grad_out)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_cpu(backend, dtype):
    gen = torch.Generator().manual_seed(4)
    input1 = torch.randn(1, 16, 6, 7, generator=gen).to(dtype)
    input2 = torch.randn(1, 16, 6, 7, generator=gen).to(dtype)
    out = run(backend, input1, input2, 4, 2)
    assert out.dtype == dtype
    expected = naive_correlation(input1, input2, 4, 2).to(dtype)
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(out.double(), expected.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_inputs(backend):
    for shape in [(0, 3, 4, 5), (2, 0, 4, 5), (1, 3, 0, 5)]:
        input1 = torch.randn(shape)
        out = run(backend, input1, torch.randn(shape), 3, 1)
        assert out.shape == (shape[0], 3, 3, shape[2], shape[3])
        assert torch.all(out == 0)


ISA_CHECK = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("error")  # the request must be honoured without a warning
    import torch
    from cmasktrack.ops import correlation, extension_info
    assert extension_info()["cpu_kernel_isa"] == sys.argv[1], extension_info()
    torch.manual_seed(0)
    # Odd sizes; channels and widths below, at and above 16 (the float lanes of AVX-512, which
    # the transposing copies work in 16 x 16 blocks); the real patch 16 / dilation 2.
    cases = [(2, 21, 7, 19, 5, 2), (1, 40, 9, 35, 16, 2), (3, 16, 4, 16, 3, 1), (1, 5, 3, 4, 4, 1)]
    for dtype in (torch.float32, torch.float64):
        for shape in cases:
            *size, patch, dil = shape
            a = torch.randn(*size, dtype=dtype, requires_grad=True)
            b = torch.randn(*size, dtype=dtype, requires_grad=True)
            out = correlation(a, b, patch, dil, backend="ext")
            out_ref = correlation(a, b, patch, dil, backend="torch")
            torch.testing.assert_close(out, out_ref, msg=lambda m: f"{shape} {dtype}: {m}")
            g = torch.randn_like(out)
            grads = torch.autograd.grad(out, (a, b), g)
            grads_ref = torch.autograd.grad(out_ref, (a, b), g)
            torch.testing.assert_close(grads, grads_ref, msg=lambda m: f"{shape} {dtype} grad: {m}")
    print("ok")
    """
)


def _isa_subprocess(code: str, isa: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CMASKTRACK_CPU_ISA=isa, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@requires_ext
@pytest.mark.parametrize("isa,request_name", [("generic", "baseline"), ("avx2", "avx2"), ("avx512", "avx512")])
def test_cpu_kernel_variant_in_subprocess(isa, request_name):
    # Every variant this CPU can run, forced by the environment, against the PyTorch fallback
    # ("baseline" is another name of "generic").
    if isa not in extension_info()["cpu_kernel_isas"]:
        pytest.skip(f"this CPU cannot run the {isa} variant (it runs {extension_info()['cpu_kernel_isas']})")
    result = _isa_subprocess(ISA_CHECK, request_name, isa)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@requires_ext
def test_default_cpu_kernel_is_the_widest_the_cpu_has():
    # Independent of the extension's own detection: the CPU flags Linux reports.
    flags = _cpu_flags()
    if flags is None or not {"sse2", "avx"} & flags:
        pytest.skip("needs an x86-64 Linux machine (/proc/cpuinfo flags)")
    if os.environ.get("CMASKTRACK_CPU_ISA"):
        pytest.skip("CMASKTRACK_CPU_ISA is set")
    expected = "avx512" if {"avx512f", "avx2", "fma"} <= flags else "avx2" if {"avx2", "fma"} <= flags else "generic"
    info = extension_info()
    assert info["cpu_kernel_isa"] == expected
    assert info["cpu_kernel_isas"] == {"avx512": ("avx512", "avx2", "generic"), "avx2": ("avx2", "generic"),
                                       "generic": ("generic",)}[expected]


@requires_ext
def test_cpu_kernel_request_the_cpu_cannot_run_is_ignored_with_a_warning():
    isas = extension_info()["cpu_kernel_isas"]
    request_name = "sse9" if "avx512" in isas else "avx512"
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as w:\n    warnings.simplefilter('always')\n"
            "    from cmasktrack.ops import extension_info\n"
            "print(extension_info()['cpu_kernel_isa'], '|', ' '.join(str(x.message) for x in w))")
    result = _isa_subprocess(code, request_name)
    assert result.returncode == 0, result.stderr
    chosen, message = result.stdout.split("|", 1)
    assert chosen.strip() == isas[0]
    assert f"CMASKTRACK_CPU_ISA={request_name!r} was ignored" in message


def _cxx() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.mark.parametrize("variant", ["vec64-portable", "avx512"])
def test_kernel_source_at_64_byte_vectors(tmp_path, variant):
    # The AVX-512 variant's kernel source (16 float lanes, the 16 x 16 transpose) compiled
    # standalone and checked against naive loops (tests/cpp/kernel_harness.cpp).  Without
    # AVX-512 flags the compiler lowers the 64-byte vectors to narrower instructions, so this
    # runs on any CPU; with them it needs a CPU that has AVX-512F.
    harness = REPO / "tests" / "cpp" / "kernel_harness.cpp"
    if not (REPO / "csrc").is_dir() or not harness.exists():
        pytest.skip("csrc/ not found (tests run outside the source tree)")
    compiler = _cxx()
    if compiler is None:
        pytest.skip("no C++ compiler")
    flags = []
    if variant == "avx512":
        cpu = _cpu_flags()
        if cpu is None or not {"avx512f", "avx2", "fma"} <= cpu:
            pytest.skip("this CPU has no AVX-512F")
        flags = ["-mavx512f", "-mavx2", "-mfma"]
    exe = tmp_path / "harness"
    build = subprocess.run([compiler, "-O1", "-std=c++20", "-Wno-psabi", f"-I{REPO / 'csrc'}", "-DHARNESS_VBYTES=64",
                            *flags, str(harness), "-o", str(exe)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-5000:]
    run_ = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run_.returncode == 0, run_.stdout[-5000:]
    assert run_.stdout.startswith("ok (64-byte vectors)")


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry", [(3, 1), (4, 2), (2, 3)])
def test_gradcheck(backend, geometry):
    patch, dil = geometry
    gen = torch.Generator().manual_seed(5)
    input1 = torch.randn(2, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    input2 = torch.randn(2, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: run(backend, a, b, patch, dil), (input1, input2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradgradcheck(backend):
    gen = torch.Generator().manual_seed(6)
    input1 = torch.randn(1, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    input2 = torch.randn(1, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: run(backend, a, b, 3, 2), (input1, input2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_naive_autograd(backend):
    # The real geometry on a map large enough for every border case of the kernels' tiling.
    gen = torch.Generator().manual_seed(7)
    input1 = torch.randn(2, 19, 17, 21, dtype=torch.float64, generator=gen, requires_grad=True)
    input2 = torch.randn(2, 19, 17, 21, dtype=torch.float64, generator=gen, requires_grad=True)
    grad_out = torch.randn(2, 16, 16, 17, 21, dtype=torch.float64, generator=gen)
    expected = torch.autograd.grad(naive_correlation(input1, input2, 16, 2), (input1, input2), grad_out)
    got = torch.autograd.grad(run(backend, input1, input2, 16, 2), (input1, input2), grad_out)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@requires_ext
def test_backward_op_with_non_contiguous_grad():
    gen = torch.Generator().manual_seed(8)
    input1 = torch.randn(1, 6, 5, 7, dtype=torch.float64, generator=gen)
    input2 = torch.randn(1, 6, 5, 7, dtype=torch.float64, generator=gen)
    grad_out = torch.randn(1, 3, 3, 7, 5, dtype=torch.float64, generator=gen).transpose(3, 4)
    got = torch.ops.cmasktrack.correlation_backward(grad_out, input1, input2, 3, 1)
    a, b = input1.clone().requires_grad_(), input2.clone().requires_grad_()
    expected = torch.autograd.grad(naive_correlation(a, b, 3, 1), (a, b), grad_out)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- dispatcher, compile


@requires_ext
def test_opcheck():
    gen = torch.Generator().manual_seed(9)
    for requires_grad in (False, True):
        input1 = torch.randn(2, 4, 5, 6, generator=gen, requires_grad=requires_grad)
        input2 = torch.randn(2, 4, 5, 6, generator=gen, requires_grad=requires_grad)
        torch.library.opcheck(torch.ops.cmasktrack.correlation.default, (input1, input2, 3, 2))
    grad_out = torch.randn(2, 3, 3, 5, 6, generator=gen)
    torch.library.opcheck(torch.ops.cmasktrack.correlation_backward.default,
                          (grad_out, input1.detach(), input2.detach(), 3, 2))


@requires_ext
def test_meta_and_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    out = correlation(torch.empty(2, 8, 5, 7, device="meta"), torch.empty(2, 8, 5, 7, device="meta"), 16, 2)
    assert out.device.type == "meta" and out.shape == (2, 16, 16, 5, 7)
    with FakeTensorMode():
        a = torch.empty(1, 256, 96, 160)
        out = correlation(a, torch.empty(1, 256, 96, 160), 16, 2)
        assert out.shape == (1, 16, 16, 96, 160)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile(backend):
    torch._dynamo.reset()

    def step(a, b):
        return torch.nn.functional.leaky_relu(correlation(a, b, 4, 2, backend=backend) / a.shape[1], 0.1)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    gen = torch.Generator().manual_seed(10)
    a = torch.randn(1, 6, 7, 9, generator=gen, requires_grad=True)
    b = torch.randn(1, 6, 7, 9, generator=gen, requires_grad=True)
    out = compiled(a, b)
    expected = step(a, b)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, (a, b), g), torch.autograd.grad(expected, (a, b), g))


# --------------------------------------------------------------------------- backend selection, errors


def test_backend_selection(monkeypatch):
    a, b = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    assert ops.resolve_backend("cpu", "torch") == "torch"
    assert ops.resolve_backend("cpu", None) == ("ext" if has_extension("cpu") else "torch")
    # As if cmasktrack._C were not built: None falls back, "ext" is a clear error.
    module = importlib.import_module("cmasktrack.ops.correlation")  # the module, not the function
    monkeypatch.setattr(module, "has_extension", lambda device=None: False)
    assert ops.resolve_backend("cpu", None) == "torch"
    torch.testing.assert_close(correlation(a, b, 3, 1), naive_correlation(a, b, 3, 1).float())
    with pytest.raises(RuntimeError, match="cmasktrack._C"):
        correlation(a, b, 3, 1, backend="ext")
    with pytest.raises(ValueError, match="backend"):
        correlation(a, b, 3, 1, backend="cuda")


def test_use_backend_switches_calls_without_backend(monkeypatch):
    module = importlib.import_module("cmasktrack.ops.correlation")
    calls = []
    real = module.correlation_torch
    monkeypatch.setattr(module, "correlation_torch", lambda *a: calls.append("torch") or real(*a))
    a, b = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    expected = naive_correlation(a, b, 3, 1).float()
    default = ops.resolve_backend("cpu")
    with ops.use_backend("torch"):
        assert ops.resolve_backend("cpu") == "torch"
        torch.testing.assert_close(correlation(a, b, 3, 1), expected)
        assert calls == ["torch"]
        with ops.use_backend(None):  # nested: the automatic choice again
            assert ops.resolve_backend("cpu") == default
        assert ops.resolve_backend("cpu") == "torch"
        if has_extension("cpu"):  # an explicit argument wins
            correlation(a, b, 3, 1, backend="ext")
            assert calls == ["torch"]
    assert ops.resolve_backend("cpu") == default
    # restored after an exception too
    with pytest.raises(KeyError):
        with ops.use_backend("torch"):
            raise KeyError
    assert ops.resolve_backend("cpu") == default
    with pytest.raises(ValueError, match="backend"):
        with ops.use_backend("cuda"):
            pass
    # "ext" where the compiled op is missing: the error comes at the call
    monkeypatch.setattr(module, "has_extension", lambda device=None: False)
    with ops.use_backend("ext"), pytest.raises(RuntimeError, match="cmasktrack._C"):
        correlation(a, b, 3, 1)


def test_without_extension_in_subprocess():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["cmasktrack._C"] = None  # make `import cmasktrack._C` fail
        import torch
        import cmasktrack.ops as ops
        assert not ops.has_extension() and ops.extension_info()["error"], ops.extension_info()
        a, b = torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3)
        assert ops.correlation(a, b, 3, 1)[0, 1, 1].sum().item() == 9.0
        try:
            ops.correlation(a, b, 3, 1, backend="ext")
        except RuntimeError as error:
            assert "not available" in str(error)
        else:
            raise AssertionError("backend='ext' did not fail")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("backend", [None, "torch"])
def test_input_errors(backend):
    a = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="4-D"):
        correlation(a[0], a[0], backend=backend)
    with pytest.raises(ValueError, match="same shape"):
        correlation(a, torch.randn(1, 2, 3, 5), backend=backend)
    with pytest.raises(TypeError, match="same dtype"):
        correlation(a, a.double(), backend=backend)
    with pytest.raises(TypeError, match="floating-point"):
        correlation(a.long(), a.long(), backend=backend)
    with pytest.raises(ValueError, match="same device"):
        correlation(a, a.to("meta"), backend=backend)
    with pytest.raises(TypeError, match="torch.Tensor"):
        correlation(a.numpy(), a, backend=backend)
    with pytest.raises(ValueError, match="patch_size"):
        correlation(a, a, patch_size=0, backend=backend)
    with pytest.raises(ValueError, match="dilation_patch"):
        correlation(a, a, dilation_patch=-1, backend=backend)
    with pytest.raises(TypeError, match="patch_size"):
        correlation(a, a, patch_size=2.5, backend=backend)


@requires_ext
def test_compiled_op_errors():
    a = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="same shape"):
        torch.ops.cmasktrack.correlation(a, torch.randn(1, 2, 3, 5), 3, 1)
    with pytest.raises(RuntimeError, match="4-D"):
        torch.ops.cmasktrack.correlation(a[0], a[0], 3, 1)
    with pytest.raises(RuntimeError, match="patch_size"):
        torch.ops.cmasktrack.correlation(a, a, 0, 1)
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.cmasktrack.correlation_backward(torch.randn(1, 3, 3, 3, 5), a, a, 3, 1)
