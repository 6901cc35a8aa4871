"""Every file molt-av writes or reads for a trained model: adapter directories, training checkpoints, their format
versions and the maps that read older files, and the random-generator states that make a resumed run exact.

Adapter directories (PEFT style) hold two files:

* ``adapter_model.safetensors``: every trainable parameter (each tensor once, under its first name) plus the
  persistent buffers of trainable parts (e.g. a head's BatchNorm statistics), never a frozen backbone tensor;
* ``adapter_config.json``: format version, the method config (the first submodule, in ``named_modules`` order,
  with a ``config`` attribute that has ``to_dict()``, e.g. :class:`~molt.methods.molt.MoLTConfig`), the backbones
  the adapters were trained on (name, timm tag, SHA-256 of the weights file, selected blocks), the tensor shapes,
  and any ``extra_config`` (for an :class:`~molt.model.AudioVisualModel`: the experiment config without its
  ``method_config``, which the method record holds, and the task options).

:func:`load_adapters` refuses, with a ``ValueError`` listing every difference, a directory made for another
method config, other backbones, or with other tensor names or shapes. It works for any ``nn.Module`` whose
trainable parameters are the adapters; :func:`save_pretrained` and :func:`pretrained_config` add what rebuilds an
``AudioVisualModel``.

Training checkpoints (``best.ckpt``, ``last.ckpt`` of ``molt train``) are Lightning checkpoints whose
``state_dict`` holds only the trainable tensors, plus the entries named by the ``*_KEY`` constants below
(:func:`add_training_entries`). They hold tensors and plain data only and are read with
``torch.load(weights_only=True)`` (:func:`read_training_checkpoint`), so a file that would run code is refused.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import pickle
import random
import typing
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ExperimentConfig, load_config
from .data.files import read_json
from .typed_config import accepts, type_name

__all__ = [
    # adapter directories
    "ADAPTER_WEIGHTS_NAME", "ADAPTER_CONFIG_NAME", "ADAPTER_FORMAT_VERSION", "KEY_MAPS", "EARLIER_DEFAULTS",
    "RETIRED_FIELDS", "save_adapters", "load_adapters", "read_adapter_config", "check_adapter_config",
    "check_task_options", "confine_weights", "adapter_state_dict", "backbones_by_side",
    "describe_backbones", "upgrade_tensor_names", "earlier_defaults", "dict_differences", "save_pretrained",
    "pretrained_config",
    # training checkpoints
    "CHECKPOINT_FORMAT_VERSION", "FORMAT_VERSION_KEY", "CONFIG_KEY", "TASK_OPTIONS_KEY", "RNG_KEY", "STATE_DICT_KEY",
    "GLOBAL_STEP_KEY", "MODEL_PREFIX", "add_training_entries", "read_training_checkpoint", "checkpoint_config",
    "check_trainable_tensors", "load_checkpoint_tensors",
    # random generators
    "capture_random_states", "restore_random_states",
]

_logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
#: Version 2: tensors of ``features.method``. Version 3: ``extra_config.experiment`` no longer repeats the method
#: config (``method.config`` is its one copy); the tensors are those of version 2.
ADAPTER_FORMAT_VERSION = 3
#: the first adapter format whose experiment record leaves ``method_config`` to the method record
_METHOD_RECORD_ONLY = 3
_MAX_LISTED = 10
#: Tensor-name prefixes renamed since a format version: files of an older version are read with the new names.
#: Version 2: ``AudioVisualModel.features.molt`` became ``features.method`` (it holds Mettle or LAVisH too).
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


def _method_module(model: nn.Module) -> tuple[str, Any] | None:
    """``(name, config)`` of the first submodule, in ``named_modules`` order, whose ``config`` has ``to_dict()``."""
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if callable(getattr(config, "to_dict", None)):
            return name, config
    return None


def _method_config(model: nn.Module) -> dict[str, Any] | None:
    """The method record of an adapter config: module name, config class and config."""
    found = _method_module(model)
    if found is None:
        return None
    name, config = found
    return {"module": name, "class": type(config).__name__, "config": _jsonable(config.to_dict())}


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
    config = (_method_module(model) or (None, None))[1]
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
    """The ``adapter_config.json`` of an adapter directory (or the file itself), every field type-checked
    (:func:`check_adapter_config`)."""
    file = Path(path)
    if file.is_dir():
        file = file / ADAPTER_CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"adapter config not found: {file} (expected an adapters folder, as molt train writes "
                                f"into RUN/version_N/adapters/best, holding adapter_config.json and "
                                f"adapter_model.safetensors)")
    config = read_json(file, what="adapter config", fix="copy the adapter directory again or export it again")
    check_adapter_config(config, str(file))
    return config


def _refuse(source: str, key: str, expected: str, value: Any) -> None:
    raise ValueError(f"{source}: {key} must be {expected}, got {value!r} ({type(value).__name__}); this file was "
                     f"not written by molt-av or was edited: export the adapters again")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_strings(mapping: dict[str, Any], keys: tuple[str, ...], source: str, prefix: str) -> None:
    for key in keys:
        if mapping.get(key) is not None and not isinstance(mapping[key], str):
            _refuse(source, f"{prefix}{key}", "a string or null", mapping[key])


def check_adapter_config(config: Any, source: str) -> None:
    """Raise a ``ValueError`` naming ``source`` and the key when a field of an adapter config has the wrong type or
    an impossible value (an unknown format version, a negative tensor dimension, ...)."""
    if not isinstance(config, dict) or "format_version" not in config:
        raise ValueError(f"{source}: not an adapter config (no format_version)")
    version = config["format_version"]
    if not _is_int(version):
        _refuse(source, "format_version", "an integer", version)
    if version > ADAPTER_FORMAT_VERSION:
        raise ValueError(f"{source}: adapter format version {version} is newer than this library supports "
                         f"({ADAPTER_FORMAT_VERSION}); upgrade molt-av")
    if version < 1:
        _refuse(source, "format_version", f"a version from 1 to {ADAPTER_FORMAT_VERSION}", version)
    _check_strings(config, ("library",), source, "")
    method = config.get("method")
    if method is not None:
        if not isinstance(method, dict):
            _refuse(source, "method", "an object (module, class, config) or null", method)
        _check_strings(method, ("module", "class"), source, "method.")
        if not isinstance(method.get("config"), dict):
            _refuse(source, "method.config", "an object", method.get("config"))
    backbones = config.get("backbones")
    if backbones is not None:
        if not isinstance(backbones, dict):
            _refuse(source, "backbones", "an object of backbone records or null", backbones)
        for name, entry in backbones.items():
            prefix = f"backbones.{name}."
            if not isinstance(entry, dict):
                _refuse(source, prefix[:-1], "an object", entry)
            _check_strings(entry, ("class", "name", "tag"), source, prefix)
            digest = entry.get("weights_sha256")
            if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                           and all(c in "0123456789abcdef" for c in digest)):
                _refuse(source, prefix + "weights_sha256", "64 hexadecimal digits or null", digest)
            blocks = entry.get("num_blocks")
            if blocks is not None and not (_is_int(blocks) and blocks >= 1):
                _refuse(source, prefix + "num_blocks", "an integer >= 1 or null", blocks)
            selected = entry.get("blocks")
            if selected is not None and not (isinstance(selected, list)
                                             and all(_is_int(i) and i >= 0 for i in selected)):
                _refuse(source, prefix + "blocks", "a list of block indices (integers >= 0)", selected)
    extra = config.get("extra_config")
    if extra is not None and not isinstance(extra, dict):
        _refuse(source, "extra_config", "an object or null", extra)
    for key in ("experiment", "task_options"):
        if extra is not None and key in extra and not isinstance(extra[key], dict):
            _refuse(source, f"extra_config.{key}", "an object", extra[key])
    tensors = config.get("tensors")
    if tensors is not None:
        if not isinstance(tensors, dict):
            _refuse(source, "tensors", "an object of tensor shapes", tensors)
        for name, shape in tensors.items():
            if not (isinstance(shape, list) and all(_is_int(size) and size >= 0 for size in shape)):
                _refuse(source, f"tensors.{name}", "a shape (a list of integers >= 0)", shape)


def check_task_options(task: str, options: dict[str, Any], source: str) -> None:
    """Raise a ``ValueError`` naming ``source`` and the key when the task options recorded for ``task`` do not fit
    its head's constructor: an unknown key, a value of another type than its annotation (``num_classes: "many"``),
    or an integer below 1 (every integer a task option holds is a count or a size)."""
    from .tasks import get_task

    head = get_task(task).head
    parameters = inspect.signature(head.__init__).parameters
    hints = typing.get_type_hints(head.__init__)
    for key, value in options.items():
        where = f"extra_config.task_options.{key}"
        if key not in parameters or key in ("self", "config", "dim"):
            raise ValueError(f"{source}: {where} is not an option of the {task} head (it takes "
                             f"{', '.join(k for k in parameters if k not in ('self', 'config', 'dim'))}); this file "
                             f"was not written by molt-av or was edited: export the adapters again")
        if key in hints and accepts(hints[key], value) is False:
            _refuse(source, where, type_name(hints[key]), value)
        if _is_int(value) and value < 1:
            _refuse(source, where, "at least 1 (a count or a size)", value)


def _confine_hf_folder(name: str, side: str, source: str, prefix: str, backbones: Any,
                       given: str | None) -> tuple[str, bool]:
    """``(name, whether given was used)``: the ``hf:`` backbone name to build for a recorded one. A hub id as it is;
    a local folder only inside the current directory or with the recorded weights SHA-256 (see
    :func:`confine_weights`), else refused; the user's own folder (``--audio-weights FOLDER``) replaces it."""
    from .backbones.hf_audio import folder_weights_sha256, looks_like_path

    model = name[3:]
    folder = Path(os.path.expanduser(model))
    if not (folder.is_dir() or looks_like_path(model)):
        return name, False                              # a hub id, read from the Hugging Face cache
    if given is not None:
        return f"hf:{os.fspath(given)}", True
    where, flag = f"{source}: {prefix}.backbone.{side}", f"--{side}-weights"
    if not folder.is_dir():
        raise ValueError(f"{where} {name!r} (the encoder it was trained with) is not a folder here; pass {flag} "
                         f"FOLDER with that encoder's save_pretrained folder")
    if _inside_working_directory(folder):
        return name, False
    _vouch_for(where, name, _backbone_hash(backbones, side), lambda: folder_weights_sha256(folder),
               f"{flag} FOLDER with the encoder the adapters were trained with")
    return name, False


def backbones_by_side(backbones: Any) -> dict[str, dict[str, Any]]:
    """``{"visual": {...}, "audio": {...}}``: name, tag and weights hash of the backbones an adapter config records
    under ``backbones``, keyed by side (``features.visual`` -> ``visual``); ``{}`` for anything but a mapping."""
    if not isinstance(backbones, dict):
        return {}
    return {side: entry for side, entry in ((str(name).rpartition(".")[2], entry) for name, entry in backbones.items())
            if side in ("visual", "audio") and isinstance(entry, dict)}


def _backbone_hash(backbones: Any, side: str) -> str | None:
    """The weights SHA-256 an adapter config records for the ``side`` backbone."""
    return backbones_by_side(backbones).get(side, {}).get("weights_sha256")


def _inside_working_directory(path: Path) -> bool:
    cwd = os.path.abspath(os.getcwd())
    return os.path.commonpath([cwd, os.path.abspath(path)]) == cwd


def confine_weights(experiment: dict[str, Any], source: str, backbones: Any = None, *,
                    visual_weights: str | None = None, audio_weights: str | None = None,
                    prefix: str = "extra_config.experiment") -> dict[str, Any]:
    """``experiment`` (a recorded experiment config, as plain data) with its weights paths made safe to open.

    ``visual_weights`` / ``audio_weights`` are the user's own (``--visual-weights`` / ``--audio-weights``; for an
    ``hf:`` encoder read from a local folder, that folder): they replace what the file records (the adapters then
    still check the SHA-256 their file records). A path the file records (a weights file, or the folder of an
    ``hf:`` encoder) is used only when it lies inside the current directory (where ``molt train`` resolved the
    relative path it recorded), or anywhere when its weights' SHA-256 is the one recorded for that backbone in
    ``backbones`` (the weights the adapters were trained with, on this machine). Anything else
    (``../../etc/passwd``, an absolute path outside, a device) is refused in a ``ValueError`` naming ``source``, the
    key (``prefix.audio_weights``) and the flag that replaces it.
    """
    from .backbones.registry import RANDOM_WEIGHTS
    from .backbones.swin_v2 import file_sha256

    experiment = dict(experiment)
    given_weights = {"visual": visual_weights, "audio": audio_weights}
    backbone = experiment.get("backbone")
    if isinstance(backbone, dict):
        experiment["backbone"] = backbone = dict(backbone)
        for side in ("visual", "audio"):
            name = backbone.get(side)
            if isinstance(name, str) and name.startswith("hf:"):
                backbone[side], used = _confine_hf_folder(name, side, source, prefix, backbones, given_weights[side])
                if used:
                    given_weights[side] = None
    for side, given in given_weights.items():
        key, flag = f"{side}_weights", f"--{side}-weights"
        if given is not None:
            experiment[key] = os.fspath(given)
            continue
        recorded = experiment.get(key)
        if recorded is None or recorded == RANDOM_WEIGHTS:
            continue
        where = f"{source}: {prefix}.{key}"
        if not isinstance(recorded, str) or not recorded:
            _refuse(source, f"{prefix}.{key}", "a path or null", recorded)
        path = Path(recorded)
        if not path.is_file():
            from .backbones.registry import weights_source

            card = Path(source).parent / "README.md"
            told = f" as the model card {card} says" if card.is_file() else ""
            raise FileNotFoundError(f"{where} {recorded!r} (the weights it was trained with) is not a file here; get "
                                    f"it{told} ({weights_source(recorded)}) and pass {flag} PATH")
        if _inside_working_directory(path):
            continue
        _vouch_for(where, recorded, _backbone_hash(backbones, side), lambda: file_sha256(path),
                   f"{flag} PATH with the weights the adapters were trained with")
    return experiment


