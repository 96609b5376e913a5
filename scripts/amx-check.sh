#!/usr/bin/env bash
# The AMX paths on a machine with AMX (e.g. the GPU machines' host CPU): the INT8 GEMM and
# convolutions (AMX-INT8) and the attention's bf16 products (AMX-BF16). Builds the stand-alone
# check csrc/tests/amx_check.cpp from the kernel sources with the system compiler (no CMake,
# GoogleTest or torch needed; about a minute on 16 cores) and runs it: INT8 exactness against the
# scalar path and the bf16 attention against the tile model and the float products, then AMX
# against AVX-512 timings. Output also in $OUT when set. `scripts/amx-check.sh --model` runs the
# correctness part on the software tile model instead (any CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/amx-check}"
mkdir -p "$OUT" build/amx-check
CXX="${CXX:-/usr/bin/g++}"
lscpu | grep -E "Model name|^CPU\(s\)" || true
# (no match on a CPU without them: grep's status 1 must not end the script under pipefail)
{ grep -o -w -E "amx_(tile|int8|bf16)|avx512_vnni" /proc/cpuinfo || true; } | sort -u | tr '\n' ' '; echo
common=(-std=c++17 -O2 -fopenmp -fno-math-errno -DEDGEGEN_HAVE_AVX2=1 -DEDGEGEN_HAVE_AVX_VNNI=1 -DEDGEGEN_HAVE_AMX=1
        -DEDGEGEN_HAVE_AVX512_BF16=1 -DEDGEGEN_HAVE_AMX_BF16=1 -Icsrc)
avx512=(-mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c -Wno-ignored-attributes)
if ! echo 'int main(){}' | "$CXX" -x c++ -mavxvnni -mamx-tile -mamx-int8 -mamx-bf16 -mavx512bf16 -o /dev/null - \
    2>/dev/null; then
  echo "amx-check: $CXX does not know -mavxvnni / -mamx-tile / -mamx-bf16 (GCC >= 11 or Clang >= 12 needed): skipped"
  exit 0
fi
objs=()
pids=()
build() {  # source, extra flags...
  local src=$1; shift
  local obj="build/amx-check/$(basename "${src%.cpp}").o"
  "$CXX" "${common[@]}" "$@" -c "$src" -o "$obj" &
  objs+=("$obj")
  pids+=($!)
}
build csrc/kernels/cpu_features.cpp
build csrc/kernels/quant/gemm.cpp
build csrc/kernels/quant/gemm_avx2.cpp -mavx2 -mfma -mf16c -Wno-ignored-attributes
build csrc/kernels/quant/gemm_avx512.cpp "${avx512[@]}" -mavx512vnni
build csrc/kernels/quant/vnni256_vex.cpp -mavx2 -mfma -mf16c -mavxvnni -Wno-ignored-attributes
build csrc/kernels/quant/vnni256_evex.cpp "${avx512[@]}" -mavx512vnni
build csrc/kernels/quant/act_avx512.cpp "${avx512[@]}"
build csrc/kernels/quant/gemm_amx.cpp -mamx-tile -mamx-int8
build csrc/kernels/attention/attention.cpp
build csrc/kernels/attention/attention_scalar.cpp
build csrc/kernels/attention/attention_avx2.cpp -mavx2 -mfma -mf16c -Wno-ignored-attributes
build csrc/kernels/attention/attention_avx512.cpp "${avx512[@]}"
build csrc/kernels/attention/attention_avx512_bf16.cpp "${avx512[@]}" -mavx512bf16
build csrc/kernels/attention/attention_amx.cpp "${avx512[@]}" -mavx512bf16 -mamx-tile -mamx-bf16
build csrc/tests/amx_check.cpp
for pid in "${pids[@]}"; do wait "$pid" || { echo "amx-check: a compile failed"; exit 1; }; done
"$CXX" -fopenmp "${objs[@]}" -o build/amx-check/amx_check
build/amx-check/amx_check "$@" | tee "$OUT/amx_check.txt"
