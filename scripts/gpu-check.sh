#!/usr/bin/env bash
# Everything a GPU machine needs in one go (target: under 8 minutes on one H100/H200):
#   1. show the toolchain, and that the machine's default C++ compiler is checked (a library it
#      builds is refused when it carries its own libstdc++);
#   2. build edgegen with the CUDA kernels (EDGEGEN_CUDA=ON) against the torch already installed,
#      with the system compiler, which links libstdc++ dynamically (nothing is downloaded);
#   3. run tests/cuda (native kernels required) and the op, distillation and attention suites,
#      then the CUDA attention tests again with the pipelined kernels
#      (EDGEGEN_CUDA_ATTENTION_PIPELINE=1) and the CUDA KD tests with the cluster kernel
#      (EDGEGEN_CUDA_KD_CLUSTER=1);
#   4. run the GPU benchmark and print its table;
#   5. on a host CPU with AMX, check and time the INT8 GEMM's AMX path (scripts/amx-check.sh) and
#      run the INT8 layer tests with it turned on (GPU_CHECK_AMX=0 skips this).
# Logs and the CSV go to $OUT when set (the device tool's output folder), else build/gpu-check.
# Steps can be left out, to split the check over two commands on a device whose commands are
# time-limited (the build stays for the second): GPU_CHECK_TESTS=none (no tests), GPU_CHECK_BENCH=0
# (no benchmark), GPU_CHECK_AMX=0 (no host AMX check). The benchmark's CSV is written after each
# of its sections, so a run cut short keeps what it measured.
# Extra wheels (e.g. expecttest, which opcheck needs) are installed from .whl/ when present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
status=0

if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/edgegen-site \
    .whl/*.whl && export PYTHONPATH="/tmp/edgegen-site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "== toolchain"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
nvcc --version | tail -1
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
      head -c 400 "$probe/msg"; echo
    fi
  fi
fi

echo "== build (EDGEGEN_CUDA=ON, system compiler)"
export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
export CUDACXX="${CUDACXX:-$(command -v nvcc)}"
export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
t0=$(date +%s)
if ! "$PY" -m pip install --no-build-isolation --no-deps -e . \
     --config-settings=cmake.define.EDGEGEN_CUDA=ON --config-settings=build-dir=build/gpu >"$OUT/build.log" 2>&1; then
  echo "build FAILED ($(($(date +%s) - t0)) s):"; tail -40 "$OUT/build.log"; exit 1
fi
echo "built in $(($(date +%s) - t0)) s"
"$PY" -c "import torch, edgegen; print('native CUDA kernels:', {op: torch._C._dispatch_has_kernel_for_dispatch_key('edgegen::' + op, 'CUDA') for op in ('kd_loss', 'fused_linear_kd_loss', 'sliding_window_attention')})"

if [ "${GPU_CHECK_TESTS:-}" != none ]; then
  echo "== tests"
  # GPU_CHECK_TESTS narrows the selection (e.g. "tests/cuda tests/test_build.py" for a quick rerun).
  EDGEGEN_EXPECT_CUDA_KERNELS=1 timeout 300 "$PY" -m pytest ${GPU_CHECK_TESTS:-tests/cuda tests/test_build.py tests/ops \
    tests/distill tests/attention} -q -p no:cacheprovider -o addopts="" -rfE --junitxml="$OUT/tests.xml" \
    >"$OUT/tests.log" 2>&1
  rc=$?
  grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
  if [ $rc -ne 0 ]; then
    status=1
    grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -40
  fi

  # (the native-kernel tests only: the FlexAttention and reference routes do not read the variable)
  EDGEGEN_EXPECT_CUDA_KERNELS=1 EDGEGEN_CUDA_ATTENTION_PIPELINE=1 timeout 120 "$PY" -m pytest \
    tests/cuda/test_attention_cuda.py -k native -q -p no:cacheprovider -o addopts="" -rfE \
    >"$OUT/tests-pipelined.log" 2>&1
  rc=$?
  echo "pipelined attention kernels: $(grep -E "passed|failed|error" "$OUT/tests-pipelined.log" | tail -1)"
  [ $rc -eq 0 ] || { status=1; grep -E "^(FAILED|ERROR)" "$OUT/tests-pipelined.log" | head -20; }
  EDGEGEN_EXPECT_CUDA_KERNELS=1 EDGEGEN_CUDA_KD_CLUSTER=1 timeout 120 "$PY" -m pytest \
    tests/cuda/test_kd_loss_cuda.py -q -p no:cacheprovider -o addopts="" -rfE \
    >"$OUT/tests-kd-cluster.log" 2>&1
  rc=$?
  echo "KD cluster kernel: $(grep -E "passed|failed|error" "$OUT/tests-kd-cluster.log" | tail -1)"
  [ $rc -eq 0 ] || { status=1; grep -E "^(FAILED|ERROR)" "$OUT/tests-kd-cluster.log" | head -20; }
fi

if [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
  echo "== benchmark"
  timeout 300 "$PY" benchmarks/bench_gpu.py ${BENCH_ARGS:-} --csv "$OUT/gpu.csv" 2>&1 | tee "$OUT/bench.log" \
    | grep -vE "^(W|I)[0-9]{4} " || status=1
fi

# The host CPU of the GPU machines has AMX: the AMX paths (INT8 GEMM and convolutions, the
# attention's bf16 products; off by default until they have run on one) are checked here too,
# stand-alone (about a minute) and through the layers and ops.
if grep -q -w amx_int8 /proc/cpuinfo && [ "${GPU_CHECK_AMX:-1}" = 1 ]; then
  echo "== AMX (host CPU)"
  OUT="$OUT" timeout 240 bash scripts/amx-check.sh >"$OUT/amx.log" 2>&1
  amx_rc=$?
  tail -40 "$OUT/amx.log"
  [ $amx_rc -eq 0 ] || status=1
  EDGEGEN_AMX=1 timeout 180 "$PY" -m pytest tests/quant/test_isa_paths.py tests/quant/test_linear.py \
    tests/quant/test_static_conv.py tests/attention/test_sliding_window.py -q \
    -p no:cacheprovider -o addopts="" >"$OUT/amx-tests.log" 2>&1 || status=1
  grep -E "passed|failed|error" "$OUT/amx-tests.log" | tail -2
fi
exit $status
