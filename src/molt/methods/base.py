"""Pieces every method shares: config (de)serialisation, the token-count and modality helpers, tap checks."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Sequence, TypeVar, Union

import torch

__all__ = ["MODALITIES", "MethodConfigMixin", "check_known_keys", "check_field_types", "check_taps",
           "check_method_taps"]

ConfigT = TypeVar("ConfigT", bound="MethodConfigMixin")

MODALITIES = ("both", "visual", "audio")


def check_known_keys(kind: type, data: Any, source: str) -> None:
    """Raise a ``ValueError`` naming ``source`` when ``data`` is not a mapping of ``kind``'s dataclass fields."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")


def _accepts(annotation: Any, value: Any) -> bool | None:
    """Whether ``value`` fits ``annotation`` (``None``: a type this check does not look into)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        answers = [_accepts(argument, value) for argument in typing.get_args(annotation)]
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
    if annotation in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return None


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation)


def check_field_types(kind: type, data: dict[str, Any], source: str) -> None:
    """Raise a ``ValueError`` naming ``source``, the key, the expected type and the value when a value of ``data``
    does not fit the annotation of ``kind``'s dataclass field (e.g. ``num_tokens: four``)."""
    hints = typing.get_type_hints(kind)
    for key, value in data.items():
        if key in hints and _accepts(hints[key], value) is False:
            raise ValueError(f"{source}: {key} must be {_type_name(hints[key])}, got {value!r} "
                             f"({type(value).__name__}); correct it in {source.split(': ')[0]}")


class MethodConfigMixin:
    """For method config dataclasses with ``num_tokens``, ``num_tokens_audio`` and ``modalities`` fields."""

    num_tokens: int
    num_tokens_audio: int | None
    modalities: str

    @property
    def tokens_visual(self) -> int:
        return self.num_tokens

    @property
    def tokens_audio(self) -> int:
        return self.num_tokens if self.num_tokens_audio is None else self.num_tokens_audio

    @property
    def active_modalities(self) -> list[str]:
        return ["visual", "audio"] if self.modalities == "both" else [self.modalities]

    def _check_common(self) -> None:
        """Checks shared by the distillation methods' configs (block selections, modalities, tokens, widths)."""
        for name in ("blocks_visual", "blocks_audio"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(MODALITIES)}, got {self.modalities!r}")
        if self.num_tokens < 1 or (self.num_tokens_audio is not None and self.num_tokens_audio < 1):
            raise ValueError(f"num_tokens must be at least 1, got {self.num_tokens} (audio: {self.num_tokens_audio})")
        if self.dim < 1 or self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[ConfigT], data: dict[str, Any], source: str | None = None) -> ConfigT:
        check_known_keys(cls, data, source or cls.__name__)
        check_field_types(cls, data, source or cls.__name__)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[ConfigT], text: str, source: str | None = None) -> ConfigT:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source or cls.__name__}: not valid JSON: {error}") from None
        return cls.from_dict(data, source=source)


def check_taps(method: str, name: str, taps: Sequence[torch.Tensor] | None,
               widths: Sequence[int]) -> list[torch.Tensor]:
    """One ``(B, N, D_l)`` tap per selected block of modality ``name``, with the widths the method was built for."""
    if taps is None or len(taps) != len(widths):
        got = "None" if taps is None else f"{len(taps)} taps"
        raise ValueError(f"{method} expects {len(widths)} {name} taps (one per selected block), got {got}")
    for index, (tap, width) in enumerate(zip(taps, widths)):
        if tap.ndim != 3 or tap.shape[-1] != width:
            raise ValueError(f"{name} tap {index}: expected shape (B, N, {width}), got {tuple(tap.shape)}")
    return list(taps)


def check_method_taps(method: str, modalities: Sequence[str], visual_taps: Sequence[torch.Tensor] | None,
                      audio_taps: Sequence[torch.Tensor] | None, visual_dims: Sequence[int],
                      audio_dims: Sequence[int]) -> tuple[dict[str, list[torch.Tensor]], int]:
    """Check the taps of every active modality (:func:`check_taps`) and that they share one batch size ``B'``.

    Returns the taps by modality name and ``B'``.
    """
    given = {"visual": (visual_taps, visual_dims), "audio": (audio_taps, audio_dims)}
    taps = {name: check_taps(method, name, *given[name]) for name in modalities}
    batch_sizes = {tap.shape[0] for values in taps.values() for tap in values}
    if len(batch_sizes) != 1:
        raise ValueError(f"all taps must share the batch size B', got sizes {sorted(batch_sizes)}")
    return taps, batch_sizes.pop()
