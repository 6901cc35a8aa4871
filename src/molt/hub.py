"""Adapters by name: a Hugging Face model repository id (``org/name``, ``org/name@revision``) or a local folder.

Part of molt-av (Apache-2.0). :func:`resolve_pretrained` turns what a user typed into the local adapter folder
that :meth:`molt.model.AudioVisualModel.from_pretrained` reads: an existing folder (or file) is used as it is;
anything else shaped like a repository id is downloaded with ``huggingface_hub.snapshot_download`` into the
standard cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), only the adapter
files and the model card. ``HF_HUB_OFFLINE=1`` reads the cache only. Every failure is one line naming the id,
the revision and the fix (:class:`HubError`, a ``ValueError``).

The frozen backbones are not in an adapters repository: :func:`with_backbone_weights` says which weights files the
adapters were trained on (name, SHA-256, where the model card says to get them) and refuses, in one line, a
recorded file that is missing on this machine.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .backbones.registry import weights_source
from .checkpoints import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, backbones_by_side

__all__ = ["HubError", "CARD_NAME", "parse_hub_id", "looks_like_hub_id", "resolve_pretrained", "hub_cache_dir",
           "cached_revisions", "is_offline", "missing_weights_message", "with_backbone_weights"]

_logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
#: the files of an adapters repository that loading needs (the card comes along for the weights' sources)
_FILES = (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CARD_NAME)
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<revision>[^\s@]+))?$")
_TRUE = {"1", "on", "yes", "true"}


class HubError(ValueError):
    """An adapters repository that cannot be used (one line: the id, the revision, the fix)."""


def parse_hub_id(text: str, revision: str | None = None) -> tuple[str, str | None]:
    """``(repo id, revision)`` of ``org/name`` or ``org/name@revision``; ``revision`` given twice must agree.

    Raises:
        HubError: not shaped like a repository id, or two different revisions.
    """
    match = _ID.match(str(text))
    if match is None:
        raise HubError(f"{text}: not a local folder and not a Hugging Face repository id (org/name or "
                       f"org/name@revision)")
    named = match.group("revision")
    if named and revision and named != revision:
        raise HubError(f"{text}: revision {named!r} in the id and --revision {revision!r} disagree; give one")
    return match.group("repo"), named or revision


def looks_like_hub_id(text: str | os.PathLike) -> bool:
    """Whether ``text`` is shaped like ``org/name[@revision]`` (and so may name a repository rather than a path)."""
    return _ID.match(os.fspath(text)) is not None


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, not when ``huggingface_hub`` was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def hub_cache_dir() -> Path:
    """The Hugging Face cache of model repositories as the environment says now: ``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (``XDG_CACHE_HOME`` honoured)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "hub"


def cached_revisions(repo_id: str, cache_dir: Path | None = None) -> list[str]:
    """The branch and tag names (``refs``) of ``repo_id`` in the cache, then its cached commits."""
    folder = (cache_dir or hub_cache_dir()) / f"models--{repo_id.replace('/', '--')}"
    refs = sorted(str(path.relative_to(folder / "refs")) for path in (folder / "refs").rglob("*") if path.is_file())
    commits = sorted(path.name for path in (folder / "snapshots").glob("*") if path.is_dir())
    return refs + [commit for commit in commits if commit not in refs]


