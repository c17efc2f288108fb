"""Build and install cmasktrack.

The compiled extension ``cmasktrack._C`` (the correlation op, ``csrc/``) is built against the
installed torch, so install with ``pip install --no-build-isolation .`` (or ``-e .``):

* the C++ CPU kernels are always built;
* the CUDA kernels are added when a CUDA toolkit whose major version matches torch's CUDA
  build is found (``CUDA_HOME``/``CUDA_PATH`` first, else the toolkit behind ``nvcc``);
* if the CUDA build fails the CPU-only extension is built instead, and if that fails too the
  package installs without it: ``cmasktrack.ops`` then uses its pure-PyTorch fallback.
  Build messages are only shown by ``pip install -v``.

Environment switches:

``CMASKTRACK_BUILD_EXT=0``   skip the extension entirely (pure-Python install).
``CMASKTRACK_CUDA=0``        never build the CUDA kernels; ``=1`` requires them (an error if
                             no matching toolkit); default ``auto``.
``CMASKTRACK_BUILD_STRICT=1`` make every build failure fatal instead of falling back.
``TORCH_CUDA_ARCH_LIST``     GPU architectures; default: the visible GPUs, or ``8.0+PTX``
                             when none is visible (SASS for Ampere, PTX JIT-compiled on newer).
``MAX_JOBS``                 parallel compile jobs (ninja).
"""

from __future__ import annotations

import copy
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_namespace_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "8.0+PTX"


def log(message: str) -> None:
    print(f"[cmasktrack setup] {message}", file=sys.stderr, flush=True)


