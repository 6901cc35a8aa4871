"""Save and load only the trainable weights of a model (adapters, heads), PEFT style.

A directory holds two files:

* ``adapter_model.safetensors``: every trainable parameter (each tensor once, under its first name) plus the
  persistent buffers of trainable parts (e.g. a head's BatchNorm statistics), never a frozen backbone tensor;
* ``adapter_config.json``: format version, the method config (the first submodule, in ``named_modules`` order,
  with a ``config`` attribute that has ``to_dict()``, e.g. :class:`~molt.methods.molt.MoLTConfig`), the backbones
  the adapters were trained on (name, timm tag, SHA-256 of the weights file, selected blocks), the tensor shapes,
  and any ``extra_config`` (e.g. the task head's options).

:func:`load_adapters` refuses, with a ``ValueError`` listing every difference, a directory made for another
method config, other backbones, or with other tensor names or shapes. Works for any ``nn.Module`` whose trainable
parameters are the adapters.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["save_adapters", "load_adapters", "read_adapter_config", "adapter_state_dict", "describe_backbones",
           "upgrade_tensor_names", "dict_differences", "ADAPTER_WEIGHTS_NAME", "ADAPTER_CONFIG_NAME",
           "ADAPTER_FORMAT_VERSION", "KEY_MAPS", "EARLIER_DEFAULTS", "RETIRED_FIELDS", "earlier_defaults"]

_logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_FORMAT_VERSION = 2
_MAX_LISTED = 10
# Tensor-name prefixes renamed since a format version: files of an older version are read with the new names.
# Version 2: ``AudioVisualModel.features.molt`` became ``features.method`` (it holds Mettle or LAVisH too).
KEY_MAPS: dict[int, tuple[tuple[str, str], ...]] = {1: (("features.molt.", "features.method."),)}


def _frozen_module_names(model: nn.Module) -> list[str]:
    """Names of the outermost submodules whose parameters are all frozen (the backbones)."""
    frozen: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in frozen if prefix) or not name:
            continue
        parameters = list(module.parameters())
        if parameters and not any(parameter.requires_grad for parameter in parameters):
            frozen.append(name)
    return frozen


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter file holds: trainable parameters (deduplicated by identity) and the persistent buffers
    of modules outside any all-frozen subtree. Tensors are the model's own (not copies)."""
    state: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            state[name] = parameter
    frozen = _frozen_module_names(model)
    seen = {id(tensor) for tensor in state.values()}
    for module_name, module in model.named_modules():
        if any(module_name == prefix or module_name.startswith(prefix + ".") for prefix in frozen):
            continue
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer is None or buffer_name in module._non_persistent_buffers_set or id(buffer) in seen:
                continue
            seen.add(id(buffer))
            state[f"{module_name}.{buffer_name}" if module_name else buffer_name] = buffer
    return state


def _method_config(model: nn.Module) -> dict[str, Any] | None:
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        to_dict = getattr(config, "to_dict", None)
        if callable(to_dict):
            return {"module": name, "class": type(config).__name__, "config": _jsonable(to_dict())}
    return None


#: config fields whose default changed after files were written without them: ``(config class, field)`` -> the value
#: a file that does not record the field was trained with (Mettle's meta-tokens moved to each layer's width)
EARLIER_DEFAULTS: dict[tuple[str, str], Any] = {("MettleConfig", "lcd_width"): "common"}
#: fields of configs whose method was rebuilt: a file recording one of them cannot be loaded, and why
RETIRED_FIELDS: dict[tuple[str, str], str] = {
    ("LavishConfig", "gate_init"): "it was written by the earlier LAVisH (one adapter after each block), which this "
                                   "release rebuilt as its repository builds it (adapters beside both sub-layers of "
                                   "paired blocks); train again with --method lavish"}


def earlier_defaults(record: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """The values of config fields a file's method ``record`` does not hold but was trained with
    (:data:`EARLIER_DEFAULTS`); a ``ValueError`` naming ``source`` for a method that was rebuilt since
    (:data:`RETIRED_FIELDS`)."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return {}
    kind, fields = record.get("class"), record["config"]
    for (retired_class, field), why in RETIRED_FIELDS.items():
        if kind == retired_class and field in fields:
            raise ValueError(f"{source}: these adapters cannot be loaded: {why}")
    return {field: value for (owner, field), value in EARLIER_DEFAULTS.items() if owner == kind and field not in fields}


def _with_new_defaults(saved: dict[str, Any] | None, model: nn.Module, source: str) -> dict[str, Any] | None:
    """``saved`` (the method record of the file ``source``) with the defaults of config fields added after the file
    was written: an option a newer release introduces, at its default (or at the value it had before, see
    :data:`EARLIER_DEFAULTS`), describes the model the file was trained as."""
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return saved
    config = next((getattr(m, "config") for _, m in model.named_modules()
                   if callable(getattr(getattr(m, "config", None), "to_dict", None))), None)
    if config is None or not dataclasses.is_dataclass(config) or type(config).__name__ != saved.get("class"):
        return saved
    earlier = earlier_defaults(saved, source)
    added = {f.name: earlier.get(f.name, _jsonable(f.default)) for f in dataclasses.fields(config)
             if f.name not in saved["config"] and f.default is not dataclasses.MISSING}
    return {**saved, "config": {**saved["config"], **added}} if added else saved


def describe_backbones(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Name, timm tag, weights hash and selected blocks of each outermost backbone-like submodule (one with
    ``forward_taps``), keyed by attribute path. The blocks come from ``<path>_blocks`` on the parent if present."""
    info: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if not name or not callable(getattr(module, "forward_taps", None)):
            continue
        if any(name.startswith(prefix + ".") for prefix in info):
            continue
        weights_hash = getattr(module, "weights_hash", None)
        entry: dict[str, Any] = {
            "class": type(module).__name__,
            "name": getattr(module, "name", None),
            "tag": getattr(module, "tag", None),
            "weights_sha256": weights_hash() if callable(weights_hash) else None,
            "num_blocks": getattr(module, "num_blocks", None),
        }
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        blocks = getattr(parent, f"{attribute}_blocks", None)
        if blocks is not None:
            entry["blocks"] = [int(index) for index in blocks]
        info[name] = entry
    return info


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_adapters(model: nn.Module, path: str | os.PathLike, backbone_info: dict[str, Any] | None = None,
                  extra_config: dict[str, Any] | None = None) -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into the directory ``path``.

    Args:
        model: any module; its trainable tensors are saved (see :func:`adapter_state_dict`).
        path: output directory (created).
        backbone_info: what the adapters were trained on; default :func:`describe_backbones` of ``model``.
        extra_config: anything else JSON-serialisable to store (and check on load), e.g. head options.

    Returns the directory.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = adapter_state_dict(model)
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}
    config = {
        "format_version": ADAPTER_FORMAT_VERSION,
        "library": "molt-av",
        "method": _method_config(model),
        "backbones": _jsonable(describe_backbones(model) if backbone_info is None else backbone_info),
        "extra_config": _jsonable(extra_config) if extra_config is not None else None,
        "tensors": {name: list(tensor.shape) for name, tensor in tensors.items()},
    }
    save_file(tensors, str(directory / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    with open(directory / ADAPTER_CONFIG_NAME, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")
    size = (directory / ADAPTER_WEIGHTS_NAME).stat().st_size
    _logger.info("saved %d adapter tensors (%.2f MB) to %s", len(tensors), size / 1e6, directory)
    return directory


def read_adapter_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``adapter_config.json`` of an adapter directory (or the file itself)."""
    file = Path(path)
    if file.is_dir():
        file = file / ADAPTER_CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"adapter config not found: {file} (expected a directory written by save_adapters)")
    try:
        with open(file) as handle:
            config = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON: {error}") from None
    if not isinstance(config, dict) or "format_version" not in config:
        raise ValueError(f"{file}: not an adapter config (no format_version)")
    if config["format_version"] > ADAPTER_FORMAT_VERSION:
        raise ValueError(f"{file}: adapter format version {config['format_version']} is newer than this library "
                         f"supports ({ADAPTER_FORMAT_VERSION}); upgrade molt-av")
    return config


def dict_differences(saved: Any, current: Any, prefix: str, sides: tuple[str, str] = ("file", "model")) -> list[str]:
    """``"prefix.key: <side 0> has X, <side 1> has Y"`` for every leaf where two nested dicts differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        differences = []
        for key in sorted(set(saved) | set(current), key=str):
            differences += dict_differences(saved.get(key), current.get(key), f"{prefix}.{key}", sides)
        return differences
    return [] if saved == current else [f"{prefix}: {sides[0]} has {saved!r}, {sides[1]} has {current!r}"]


def _backbone_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Backbones must match on every field known on both sides (a hash is only compared when both have one)."""
    differences = []
    for name in sorted(set(saved) | set(current)):
        if name not in saved or name not in current:
            where = "file" if name in saved else "model"
            differences.append(f"backbones.{name}: only the {where} has this backbone")
            continue
        for key in sorted(set(saved[name]) & set(current[name])):
            old, new = saved[name][key], current[name][key]
            if old is not None and new is not None and old != new:
                differences.append(f"backbones.{name}.{key}: file has {old!r}, model has {new!r}")
    return differences


def upgrade_tensor_names(names: list[str], format_version: int) -> dict[str, str]:
    """Old name -> current name of every tensor of a file written with ``format_version`` (see :data:`KEY_MAPS`)."""
    mapping = {}
    for name in names:
        current = name
        for version in range(int(format_version), ADAPTER_FORMAT_VERSION):
            for old, new in KEY_MAPS.get(version, ()):
                if current.startswith(old):
                    current = new + current[len(old):]
        mapping[name] = current
    return mapping


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_adapters(model: nn.Module, path: str | os.PathLike, *, backbone_info: dict[str, Any] | None = None,
                  extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore the trainable tensors saved by :func:`save_adapters` into ``model`` (in place).

    Checks, before touching the model, that the method config, the backbones (``backbone_info`` or
    :func:`describe_backbones` of ``model``), ``extra_config`` when given, and every tensor name and shape match;
    otherwise raises ``ValueError`` listing what differs. Returns the stored config.
    """
    directory = Path(path)
    config = read_adapter_config(directory)
    weights_file = directory / ADAPTER_WEIGHTS_NAME
    if not weights_file.is_file():
        raise FileNotFoundError(f"adapter weights not found: {weights_file}")
    differences: list[str] = []
    saved_method = _with_new_defaults(config.get("method"), model, str(directory / ADAPTER_CONFIG_NAME))
    differences += dict_differences(saved_method, _method_config(model), "method")
    current_backbones = _jsonable(describe_backbones(model) if backbone_info is None else backbone_info)
    differences += _backbone_differences(config.get("backbones") or {}, current_backbones or {})
    if extra_config is not None:
        differences += dict_differences(config.get("extra_config"), _jsonable(extra_config), "extra_config")
    state = adapter_state_dict(model)
    try:
        stored = load_file(str(weights_file), device="cpu")
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise ValueError(f"{weights_file} cannot be read ({type(error).__name__}: {error}); the file is damaged or "
                         f"truncated: copy it again or export the adapters again") from None
    renamed = upgrade_tensor_names(list(stored), config["format_version"])
    tensors = {renamed[name]: tensor for name, tensor in stored.items()}
    if config["format_version"] < ADAPTER_FORMAT_VERSION:
        _logger.info("%s: adapter format %d read with the tensor names of format %d", directory,
                     config["format_version"], ADAPTER_FORMAT_VERSION)
    missing = sorted(set(state) - set(tensors))
    unexpected = sorted(set(tensors) - set(state))
    if missing:
        differences.append(f"tensors missing from the file: {_listed(missing)}")
    if unexpected:
        differences.append(f"tensors in the file that the model does not have: {_listed(unexpected)}")
    shapes = [f"{name} file {tuple(tensors[name].shape)} vs model {tuple(state[name].shape)}"
              for name in sorted(set(state) & set(tensors)) if tensors[name].shape != state[name].shape]
    if shapes:
        differences.append(f"shape mismatches: {_listed(shapes)}")
    if differences:
        raise ValueError(f"{directory}: these adapters were made for a different model:\n  - "
                         + "\n  - ".join(differences))
    with torch.no_grad():
        for name, target in state.items():
            target.copy_(tensors[name])
    _logger.info("loaded %d adapter tensors from %s", len(state), directory)
    return config
