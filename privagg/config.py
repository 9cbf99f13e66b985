"""Frozen-dataclass configuration loaded from TOML / mappings with precise errors.

``load_config(RunConfig, {"rounds": 30, "data": {"alpha": 0.5}})`` builds nested frozen
dataclasses, checking every field's type (``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``tuple[...]``, nested dataclasses). Unknown fields and
wrong types raise :class:`ConfigurationError` naming the dotted field path and what it
accepts; semantic checks live in each dataclass's ``__post_init__``.

A run file may also carry tables that are not part of the run's own dataclass, each loaded
into its own frozen dataclass (``[personalization]`` ->
:class:`protocols.personalization.PersonalizationOptions`): :func:`split_sections` takes them
out of a table, loads them (errors name ``personalization.<field>``) and returns the rest for
the run's dataclass. This layer never imports the dataclasses; the caller names them.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from privagg.errors import ConfigurationError

__all__ = ["load_config", "read_toml", "config_to_dict", "override", "split_sections"]

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigurationError(f"cannot read {p}: {e.strerror}", field="config") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"{p} is not valid TOML: {e}", field="config") from None


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return f"a table of {tp.__name__} fields"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigurationError(f"invalid value {value!r}", field=path, accepted=[repr(a) for a in get_args(tp)])
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        alternatives = [a for a in args if a is not type(None)]
        if len(alternatives) == 1:  # ``X | None``: X's own error names the field precisely
            return _convert(value, alternatives[0], path)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except ConfigurationError as e:
                errors.append(e)
        raise ConfigurationError(f"invalid value {value!r}", field=path, accepted=_describe(tp))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"expected a table, got {value!r}", field=path)
        return load_config(tp, value, path=path)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"expected a list, got {value!r}", field=path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigurationError(f"expected {len(args)} items, got {len(value)}", field=path)
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigurationError(f"expected true or false, got {value!r}", field=path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigurationError(f"expected an integer, got {value!r}", field=path)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigurationError(f"expected a number, got {value!r}", field=path)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigurationError(f"expected a string, got {value!r}", field=path)
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigurationError(f"expected a table, got {value!r}", field=path)
    return value


def load_config(cls: type[T], data: Mapping[str, Any], *, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, checking names and types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigurationError("unknown setting", field=dotted, accepted=sorted(fields))
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigurationError as e:
        field = _qualify(path, e.field)
        if field != e.field:
            raise ConfigurationError(e.message, field=field, accepted=e.accepted) from None
        raise


def _qualify(path: str, field: str | None) -> str | None:
    """``field`` under ``path``, where ``field`` may already name the tail of ``path`` itself.

    A dataclass that names its fields absolutely (``data.num_clients``) nested at ``run.data``
    gives ``run.data.num_clients``, never ``run.data.data.num_clients``.
    """
    if not path or not field:
        return field
    parts = path.split(".")
    for i in range(len(parts)):
        tail = ".".join(parts[i:])
        if field == tail or field.startswith(tail + "."):
            return ".".join([*parts[:i], field])
    return f"{path}.{field}"


def config_to_dict(obj: Any) -> Any:
    """A JSON/TOML-ready view of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [config_to_dict(v) for v in obj]
    return obj


def override(obj: T, data: Mapping[str, Any]) -> T:
    """A copy of config ``obj`` with ``data`` (nested mapping) applied, fully re-validated."""
    base = config_to_dict(obj)

    def merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            if isinstance(v, Mapping) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = v
        return out

    return load_config(type(obj), merge(base, data))


def split_sections(
    data: Mapping[str, Any], sections: Mapping[str, type[Any]], *, current: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(rest, loaded)``: ``data`` without the tables named in ``sections``, and those tables loaded.

    Each table found becomes its frozen dataclass ``sections[name]``, applied over
    ``current[name]`` when given (as :func:`override` would: later files refine earlier ones),
    else over the dataclass defaults. A name given as anything but a table raises
    :class:`ConfigurationError` naming it; errors inside a table name ``<name>.<field>``.
    """
    rest: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    for key, value in data.items():
        if key not in sections:
            rest[key] = value
            continue
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"expected a table, got {value!r}", field=key)
        cls = sections[key]
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            raise TypeError(f"section {key!r}: {cls!r} is not a dataclass")
        before = (current or {}).get(key)
        try:
            loaded[key] = override(before, value) if before is not None else load_config(cls, value, path=key)
        except ConfigurationError as e:
            field = _qualify(key, e.field)
            if field != e.field:
                raise ConfigurationError(e.message, field=field, accepted=e.accepted) from None
            raise
    return rest, loaded
