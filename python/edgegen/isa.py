"""Which instruction-set paths the CPU kernels take: what the CPU and OS support, the cap
(``EDGEGEN_MAX_ISA`` or :class:`max_isa`), and each kernel family's current path."""

from __future__ import annotations

from edgegen._extension import load as _load

_C = _load()

#: Every instruction-set level, in the cap's order (lowest first).
LEVELS: tuple[str, ...] = tuple(_C.isa_levels())


def cpu_isa() -> str:
    """The highest instruction-set level edgegen's CPU kernels may use here: what the CPU and OS
    support (one of :data:`LEVELS`: scalar, avx2, avx2_vnni, avx512, avx512_vnni, amx), the highest
    at or below the cap ``EDGEGEN_MAX_ISA`` / :func:`max_isa`. Each kernel family takes its best path
    up to it: see :func:`kernel_paths`. (An AVX-512 CPU without VNNI has avx512 but not avx2_vnni.)"""
    return _C.cpu_isa()


def cpu_levels() -> list[str]:
    """Every instruction-set level this CPU and OS support, lowest first (ignores the cap)."""
    return list(_C.cpu_levels())


def kernel_paths() -> dict[str, str]:
    """The path each CPU kernel family takes now, e.g. ``{"int8_gemm": "avx512_vnni", "kd_loss":
    "avx2", ...}`` (a family runs its best path that the CPU supports, up to the cap)."""
    return dict(_C.kernel_paths())


class max_isa:
    """Caps the kernels' instruction set for this process, like ``EDGEGEN_MAX_ISA``; as a context
    manager, restores the previous cap on exit. ``edgegen.max_isa("avx2")``."""

    def __init__(self, level: str):
        if not isinstance(level, str):
            raise TypeError(f"level: expected a name such as 'avx2', got {type(level).__name__}")
        try:
            self._previous = _C.max_isa()
        except ValueError:  # an invalid EDGEGEN_MAX_ISA: this call replaces it
            self._previous = None
        _C.set_max_isa(level)

    def __enter__(self) -> "max_isa":
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            _C.set_max_isa(self._previous)
