"""The built extension uses the process's C++ runtime: C++ argument errors become Python
exceptions, and the build's runtime check refuses a module that carries its own libstdc++."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import edgegen

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check_cxx_runtime.py"


def test_cpp_argument_errors_are_python_exceptions():
    """Formatting a TORCH_CHECK message goes through std::ostream; with a second C++ runtime in
    the process this segfaulted. In a subprocess, so a crash fails the test instead of the run."""
    code = textwrap.dedent("""
        import torch, edgegen
        q = torch.randn(1, 1, 8, 16)
        try:
            torch.ops.edgegen.sliding_window_attention(q, q, q, 0, 0, True, None, 0, None, 0)
        except ValueError as e:
            assert "window" in str(e), e
            print("attention ok")
        s = torch.randn(4, 10)
        try:
            torch.ops.edgegen.kd_loss(s, [s], [], torch.zeros(4, dtype=torch.long), 2.0, 0.5, -100, "avg", True)
        except ValueError as e:
            assert "reduction" in str(e), e
            print("kd ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.split() == ["attention", "ok", "kd", "ok"]


def _run_check(lib: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(lib), "--compiler", "test-cxx"], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("readelf") is None, reason="needs binutils")
def test_runtime_check_accepts_the_built_extension():
    r = _run_check(Path(edgegen._C.__file__))
    assert r.returncode == 0, r.stderr


# The system compiler (a wrapper first on PATH may link libstdc++ statically itself, which is what
# the check exists to catch, and would fail the shared case for the wrong reason).
TEST_CXX = os.environ.get("EDGEGEN_TEST_CXX") or ("/usr/bin/g++" if os.path.exists("/usr/bin/g++") else "g++")


@pytest.mark.skipif(shutil.which(TEST_CXX) is None or shutil.which("nm") is None, reason="needs g++ and binutils")
@pytest.mark.parametrize("static", [False, True], ids=["shared-libstdcxx", "static-libstdcxx"])
def test_runtime_check_on_a_small_library(tmp_path, static):
    src = tmp_path / "lib.cpp"
    src.write_text(textwrap.dedent("""
        #include <sstream>
        #include <stdexcept>
        extern "C" int edgegen_probe(long x) {
          std::ostringstream o;
          o << "bad value " << x;
          if (x < 0) throw std::invalid_argument(o.str());
          return int(o.str().size());
        }
    """))
    lib = tmp_path / "lib.so"
    cmd = [TEST_CXX, "-O1", "-fPIC", "-shared", str(src), "-o", str(lib)] + (["-static-libstdc++"] if static else [])
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    r = _run_check(lib)
    if not static:
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 1
    assert "test-cxx" in r.stderr and "CXX=/usr/bin/g++" in r.stderr
    assert "of libstdc++'s own symbols" in r.stderr
    assert "libstdc++.so is not among its dynamic dependencies" in r.stderr


def test_the_version_is_written_once():
    """pyproject.toml's version is the package's __version__ (two copies could drift apart)."""
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["version"] == edgegen.__version__
