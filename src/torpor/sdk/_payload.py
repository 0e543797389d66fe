"""Typed payloads: a task whose parameter is a dataclass or a pydantic model gets one, checked.

At deploy time the parameter's type becomes a JSON schema, stored in the
task's settings; the coordinator checks every trigger's payload against it, so
a bad payload fails the trigger call itself, with the reason. In the run, the
payload (JSON) is converted to the type before the function is called; a
payload that cannot be converted fails the attempt, without retries.

Dataclasses are handled here with the standard library alone: fields of
``str``, ``int``, ``float``, ``bool``, ``None``, ``list[X]``, ``dict[str, X]``,
``tuple[X, ...]``, ``X | None`` / ``Optional[X]``, ``Literal[...]``, ``Any`` and
nested dataclasses. A pydantic model (anything with ``model_json_schema`` and
``model_validate``) brings its own schema and validation; the SDK never
imports pydantic itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from typing import Any, Callable

from torpor._errors import ConfigError

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}


class PayloadError(ConfigError):
    """A payload does not fit the type the task's parameter declares."""


def payload_type(fn: Callable[..., Any]) -> type | None:
    """The dataclass or pydantic model the function's first parameter is annotated with, if any."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is not a type we handle
        return None
    tp = hints.get(params[0].name)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_model(tp)):
        return tp
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_json_schema") and hasattr(tp, "model_validate")


def schema_of(tp: type) -> dict[str, Any]:
    """The JSON schema a payload for ``tp`` must match."""
    if _is_model(tp):
        return tp.model_json_schema()  # type: ignore[attr-defined]
    defs: dict[str, Any] = {}
    root = _dataclass_schema(tp, defs)
    return {**root, "$defs": defs} if defs else root


def _dataclass_schema(tp: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(tp)
    props, required = {}, []
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        props[f.name] = _schema(hints.get(f.name, Any), defs)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "title": tp.__name__, "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # a recursive type refers to itself
            defs[name] = _dataclass_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a, defs) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        return {"type": "array", **({"items": _schema(args[0], defs)} if args else {})}
    if origin is tuple or tp is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0], defs)}
        if args:
            return {"type": "array", "prefixItems": [_schema(a, defs) for a in args], "minItems": len(args),
                    "maxItems": len(args)}
        return {"type": "array"}
    if origin is dict or tp is dict:
        return {"type": "object", **({"additionalProperties": _schema(args[1], defs)} if args else {})}
    return {}  # a type without a JSON form: anything passes here, the function sees the JSON value


def convert(tp: type, payload: Any) -> Any:
    """The payload as an instance of ``tp``; PayloadError says what does not fit."""
    if _is_model(tp):
        try:
            return tp.model_validate(payload)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, whatever its import path
            raise PayloadError(f"the payload does not fit {tp.__name__}: {exc}") from None
    return _convert(tp, payload, "payload")


def _convert(tp: Any, value: Any, where: str) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PayloadError(f"{where}: expected an object for {tp.__name__}, got {json.dumps(value)[:100]}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        extra = sorted(set(value) - names)
        if extra:
            raise PayloadError(f"{where}: {tp.__name__} has no field {', '.join(map(repr, extra))}")
        kwargs = {k: _convert(hints.get(k, Any), v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise PayloadError(f"{where}: {exc}") from None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, set, frozenset) and args and isinstance(value, list):
        return origin(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple and args and isinstance(value, list):
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(items, value)))
    if origin is dict and args and isinstance(value, dict):
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None) and value is None:
                return None
        for a in args:
            if a is not type(None):
                try:
                    return _convert(a, value, where)
                except PayloadError:
                    continue
    return value
