"""The buffer cache behind edgegen's large streamed outputs.

The KD loss's ``[N, V]`` gradient, the fused-linear loss's logit chunks and the sparse attention's
output and gradients are written once, front to back. A fresh buffer from the OS costs a page fault
and a zeroed page on its first write: for the memory-bound KD loss about as much as the kernel
itself, for attention at n = 16384 about a fifth of the time. A training loop frees such a buffer every
step (during backward, or at ``optimizer.zero_grad()``) and asks for one of the same size the
next: edgegen keeps up to four freed buffers of 8 MiB and more (attention: above 32 MiB, in a pool of
its own, so that a step using both keeps both) and hands one back when the size matches within a
quarter, as PyTorch's CUDA caching allocator does on GPUs. A request of another size frees whatever
its pool holds first, so a pool never holds more than what was freed since then. The functions
below report and act on both pools together.
What it holds is invisible to torch's memory statistics: :func:`cache_info` shows it and
:func:`empty_cache` returns it (before evaluation, say).

``EDGEGEN_BUFFER_CACHE=0`` in the environment (or :func:`set_buffer_cache_enabled`) turns the reuse
off; :func:`empty_cache` gives the held memory back to the OS.
"""

from __future__ import annotations

from edgegen._extension import load as _load

_C = _load()


def cache_info() -> dict:
    """The cache's state: ``held_bytes`` and ``held_blocks`` (buffers waiting for reuse),
    ``hits`` and ``misses`` (requests served from it / newly allocated) and ``enabled``.

    Examples:
        >>> import edgegen
        >>> sorted(edgegen.memory.cache_info())
        ['enabled', 'held_blocks', 'held_bytes', 'hits', 'misses']
    """
    info = dict(_C.buffer_cache_stats())
    info["enabled"] = bool(info["enabled"])
    return info


def empty_cache() -> int:
    """Frees the buffers the cache holds (tensors in use are untouched); returns their bytes."""
    return int(_C.empty_buffer_cache())


def set_buffer_cache_enabled(enabled: bool) -> None:
    """Turns buffer reuse on or off for this process; turning it off frees what is held."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    _C.set_buffer_cache_enabled(enabled)
