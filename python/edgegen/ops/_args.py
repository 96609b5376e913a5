"""Python-side argument checks shared by the op wrappers: integers that must not be truncated,
real (not complex) tensors, tensors that can be written in place."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = ["as_int", "check_real", "check_writable", "is_int", "is_real"]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the range of the ops' int arguments


def is_int(v) -> bool:
    """An integer by type, Python's or NumPy's (``np.arange`` gives those), not a bool (NumPy's
    bool_ is no numbers.Integral) and not an integral float such as 2.0."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A real number by type (int, float, NumPy scalars), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def as_int(v, name: str) -> int:
    """``v`` as an int64 value; a float is accepted only if it is integral (1.5 is an error, never
    1); a bool is refused whether Python's, NumPy's or a bool tensor."""
    numpy_bool = type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_")
    if isinstance(v, bool) or numpy_bool or (isinstance(v, Tensor) and v.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer, got a bool")
    if isinstance(v, numbers.Integral):
        out = int(v)
    elif isinstance(v, float) and v.is_integer():
        out = int(v)
    elif isinstance(v, Tensor) and v.numel() == 1 and not v.is_floating_point() and not v.is_complex():
        out = int(v.item())
    else:
        raise TypeError(f"{name}: expected an integer, got {v!r}")
    if not INT64_MIN <= out <= INT64_MAX:
        raise ValueError(f"{name}: expected an int64 value in [-2**63, 2**63 - 1], got {out}")
    return out


def check_real(t: Tensor | None, name: str) -> None:
    if t is not None and (t.is_complex() or not (t.is_floating_point())):
        raise TypeError(f"{name}: expected a real floating-point tensor, got {t.dtype}")


def check_writable(t: Tensor, name: str) -> None:
    """In-place writes to a tensor whose elements share memory (an expanded view) would change
    more entries than asked."""
    if torch._debug_has_internal_overlap(t) == 1:
        raise ValueError(f"{name}: elements share memory (an expanded view); it cannot be modified in place "
                         "(pass a contiguous copy)")
