"""Names of the frozen backbones and the one function that builds a (visual, audio) pair from them.

Part of molt-av (Apache-2.0). A backbone is named ``KIND`` or ``KIND:MODEL``:

============  ========  =======================================================================================
name          side      what it builds
============  ========  =======================================================================================
``swinv2``    either    our Swin-V2 wrapper (:class:`~molt.backbones.swin_v2.SwinV2Backbone`); ``swinv2`` alone
                        is the paper's Swin-V2-L (``swinv2_large_window12_192``), ``swinv2:NAME`` a preset of
                        :data:`~molt.backbones.swin_v2.SWIN_V2_PRESETS` or a timm Swin-V2 name. On the audio side
                        it reads the spectrogram as an image with its own weights
                        (:class:`~molt.backbones.shared.SpectrogramSwin`).
``timm``      visual    any timm image model, ``timm:vit_large_patch14_dinov2.lvd142m``
                        (:class:`~molt.backbones.timm_image.TimmBackbone`)
``htsat``     audio     our HTS-AT; ``htsat`` alone is the AudioSet model, ``htsat:NAME`` a preset of
                        :data:`~molt.backbones.htsat.HTSAT_PRESETS`
``shared``    audio     the visual Swin-V2 itself reads the spectrogram image (LAVisH's shared setting)
``hf``        audio     any Hugging Face ``transformers`` audio encoder, ``hf:MIT/ast-finetuned-audioset-10-10-0.4593``
                        or ``hf:/path/to/a/saved/folder`` (:class:`~molt.backbones.hf_audio.HFAudioBackbone`,
                        needs the ``hf`` extra)
============  ========  =======================================================================================

A config's ``backbone`` is either the name of a pair (:data:`BACKBONE_PAIRS`: ``tiny``, ``tiny-shared``, ``paper``,
``shared``) or a mapping ``{visual: NAME, audio: NAME}``, optionally with ``visual_options`` / ``audio_options``
(constructor overrides: timm's ``img_size``, an HTS-AT field, a Hugging Face ``revision``).

Weights (``visual_weights`` / ``audio_weights``): a local file (or, for ``timm:``, a snapshot folder), or
``random``. Left unset, ``timm:`` and ``hf:`` backbones load their published weights (from the local Hugging Face
cache when it has them, which is how they work offline) and our own classes start from random weights, as they
always have.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .base import TapBackbone, error_gist

__all__ = ["BACKBONE_PAIRS", "BACKBONE_KINDS", "RANDOM_WEIGHTS", "BackboneName", "parse_backbone_name",
           "backbone_sides", "with_backbone_sides", "backbone_options", "backbone_label", "build_backbone",
           "build_backbones", "describe_backbone_names", "WEIGHTS_SOURCES", "weights_source"]

#: pair name -> (visual backbone, audio backbone)
BACKBONE_PAIRS: dict[str, tuple[str, str]] = {
    "tiny": ("swinv2:swinv2_tiny_test", "htsat:htsat_tiny"),
    "tiny-shared": ("swinv2:swinv2_tiny_test", "shared"),
    "paper": ("swinv2", "htsat"),
    "shared": ("swinv2", "shared"),
}
#: kind -> (sides it can be on, model used when the name has none)
BACKBONE_KINDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "swinv2": (("visual", "audio"), "swinv2_large_window12_192"),
    "timm": (("visual",), None),
    "htsat": (("audio",), "htsat_audioset"),
    "shared": (("audio",), ""),
    "hf": (("audio",), None),
}
#: the weights value that asks for a randomly initialised backbone
RANDOM_WEIGHTS = "random"
_MAPPING_KEYS = ("visual", "audio", "visual_options", "audio_options")


@dataclass(frozen=True)
class BackboneName:
    """A parsed backbone name: ``kind`` (a key of :data:`BACKBONE_KINDS`) and ``model`` (``""`` for ``shared``)."""

    kind: str
    model: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}" if self.model else self.kind


def parse_backbone_name(text: Any, side: str) -> BackboneName:
    """Parse ``KIND`` or ``KIND:MODEL`` for the ``visual`` or ``audio`` side.

    Raises:
        ValueError: not a string, an unknown kind, a kind that does not fit ``side``, or a kind that needs a model.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"backbone {side}: expected a name such as {_examples(side)}, got {text!r}")
    kind, _, model = text.strip().partition(":")
    kind = kind.lower()
    if kind not in BACKBONE_KINDS:
        raise ValueError(f"unknown {side} backbone {text!r}: name it {_examples(side)}")
    sides, default = BACKBONE_KINDS[kind]
    if side not in sides:
        raise ValueError(f"{kind} backbones are {' or '.join(sides)} encoders, not {side} ones: name the {side} "
                         f"backbone {_examples(side)}")
    if kind == "shared" and model:
        raise ValueError(f"audio backbone {text!r}: 'shared' takes no model, it reads the visual Swin-V2")
    model = model.strip() or default
    if model is None:
        raise ValueError(f"{side} backbone {text!r} names no model: write {kind}:MODEL, e.g. "
                         f"{_examples(side).split(', ')[0 if kind == 'timm' else -1]}")
    return BackboneName(kind, model)


