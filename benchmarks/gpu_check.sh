#!/usr/bin/env bash
# The GPU checks of issue 12 as ONE command for a borrowed GPU machine (about 8-9 minutes):
#   1. the interpreter, pycocotools (from wheels in .whl/ when the machine lacks it), nvidia-smi;
#   2. the compiled extension: built in place (CUDA kernels for the visible GPU) when
#      cmasktrack._C is missing, was built against another torch, or has no CUDA kernels;
#   3. python -m cmasktrack.selftest --require-extension (full: CPU and every GPU);
#   3b. benchmarks/bench_precision.py on the GPU (<= 90 s; GPU_CHECK_PRECISION=0 skips it);
#   4. benchmarks/bench_gpu.py with the time that is left.
# Everything goes under $OUT (text + json, 9 files); a summary is printed last.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Environment: OUT (default ./gpu_check_out), PYTHON (default: the first of python3 / python on
# PATH that imports torch), GPU_CHECK_BUDGET_S (whole run, default 510), GPU_CHECK_WHEELS
# (default .whl), TORCH_CUDA_ARCH_LIST (default: the visible GPU's), MAX_JOBS (default nproc),
# GPU_CHECK_SELFTEST_ARGS / GPU_CHECK_BENCH_ARGS (extra arguments, e.g. "--quick" /
# "--compile-precisions="; a CPU-only dry run: "--quick --device cpu" / "--device cpu --tiny").
# Exit status: the selftest's (0 = every check passed), or 3 when no usable Python was found.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 3
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-510}
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
left() { echo $((BUDGET - ($(date +%s) - START))); }
note() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$SUMMARY"; }

# ---------------------------------------------------------------- 1. interpreter, packages, GPU
PY=""
for candidate in ${PYTHON:-} python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  note "no python with torch on PATH (set PYTHON)"
  exit 3
fi
WHEELS=${GPU_CHECK_WHEELS:-.whl}
if ! "$PY" -c "import pycocotools" >/dev/null 2>&1; then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/gpu_check_site "$WHEELS"/*.whl >>"$OUT/build.log" 2>&1
    export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
  fi
  if ! "$PY" -c "import pycocotools" >/dev/null 2>&1; then
    note "pycocotools is missing and no wheel for it in $WHEELS/ (see BENCHMARKS.md, GPU): stopping"
    exit 3
  fi
  note "pycocotools installed from $WHEELS/"
fi
{
  nvidia-smi 2>&1
  "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "gpus", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}", p.name, f"{p.total_memory / 2**30:.1f} GiB", f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs")
EOF
  command -v nvcc && nvcc --version
} >"$OUT/env.txt" 2>&1
note "$(grep -m1 '^python' "$OUT/env.txt")"

# ---------------------------------------------------------------- 2. extension
# (the op must come from this tree: an installed cmasktrack elsewhere does not count)
CHECK_EXT='import os, torch, cmasktrack.ops as o; i = o.extension_info(); print(i)
here = i["available"] and os.path.dirname(os.path.abspath(o._extension._C.__file__)) == os.path.abspath("cmasktrack")
raise SystemExit(0 if here and i["cuda"] else 1)'
if "$PY" -c "$CHECK_EXT" >>"$OUT/build.log" 2>&1; then
  note "cmasktrack._C present with CUDA kernels: not rebuilt"
else
  note "building cmasktrack._C in place (CPU + CUDA kernels)"
  t0=$(date +%s)
  CMASKTRACK_CUDA=1 CMASKTRACK_BUILD_STRICT=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    timeout 420 "$PY" setup.py build_ext --inplace >>"$OUT/build.log" 2>&1
  note "build exit status $? in $(($(date +%s) - t0)) s (build.log)"
  if "$PY" -c "$CHECK_EXT" >>"$OUT/build.log" 2>&1; then
    note "cmasktrack._C now has CUDA kernels"
  else
    note "cmasktrack._C still lacks CUDA kernels: the selftest will fail its CUDA op checks"
  fi
fi

# ---------------------------------------------------------------- 3. selftest
limit=$(($(left) - 150))
[ "$limit" -gt 330 ] && limit=330
[ "$limit" -lt 60 ] && limit=60
note "selftest (full, every device; limit ${limit} s)"
# shellcheck disable=SC2086
timeout "$limit" "$PY" -m cmasktrack.selftest --require-extension ${GPU_CHECK_SELFTEST_ARGS:-} \
  --json "$OUT/selftest.json" 2>&1 |
  tee "$OUT/selftest.txt"
selftest_rc=${PIPESTATUS[0]}
note "selftest exit status $selftest_rc (0 = all passed, 1 = a check failed, 124 = timed out)"

# ---------------------------------------------------------------- 3b. what each precision changes
# the demo clip in fp32 / tf32 / bf16 / fp16 (tracks equal? score differences) and the backbone
# alone by precision and layout (BENCHMARKS.md, "Precision"); GPU_CHECK_PRECISION=0 skips it
if [ "${GPU_CHECK_PRECISION:-1}" != "0" ] && [ "$(left)" -gt 240 ]; then
  note "bench_precision (limit 90 s)"
  # shellcheck disable=SC2086
  timeout 90 "$PY" benchmarks/bench_precision.py --backbone-reps 3 ${GPU_CHECK_PRECISION_ARGS:-} \
    --json "$OUT/precision.json" 2>&1 | tee "$OUT/precision.txt"
  note "bench_precision exit status ${PIPESTATUS[0]}"
fi

# ---------------------------------------------------------------- 4. benchmark
limit=$(($(left) - 10))
if [ "$limit" -lt 60 ]; then
  note "bench_gpu: skipped, only $(left) s left"
else
  note "bench_gpu (budget $((limit - 40)) s, hard limit ${limit} s)"
  # shellcheck disable=SC2086
  timeout "$limit" "$PY" benchmarks/bench_gpu.py --budget-s $((limit - 40)) ${GPU_CHECK_BENCH_ARGS:-} \
    --json "$OUT/bench_gpu.json" 2>&1 |
    tee "$OUT/bench_gpu.txt"
  note "bench_gpu exit status ${PIPESTATUS[0]}"
fi

# ---------------------------------------------------------------- summary
{
  echo
  echo "==== selftest"
  sed -n '/^device /,$p' "$OUT/selftest.txt" 2>/dev/null | cut -c1-160
  echo "==== bench_precision"
  sed -n '/^| precision /,/^$/p' "$OUT/precision.txt" 2>/dev/null
  echo "==== bench_gpu"
  sed -n '/^summary /,$p' "$OUT/bench_gpu.txt" 2>/dev/null
} | tee -a "$SUMMARY"
note "done in $(($(date +%s) - START)) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$selftest_rc"
