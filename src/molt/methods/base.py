"""Pieces every method shares: config (de)serialisation, the token-count and modality helpers, tap checks."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence, TypeVar

import torch

__all__ = ["MODALITIES", "MethodConfigMixin", "check_known_keys", "check_taps", "check_method_taps"]

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
