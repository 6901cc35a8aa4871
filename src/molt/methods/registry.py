"""The method registry: one entry per method (name -> config class, builder, wrapper), registered in its own file.

Part of molt-av (Apache-2.0). Like PEFT's ``register_peft_method``, a method's module ends with one
:func:`register_method` call; the model builder, the feature cache, the efficiency benchmark and the CLI read
everything method-specific from the :class:`MethodSpec` instead of comparing method names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

__all__ = ["MethodSpec", "register_method", "get_method", "method_names", "build_method"]


@dataclass(frozen=True)
class MethodSpec:
    """What the framework needs to know about one method.

    Attributes:
        name: the ``method:`` value of a config (``--method``).
        config_class: its :class:`~molt.methods.base.MethodConfig` dataclass (the ``method_config:`` section),
            parsed with ``from_dict(data, source=...)``.
        build: ``(config, visual, audio) -> (trainable module, visual block indices, audio block indices)``.
        wrapper: the :class:`~molt.methods.base.MethodModel` subclass that runs the trainable module on the frozen
            backbones (``visual=, audio=, method=, visual_blocks=, audio_blocks=`` keyword arguments).
        reads_taps: ``True`` when the method only reads block outputs (its taps can be cached with
            ``molt extract``); ``False`` for in-block adapters that change what the backbone computes.
        heads_option: the ``method_config`` key of its attention heads, kept by ``switch_method``.
        description: one line for ``--help``.
        task_settings: ``method_config`` defaults per task, keyed ``"task"`` or ``"task:setting"`` (the latter
            applied on top), from the method's published per-task recipes; ``switch_method`` applies them.
    """

    name: str
    config_class: type
    build: Callable[[Any, nn.Module | None, nn.Module | None], tuple[nn.Module, list[int], list[int]]]
    wrapper: type[nn.Module]
    reads_taps: bool = True
    heads_option: str = "num_heads"
    description: str = ""
    task_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def settings_for(self, task: str, setting: str | None = None) -> dict[str, Any]:
        """The ``method_config`` defaults of this method for ``task`` (and its ``setting``, e.g. ``ms3``)."""
        values = dict(self.task_settings.get(task, {}))
        if setting:
            values.update(self.task_settings.get(f"{task}:{setting}", {}))
        return values


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry; a second method of the same name is refused with a ``ValueError``."""
    if spec.name in _METHODS:
        raise ValueError(f"a method named {spec.name!r} is already registered "
                         f"({_METHODS[spec.name].config_class.__name__}); pick another name")
    _METHODS[spec.name] = spec
    return spec


def method_names() -> list[str]:
    """Registered method names, in registration order (``molt`` first)."""
    return list(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The registry entry of ``name``; a ``ValueError`` listing the known methods otherwise."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}: expected one of {', '.join(method_names())}")
    return _METHODS[name]


def build_method(method: str | MethodSpec, config: Any, visual: nn.Module | None,
                 audio: nn.Module | None) -> tuple[nn.Module, list[int], list[int]]:
    """A method's trainable side modules for these backbones, with the resolved visual and audio block indices.

    Args:
        method: a registered method name or its :class:`MethodSpec`.
        config: an instance of the method's ``config_class`` (e.g. ``ExperimentConfig.method_config``).
        visual, audio: the frozen backbones (``None`` for the absent one of a single-modality variant).
    """
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    if not isinstance(config, spec.config_class):
        raise TypeError(f"method {spec.name!r} is built from a {spec.config_class.__name__}, got "
                        f"{type(config).__name__}; parse a mapping with {spec.config_class.__name__}.from_dict")
    return spec.build(config, visual, audio)

