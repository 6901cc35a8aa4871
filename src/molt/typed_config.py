"""Typed configs read from YAML or JSON: dataclasses with key, type and range checks whose errors name the file
and key.

Part of molt-av (Apache-2.0). The method configs (:class:`~molt.methods.base.MethodConfig`), the task heads'
configs (:class:`~molt.tasks.base.HeadConfig`) and the optimiser's and trainer's (:mod:`molt.config`) derive from
:class:`TypedConfig`; the experiment config parses them once and holds the objects.

A numeric field declares what its value means with :func:`ranged` (``max_epochs: int = ranged(10, at_least=1,
meaning="epochs to train")``); :func:`check_field_values` refuses a value outside that range, in one line naming
the source, the key, the value and the range, wherever the value came from (a YAML file, an adapter config, a
command-line flag, or a config built in Python: :class:`TypedConfig` checks in ``__post_init__``).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import math
import types
import typing
from typing import Any, TypeVar, Union

__all__ = ["TypedConfig", "Range", "ranged", "field_range", "check_known_keys", "check_field_types",
           "check_field_values", "accepts", "type_name"]

ConfigT = TypeVar("ConfigT", bound="TypedConfig")


def check_known_keys(kind: type, data: Any, source: str) -> None:
    """Raise a ``ValueError`` naming ``source`` when ``data`` is not a mapping of ``kind``'s dataclass fields."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        hints = "".join(_where_it_belongs(key, kind) for key in unknown)
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}{hints}; valid keys: "
                         f"{', '.join(sorted(known))}")


