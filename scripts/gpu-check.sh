#!/usr/bin/env bash
# Everything a GPU machine needs in one command, most valuable first, within a deadline
# (GPU_CHECK_DEADLINE seconds, default 540: the device tool stops a command at 600 s, and a
# machine stays warm for only seconds after a call, so a second call would start bare):
#   1. the toolchain: GPU, torch, nvcc, the system compiler, scikit-build-core, CMake; and whether
#      the machine's default C++ compiler links libstdc++ statically (the build refuses a library
#      that carries its own C++ runtime);
#   2. build edgegen with the CUDA kernels (EDGEGEN_CUDA=ON) against the torch already installed,
#      with the system compiler (nothing is downloaded);
#   3. tests/cuda with the native kernels required, and the build tests;
#   4. the GPU benchmark (BENCH_ARGS, default --quick) and its table;
#   5. tests/cuda's attention tests with the pipelined kernels (EDGEGEN_CUDA_ATTENTION_PIPELINE=1)
#      and its KD tests with the cluster kernel (EDGEGEN_CUDA_KD_CLUSTER=1);
#   6. on a host CPU with AMX: scripts/amx-check.sh (INT8 GEMM / bf16 attention on AMX tiles,
#      exactness and timings; it needs no extension, so it runs even when the build failed) and the
#      INT8 layer and attention tests with EDGEGEN_AMX=1 (GPU_CHECK_AMX=0 skips this);
#   7. the op, distillation and attention suites against this machine's torch, with what is left.
# A step starts only with at least 20 s left and is stopped at its own cap or the deadline,
# whichever comes first ("TIMED OUT" says so). A summary line follows every step.
# Steps can be left out: GPU_CHECK_TESTS=none (no tests; or a narrower selection for step 3),
# GPU_CHECK_BENCH=0, GPU_CHECK_AMX=0, GPU_CHECK_SUITES=0.
# Six files go to $OUT when set (the device tool's output folder, which returns at most 8), else to
# build/gpu-check: build.log, tests.log, bench.log, gpu.csv (written after each benchmark section,
# so a run cut short keeps what it measured), amx.log, suites.log.
# Extra wheels are installed from .whl/ when present (the GPU machines have no registry).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
DEADLINE="${GPU_CHECK_DEADLINE:-540}"
T0=$(date +%s)
status=0

left() { echo $((DEADLINE - ($(date +%s) - T0))); }

# step_cap CAP: the seconds a step may take (its cap, or what the deadline leaves less a margin);
# prints nothing and fails when under 20 s are left.
step_cap() {
  local cap=$1 l
  l=$(($(left) - 10))
  [ "$l" -lt 20 ] && return 1
  [ "$l" -lt "$cap" ] && cap=$l
  echo "$cap"
}

# run_pytest LOG CAP LABEL ENV... -- ARGS...: pytest under timeout, appended to LOG, one summary line.
run_pytest() {
  local log=$1 cap=$2 label=$3; shift 3
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local secs
  if ! secs=$(step_cap "$cap"); then
    echo "$label: SKIPPED (deadline: $(left) s left)"; return 0
  fi
  echo "### $label (cap $secs s)" >>"$log"
  env "${envs[@]}" timeout "$secs" "$PY" -m pytest "$@" -q -p no:cacheprovider -o addopts="" -rfEs >>"$log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ]; then
    echo "$label: TIMED OUT after $secs s"
  else
    echo "$label: $(grep -E "passed|failed|error|skipped|no tests ran" "$log" | tail -1)"
  fi
  if [ $rc -ne 0 ]; then
    status=1
    grep -E "^(FAILED|ERROR)" "$log" | tail -20
  fi
}