def read_version() -> str:
    with open(os.path.join(ROOT, "cmasktrack", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    if match is None:
        raise RuntimeError("__version__ not found in cmasktrack/__init__.py")
    return match.group(1)


def read_readme() -> str:
    path = os.path.join(ROOT, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------------------------------
# CUDA toolkit discovery


def nvcc_version(nvcc: str) -> tuple[int, int] | None:
    """(major, minor) reported by ``nvcc --version``, or None."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_toolkit_root(root: str) -> bool:
    """A real CUDA toolkit: nvcc, the runtime headers and libcudart under ``root``."""
    if not os.path.isfile(os.path.join(root, "bin", "nvcc")):
        return False
    headers = glob.glob(os.path.join(root, "include", "cuda_runtime.h")) + glob.glob(
        os.path.join(root, "targets", "*", "include", "cuda_runtime.h")
    )
    libs = [
        p
        for pattern in ("lib64/libcudart.so*", "lib/libcudart.so*", "lib/x64/cudart.lib", "lib64/libcudart*")
        for p in glob.glob(os.path.join(root, pattern))
    ]
    return bool(headers) and bool(libs)


def nvcc_reported_root(nvcc: str) -> str | None:
    """The toolkit root nvcc itself reports; sees through wrapper scripts on PATH."""
    try:
        out = subprocess.run(
            [nvcc, "-v", "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.M)
    return os.path.dirname(match.group(1).strip()) if match else None


def find_cuda_home(torch_cuda: str | None) -> tuple[str | None, str]:
    """Locate the CUDA toolkit root; returns (root or None, explanation)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            if is_toolkit_root(value):
                return value, f"{var}={value}"
            return None, f"{var}={value} is not a CUDA toolkit (no bin/nvcc, cuda_runtime.h or libcudart)"
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        reported = nvcc_reported_root(nvcc)
        if reported:
            candidates.append(reported)
    if torch_cuda:
        candidates.append(f"/usr/local/cuda-{torch_cuda}")
    candidates += ["/usr/local/cuda", "/opt/cuda"]
    for root in candidates:
        if is_toolkit_root(root):
            return os.path.realpath(root), f"found at {os.path.realpath(root)}"
    return None, "no CUDA toolkit found (set CUDA_HOME to its root)"


def cuda_build_plan(torch_module) -> tuple[str | None, str]:
    """Decide whether to build the CUDA kernels: (toolkit root or None, reason)."""
    mode = os.environ.get("CMASKTRACK_CUDA", "auto").strip().lower()
    if mode in ("0", "false", "no", "off"):
        return None, "CMASKTRACK_CUDA=0"
    torch_cuda = torch_module.version.cuda
    if torch_cuda is None:
        reason = f"torch {torch_module.__version__} is not a CUDA build"
    else:
        root, reason = find_cuda_home(torch_cuda)
        if root is not None:
            version = nvcc_version(os.path.join(root, "bin", "nvcc"))
            torch_major = int(torch_cuda.split(".")[0])
            if version is None:
                root, reason = None, f"could not run {root}/bin/nvcc --version"
            elif version[0] != torch_major:
                root, reason = None, (
                    f"nvcc {version[0]}.{version[1]} at {root} does not match torch's CUDA {torch_cuda}"
                )
            else:
                return root, f"CUDA toolkit {version[0]}.{version[1]} {reason}"
    if mode in ("1", "true", "yes", "on", "force"):
        raise RuntimeError(f"CMASKTRACK_CUDA={mode} but the CUDA kernels cannot be built: {reason}")
    return None, reason


# ------------------------------------------------------------------------------------------
# Extension


def get_extensions_and_cmdclass():
    if os.environ.get("CMASKTRACK_BUILD_EXT", "1").strip() == "0":
        log("CMASKTRACK_BUILD_EXT=0: installing without the compiled extension")
        return [], {}
    strict = os.environ.get("CMASKTRACK_BUILD_STRICT", "0").strip() == "1"
    try:
        import torch
    except ImportError as error:
        if strict:
            raise
        log(f"torch is not importable ({error}); installing without the compiled extension. "
            "Install torch first and use `pip install --no-build-isolation`.")
        return [], {}

    cuda_home, reason = cuda_build_plan(torch)
    if cuda_home is not None:
        # torch.utils.cpp_extension reads CUDA_HOME when first imported; a wrapper nvcc on PATH
        # would otherwise make it pick a directory without libcudart.
        os.environ["CUDA_HOME"] = cuda_home
    from torch.utils import cpp_extension

    if cuda_home is not None:
        cpp_extension.CUDA_HOME = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
            log(f"no GPU visible: TORCH_CUDA_ARCH_LIST={DEFAULT_CUDA_ARCH_LIST} "
                "(set TORCH_CUDA_ARCH_LIST to choose other GPU architectures)")
        log(f"building the CPU and CUDA kernels ({reason}, "
            f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', 'visible GPUs')})")
    else:
        log(f"building the CPU kernels only ({reason})")

    cxx_flags = ["-O3", "-g0", "-std=c++20", "-ffp-contract=fast"]
    link_flags = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is OpenMP in torch's Linux builds; without -fopenmp it runs serially.
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    common = dict(
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=link_flags,
        py_limited_api=True,
    )
    cpu_sources = ["csrc/correlation.cpp", "csrc/cpu/correlation_cpu.cpp"]
    cpu_ext = cpp_extension.CppExtension(
        "cmasktrack._C", cpu_sources, extra_compile_args={"cxx": list(cxx_flags)}, **common
    )
    ext = cpu_ext
    if cuda_home is not None:
        ext = cpp_extension.CUDAExtension(
            "cmasktrack._C",
            cpu_sources + ["csrc/cuda/correlation_cuda.cu"],
            extra_compile_args={
                "cxx": cxx_flags + ["-DCMASKTRACK_WITH_CUDA"],
                "nvcc": ["-O3", "-std=c++20", "-DCMASKTRACK_WITH_CUDA"],
            },
            **common,
        )

    class BuildExtension(cpp_extension.BuildExtension):
        """torch's BuildExtension that degrades instead of failing: CUDA -> CPU -> none."""

        def build_extensions(self) -> None:
            try:
                super().build_extensions()
                return
            except Exception as error:  # noqa: BLE001 - report and fall back
                if strict:
                    raise
                if cuda_home is None:
                    log(f"WARNING: building cmasktrack._C failed:\n{error}\n"
                        "cmasktrack installs without it and uses its pure-PyTorch fallback.")
                    self.extensions = []
                    return
                log(f"WARNING: building the CUDA kernels failed:\n{error}\n"
                    "Retrying without CUDA (set CMASKTRACK_CUDA=0 to skip this attempt).")
            # Turn the extension into the CPU-only one in place: setuptools has attached its
            # own bookkeeping to this object.
            (failed,) = self.extensions
            for attr in ("sources", "include_dirs", "library_dirs", "libraries", "extra_compile_args",
                         "extra_link_args", "define_macros", "runtime_library_dirs"):
                setattr(failed, attr, copy.deepcopy(getattr(cpu_ext, attr)))
            try:
                super().build_extensions()
            except Exception as error:  # noqa: BLE001
                log(f"WARNING: building cmasktrack._C (CPU only) failed:\n{error}\n"
                    "cmasktrack installs without it and uses its pure-PyTorch fallback.")
                self.extensions = []

    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = get_extensions_and_cmdclass()

setup(
    name="cmasktrack",
    version=read_version(),
    description="CMaskTrack R-CNN video instance segmentation under occlusion (OVIS), in PyTorch",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # namespace packages too, so that the data folder cmasktrack/assets/demo_model is a declared
    # package (setuptools warns "Package would be ignored" otherwise)
    packages=find_namespace_packages(include=["cmasktrack", "cmasktrack.*"], exclude=["*.__pycache__"]),
    package_data={"cmasktrack.assets.demo_model": ["config.json", "model.safetensors"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy",
        "pycocotools",
        "scipy",
        "pillow",
        "huggingface-hub",
        "safetensors",
        "tqdm",
    ],
    extras_require={
        "video": ["av"],
        "opencv": ["opencv-python-headless"],
        "plot": ["matplotlib"],
        "test": ["pytest", "opencv-python-headless", "matplotlib"],
    },
    entry_points={"console_scripts": ["cmasktrack=cmasktrack.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
