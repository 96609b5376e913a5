"""What a tracked run records about where it ran: the edgegen commit, the CPU, the software versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path


def git_commit(package_dir: str | os.PathLike | None = None) -> str:
    """The commit edgegen runs from: ``git rev-parse HEAD`` (+ "-dirty") when the package is a
    git checkout's ``python/edgegen``; otherwise the commit recorded at build time in the
    installed ``build_info.json``; 'unknown' when neither exists. Never the working directory's
    repository, which may be another project."""
    pkg = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]
    root = pkg.parents[1] if len(pkg.parents) > 1 else pkg
    if (root / "python" / "edgegen").resolve() == pkg.resolve() and (root / ".git").exists():
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                       capture_output=True, text=True, timeout=10).stdout.strip()
                return out.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.TimeoutExpired):
            pass
    info = pkg / "build_info.json"
    if info.is_file():
        try:
            return str(json.loads(info.read_text(encoding="utf-8")).get("git_commit", "unknown"))
        except (OSError, ValueError):
            pass
    return "unknown"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo) with its x86 family and model numbers when listed:
    virtual machines often report a bare "AMD EPYC", which hides the generation (family 25 is
    Zen 3/4, 26 is Zen 5); else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            fields: dict[str, str] = {}
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
        name = fields.get("model name")
        if name:
            if fields.get("cpu family") and fields.get("model"):
                return f"{name} (family {fields['cpu family']}, model {fields['model']})"
            return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def system_info() -> dict[str, str]:
    """What a run was measured on, as strings for MLflow tags: CPU model, flags and count, threads,
    the kernels' instruction-set level, torch / Python / edgegen versions and the GPU if any."""
    import torch

    flags = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = ",".join(x for x in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni",
                                                 "avx512_bf16", "amx_tile") if x in have)
                    break
    except OSError:
        pass
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_flags": flags, "threads": str(torch.get_num_threads()), "cpu_count": str(os.cpu_count()),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    try:
        import edgegen

        info["edgegen"] = edgegen.__version__
        info["edgegen_isa"] = edgegen.cpu_isa()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info
