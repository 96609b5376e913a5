import os
import shutil
import tempfile

import pytest
import torch

# Tests compare against float64 references; fix the thread count so runs are repeatable.
torch.set_num_threads(int(os.environ.get("EDGEGEN_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Every instruction-set level the kernels know, lowest first (fixed ids on every machine; equal to
# edgegen.isa.LEVELS, tests/test_package.py).
ISA_LEVELS = ("scalar", "avx2", "avx2_vnni", "avx512", "avx512_vnni", "amx")


@pytest.fixture(params=ISA_LEVELS)
def isa(request):
    """Runs a test once per ISA level with the kernels capped at it (edgegen.max_isa); a level the
    CPU lacks is skipped by name. Yields the level."""
    import edgegen

    level = request.param
    if level not in edgegen.cpu_levels():
        pytest.skip(f"this CPU lacks {level} (has {', '.join(edgegen.cpu_levels())})")
    cap = edgegen._C.max_isa()
    if ISA_LEVELS.index(level) > ISA_LEVELS.index(cap):
        pytest.skip(f"{level} is above the cap {cap} (EDGEGEN_MAX_ISA)")
    with edgegen.max_isa(level):
        yield level


_CACHE_PREFIX = "edgegen-test-cache-"


def pytest_configure(config):
    """What the readers derive (decoded images, token files, FID statistics) goes to a cache folder
    of this test session, removed at its end, unless EDGEGEN_CACHE_DIR is set: the many fixture
    datasets the tests build would otherwise pile up in the user's ~/.cache/edgegen. Set once by
    the controlling process, so pytest-xdist's workers (started after this hook) share it."""
    if hasattr(config, "workerinput") or os.environ.get("EDGEGEN_CACHE_DIR"):
        return
    _remove_caches_of_dead_sessions()
    config._edgegen_cache_dir = tempfile.mkdtemp(prefix=f"{_CACHE_PREFIX}{os.getpid()}-")
    os.environ["EDGEGEN_CACHE_DIR"] = config._edgegen_cache_dir


def _remove_caches_of_dead_sessions() -> None:
    """A session killed before its end (a timeout, a signal) leaves its cache folder behind; the
    folder names the session's process, so the next session removes the folders of processes that
    are gone."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        if not name.startswith(_CACHE_PREFIX):
            continue
        pid = name[len(_CACHE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:  # alive, owned by someone else
            pass


def pytest_unconfigure(config):
    folder = getattr(config, "_edgegen_cache_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("EDGEGEN_CACHE_DIR", None)
