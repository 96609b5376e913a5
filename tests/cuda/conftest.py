import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    cuda_items = any("tests/cuda/" in str(item.fspath).replace("\\", "/") for item in items)
    if cuda_items and os.environ.get("EDGEGEN_EXPECT_CUDA_KERNELS") == "1":
        # scripts/gpu-check.sh expects a GPU: skipping every test would pass silently.
        raise pytest.UsageError(f"EDGEGEN_EXPECT_CUDA_KERNELS=1 but torch.cuda.is_available() is False (torch "
                                f"{torch.__version__}, CUDA {torch.version.cuda}): no GPU to run tests/cuda on")
    skip = pytest.mark.skip(reason="needs a CUDA device (scripts/gpu-check.sh runs these on a GPU machine)")
    for item in items:
        if "tests/cuda/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


def native(op: str) -> bool:
    """Whether the extension has a native CUDA kernel for edgegen::op."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"edgegen::{op}", "CUDA")


@pytest.fixture(autouse=True)
def _expect_native_kernels():
    """scripts/gpu-check.sh builds with EDGEGEN_CUDA=ON and sets EDGEGEN_EXPECT_CUDA_KERNELS=1: then
    a missing native kernel is a failure, not a silent fallback."""
    if os.environ.get("EDGEGEN_EXPECT_CUDA_KERNELS") == "1" and torch.cuda.is_available():
        for op in ("kd_loss", "fused_linear_kd_loss", "sliding_window_attention"):
            assert native(op), f"edgegen::{op} has no native CUDA kernel in this build"
