#!/usr/bin/env bash
# Build and test edgegen against another torch release, on a machine without a GPU:
#   scripts/check-torch.sh 2.11.0 [pytest arguments]
# A separate virtualenv (build/torch-VERSION/venv) gets the registry's wheel of that release: on
# x86-64 Linux a CUDA build (a few GB with NVIDIA's libraries) that runs on the CPU. The CPU
# extension is built against it (CMakeLists.txt takes a CUDA wheel's headers and CPU libraries
# directly, so no CUDA toolkit is needed), then the Python suite runs (tests/cuda skips without a
# GPU); where nvcc is present, the CUDA kernels are compiled and their ATen glue is checked against
# that release's headers (make cuda-compile-check). The CUDA build itself needs a full toolkit
# (cuBLAS headers included): scripts/gpu-check.sh on a GPU machine.
# Not part of CI: the download is several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:?usage: scripts/check-torch.sh VERSION [pytest arguments]}"
shift
ROOT="build/torch-$VERSION"
VENV="$ROOT/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
# torch first and pinned, then the test requirements with torch pinned again.
"$PY" -m pip install -q "torch==$VERSION"
"$PY" -m pip install -q -r requirements-dev.txt "torch==$VERSION"
"$PY" -m pip install -q --no-build-isolation --no-deps -e . --config-settings=build-dir="$ROOT/build"
"$PY" -c "import torch, edgegen; print('torch', torch.__version__, '(CUDA', torch.version.cuda, 'build) | edgegen', edgegen.__version__, '| CPU paths', edgegen.kernel_paths())"
make --no-print-directory cuda-compile-check PYTHON="$PY"
# The real data staged beside the checkout (read-only), for the smoke tests that need it, as in CI.
if [ -z "${EDGEGEN_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export EDGEGEN_DATA_DIR="$(cd ../shared/data && pwd)"
fi
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