def _vouch_for(where: str, recorded: str, digest: str | None, actual: Callable[[], str], instead: str) -> None:
    """Refuse, naming ``where``, weights outside the current directory whose SHA-256 (``actual()``) is not the
    recorded ``digest`` (or when none is recorded); ``instead`` says what to pass."""
    if digest is not None and actual() == digest:
        return
    reason = ("the file records no SHA-256 to check it against" if digest is None
              else "its SHA-256 is not the one the file records")
    raise ValueError(f"{where} {recorded!r} lies outside the current directory and {reason}; molt opens only weights "
                     f"it can vouch for: pass {instead}")


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
        _logger.info("%s: adapter format %d read as format %d", directory,
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


def save_pretrained(model: nn.Module, directory: str | os.PathLike, config: ExperimentConfig | None,
                    task_options: dict[str, Any]) -> Path:
    """Write the adapter directory of an :class:`~molt.model.AudioVisualModel` built from ``config`` and
    ``task_options``: its trainable tensors and, besides the method record, the experiment config (less its
    ``method_config``, which the method record holds) and the task options that rebuild it."""
    if config is None:
        raise ValueError("this model has no experiment config to save (build it with build_model)")
    experiment = config.to_dict()
    del experiment["method_config"]
    return save_adapters(model, directory, extra_config={"experiment": experiment, "task_options": task_options})


def pretrained_config(directory: str | os.PathLike, *, visual_weights: str | None = None,
                      audio_weights: str | None = None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``(experiment config, task options)`` that rebuild the model of an adapter directory written by
    :func:`save_pretrained`, of any format: the method config comes from the method record (format 3 on), or from
    the experiment record of older files, with the values of fields added since (:func:`earlier_defaults`).

    The weights files the directory records are opened only as :func:`confine_weights` allows;
    ``visual_weights`` / ``audio_weights`` replace them (the user's own files).

    Raises:
        FileNotFoundError: ``directory`` or its config file is missing.
        ValueError: a damaged config, one not written by :func:`save_pretrained`, a field of the wrong type or out
            of range, a recorded weights path it will not open, or adapters of a retired method.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not an adapter directory (expected {ADAPTER_CONFIG_NAME} and the "
                                f"safetensors file written by save_pretrained)")
    saved = read_adapter_config(path)
    source = str(path / ADAPTER_CONFIG_NAME)
    extra = saved.get("extra_config") or {}
    if "experiment" not in extra or "task_options" not in extra:
        raise ValueError(f"{source}: no experiment config in 'extra_config'; this directory was not written by "
                         f"AudioVisualModel.save_pretrained")
    experiment = confine_weights(extra["experiment"], source, saved.get("backbones"),
                                 visual_weights=visual_weights, audio_weights=audio_weights)
    record = saved.get("method")
    if saved["format_version"] >= _METHOD_RECORD_ONLY:
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise ValueError(f"{source}: no method config under 'method'; export the adapters again")
        experiment["method_config"] = dict(record["config"])
    earlier = earlier_defaults(record, source)
    if earlier:
        experiment["method_config"] = {**experiment.get("method_config", {}), **earlier}
    config = load_config(overrides=experiment, source=f"{source}: extra_config.experiment")
    check_task_options(config.task, extra["task_options"], source)
    return config, dict(extra["task_options"])


# ----------------------------------------------------------------------------------------------------------------
# training checkpoints

#: layout of the molt entries of a training checkpoint; files written before it was recorded are version 1
CHECKPOINT_FORMAT_VERSION = 1
FORMAT_VERSION_KEY = "molt_format_version"
#: the experiment config (``ExperimentConfig.to_dict()``)
CONFIG_KEY = "molt_config"
#: what the data decided (class names, vocabularies)
TASK_OPTIONS_KEY = "molt_task_options"
#: the random-generator states of :func:`capture_random_states`
RNG_KEY = "molt_rng"
#: Lightning's entries read here: the trainable tensors, named :data:`MODEL_PREFIX` + the model's name, and the step
STATE_DICT_KEY = "state_dict"
GLOBAL_STEP_KEY = "global_step"
#: the attribute of the training module that holds the :class:`~molt.model.AudioVisualModel`
MODEL_PREFIX = "model."


def add_training_entries(checkpoint: dict[str, Any], model: nn.Module, config: ExperimentConfig,
                         task_options: dict[str, Any]) -> None:
    """Make a Lightning checkpoint dict a molt training checkpoint, in place: keep only the trainable tensors of
    ``model`` (see :func:`adapter_state_dict`) in its state dict and add the format version, config, task options
    and random-generator states."""
    trainable = {MODEL_PREFIX + name for name in adapter_state_dict(model)}
    checkpoint[STATE_DICT_KEY] = {k: v for k, v in checkpoint[STATE_DICT_KEY].items() if k in trainable}
    checkpoint[FORMAT_VERSION_KEY] = CHECKPOINT_FORMAT_VERSION
    checkpoint[CONFIG_KEY] = config.to_dict()
    checkpoint[TASK_OPTIONS_KEY] = task_options
    checkpoint[RNG_KEY] = capture_random_states()


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The contents of a training checkpoint of ``molt train`` (``best.ckpt``, ``last.ckpt``), read with
    ``torch.load(weights_only=True)``: molt's checkpoints hold only tensors and plain data, so a file that pickles
    anything else (which could run code when unpickled) is refused, never executed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file pickles objects, is damaged or truncated, is not a molt checkpoint, or was written by a
            newer release.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), "")
        raise ValueError(f"{path}: refused: it pickles Python objects that a molt checkpoint never holds and that "
                         f"could run code when loaded ({refused or 'not tensors and plain data'}); use a checkpoint "
                         f"written by molt train, or the run's adapters/best directory") from None
    except Exception as error:  # noqa: BLE001 - any other failure means the file is unusable
        raise ValueError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); use another "
                         f"checkpoint (e.g. best.ckpt beside it, or the run's adapters/best directory) or train "
                         f"again") from None
    if not isinstance(state, dict) or CONFIG_KEY not in state or STATE_DICT_KEY not in state:
        raise ValueError(f"{path} is not a molt training checkpoint (no '{CONFIG_KEY}' / '{STATE_DICT_KEY}' entry)")
    version = state.get(FORMAT_VERSION_KEY, 1)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: training checkpoint format {version} is newer than this library supports "
                         f"({CHECKPOINT_FORMAT_VERSION}); upgrade molt-av")
    return state


