"""Build checks: the CUDA sources compile (when a toolkit allows it) and the sdist ships csrc/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from cmasktrack.ops import extension_info

REPO = Path(__file__).resolve().parents[1]
CUDA_SOURCE = REPO / "csrc" / "cuda" / "correlation_cuda.cu"


def find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidate = Path(os.environ[var]) / "bin" / "nvcc"
            return str(candidate) if candidate.exists() else None
    return shutil.which("nvcc")


def test_cuda_sources_compile(tmp_path):
    info = extension_info()
    if info["cuda"]:
        # Compiled by the install itself; check that its kernels reached the dispatcher.
        for op in ("cmasktrack::correlation", "cmasktrack::correlation_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
        return
    if not CUDA_SOURCE.exists():
        pytest.skip(f"{CUDA_SOURCE} not found (tests run outside the source tree)")
    if torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} is not a CUDA build: CUDA sources not compile-checked")
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc (set CUDA_HOME): CUDA sources not compile-checked")
    # The installed extension has no CUDA kernels (no matching toolkit at install time, or
    # CMASKTRACK_CUDA=0): compile the CUDA translation unit alone, as setup.py would.
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    cmd = [nvcc, "-c", str(CUDA_SOURCE), "-o", str(tmp_path / "correlation_cuda.o"), "-std=c++20",
           "-Xcompiler", "-fPIC", "-gencode=arch=compute_80,code=sm_80", "-DCMASKTRACK_WITH_CUDA",
           f"-I{REPO / 'csrc'}", *COMMON_NVCC_FLAGS, *(f"-I{p}" for p in include_paths())]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]


def test_sdist_contains_csrc(tmp_path):
    if not (REPO / "setup.py").exists():
        pytest.skip("setup.py not found (tests run outside the source tree)")
    env = dict(os.environ, CMASKTRACK_BUILD_EXT="0")
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    (archive,) = tmp_path.glob("cmasktrack-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for source in REPO.joinpath("csrc").rglob("*"):
        if source.suffix in {".h", ".cpp", ".cu", ".inc"}:
            assert str(source.relative_to(REPO)) in names, source
    assert {"setup.py", "pyproject.toml", "cmasktrack/ops/correlation.py"} <= names


def test_demo_model_is_declared_package_data(tmp_path):
    """`pip install` copies the demo weights without setuptools' "Package would be ignored"
    warning (the assets folder is a declared package with its data)."""
    if not (REPO / "setup.py").exists():
        pytest.skip("setup.py not found (tests run outside the source tree)")
    env = dict(os.environ, CMASKTRACK_BUILD_EXT="0")
    result = subprocess.run([sys.executable, "setup.py", "build_py", "--build-lib", str(tmp_path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    output = result.stdout + result.stderr
    assert "would be ignored" not in output and "absent from the `packages` configuration" not in output
    demo = tmp_path / "cmasktrack" / "assets" / "demo_model"
    assert sorted(p.name for p in demo.iterdir()) == ["config.json", "model.safetensors"]
    assert (demo / "model.safetensors").stat().st_size == (REPO / "cmasktrack/assets/demo_model/model.safetensors").stat().st_size
    assert not list(tmp_path.rglob("__pycache__"))
