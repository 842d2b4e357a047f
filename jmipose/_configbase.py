"""The one machinery behind every config dataclass: plain values (YAML, JSON, a checkpoint's config) into
typed dataclasses and back, with errors that name the dotted key.

    from_dict(TrainConfig, {"lr": "1e-3"}, "train")   # TrainConfig(lr=0.001, ...)
    to_dict(config)                                   # plain dicts, lists and scalars

A config dataclass (``Config`` and its sections ``TrainConfig``, ``EvalConfig``, ``ModelConfig``,
``DataConfig``, ``AugmentConfig``) derives from :class:`ConfigSection`, which gives it
``cls.from_dict(values)`` and ``config.to_dict()`` over the two functions here. Each checks its own
values in ``__post_init__`` (so a directly constructed one is checked too) and raises ``ValueError``
naming the field; ``from_dict`` converts every value to its field's type first and reports a
construction error as a :class:`ConfigError` that names the dotted key (``config: model.channels
must be ...``).

Only the standard library: the data and model configs import this module, and ``jmipose.config``
imports them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union


class ConfigError(ValueError):
    """A config value or key that does not fit the schema; the message names the dotted key."""


class ConfigTypeError(ConfigError, TypeError):
    """A config that is not a mapping at all (the caller's type, so a TypeError too)."""


class ConfigSection:
    """Base of the config dataclasses: ``from_dict`` and ``to_dict`` over the functions of this module.

    ``error_label``: how the dataclass's own ``__post_init__`` messages begin (``"model config: "`` for
    ``model config: channels must be ...``); inside a larger config, ``from_dict`` puts the dotted
    section in its place (``config: model.channels must be ...``).
    """

    error_label: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        """An instance from a plain mapping; unknown keys and values of the wrong type are ConfigErrors."""
        return from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars (tuples become lists), ready for YAML or JSON."""
        return to_dict(self)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` (from YAML or an override) as type ``tp``; a ConfigError naming ``key`` if it does not
    fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"config: {key} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config: {key} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config: {key} is a section; give it a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config: {key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config: {key} must have {len(args)} items, got {len(value)}")
            return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config: {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config: {key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config: {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config: {key} must be a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config: {key}: cannot read {value!r} as {_type_name(tp)}")


def fields_of(cls: type) -> dict[str, Any]:
    """Public fields of a dataclass and their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


def from_dict(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """An instance of dataclass ``cls`` from a mapping: each value converted to its field's type, then the
    dataclass built (its ``__post_init__`` checks the values). ``where`` is the dotted name of the
    section (``"model"``, ``"data.augment"``; empty at the top): unknown keys, bad types and failed
    checks are ConfigErrors naming the dotted key."""
    if not isinstance(values, Mapping):
        raise ConfigTypeError(f"config: {where or cls.__name__} must be a mapping, got {values!r}")
    known = fields_of(cls)
    unknown = [name for name in values if name not in known]
    if unknown:
        first = f"{where}.{unknown[0]}" if where else str(unknown[0])
        scope = repr(where) if where else cls.__name__
        raise ConfigError(f"config: unknown key {first!r} (unknown keys {unknown} in {scope}; "
                          f"known keys: {sorted(known)})")
    kwargs = {name: convert(value, known[name], f"{where}.{name}" if where else str(name))
              for name, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise _named(error, cls, where) from None


def _named(error: Exception, cls: type, where: str) -> ConfigError:
    """A construction error of ``cls`` as a ConfigError naming the dotted key where it can."""
    message, label = str(error), getattr(cls, "error_label", "")
    if label and message.startswith(label):
        return ConfigError(f"config: {where}.{message[len(label):]}" if where else message)
    if isinstance(error, ConfigError):
        return error
    return ConfigError(f"config: {where or cls.__name__}: {message}")


def to_dict(obj: Any) -> Any:
    """Plain dicts, lists and scalars (for YAML, JSON and checkpoints); tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.init and not f.name.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj
