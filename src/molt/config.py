"""Experiment configuration: YAML presets merged with command-line overrides.

An experiment is one (task, method, backbone) combination with the method's hyper-parameters, the head's, the
optimiser's and the trainer's. The ``method_config:`` and ``head:`` sections are parsed once, into the method's
config class (:class:`~molt.methods.base.MethodConfig`) and the head's (:class:`~molt.tasks.base.HeadConfig`),
and the experiment config holds those objects; :meth:`ExperimentConfig.to_dict` gives back the keys the sections
set, so a config written out reads as its YAML did. Presets live in ``configs/*.yaml`` (shipped inside the
package as well, so ``--config ave_molt_paper`` works from any directory). Unknown keys are errors, so a typo in a
YAML file never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .backbones.base import BACKBONE_DTYPES as _DTYPE_BY_NAME
from .backbones.registry import BACKBONE_PAIRS, backbone_label, backbone_sides
from .backbones.shared import SHARED_AUDIO_FRONTENDS
from .data.files import read_text
from .methods import MethodConfig, get_method
from .tasks import HeadConfig, get_task
from .typed_config import TypedConfig, check_field_types, check_field_values, check_known_keys, ranged

__all__ = ["OptimConfig", "TrainerConfig", "check_devices", "ExperimentConfig", "load_config", "preset_names",
           "switch_method", "with_head", "BACKBONE_PRESETS", "BACKBONE_DTYPES", "SHARED_AUDIO_FRONTENDS"]

#: the named backbone pairs (``backbone: NAME``); any other pair is ``backbone: {visual: ..., audio: ...}``
BACKBONE_PRESETS = tuple(BACKBONE_PAIRS)
#: ``backbone_dtype`` values: the dtype the frozen backbones are stored and run in
BACKBONE_DTYPES = tuple(_DTYPE_BY_NAME)


@dataclass
class OptimConfig(TypedConfig):
    """Adam on the adapters (``lr``) and the task head (``head_lr``), StepLR schedule."""

    lr: float = ranged(5e-4, at_least=0, meaning="learning rate of the adapters, 0: frozen")
    head_lr: float = ranged(5e-4, at_least=0, meaning="learning rate of the task head, 0: frozen")
    weight_decay: float = ranged(0.0, at_least=0, meaning="L2 penalty")
    step_size: int = ranged(3, at_least=1, meaning="epochs between learning-rate decays")
    gamma: float = ranged(0.35, above=0, at_most=1, meaning="learning-rate factor at each decay")


@dataclass
class TrainerConfig(TypedConfig):
    max_epochs: int = ranged(10, at_least=1, meaning="epochs to train")
    batch_size: int = ranged(8, at_least=1, meaning="clips per batch")
    num_workers: int = ranged(0, at_least=0, meaning="DataLoader worker processes, 0: none")
    accelerator: str = "auto"
    #: a count of devices (-1: all of them), or Lightning's "auto" or a list such as "0,1"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate_grad_batches: int = ranged(1, at_least=1, meaning="batches per optimiser step")
    gradient_clip_val: float | None = ranged(None, at_least=0, meaning="largest gradient norm, 0 or null: none")
    log_every_n_steps: int = ranged(10, at_least=1, meaning="training steps between logged values")
    checkpoint_every_n_steps: int | None = ranged(None, at_least=1, meaning="training steps between checkpoints")
    #: off a terminal (batch logs, pipes), also log a progress line every N training steps (besides every epoch)
    progress_every_n_steps: int | None = ranged(None, at_least=1, meaning="training steps between progress lines")
    seed: int = ranged(0, at_least=0, at_most=2**32 - 1, meaning="random seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_devices(self.devices)


def check_devices(devices: Any) -> None:
    """A ``ValueError`` for a device count that is neither at least 1 nor -1 (all devices); text is Lightning's."""
    if isinstance(devices, int) and not isinstance(devices, bool) and (devices == 0 or devices < -1):
        raise ValueError(f"devices must be at least 1 (or -1: all devices), got {devices}")


