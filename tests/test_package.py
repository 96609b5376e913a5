"""Packaging promises: cheap import, one OpenMP runtime, a clear error when _C is missing."""

import os
import subprocess
import sys
import textwrap

import torch

import edgegen


def run_py(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_import_is_cheap():
    r = run_py("""
        import sys, edgegen
        heavy = [m for m in ("mlflow", "matplotlib", "transformers") if m in sys.modules]
        print(heavy)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_ops_registered_and_isa_reported():
    assert hasattr(torch.ops.edgegen, "kd_loss")
    assert hasattr(torch.ops.edgegen, "fused_linear_kd_loss")
    from tests.conftest import ISA_LEVELS

    assert edgegen.isa.LEVELS == ISA_LEVELS
    order = edgegen.isa.LEVELS
    cap = edgegen._C.max_isa()
    # the CPU's best level at or below the cap (levels can be missing in between: an AVX-512 CPU
    # without VNNI has avx512 but not avx2_vnni)
    assert edgegen.cpu_isa() == max((lv for lv in edgegen.cpu_levels() if order.index(lv) <= order.index(cap)),
                                    key=order.index)
    assert all(lv in order for lv in edgegen.cpu_levels())
    assert set(edgegen.kernel_paths()) >= {"int8_gemm", "int4", "kd_loss", "attention"}


def test_single_openmp_runtime_in_process():
    # In a fresh process (this one holds whatever other tests imported, e.g. scikit-learn's own
    # libgomp): torch, the extension with its kernels run, and edgegen's Python packages.
    r = run_py("""
        import torch, edgegen, edgegen.eval, edgegen.train
        edgegen.distill.kd_loss(torch.randn(4, 64), torch.randn(4, 64), torch.randint(0, 64, (4,)))
        maps = open("/proc/self/maps").read().splitlines()
        for lib in sorted({l.split()[-1] for l in maps if any(n in l for n in ("libgomp", "libiomp", "libomp"))}):
            print(lib)
    """)
    assert r.returncode == 0, r.stderr
    gomp = r.stdout.split()
    assert len(gomp) == 1, gomp  # torch's own runtime, which the extension shares


def test_scalar_path_matches_reference():
    r = run_py("""
        import torch, edgegen
        from edgegen.ops import kd_loss_reference
        assert edgegen.cpu_isa() == "scalar", edgegen.cpu_isa()
        torch.manual_seed(0)
        s, t = torch.randn(8, 1001), torch.randn(8, 1001)
        y = torch.randint(0, 1001, (8,))
        got = edgegen.distill.kd_loss(s, t, y, reduction="none")
        ref = kd_loss_reference(s.double(), t.double(), y, reduction="none")
        print((got.double() - ref).abs().max().item())
    """, env={"EDGEGEN_MAX_ISA": "scalar"})
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip()) < 1e-4


def test_an_unknown_max_isa_is_a_clear_error_and_can_be_replaced_in_process():
    r = run_py("""
        import torch, edgegen
        try:
            edgegen.kernel_paths()
        except ValueError as e:
            print(e)
        edgegen.max_isa("scalar")
        print(edgegen.kernel_paths()["int8_gemm"])
    """, env={"EDGEGEN_MAX_ISA": "avx9000"})
    assert r.returncode == 0, r.stderr
    assert "EDGEGEN_MAX_ISA: expected scalar, avx2, avx2_vnni, avx512, avx512_vnni or amx, got 'avx9000'" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "scalar"


def test_missing_extension_gives_rebuild_instructions():
    # Block the compiled module the way a failed or missing build would leave it.
    r = run_py("""
        import sys
        sys.modules["edgegen._C"] = None
        import edgegen
    """)
    assert r.returncode != 0
    assert "edgegen._C could not be loaded: it is not built, or not installed next to the Python package" in r.stderr
    assert "pip install --no-build-isolation -e ." in r.stderr  # this test runs from the source tree
    assert "circular import" not in r.stderr


def test_the_rebuild_hint_fits_the_install(tmp_path):
    from edgegen._extension import install_hint

    source = tmp_path / "src"
    (source / "python" / "edgegen").mkdir(parents=True)
    (source / "csrc").mkdir()
    (source / "pyproject.toml").write_text("")
    assert "pip install --no-build-isolation -e ." in install_hint(source / "python" / "edgegen")
    installed = tmp_path / "venv" / "lib" / "site-packages" / "edgegen"
    installed.mkdir(parents=True)
    hint = install_hint(installed)
    assert "-e ." not in hint and "scikit-build-core pybind11" in hint and "--force-reinstall" in hint