def _examples(side: str) -> str:
    if side == "visual":
        return "swinv2, swinv2:swinv2_tiny_test or timm:vit_large_patch14_dinov2.lvd142m"
    return "htsat, htsat:htsat_tiny, shared or hf:MIT/ast-finetuned-audioset-10-10-0.4593"


def backbone_sides(backbone: str | Mapping[str, Any]) -> tuple[BackboneName, BackboneName]:
    """The (visual, audio) names of a config's ``backbone``: a pair name or ``{visual: ..., audio: ...}``.

    Raises:
        ValueError: an unknown pair, a mapping with unknown keys or without both sides, a bad name, or ``shared``
            audio without a Swin-V2 to share.
    """
    if isinstance(backbone, str):
        if backbone not in BACKBONE_PAIRS:
            raise ValueError(f"unknown backbone {backbone!r}: name a pair ({', '.join(BACKBONE_PAIRS)}) or give "
                             f"both sides, e.g. backbone: {{visual: timm:vit_small_patch14_dinov2.lvd142m, audio: "
                             f"htsat}} (see molt backbones)")
        visual, audio = BACKBONE_PAIRS[backbone]
    elif isinstance(backbone, Mapping):
        unknown = sorted(set(backbone) - set(_MAPPING_KEYS))
        if unknown:
            raise ValueError(f"backbone: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(_MAPPING_KEYS)}")
        missing = [side for side in ("visual", "audio") if not backbone.get(side)]
        if missing:
            raise ValueError(f"backbone: name the {' and the '.join(missing)} backbone too (e.g. visual: swinv2, "
                             f"audio: htsat); a mapping gives both sides")
        for key in ("visual_options", "audio_options"):
            if backbone.get(key) is not None and not isinstance(backbone[key], Mapping):
                raise ValueError(f"backbone: {key} must be a mapping of constructor options, got "
                                 f"{backbone[key]!r}")
        visual, audio = backbone["visual"], backbone["audio"]
    else:
        raise ValueError(f"backbone: expected a pair name or a mapping {{visual: ..., audio: ...}}, got {backbone!r}")
    names = parse_backbone_name(visual, "visual"), parse_backbone_name(audio, "audio")
    if names[1].kind == "shared" and names[0].kind != "swinv2":
        raise ValueError(f"audio backbone 'shared' reads the spectrogram with the visual Swin-V2, but the visual "
                         f"backbone is {names[0]}; name an audio backbone (htsat, hf:...) or use visual swinv2")
    return names


def with_backbone_sides(backbone: str | Mapping[str, Any], *, visual: str | None = None,
                        audio: str | None = None) -> str | dict[str, Any]:
    """``backbone`` with the named side(s) replaced (``--visual-backbone`` / ``--audio-backbone``); the other side
    and its options are kept."""
    if visual is None and audio is None:
        return backbone
    names = dict(zip(("visual", "audio"), map(str, backbone_sides(backbone))))
    result: dict[str, Any] = {"visual": visual or names["visual"], "audio": audio or names["audio"]}
    for side, replaced in (("visual", visual), ("audio", audio)):
        if replaced is None and backbone_options(backbone, side):
            result[f"{side}_options"] = backbone_options(backbone, side)
    backbone_sides(result)
    return result


def backbone_options(backbone: str | Mapping[str, Any], side: str) -> dict[str, Any]:
    """The constructor options a config gives one side (``visual_options`` / ``audio_options``)."""
    if isinstance(backbone, Mapping):
        return dict(backbone.get(f"{side}_options") or {})
    return {}


def backbone_label(backbone: str | Mapping[str, Any]) -> str:
    """A short, file-name-safe label of a config's backbones: the pair name, or ``VISUAL+AUDIO`` of the models'
    last name parts (``vit_small_patch14_dinov2.lvd142m+ast-finetuned-audioset-10-10-0.4593``)."""
    if isinstance(backbone, str):
        return backbone
    parts = []
    for name in backbone_sides(backbone):
        model = name.model.rstrip("/\\")
        short = re.split(r"[/\\]", model)[-1] if model else name.kind
        parts.append(re.sub(r"[^A-Za-z0-9._-]+", "-", short))
    return "+".join(parts)