@dataclass
class ExperimentConfig:
    """One experiment: task, method, backbones, the method's and the head's configs, optimiser and trainer.

    ``method_config`` is an instance of the method's ``config_class`` and ``head`` of the task head's
    ``config_class``; a mapping given for either (or nothing) is parsed here (:meth:`from_dict` parses them with
    errors naming the file).
    """

    task: str = "ave"
    setting: str | None = None
    method: str = "molt"
    backbone: str | dict[str, Any] = "tiny"
    visual_weights: str | None = None
    audio_weights: str | None = None
    audio_clip_seconds: int | None = ranged(None, at_least=1, meaning="seconds of audio per clip")
    backbone_dtype: str = "float32"
    shared_audio_frontend: str = "htsat"
    method_config: MethodConfig | None = None
    head: HeadConfig | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        check_field_values(type(self), {"audio_clip_seconds": self.audio_clip_seconds}, "config",
                           fix="pass a value in that range")
        if self.backbone_dtype not in BACKBONE_DTYPES:
            raise ValueError(f"backbone_dtype must be {', '.join(BACKBONE_DTYPES[:-1])} or {BACKBONE_DTYPES[-1]}, "
                             f"got {self.backbone_dtype!r}")
        _, audio = backbone_sides(self.backbone)
        if self.shared_audio_frontend not in SHARED_AUDIO_FRONTENDS:
            raise ValueError(f"shared_audio_frontend must be one of {', '.join(SHARED_AUDIO_FRONTENDS)}, "
                             f"got {self.shared_audio_frontend!r}")
        if self.shared_audio_frontend != "htsat" and audio.kind not in ("shared", "swinv2"):
            raise ValueError(f"shared_audio_frontend {self.shared_audio_frontend} applies to a Swin-V2 reading the "
                             f"spectrogram (backbone shared, tiny-shared, or audio swinv2); the audio backbone here "
                             f"is {audio}")
        method = get_method(self.method)
        self.method_config = _parse_section(method.config_class, self.method_config, "method_config",
                                            f"method {self.method!r}")
        self.head = _parse_section(get_task(self.task).head.config_class, self.head, "head",
                                   f"the {self.task} head")

    @property
    def backbone_label(self) -> str:
        """A short, file-name-safe label of the backbones (the pair name, or ``VISUAL+AUDIO``), for run names."""
        return backbone_label(self.backbone)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the YAML/JSON shape): ``method_config`` and ``head`` hold the keys their sections set."""
        data = dataclasses.asdict(self)
        data["method_config"] = self.method_config.to_dict(only_set=True)
        data["head"] = self.head.to_dict(only_set=True)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ExperimentConfig":
        from .tasks import get_task

        data = dict(data)
        check_known_keys(cls, data, source)
        check_field_types(cls, data, source)
        check_field_values(cls, data, source)
        nested = {"optim": OptimConfig, "trainer": TrainerConfig}
        for key, kind in nested.items():
            if key in data:
                data[key] = kind.from_dict(data[key] or {}, source=f"{source}: {key}")
        # the method's and the head's sections are parsed here, once, so their errors name this file
        method = get_method(data.get("method", "molt"))
        data["method_config"] = method.config_class.from_dict(data.get("method_config") or {},
                                                              source=f"{source}: method_config")
        spec = get_task(data.get("task", "ave"))
        head = data.get("head") or {}
        unknown = sorted(set(head) - set(spec.head_option_names())) if isinstance(head, dict) else []
        if unknown:
            raise ValueError(f"{source}: head: unknown option(s) {', '.join(unknown)} for the {spec.name} head; "
                             f"accepted: {', '.join(spec.head_option_names())}")
        data["head"] = spec.head.config_class.from_dict(head, source=f"{source}: head")
        return cls(**data)


def _parse_section(kind: type, value: Any, key: str, owner: str) -> Any:
    """``value`` as a ``kind`` instance: parsed from a mapping (``None``: the defaults), refused if another config."""
    if value is None or isinstance(value, dict):
        return kind.from_dict(dict(value or {}), source=key)
    if not isinstance(value, kind):
        raise ValueError(f"{key}: {owner} takes a {kind.__name__}, got a {type(value).__name__}")
    return value


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    folder = resources.files("molt") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _preset_path(name: str, relative_to: Path | None = None) -> Path:
    """The YAML file of a preset name or path; a relative path is looked up beside ``relative_to`` (the file whose
    ``base:`` names it) first, then in the current directory."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or os.sep in name or "/" in name:
        if relative_to is not None and not path.is_absolute() and (relative_to.parent / path).is_file():
            return relative_to.parent / path
        if not path.is_file():
            where = f" (named by base: in {relative_to})" if relative_to is not None else ""
            raise FileNotFoundError(f"config file not found: {name}{where}")
        return path
    candidate = resources.files("molt") / "configs" / f"{name}.yaml"
    if not candidate.is_file():
        where = f" (named by base: in {relative_to})" if relative_to is not None else ""
        close = difflib.get_close_matches(name, preset_names(), n=1, cutoff=0.6)
        guess = f"; did you mean {close[0]}?" if close else ""
        raise FileNotFoundError(f"no config preset named {name!r}{where}{guess} (available: "
                                f"{', '.join(preset_names())}, or a path to a YAML file)")
    return Path(str(candidate))


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file with its ``base:`` merged in (the base, checked on its own so that its
    errors name it, then this file's keys); ``chain`` holds the files that named this one, to refuse a cycle."""
    text = read_text(path, what="config file")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(error).split())}; correct the YAML syntax there") \
            from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of keys at the top level, got {type(loaded).__name__}")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: base must be the name of a preset or the path of a YAML file, got {base!r}")
    base_path = _preset_path(base, relative_to=path)
    seen = (*chain, path)
    if any(base_path.resolve() == earlier.resolve() for earlier in seen):
        cycle = " -> ".join(str(p) for p in (*seen, base_path))
        raise ValueError(f"{path}: base: {base} makes a cycle ({cycle}); remove one of these base: lines")
    base_config = ExperimentConfig.from_dict(_read_yaml(base_path, seen), source=str(base_path))
    return _merge(base_config.to_dict(), loaded)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(name_or_path: str | None = None, overrides: dict[str, Any] | None = None, *,
                source: str | None = None) -> ExperimentConfig:
    """Load a preset name or YAML path (or the defaults) and apply nested ``overrides``.

    A YAML file may name a ``base`` preset that it extends. ``source`` names where ``overrides`` come from in error
    messages (e.g. an ``adapter_config.json``) when no preset or file is given.
    """
    data: dict[str, Any] = {}
    source = source or "defaults"
    if name_or_path:
        path = _preset_path(name_or_path)
        source = str(path)
        data = _read_yaml(path)
    if overrides:
        data = _merge(data, overrides)
    return ExperimentConfig.from_dict(data, source=source)


