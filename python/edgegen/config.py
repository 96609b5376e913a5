"""Typed configs from plain data: dataclasses built from dicts (YAML, JSON, MLflow params) with
every unknown key and wrong type reported by its dotted path, ``key=value`` overrides, and
flattening for logging."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

__all__ = ["Config", "from_dict", "to_dict", "load_yaml", "apply_overrides", "parse_override", "flatten", "merge"]


class Config:
    """Base of every edgegen config. Subclasses are dataclasses; in plain data (YAML, JSON, MLflow
    params, checkpoints) each is a mapping with its ``kind`` (the class name unless the class says
    otherwise: ``class GPT2Config(ModelConfig, kind="gpt2")``), its ``version`` and its fields.

    A class declared with ``family=True`` is the base of a tagged union: a field annotated with it
    accepts any registered subclass, chosen by ``kind``. ``version`` rises when a config's fields
    change incompatibly; ``migrate(data, version)`` then turns data written by an older version
    into the current form, so old files keep loading.

    Examples:
        >>> from edgegen.quant import Int4WeightOnlyConfig, QuantConfig
        >>> Int4WeightOnlyConfig(32).to_dict()
        {'kind': 'Int4WeightOnlyConfig', 'version': 2, 'group_size': 32, 'embeddings': True}
        >>> QuantConfig.from_dict({"kind": "Int4WeightOnlyConfig", "group_size": 32})
        Int4WeightOnlyConfig(group_size=32, embeddings=True)
        >>> QuantConfig.from_dict({"kind": "Int4WeightOnlyConfig", "groupsize": 32})
        Traceback (most recent call last):
        ...
        ValueError: groupsize: unknown key (section Int4WeightOnlyConfig has embeddings, group_size)
    """

    kind: ClassVar[str | None] = None
    version: ClassVar[int] = 1
    _kinds: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, kind: str | None = None, family: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if family:
            cls.kind = None
            return
        name = kind or cls.__name__
        other = Config._kinds.get(name)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"kind {name!r}: already used by {other.__module__}.{other.__qualname__}")
        cls.kind = name
        Config._kinds[name] = cls

    @classmethod
    def kinds(cls) -> list[str]:
        """The kinds a field annotated with ``cls`` accepts."""
        return sorted(k for k, c in Config._kinds.items() if issubclass(c, cls))

    @classmethod
    def migrate(cls, data: dict, version: int) -> dict:
        """``data`` written by ``version`` (older than ``cls.version``) in the current form."""
        raise ValueError(f"version: {cls.kind} has no migration from version {version} to {cls.version}")

    @classmethod
    def prepare(cls, data: dict) -> dict:
        """Hook: ``data`` (current form) completed before validation, e.g. defaults that follow
        from other keys. The default returns it unchanged."""
        return data

    @classmethod
    def from_dict(cls, data: dict, *, missing_version: int | None = None):
        """The config of ``data`` (a mapping from :meth:`to_dict`, YAML, ...). Data without a
        ``version`` is read as the current version unless ``missing_version`` says otherwise
        (files written before versions were recorded)."""
        return from_dict(cls, data, missing_version=missing_version)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "version": self.version,
                **{f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}}


def _resolve_config(cls, data: dict, path: str, missing_version: int | None):
    """(concrete class, data without kind/version, in the current form) for Config ``cls``."""
    data = dict(data)
    where = f"{path}." if path else ""
    kind = data.pop("kind", None)
    if kind is None:
        if cls.kind is None:
            raise ValueError(f"{where}kind: missing; expected one of {cls.kinds()}")
        target = cls
    else:
        target = Config._kinds.get(kind) if isinstance(kind, str) else None
        if target is None or not issubclass(target, cls):
            raise ValueError(f"{where}kind: expected one of {cls.kinds()}, got {kind!r}")
    version = data.pop("version", None)
    if version is None:
        version = target.version if missing_version is None else missing_version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}version: expected a positive int, got {version!r}")
    if version > target.version:
        raise ValueError(f"{where}version: {target.kind} version {version} was written by a newer edgegen "
                         f"(this one reads up to {target.version})")
    if version < target.version:
        data = target.migrate(data, version)
    return target, target.prepare(data)


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
    if isinstance(tp, type) and issubclass(tp, Config) and isinstance(value, tp):
        return value
    if dataclasses.is_dataclass(tp) or (isinstance(tp, type) and issubclass(tp, Config)):
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
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):  # .inf / .nan would pass every range check and train nonsense
            raise ValueError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls, data: dict, path: str = "", *, missing_version: int | None = None):
    """Build dataclass ``cls`` from ``data``: nested sections become nested dataclasses, missing
    keys take their defaults, and an unknown key (TypeError/ValueError naming its dotted path),
    a wrong type or an invalid value (the dataclass's own ``__post_init__`` checks, re-raised
    with the path) is an error. For a :class:`Config`, ``kind`` picks the class (any registered
    subclass of ``cls``) and data of an older ``version`` is migrated first."""
    if isinstance(cls, type) and issubclass(cls, Config) and isinstance(data, cls):
        return data
    if isinstance(data, Config):
        kinds = f" (one of {cls.kinds()})" if isinstance(cls, type) and issubclass(cls, Config) else ""
        raise TypeError(f"{path or cls.__name__}: expected a {cls.__name__}{kinds} or its mapping, "
                        f"got {type(data).__name__}")
    if not isinstance(data, dict):
        raise TypeError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    if isinstance(cls, type) and issubclass(cls, Config):
        cls, data = _resolve_config(cls, data, path, missing_version)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ValueError(f"{where}{unknown[0]}: unknown key (section {cls.__name__} has "
                         f"{', '.join(sorted(fields))})")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        where = f"{path}." if path else ""
        raise ValueError(f"{where}{missing[0]}: required key missing (section {cls.__name__})")
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
    """Plain data (dicts, lists, scalars) of a dataclass tree (configs with their kind and version)."""
    if isinstance(obj, Config):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file ({} for an empty file). A missing file is a FileNotFoundError;
    invalid YAML a one-line ValueError naming the file, line and column; anything but a mapping
    at the top level a ValueError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{where}: invalid YAML: {what}") from None
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
    """A copy of ``base`` with ``update`` merged in, recursively for nested mappings. Every
    mapping in the result is new, so changing the result never changes ``base`` or ``update``."""
    out = {k: merge({}, v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in update.items():
        if isinstance(v, dict):
            out[k] = merge(out[k] if isinstance(out.get(k), dict) else {}, v)
        else:
            out[k] = v
    return out


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """A copy of ``data`` with every ``key=value`` override applied (sections created as needed;
    whether the key exists is checked when the result is validated with :func:`from_dict`).

    Examples:
        >>> apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=0.001", "train.epochs=3"])
        {'optim': {'lr': 0.001}, 'train': {'epochs': 3}}
    """
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
