"""Typed configs from plain data: dataclasses built from dicts (YAML, JSON, MLflow params) with
every unknown key and wrong type reported by its dotted path, ``key=value`` overrides, and
flattening for logging."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

__all__ = ["from_dict", "to_dict", "load_yaml", "apply_overrides", "parse_override", "flatten", "merge"]


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, path: str):
    """value checked against (and, for dataclasses/tuples, converted to) the annotation tp."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own, more precise error
            return _convert(value, real[0], path)
        for a in real:
            try:
                return _convert(value, a, path)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp) or isinstance(value, bool) != any(isinstance(a, bool) for a in get_args(tp)):
            raise ValueError(f"{path}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        item = args[0] if args else Any
        out = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, f"{path}.<key>"): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping (section {tp.__name__}), got {type(value).__name__}")
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 (PyYAML) reads 2e-4 (no dot) as a string: accept such plain numbers.
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass ``cls`` from ``data``: nested sections become nested dataclasses, missing
    keys take their defaults, and an unknown key (TypeError/ValueError naming its dotted path),
    a wrong type or an invalid value (the dataclass's own ``__post_init__`` checks, re-raised
    with the path) is an error."""
    if not isinstance(data, dict):
        raise TypeError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ValueError(f"{where}{unknown[0]}: unknown key (section {cls.__name__} has "
                         f"{', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if path and not str(exc).startswith(path):
            raise type(exc)(f"{path}: {exc}") from exc
        raise


def to_dict(obj) -> Any:
    """Plain data (dicts, lists, scalars) of a dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b.c=value'`` -> (['a', 'b', 'c'], value parsed as YAML: 3, 2e-4, true, null, [1, 2], text)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected key=value (dotted keys for sections, e.g. optim.lr=1e-3)")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ValueError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return keys, value


def merge(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in, recursively for nested mappings."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """A copy of ``data`` with every ``key=value`` override applied (sections created as needed;
    whether the key exists is checked when the result is validated with :func:`from_dict`)."""
    out = merge({}, data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                if k in node and node[k] is not None:
                    raise ValueError(f"--set {text!r}: {k} is not a section")
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def flatten(data, prefix: str = "") -> dict[str, Any]:
    """{'a.b': 1, ...} of nested mappings (lists kept as values): MLflow params."""
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
