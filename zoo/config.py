"""Typed configuration: one way to declare settings and to check them at the boundary.

A settings class is a frozen dataclass deriving from `Config`. Each field has a type annotation
(bool, int, float, str, Path, `list[X]` / `tuple[X, ...]` of those, `X | None`, a nested settings
class or a plain `dict`) and, where it has one, a rule declared with `setting(...)`: `choices`, or a
range (`ge`, `gt`, `le`, `lt`; for lists, per element). Cross-field rules go in the class's
`check()`. Every instance is checked when it is built, from a file or from code alike.

`from_dict(cls, mapping)` builds a tree of settings from YAML or CLI values. Every problem is a
`ConfigError` that names the key's dotted path and, where it can, the fix:

    unknown config key 'probe.activaton' (did you mean 'activation'?); valid keys here: head, ...
    features.engine: expected one of 'auto', 'onnxruntime' or 'torch', got 'onnx' (did you mean 'onnxruntime'?)
    serve.instances: expected 1..64, got 0

`override(obj, {"features.engine": "torch"})` returns a copy with dotted keys changed, checked the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import types
import typing
from pathlib import Path

from .errors import ZooError

_RULES = ("choices", "ge", "gt", "le", "lt")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


class ConfigError(ZooError):
    """A setting that is unknown, of the wrong type or out of range; `key` is its dotted path."""

    def __init__(self, key: str, detail: str):
        self.key, self.detail = key, detail
        super().__init__(f"{key}: {detail}" if key else detail)

    def under(self, prefix: str) -> ConfigError:
        """The same error for a key nested under `prefix`."""
        return ConfigError(_join(prefix, self.key), self.detail)


class UnknownKeyError(ConfigError):
    def __init__(self, key: str, close: list[str], valid: list[str]):
        self.close, self.valid = close, valid
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        ZooError.__init__(self, f"unknown config key {key!r}{hint}; valid keys here: {', '.join(valid)}")
        self.key, self.detail = key, str(self)

    def under(self, prefix: str) -> ConfigError:
        return UnknownKeyError(_join(prefix, self.key), self.close, self.valid)


def setting(
    default=dataclasses.MISSING,
    *,
    default_factory=dataclasses.MISSING,
    choices=None,
    ge=None,
    gt=None,
    le=None,
    lt=None,
):
    """A dataclass field with a rule: `choices` (a tuple of allowed values) or a range."""
    rules = {k: v for k, v in dict(choices=choices, ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=rules)


class Config:
    """Base of every settings dataclass: fields are type-checked, coerced (int -> float, list ->
    tuple, str -> Path) and range-checked on construction, then `check()` runs."""

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = _coerce(getattr(self, f.name), hints[f.name], f.name)
            _check_rules(value, f.metadata, f.name)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise ConfigError(field name, what is wrong and what to do)."""

    def to_dict(self) -> dict:
        return to_dict(self)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp) or tp is dict:
        return "a mapping"
    return {bool: "true/false", int: "int", float: "number", str: "string", Path: "path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value, tp, key: str):
    """`value` as type `tp` (the few conversions a YAML or CLI value needs), else ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
        else:
            for a in args:
                if a is type(None):
                    continue
                try:
                    return _coerce(value, a, key)
                except ConfigError:
                    continue
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        inner = typing.get_args(tp)[0]
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, {} if value is None else value, key)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        Path: lambda v: isinstance(v, (str, os.PathLike)),
        dict: lambda v: isinstance(v, dict),
    }.get(tp)
    if ok is None:
        return value
    if not ok(value):
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if tp is float:
        return float(value)
    if tp is Path:
        return Path(value)
    return value


def _fmt(v) -> str:
    return "null" if v is None else repr(v)


def _range_text(rules: dict) -> str:
    lo, hi = rules.get("ge", rules.get("gt")), rules.get("le", rules.get("lt"))
    if lo is not None and hi is not None:
        if "ge" in rules and "le" in rules and all(isinstance(v, int) for v in (lo, hi)):
            return f"{lo}..{hi}"
        return f"{'[' if 'ge' in rules else '('}{lo}, {hi}{']' if 'le' in rules else ')'}"
    if lo is not None:
        return f"{'>=' if 'ge' in rules else '>'} {lo}"
    return f"{'<=' if 'le' in rules else '<'} {hi}"


def _check_rules(value, rules, key: str) -> None:
    if value is None or not rules:
        return
    for v in value if isinstance(value, (list, tuple)) else (value,):
        choices = rules.get("choices")
        if choices is not None and v not in choices:
            names = [_fmt(c) for c in choices]
            allowed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            close = difflib.get_close_matches(str(v), [str(c) for c in choices if c is not None], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(key, f"expected one of {allowed}, got {_fmt(v)}{hint}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            bad = (
                ("ge" in rules and v < rules["ge"])
                or ("gt" in rules and v <= rules["gt"])
                or ("le" in rules and v > rules["le"])
                or ("lt" in rules and v >= rules["lt"])
            )
            if bad:
                raise ConfigError(key, f"expected {_range_text(rules)}, got {v!r}")


def from_dict(cls, data, path: str = ""):
    """Build settings class `cls` from a nested mapping; every problem is a ConfigError with the
    key's dotted path (prefixed by `path`)."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {data!r}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise UnknownKeyError(_join(path, str(key)), close, known)
    try:
        return cls(**data)
    except ConfigError as e:
        raise e.under(path) from None
    except TypeError:  # a required key is missing
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(_join(path, missing[0]), "required") from None
        raise


def to_dict(obj) -> dict:
    """Plain YAML/JSON-ready values: nested settings as mappings, tuples as lists, paths as strings."""

    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(obj)


def override(obj, values: dict):
    """A copy of settings `obj` with {dotted key: value} changed, checked like a file."""
    d = to_dict(obj)
    for dotted, value in values.items():
        node = d
        *parents, last = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[last] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return from_dict(type(obj), d)


def rule(cls, dotted: str, name: str = "choices"):
    """A field's declared rule (e.g. its choices, for a CLI's `choices=`), None if it has none."""
    f = _field(cls, dotted)
    return f.metadata.get(name)


def field_type(cls, dotted: str):
    """The annotated type of a dotted field (X | None unwrapped to X)."""
    *parents, last = dotted.split(".")
    for p in parents:
        cls = _hints(cls)[p]
    tp = _hints(cls)[last]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp


def _field(cls, dotted: str) -> dataclasses.Field:
    *parents, last = dotted.split(".")
    for p in parents:
        cls = _hints(cls)[p]
    return next(f for f in dataclasses.fields(cls) if f.name == last)


def read_yaml(path, what: str = "config file") -> dict:
    """The raw mapping of a YAML settings file (empty file: {}); errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError("", f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def load_yaml(path, cls, what: str = "config file"):
    """Settings class `cls` from a YAML file; errors name the file and the key."""
    raw = read_yaml(path, what)
    try:
        return from_dict(cls, raw)
    except ConfigError as e:
        raise ConfigError("", f"{path}: {e}") from None


def flatten(d: dict, prefix: str = "") -> dict:
    """{dotted key: leaf value} of a nested mapping (`to_dict` output or a YAML file)."""
    out = {}
    for k, v in d.items():
        key = _join(prefix, str(k))
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
