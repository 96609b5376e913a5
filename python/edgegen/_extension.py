"""Loads the compiled extension, with a clear message when it is missing or broken."""

from __future__ import annotations

from pathlib import Path


def install_hint(package_dir: Path) -> str:
    """How to rebuild the extension, for the kind of install ``package_dir`` belongs to: a source
    checkout (editable install) or an installed copy (a wheel or a regular install)."""
    root = package_dir.resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "csrc").is_dir():
        return ("Rebuild it against the installed torch from the source tree:\n"
                f"    cd {root}\n"
                "    pip install --no-build-isolation -e .\n"
                "(torch must be installed first; see README.md).")
    return ("This installed copy has no working extension. Reinstall it from the edgegen source tree, "
            "against the installed torch (keep its version pinned):\n"
            "    pip install scikit-build-core pybind11 ninja\n"
            "    pip install --no-build-isolation --force-reinstall /path/to/edgegen-source\n"
            "(see README.md).")


def _reason(exc: ImportError) -> str:
    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) or "cannot import name '_C'" in text or "halted" in text:
        return "it is not built, or not installed next to the Python package"
    if "undefined symbol" in text:
        return f"it was built against another torch than the one installed ({text})"
    return text


def load():
    import torch  # noqa: F401  (torch's libraries, OpenMP runtime included, must be mapped first)

    try:
        from edgegen import _C
    except ImportError as exc:
        raise ImportError(f"edgegen's C++ extension edgegen._C could not be loaded: {_reason(exc)}. "
                          f"{install_hint(Path(__file__).parent)}") from None
    return _C