def describe_backbone_names() -> str:
    """What ``molt backbones`` prints: the pairs and how to name any other model."""
    width = max(map(len, BACKBONE_PAIRS))
    lines = ["Named pairs (--backbone NAME, or backbone: NAME in a config):"]
    lines += [f"  {name:<{width}}  visual {visual:<26} audio {audio}" for name, (visual, audio) in
              BACKBONE_PAIRS.items()]
    lines += [
        "",
        "Any other pair (--visual-backbone NAME --audio-backbone NAME, or backbone: {visual: NAME, audio: NAME}):",
        "  visual  swinv2 | swinv2:PRESET_OR_TIMM_SWINV2_NAME | timm:ANY_TIMM_MODEL",
        "  audio   htsat | htsat:PRESET | shared | swinv2[:NAME] | hf:HUB_ID | hf:/path/to/saved/folder",
        "",
        "Weights (--visual-weights / --audio-weights): a local file (timm: also a snapshot folder) or 'random'.",
        "Unset, timm: and hf: models load their published weights, from the local Hugging Face cache when it has",
        "them (set HF_HUB_OFFLINE=1 to stay offline); swinv2 and htsat start from random weights.",
        "hf: needs the hf extra: pip install 'molt-av[hf]'.",
    ]
    return "\n".join(lines)


def _check_weights(flag: str, weights: str | os.PathLike | None, *, folders: bool) -> None:
    if weights is None or weights == RANDOM_WEIGHTS:
        return
    path = os.fspath(weights)
    if os.path.isfile(path) or (folders and os.path.isdir(path)):
        return
    kind = "weights file or folder" if folders else "weights file"
    raise FileNotFoundError(f"{flag}: {kind} not found: {path} (or pass {RANDOM_WEIGHTS} for random weights)")


def _refuse_shared_weights(weights: str | os.PathLike | None) -> None:
    if weights is not None:
        raise ValueError("the shared audio branch shares the visual Swin-V2 and its weights: drop --audio-weights "
                         "(or name an audio backbone of its own, e.g. htsat)")


def build_backbone(name: BackboneName | str, side: str, *, weights: str | os.PathLike | None = None,
                   load_weights: bool = True, options: Mapping[str, Any] | None = None,
                   visual: TapBackbone | None = None, audio_clip_seconds: int | None = None,
                   trust_checkpoint: bool = False, shared_audio_frontend: str = "htsat") -> TapBackbone:
    """One frozen backbone from its name (see the module docstring).

    Args:
        name: a :class:`BackboneName` or its text.
        side: ``visual`` or ``audio``.
        weights: a local file (``timm:`` also a folder), :data:`RANDOM_WEIGHTS`, or ``None`` (``timm:`` / ``hf:``:
            published weights; our classes: random).
        load_weights: ``False`` when building on the ``meta`` device: no weights are read (``timm:`` and ``hf:``
            backbones still report the weights they would read).
        options: constructor overrides.
        visual: the visual backbone, which ``shared`` audio reads.
        audio_clip_seconds: the length HTS-AT tiles each 1-s segment to.
        trust_checkpoint: let an HTS-AT file pickle more than tensors.
        shared_audio_frontend: the spectrogram image of a Swin-V2 audio side (``htsat`` or ``kaldi_fbank``).
    """
    from .htsat import build_htsat
    from .shared import SpectrogramSwin
    from .swin_v2 import SwinV2Backbone

    name = name if isinstance(name, BackboneName) else parse_backbone_name(name, side)
    options = dict(options or {})
    flag = f"--{side}-weights"
    given = None if weights in (None, RANDOM_WEIGHTS) else os.fspath(weights)
    file = given if load_weights else None
    if name.kind == "swinv2":
        swin = SwinV2Backbone(name.model, weights=file, **options)
        return swin if side == "visual" else SpectrogramSwin(swin, frontend=shared_audio_frontend)
    if name.kind == "timm":
        from .timm_image import TimmBackbone

        # on the meta device TimmBackbone reads nothing but still reports the weights (file hash, hub tag)
        return TimmBackbone(name.model, pretrained=weights is None, weights=given, name=str(name), **options)
    if name.kind == "htsat":
        if audio_clip_seconds is not None:
            options.setdefault("clip_seconds", audio_clip_seconds)
        return build_htsat(name.model, weights=file, trust_checkpoint=trust_checkpoint, **options)
    if name.kind == "shared":
        if not isinstance(visual, SwinV2Backbone):
            raise ValueError("audio backbone 'shared' needs the visual Swin-V2 it reads the spectrogram with")
        _refuse_shared_weights(weights)
        return SpectrogramSwin(visual, frontend=shared_audio_frontend)
    if name.kind == "hf":
        from .hf_audio import HFAudioBackbone

        if given is not None:
            raise ValueError(f"{flag}: an hf: backbone reads its weights from its source; name the folder as "
                             f"hf:/path/to/folder, or pass {RANDOM_WEIGHTS}")
        # built on the meta device (load_weights False), it reads no weights but still names the files it would
        return HFAudioBackbone(name.model, name=str(name), random_init=weights == RANDOM_WEIGHTS, **options)
    raise ValueError(f"unknown backbone kind {name.kind!r}")  # parse_backbone_name admits only known kinds