def checkpoint_config(state: dict[str, Any], source: str | os.PathLike, *, visual_weights: str | None = None,
                      audio_weights: str | None = None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``(experiment config, task options)`` of a training checkpoint read by :func:`read_training_checkpoint`
    from the file ``source`` (named in errors); its recorded weights paths are opened only as
    :func:`confine_weights` allows (a training checkpoint records no weights hash), ``visual_weights`` /
    ``audio_weights`` replace them."""
    recorded, options = state[CONFIG_KEY], state[TASK_OPTIONS_KEY]
    if not isinstance(recorded, dict) or not isinstance(options, dict):
        raise ValueError(f"{source}: the entries '{CONFIG_KEY}' and '{TASK_OPTIONS_KEY}' must be mappings; this is "
                         f"not a checkpoint written by molt train")
    experiment = confine_weights(recorded, str(source), visual_weights=visual_weights, audio_weights=audio_weights,
                                 prefix=CONFIG_KEY)
    config = load_config(overrides=experiment, source=str(source))
    check_task_options(config.task, options, str(source))
    return config, dict(options)


def check_trainable_tensors(model: nn.Module, state: dict[str, Any], source: str | os.PathLike) -> None:
    """A ``ValueError`` naming ``source`` when the checkpoint ``state`` lacks trainable tensors of ``model``."""
    expected = {MODEL_PREFIX + name for name in adapter_state_dict(model)}
    missing = sorted(expected - set(state.get(STATE_DICT_KEY, {})))
    if missing:
        raise ValueError(f"{source} does not match this model: {len(missing)} trainable tensor(s) missing, e.g. "
                         f"{missing[:3]}; was it trained with another config?")


def load_checkpoint_tensors(model: nn.Module, state: dict[str, Any], source: str | os.PathLike) -> None:
    """Copy the trainable tensors of a training checkpoint into ``model`` (checked by
    :func:`check_trainable_tensors`); its frozen backbones keep their weights."""
    check_trainable_tensors(model, state, source)
    model.load_state_dict({name[len(MODEL_PREFIX):]: tensor for name, tensor in state[STATE_DICT_KEY].items()
                           if name.startswith(MODEL_PREFIX)}, strict=False)


# ----------------------------------------------------------------------------------------------------------------
# random generators

def capture_random_states() -> dict[str, Any]:
    """The states of every random generator a training step draws from (torch CPU and CUDA, numpy, Python), as
    tensors and plain data so that a checkpoint holding them still loads with ``weights_only=True``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}


def restore_random_states(states: dict[str, Any]) -> None:
    """Set the generators to what :func:`capture_random_states` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
