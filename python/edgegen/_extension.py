"""Loads the compiled extension, with a clear message when it is missing or broken."""

from __future__ import annotations

_REBUILD = (
    "Rebuild it against the installed torch from the repository root with:\n"
    "    pip install --no-build-isolation -e .\n"
    "(torch must be installed first; see README.md)."
)


def load():
    import torch  # noqa: F401  (torch's libraries, OpenMP runtime included, must be mapped first)

    try:
        from edgegen import _C
    except ImportError as exc:
        raise ImportError(
            f"edgegen's C++ extension edgegen._C could not be loaded ({exc}). {_REBUILD}"
        ) from exc
    return _C