def build_backbones(backbone: str | Mapping[str, Any] = "paper", *,
                    visual_weights: str | os.PathLike | None = None,
                    audio_weights: str | os.PathLike | None = None, load_weights: bool = True,
                    init_seed: int = 0, audio_clip_seconds: int | None = None, trust_checkpoint: bool = False,
                    shared_audio_frontend: str = "htsat") -> tuple[TapBackbone, TapBackbone]:
    """Frozen ``(visual, audio)`` backbones of a config's ``backbone`` (a pair name or ``{visual:, audio:}``).

    Parameters not loaded from weights are initialised from ``init_seed`` (without touching the global RNG), so
    the random-weight backbones used by tests and the demo are the same in every process: adapters trained on them
    can be evaluated later. ``audio_clip_seconds`` overrides the length HTS-AT tiles each 1-s segment to (the peers
    use 10 s for AVE / AVQA and 5 s for AVS); other audio backbones have their own window. See
    :func:`build_backbone` for the rest.
    """
    visual_name, audio_name = backbone_sides(backbone)
    if audio_name.kind == "shared":
        _refuse_shared_weights(audio_weights)
    if load_weights:  # before minutes of building a large backbone
        _check_weights("--visual-weights", visual_weights, folders=visual_name.kind == "timm")
        if audio_name.kind != "hf":   # an hf: backbone's weights come with its source (build_backbone says so)
            _check_weights("--audio-weights", audio_weights, folders=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        with _options_named("visual", visual_name, backbone_options(backbone, "visual")):
            visual = build_backbone(visual_name, "visual", weights=visual_weights, load_weights=load_weights,
                                    options=backbone_options(backbone, "visual"))
        with _options_named("audio", audio_name, backbone_options(backbone, "audio")):
            audio = build_backbone(audio_name, "audio", weights=audio_weights, load_weights=load_weights,
                                   options=backbone_options(backbone, "audio"), visual=visual,
                                   audio_clip_seconds=audio_clip_seconds, trust_checkpoint=trust_checkpoint,
                                   shared_audio_frontend=shared_audio_frontend)
    return visual, audio


@contextlib.contextmanager
def _options_named(side: str, name: BackboneName, options: Mapping[str, Any]) -> Iterator[None]:
    """Turn what a constructor raises on a bad ``backbone: {side}_options`` value (a negative size, a word for a
    number) into one ``ValueError`` naming the key; without options, errors pass unchanged."""
    try:
        yield
    except (TypeError, RuntimeError, AssertionError) as error:
        if not options:
            raise
        raise ValueError(f"backbone: {side}_options {dict(options)} cannot build {name} ({type(error).__name__}: "
                         f"{error_gist(error)}); correct or remove them in the config") from None


#: where to get the weights files the model cards name, by file name
WEIGHTS_SOURCES = {
    "HTSAT_AudioSet_Saved_1.ckpt": "the AudioSet checkpoint linked from the HTS-AT repository's README "
                                   "(RetroCirce/HTS-Audio-Transformer)",
}


def weights_source(weights: str | os.PathLike | None, tag: str | None = None) -> str:
    """Where to get a backbone weights file (:data:`WEIGHTS_SOURCES`, else the timm tag's published weights)."""
    if weights in (None, "random"):
        if weights is None and tag:
            return f"the published weights of timm's {tag} (downloaded by timm)"
        return "no file: randomly initialised (a test or demo model)"
    name = Path(os.fspath(weights)).name
    if name in WEIGHTS_SOURCES:
        return WEIGHTS_SOURCES[name]
    return f"{name} from whoever trained these adapters (ask the repository's owner; the SHA-256 identifies it)"