def resolve_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """The local folder (or checkpoint file) of ``name_or_path``: a path that exists, or the cached snapshot of a
    Hugging Face repository id (``org/name``, ``org/name@revision``; ``revision`` is a branch, tag or commit),
    downloaded first unless ``HF_HUB_OFFLINE`` is set.

    Raises:
        FileNotFoundError: neither a path that exists nor shaped like a repository id.
        HubError: the repository, the revision or one of the adapter files cannot be had (offline: is not cached).
    """
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise HubError(f"{path}: --revision {revision} applies to a Hugging Face repository id, not to a local "
                           f"folder; drop it")
        return path
    text = os.fspath(name_or_path)
    if not looks_like_hub_id(text):
        raise FileNotFoundError(f"{text} is not an adapter directory (no such folder) nor a Hugging Face repository "
                                f"id (org/name); pass the adapters folder written by molt train "
                                f"(runs/.../adapters/best) or a repository id")
    repo_id, revision = parse_hub_id(text, revision)
    return _download(repo_id, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import errors
    except ImportError:
        raise ImportError("loading adapters by repository id needs huggingface_hub: pip install huggingface_hub") \
            from None
    cache, offline = hub_cache_dir(), is_offline()
    shown = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=list(_FILES),
                                        local_files_only=offline, library_name="molt-av"))
    except errors.RevisionNotFoundError:
        raise HubError(f"{shown}: the repository has no revision {revision!r}; use a branch, tag or commit of "
                       f"it (the default is main)") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise HubError(f"{repo_id}: no such local folder, and no such model repository on the Hugging Face Hub, or "
                       f"it is private or gated (log in with `hf auth login` for a private one)") from None
    except errors.LocalEntryNotFoundError:
        known = cached_revisions(repo_id, cache)
        if known:
            raise HubError(f"{shown}: revision {revision or 'main'!r} is not in the Hugging Face cache {cache} "
                           f"(cached: {', '.join(known)}){_offline_fix(offline)}") from None
        raise HubError(f"{shown}: no such local folder, and not in the Hugging Face cache {cache}"
                       f"{_offline_fix(offline)}") from None
    except errors.HfHubHTTPError as error:
        raise HubError(f"{shown}: the Hugging Face Hub answered {str(error).splitlines()[0]}; try again, or set "
                       f"HF_HUB_OFFLINE=1 to use the cache") from None
    for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise HubError(f"{shown}: the repository has no {name} (snapshot {folder}); it is not a molt-av adapters "
                           f"repository, or its upload is incomplete: upload the whole adapters folder")
    _logger.info("adapters %s from %s", shown, folder)
    return folder


def _offline_fix(offline: bool) -> str:
    if offline:
        return "; HF_HUB_OFFLINE=1 forbids downloading it: unset HF_HUB_OFFLINE (or download it once online)"
    return "; the Hub could not be reached: check the connection, or download it once on a machine that can"


def missing_weights_message(source: str, side: str, weights: str, sha256: str | None, card: str) -> str:
    """One line: which backbone weights file ``source`` needs, where the card says to get it, how to pass it."""
    digest = f" (SHA-256 {sha256})" if sha256 else ""
    return (f"{source}: the {side} backbone's weights file {Path(weights).name}{digest} is not at {weights}; get "
            f"it as the model card {card} says ({weights_source(weights)}) and pass {side}_weights=PATH "
            f"(molt eval|predict --{side}-weights PATH)")


def with_backbone_weights(config: Any, directory: str | os.PathLike, visual_weights: str | os.PathLike | None = None,
                          audio_weights: str | os.PathLike | None = None) -> Any:
    """The experiment ``config`` of the adapters in ``directory`` with the backbones' weights files given here
    instead of the paths recorded where the adapters were trained; a recorded (or given) file that is missing is
    refused in one line naming it, its SHA-256 and where the model card says to get it. The adapters' own check
    of the weights' SHA-256 (:func:`molt.checkpoints.load_adapters`) still runs when they are loaded."""
    given = {"visual": visual_weights, "audio": audio_weights}
    changes = {f"{side}_weights": os.fspath(path) for side, path in given.items() if path is not None}
    config = dataclasses.replace(config, **changes) if changes else config
    folder = Path(directory)
    try:
        recorded = backbones_by_side(json.loads((folder / ADAPTER_CONFIG_NAME).read_text()).get("backbones"))
    except (OSError, ValueError):
        recorded = {}
    for side in ("visual", "audio"):
        weights = getattr(config, f"{side}_weights")
        if weights in (None, "random") or os.path.exists(weights):
            continue
        sha256 = (recorded.get(side) or {}).get("weights_sha256")
        raise FileNotFoundError(missing_weights_message(str(folder), side, os.fspath(weights), sha256,
                                                        str(folder / CARD_NAME)))
    return config
