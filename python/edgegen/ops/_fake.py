"""Fake (meta) kernels registered with one shared check: every tensor argument must be on the
same kind of device as the others when any of them is a meta tensor.

The dispatcher sends a call to the Meta kernel as soon as one argument is a meta tensor; a fake
kernel that then answers with ``new_empty`` on the device of a CPU argument would hand back
uninitialised CPU memory as a result. Mixed meta / real arguments are therefore an error naming
the argument (RuntimeError, as the real kernels' device checks).
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

__all__ = ["register_fake", "check_devices"]


def _tensors(name: str, value):
    if isinstance(value, Tensor):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, Tensor):
                yield f"{name}[{i}]", v


def check_devices(op: str, arguments: dict) -> None:
    """Raise RuntimeError (as the C++ kernels' device checks do) naming the first tensor argument
    whose device kind differs from the first tensor argument's, when meta and real tensors mix."""
    named = [nt for n, v in arguments.items() for nt in _tensors(n, v)]
    if not named or len({t.device.type == "meta" for _, t in named}) < 2:
        return
    first_name, first = named[0]
    for name, t in named[1:]:
        if (t.device.type == "meta") != (first.device.type == "meta"):
            raise RuntimeError(f"{op}: {name}: expected a tensor on {first.device} like {first_name}, got one on "
                               f"{t.device} (all tensor arguments must be on the same device)")


def register_fake(op: str):
    """``torch.library.register_fake(op)`` with :func:`check_devices` run first."""

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            check_devices(op, sig.bind(*args, **kwargs).arguments)
            return fn(*args, **kwargs)

        torch.library.register_fake(op)(checked)
        return fn

    return deco