def with_head(config: ExperimentConfig, head: str) -> ExperimentConfig:
    """The same experiment with the method's ``head`` (``common`` or ``official``: LAVisH's, DG-SCT's and AVMoE's
    own heads); a ``ValueError`` for a method without heads of its own."""
    if "head" not in {f.name for f in dataclasses.fields(config.method_config)}:
        raise ValueError(f"head {head}: {config.method} has no head of its own; the in-block methods (lavish, dgsct, "
                         f"avmoe) have one for some tasks (molt params {config.task} --heads)")
    return dataclasses.replace(config, method_config=config.method_config.replace(head=head))


def switch_method(config: ExperimentConfig, method: str) -> ExperimentConfig:
    """The same experiment with another registered method (``molt``, ``mettle``, ``lavish``, ...) on an equal footing.

    A preset's ``method_config`` belongs to its method; the new method keeps what they have in common (output
    width ``dim``, tokens per modality, attention heads, single-modality switch), takes its published settings for
    this task and setting (:meth:`~molt.methods.registry.MethodSpec.settings_for`) and its own defaults otherwise,
    so that comparisons use the same backbone, head, ``D`` and ``K``.
    """
    if method == config.method:
        return config
    old = config.method_config.to_dict(only_set=True)
    target = get_method(method)
    common = {key: old[key] for key in ("dim", "num_tokens", "num_tokens_audio", "modalities") if key in old}
    old_heads = get_method(config.method).heads_option
    if old_heads in old:
        common[target.heads_option] = old[old_heads]
    common = {**target.settings_for(config.task, config.setting), **common}
    return dataclasses.replace(config, method=method, method_config=common)