if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/edgegen-site \
    .whl/*.whl && export PYTHONPATH="/tmp/edgegen-site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "== toolchain (deadline ${DEADLINE} s)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not available"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
missing=()
[ -n "$NVCC" ] && "$NVCC" --version | tail -1 || missing+=("nvcc (not on PATH nor /usr/local/cuda/bin; set CUDACXX)")
[ -x /usr/bin/g++ ] && [ -x /usr/bin/gcc ] || missing+=("/usr/bin/g++ and /usr/bin/gcc (the system compiler)")
"$PY" -c "import scikit_build_core" 2>/dev/null || missing+=("scikit-build-core (carry its wheel in .whl/)")
command -v cmake >/dev/null || "$PY" -c "import cmake" 2>/dev/null || missing+=("cmake")
default_cxx="${CXX:-$(command -v c++ || true)}"
echo "default C++ compiler: ${default_cxx:-none}"
if [ -n "$default_cxx" ]; then
  probe="$(mktemp -d)"
  printf '#include <sstream>\nextern "C" int probe(long x){std::ostringstream o; o << x; return (int)o.str().size();}\n' \
    > "$probe/p.cpp"
  if "$default_cxx" -O1 -fPIC -shared "$probe/p.cpp" -o "$probe/p.so" 2>/dev/null; then
    if "$PY" scripts/check_cxx_runtime.py "$probe/p.so" --compiler "$default_cxx" 2>"$probe/msg"; then
      echo "default compiler links libstdc++ dynamically"
    else
      echo "default compiler links libstdc++ statically; the build check refuses it:"
      cat "$probe/msg"
    fi
  fi
fi

built=0
if [ ${#missing[@]} -gt 0 ]; then
  status=1
  printf 'build SKIPPED, missing: %s\n' "${missing[@]}"
else
  echo "== build (EDGEGEN_CUDA=ON, system compiler)"
  export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CUDACXX="$NVCC"
  export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
  t=$(date +%s)
  if secs=$(step_cap 300) && timeout "$secs" "$PY" -m pip install --no-build-isolation --no-deps -e . \
       --config-settings=cmake.define.EDGEGEN_CUDA=ON --config-settings=build-dir=build/gpu >"$OUT/build.log" 2>&1; then
    built=1
    echo "built in $(($(date +%s) - t)) s"
    "$PY" -c "import torch, edgegen; print('native CUDA kernels:', {op: torch._C._dispatch_has_kernel_for_dispatch_key('edgegen::' + op, 'CUDA') for op in ('kd_loss', 'fused_linear_kd_loss', 'sliding_window_attention')})"
  else
    status=1
    echo "build FAILED or TIMED OUT ($(($(date +%s) - t)) s); steps that need the extension are skipped:"
    tail -40 "$OUT/build.log"
  fi
fi

if [ $built = 1 ] && [ "${GPU_CHECK_TESTS:-}" != none ]; then
  echo "== tests"
  # GPU_CHECK_TESTS narrows the selection (e.g. "tests/cuda/test_kd_loss_cuda.py" for a quick rerun).
  # shellcheck disable=SC2086
  run_pytest "$OUT/tests.log" 200 "tests/cuda + build" EDGEGEN_EXPECT_CUDA_KERNELS=1 -- \
    ${GPU_CHECK_TESTS:-tests/cuda tests/test_build.py}
fi

if [ $built = 1 ] && [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
  echo "== benchmark"
  if secs=$(step_cap 180); then
    # shellcheck disable=SC2086
    timeout "$secs" "$PY" benchmarks/bench_gpu.py ${BENCH_ARGS:---quick} --out "$OUT/gpu.csv" 2>&1 \
      | tee "$OUT/bench.log" | grep -vE "^(W|I)[0-9]{4} "
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 124 ] && echo "benchmark: TIMED OUT after $secs s (gpu.csv holds the sections done)"
    [ "$rc" -eq 0 ] || status=1
  else
    echo "benchmark: SKIPPED (deadline: $(left) s left)"
  fi
fi

if [ $built = 1 ] && [ "${GPU_CHECK_TESTS:-}" != none ]; then
  echo "== kernel variants"
  # (the native-kernel tests only: the FlexAttention and reference routes do not read the variables)
  run_pytest "$OUT/tests.log" 90 "pipelined attention kernels" EDGEGEN_EXPECT_CUDA_KERNELS=1 \
    EDGEGEN_CUDA_ATTENTION_PIPELINE=1 -- tests/cuda/test_attention_cuda.py -k native
  run_pytest "$OUT/tests.log" 90 "KD cluster kernel" EDGEGEN_EXPECT_CUDA_KERNELS=1 EDGEGEN_CUDA_KD_CLUSTER=1 -- \
    tests/cuda/test_kd_loss_cuda.py
fi

# The host CPU of the GPU machines has AMX: the AMX paths (INT8 GEMM and convolutions, the
# attention's bf16 products; off by default until they have run on one) are checked here too,
# stand-alone and through the layers and ops.
if grep -q -w amx_int8 /proc/cpuinfo && [ "${GPU_CHECK_AMX:-1}" = 1 ]; then
  echo "== AMX (host CPU)"
  if secs=$(step_cap 150); then
    OUT=build/amx-check timeout "$secs" bash scripts/amx-check.sh >"$OUT/amx.log" 2>&1
    rc=$?
    tail -40 "$OUT/amx.log"
    [ $rc -eq 124 ] && echo "amx-check: TIMED OUT after $secs s"
    [ $rc -eq 0 ] || status=1
  else
    echo "amx-check: SKIPPED (deadline: $(left) s left)"
  fi
  if [ $built = 1 ]; then
    run_pytest "$OUT/amx.log" 150 "AMX layer and attention tests" EDGEGEN_AMX=1 -- tests/quant/test_isa_paths.py \
      tests/quant/test_linear.py tests/quant/test_static_conv.py tests/attention/test_sliding_window.py
  fi
fi

if [ $built = 1 ] && [ "${GPU_CHECK_TESTS:-}" != none ] && [ "${GPU_CHECK_SUITES:-1}" = 1 ]; then
  echo "== op, distillation and attention suites (this machine's torch)"
  xdist=()
  "$PY" -c "import xdist" 2>/dev/null && xdist=(-n 8)
  run_pytest "$OUT/suites.log" 600 "suites" PYTHONHASHSEED=0 -- tests/ops tests/distill tests/attention \
    "${xdist[@]}"
fi
echo "== done in $(($(date +%s) - T0)) s, status $status"
exit $status