def _where_it_belongs(key: str, kind: type) -> str:
    """``; did you mean X?`` for a misspelt key of ``kind``, or ``; KEY is a key of SECTION:`` (or a close one is)
    for a key of one of its sections written at the wrong level (``epochs`` -> ``trainer: max_epochs``)."""
    names = [f.name for f in dataclasses.fields(kind)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    try:
        hints = typing.get_type_hints(kind)
    except (NameError, TypeError):
        return ""
    for section in names:
        inner = hints.get(section)
        if not (isinstance(inner, type) and dataclasses.is_dataclass(inner)):
            continue
        fields = [f.name for f in dataclasses.fields(inner)]
        if key in fields:
            return f"; {key} is a key of {section}: (put it under {section}:)"
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {section}: {close[0]}?"
    return ""


def accepts(annotation: Any, value: Any) -> bool | None:
    """Whether ``value`` fits ``annotation`` (``None``: a type this check does not look into)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        answers = [accepts(argument, value) for argument in typing.get_args(annotation)]
        return True if True in answers else (None if None in answers else False)
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        arguments = [argument for argument in typing.get_args(annotation) if argument is not Ellipsis]
        if len(arguments) == 1 and any(accepts(arguments[0], item) is False for item in value):
            return False
        return True
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return None


def type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(type_name(argument) for argument in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, collections.abc.Sequence):
        arguments = [argument for argument in typing.get_args(annotation) if argument is not Ellipsis]
        return f"a list of {type_name(arguments[0])}" if len(arguments) == 1 else "a list"
    return getattr(annotation, "__name__", None) or str(annotation)


def check_field_types(kind: type, data: dict[str, Any], source: str) -> None:
    """Raise a ``ValueError`` naming ``source``, the key, the expected type and the value when a value of ``data``
    does not fit the annotation of ``kind``'s dataclass field (e.g. ``num_tokens: four``)."""
    hints = typing.get_type_hints(kind)
    for key, value in data.items():
        if key in hints and accepts(hints[key], value) is False:
            raise ValueError(f"{source}: {key} must be {type_name(hints[key])}, got {value!r} "
                             f"({type(value).__name__}); correct it in {source.split(': ')[0]}")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field may take: bounds (inclusive ``at_least`` / ``at_most``, exclusive ``above`` /
    ``below``; ``None``: unbounded) and what the number means, for the error message."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    meaning: str = ""

    def accepts(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
                and (self.at_most is None or value <= self.at_most) and (self.below is None or value < self.below))

    def describe(self) -> str:
        """``"at least 1"``, ``"in [0, 1)"``, ``"above 0"``, ..."""
        low = (f"[{_number(self.at_least)}" if self.at_least is not None
               else f"({_number(self.above)}" if self.above is not None else None)
        high = (f"{_number(self.at_most)}]" if self.at_most is not None
                else f"{_number(self.below)})" if self.below is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"at least {low[1:]}" if self.at_least is not None else f"above {low[1:]}"
        if high:
            return f"at most {high[:-1]}" if self.at_most is not None else f"below {high[:-1]}"
        return "a finite number"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


#: the key of a dataclass field's metadata that holds its :class:`Range`
RANGE_KEY = "range"


def ranged(default: Any = dataclasses.MISSING, *, at_least: float | None = None, above: float | None = None,
           at_most: float | None = None, below: float | None = None, meaning: str = "") -> Any:
    """A dataclass field whose value (when not ``None``) must lie in the given range (see :class:`Range`);
    :func:`check_field_values` reads it."""
    return dataclasses.field(default=default, metadata={RANGE_KEY: Range(at_least, above, at_most, below, meaning)})


def field_range(kind: type, key: str) -> Range | None:
    """The :class:`Range` declared for field ``key`` of the dataclass ``kind`` (``None``: none declared)."""
    for item in dataclasses.fields(kind):
        if item.name == key:
            return item.metadata.get(RANGE_KEY)
    return None


def check_field_values(kind: type, data: dict[str, Any], source: str, *, fix: str | None = None) -> None:
    """Raise a ``ValueError`` naming ``source``, the key, the value and the allowed range when a number of ``data``
    lies outside the range its field of ``kind`` declares (:func:`ranged`); values of another type are left to
    :func:`check_field_types`. ``fix`` ends the message (default: correct it in the file ``source`` names)."""
    for key, value in data.items():
        allowed = field_range(kind, key)
        if allowed is None or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not allowed.accepts(value):
            meaning = f" ({allowed.meaning})" if allowed.meaning else ""
            raise ValueError(f"{source}: {key} must be {allowed.describe()}{meaning}, got {value!r}; "
                             f"{fix or 'correct it in ' + source.split(': ')[0]}")


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


class TypedConfig:
    """Base of the config dataclasses: dict and JSON round-trip, and which fields the source set.

    :meth:`from_dict` checks keys and types (errors name ``source``), runs the dataclass's own checks
    (``__post_init__``, with ``source`` added to their message) and remembers the keys it was given, in their order:
    ``to_dict(only_set=True)`` gives them back, so an experiment config written out holds what its YAML said and
    not every default. A config built directly counts the fields that differ from their defaults as set.
    """

    def __post_init__(self) -> None:
        """Check every declared range (:func:`ranged`); subclasses with checks of their own call this first."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        check_field_values(type(self), values, type(self).__name__, fix="pass a value in that range")

    def set_fields(self) -> list[str]:
        """The fields the source set (see the class docstring)."""
        given = getattr(self, "_set_fields", None)
        if given is not None:
            return list(given)
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != _default(f)]

    def to_dict(self, only_set: bool = False) -> dict[str, Any]:
        """Every field as plain data; ``only_set=True``: only the fields the source set."""
        data = dataclasses.asdict(self)
        return {name: data[name] for name in self.set_fields()} if only_set else data

    @classmethod
    def from_dict(cls: type[ConfigT], data: Any, source: str | None = None) -> ConfigT:
        """Parse ``data`` (a mapping of field names); ``ValueError`` messages start with ``source``."""
        source = source or cls.__name__
        check_known_keys(cls, data, source)
        check_field_types(cls, data, source)
        check_field_values(cls, data, source)
        try:
            config = cls(**data)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        object.__setattr__(config, "_set_fields", tuple(data))
        return config

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A copy with ``changes`` applied; the changed fields count as set."""
        data = self.to_dict(only_set=True)
        config = dataclasses.replace(self, **changes)
        object.__setattr__(config, "_set_fields", tuple({**data, **changes}))
        return config

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[ConfigT], text: str, source: str | None = None) -> ConfigT:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source or cls.__name__}: not valid JSON: {error}") from None
        return cls.from_dict(data, source=source)
