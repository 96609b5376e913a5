#!/usr/bin/env bash
# Build and test edgegen against another torch release, on a machine without a GPU:
#   scripts/check-torch.sh 2.11.0 [pytest arguments]
# A separate virtualenv (build/torch-VERSION/venv) gets the registry's wheel of that release: on
# x86-64 Linux a CUDA build (a few GB with NVIDIA's libraries) that runs on the CPU. The extension
# is built against it with the CUDA kernels when nvcc is present (so the CUDA glue compiles against
# that release's headers too), then the Python suite runs (tests/cuda skips without a GPU).
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
cuda=()
if command -v nvcc >/dev/null 2>&1; then cuda=(--config-settings=cmake.define.EDGEGEN_CUDA=ON); fi
"$PY" -m pip install -q --no-build-isolation --no-deps -e . --config-settings=build-dir="$ROOT/build" "${cuda[@]}"
"$PY" -c "import torch, edgegen; print('torch', torch.__version__, '| edgegen', edgegen.__version__, '| CUDA kernels built:', torch._C._dispatch_has_kernel_for_dispatch_key('edgegen::kd_loss', 'CUDA'))"
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
