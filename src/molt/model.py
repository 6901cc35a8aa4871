"""The full audio-visual model: frozen backbones -> taps -> method (MoLT, ...) -> task head.

Plain PyTorch. The trainer (``molt.app.train``) wraps it; evaluation and prediction use it directly. A trained model is
saved PEFT style with :meth:`AudioVisualModel.save_pretrained` (an ``adapter_model.safetensors`` of the trainable
tensors next to an ``adapter_config.json`` that rebuilds the model) and rebuilt with
:meth:`AudioVisualModel.from_pretrained`.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbones import RANDOM_WEIGHTS, build_backbones
from . import checkpoints
from .config import ExperimentConfig
from .methods import MethodOutput, build_method, get_method
from .tasks import TaskHead, get_task
from .tasks.base import batch_to

__all__ = ["AudioVisualModel", "ModelOutput", "build_model", "build_task_head", "TAP_KEYS",
           "refuse_inblock_without_sublayers", "build_config_backbones", "resolve_device"]

TAP_KEYS = ("visual_taps", "audio_taps", "visual_stages")


def resolve_device(accelerator: str | None = "auto") -> torch.device:
    """The torch device of an ``--accelerator`` choice: ``auto`` (or ``None``) a GPU when one is visible, else
    the CPU; ``gpu`` / ``cuda``, ``mps``, ``cpu``.

    Raises:
        ValueError: a GPU (or Apple's MPS) was asked for and none is visible, naming the fix.
    """
    choice = (accelerator or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--accelerator {accelerator}: no CUDA GPU is visible on this machine "
                             f"(torch.cuda.is_available() is False); use --accelerator cpu (or auto)")
        return torch.device("cuda")
    if choice == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--accelerator {accelerator}: Apple's MPS is not available on this machine; use "
                             f"--accelerator cpu (or auto)")
        return torch.device("mps")
    if choice == "cpu":
        return torch.device("cpu")
    raise ValueError(f"--accelerator {accelerator!r}: choose auto, cpu, gpu, cuda or mps")


def _flatten_clips(taps: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    """Cached taps come per clip ``(B, T, N, D)``; the method reads ``(B*T, N, D)``."""
    if taps is None:
        return None
    return [tap.flatten(0, 1) if tap.ndim == 4 else tap for tap in taps]


@dataclass
class ModelOutput:
    predictions: dict[str, torch.Tensor]
    method: MethodOutput


class AudioVisualModel(nn.Module):
    """Frozen backbones + trainable method (``features``, a :class:`~molt.methods.base.MethodModel`) + task head.

    Batches are dicts with ``frames`` uint8 ``(B, T, 3, H, W)`` and ``audio`` float ``(B, T, S)`` (one entry per
    1-s segment), or with precomputed ``visual_taps`` / ``audio_taps`` (and ``visual_stages`` for a head that reads
    them) lists of ``(B, T, N_l, D_l)`` or ``(B*T, N_l, D_l)`` tensors, e.g. from a feature cache.
    """

    def __init__(self, *, features: nn.Module, task: TaskHead, config: ExperimentConfig | None = None,
                 task_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.features = features
        self.task = task
        # what rebuilds this model (save_pretrained writes both; plain data, not modules)
        self.experiment_config = config
        self.task_options = dict(task_options or {})

    @property
    def input_device(self) -> torch.device | None:
        """Where batches go: the device of the head's (else the method's) parameters, never ``meta`` (a model
        trained from a feature cache keeps its backbones there); ``None`` when nothing has real storage."""
        for parameter in itertools.chain(self.task.parameters(), self.features.parameters()):
            if parameter.device.type != "meta":
                return parameter.device
        return None

    @property
    def visual(self) -> nn.Module | None:
        return self.features.visual

    @property
    def audio(self) -> nn.Module | None:
        return self.features.audio

    @property
    def method(self) -> nn.Module:
        return self.features.method

    @property
    def stage_blocks(self) -> list[int]:
        """Visual blocks whose outputs the task head reads as multi-scale features (empty for most tasks)."""
        if not self.task.needs_visual_stages:
            return []
        if self.visual is None:
            raise ValueError(f"task {self.task.name!r} reads visual stage features but the model has no visual "
                             f"backbone")
        return list(self.visual.stage_end_blocks)

    def compute_inputs(self, batch: dict[str, Any]) -> dict[str, list[torch.Tensor] | None]:
        """What the method and head need from the frozen backbones, flattened to ``B*T`` rows:
        ``visual_taps``, ``audio_taps`` (lists of ``(B*T, N_l, D_l)``) and ``visual_stages`` (or ``None``).

        Batches read from a feature cache carry these lists already, as ``(B, T, N_l, D_l)`` tensors.
        """
        if any(key in batch for key in TAP_KEYS):
            return {key: _flatten_clips(batch.get(key)) for key in TAP_KEYS}
        frames, audio = batch["frames"], batch["audio"]
        if frames.ndim != 5 or audio.ndim != 3 or frames.shape[:2] != audio.shape[:2]:
            raise ValueError(f"expected frames (B, T, 3, H, W) and audio (B, T, S) with the same B and T, "
                             f"got {tuple(frames.shape)} and {tuple(audio.shape)}")
        return self.features.compute_inputs(frames.flatten(0, 1), audio.flatten(0, 1).float(),
                                            stage_blocks=self.stage_blocks)

    def compute_taps(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """What the method reads for a batch of clips, flattened to ``B*T`` rows: the taps of the selected blocks
        (for an in-block method, its adapted final-block tokens)."""
        inputs = self.compute_inputs(batch)
        return inputs["visual_taps"], inputs["audio_taps"]

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """The model on ``batch`` (its tensors are moved to the device of the trainable parts first, so a batch read
        on the CPU runs on a model moved to a GPU)."""
        device = self.input_device
        if device is not None:
            batch = batch_to(batch, device)
        inputs = self.compute_inputs(batch)
        method_output = self.features.forward_from_taps(inputs["visual_taps"], inputs["audio_taps"])
        stages = inputs["visual_stages"]
        if stages is not None:
            if getattr(self.task, "normed_last_stage", False) and self.visual is not None:
                stages = [*stages[:-1], self.visual.final_norm(stages[-1])]
            inject = getattr(self.method, "inject_stages", None)  # e.g. Mettle's Meta-Token Injection
            batch = {**batch, "visual_stages": inject(stages, method_output) if callable(inject) else stages}
        predictions = self.task(method_output.visual, method_output.audio, batch)
        return ModelOutput(predictions=predictions, method=method_output)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trainable tensors (method + head): what checkpoints and adapter files hold."""
        return checkpoints.adapter_state_dict(self)

    def save_pretrained(self, directory: str | os.PathLike, *, results: dict[str, Any] | None = None) -> Path:
        """Write the trainable tensors (``adapter_model.safetensors``) and what rebuilds the model
        (``adapter_config.json``: method config, experiment config, task options, backbones) into ``directory``
        (see :func:`molt.checkpoints.save_pretrained`), with a model card (``README.md``, :mod:`molt.card`) that
        shows ``results`` (a run's ``result.json``) when given."""
        from .card import write_model_card

        saved = checkpoints.save_pretrained(self, directory, self.experiment_config, self.task_options)
        write_model_card(saved, results=results)
        return saved

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, revision: str | None = None,
                        visual_weights: str | os.PathLike | None = None,
                        audio_weights: str | os.PathLike | None = None, backbones_on_meta: bool = False,
                        trust_checkpoint: bool = False) -> AudioVisualModel:
        """Rebuild a model saved with :meth:`save_pretrained` (frozen backbones from the weights files its config
        names, or ``visual_weights`` / ``audio_weights``) and load its trainable tensors; adapter files of an older
        format are read too (see :func:`molt.checkpoints.pretrained_config` and :data:`molt.checkpoints.KEY_MAPS`).
        ``directory`` is a folder or a Hugging Face repository id (``org/name``, ``org/name@revision``, or
        ``revision``), see :func:`molt.hub.resolve_pretrained`. The weights files the adapters record are opened only
        inside the current directory or when their SHA-256 is the recorded one (see
        :func:`molt.checkpoints.confine_weights`).

        Raises:
            FileNotFoundError: ``directory`` or one of its two files is missing, or a backbone weights file.
            ValueError: a damaged file, adapters made for another model (every difference listed), or a repository
                that cannot be had (:class:`molt.hub.HubError`).
        """
        from .hub import resolve_pretrained, with_backbone_weights

        directory = resolve_pretrained(directory, revision=revision)
        config, task_options = checkpoints.pretrained_config(
            directory, visual_weights=None if visual_weights is None else os.fspath(visual_weights),
            audio_weights=None if audio_weights is None else os.fspath(audio_weights))
        config = with_backbone_weights(config, directory)
        model = build_model(config, task_options, backbones_on_meta=backbones_on_meta,
                            trust_checkpoint=trust_checkpoint)
        checkpoints.load_adapters(model, directory)
        return model


def build_task_head(config: ExperimentConfig, method: nn.Module, visual: nn.Module | None,
                    task_options: dict[str, Any]) -> TaskHead:
    """The task head for ``method``'s fused tokens: the config's ``head`` (reading the method's modalities unless it
    sets its own), what the backbone decides (the widths of the stage features a dense head reads) and what the data
    decides (``task_options``, e.g. ``num_classes``).

    An in-block method built with ``head: official`` (its config) gets the peer's own head for the task
    (:meth:`~molt.tasks.spec.TaskSpec.official_head`), reading the widths of its final tokens; the method pools
    those of the head's ``pooled_modalities``."""
    spec = get_task(config.task)
    head = config.head
    if "modalities" not in head.set_fields():
        head = head.replace(modalities=method.config.modalities)
    if getattr(method.config, "head", "common") == "official":
        official = spec.official_head(config.method, shared=not method.audio_after_block)
        method.pooled_modalities = tuple(official.pooled_modalities)
        dims = method.final_dims
        if official.needs_visual_stages and visual is not None:
            task_options = {**task_options, "stage_dims": [visual.block_dims[i] for i in visual.stage_end_blocks]}
        return official(head, visual_dim=dims["visual"], audio_dim=dims["audio"], **task_options)
    arguments: dict[str, Any] = {"dim": method.output_dim}
    if spec.head.needs_visual_stages and visual is not None:
        arguments["stage_dims"] = [visual.block_dims[i] for i in visual.stage_end_blocks]
    return spec.build_head(head, **arguments, **task_options)


def refuse_inblock_without_sublayers(method: str, *backbones: nn.Module | None) -> None:
    """An in-block method (LAVisH, DG-SCT, AVMoE) needs each backbone's blocks split into their residual sub-layers;
    refuse, in one line naming the backbone, one that does not expose them."""
    if get_method(method).reads_taps:
        return
    for backbone in backbones:
        if backbone is not None and not getattr(backbone, "has_sublayers", True):
            raise ValueError(f"{method} adapters run inside the backbone blocks, but {backbone.name} does not expose "
                             f"its blocks' attention and MLP sub-layers; use a tap-reading method (molt, mettle) "
                             f"or a backbone with them (swinv2, htsat, timm ViTs, hf AST / Whisper)")


def build_config_backbones(config: ExperimentConfig, *, backbones_on_meta: bool = False,
                           trust_checkpoint: bool = False) -> tuple[nn.Module, nn.Module]:
    """The frozen ``(visual, audio)`` backbones of ``config`` (see :func:`build_model` for the arguments)."""
    if backbones_on_meta:
        if not get_method(config.method).reads_taps:
            raise ValueError(f"{config.method} adapters run inside the backbone blocks, so {config.method} cannot "
                             f"train from a feature cache; drop --features or use a tap-reading method (molt, mettle)")
        with torch.device("meta"):
            visual, audio = build_backbones(config.backbone, visual_weights=config.visual_weights,
                                            audio_weights=config.audio_weights, load_weights=False,
                                            audio_clip_seconds=config.audio_clip_seconds,
                                            shared_audio_frontend=config.shared_audio_frontend)
        # what the adapters record as the backbones' weights (weights_hash), though none were read
        for backbone, weights in ((visual, config.visual_weights), (audio, config.audio_weights)):
            if weights not in (None, RANDOM_WEIGHTS) and getattr(backbone, "weights_path", None) is None:
                backbone.weights_path = os.fspath(weights)
    else:
        visual, audio = build_backbones(config.backbone, visual_weights=config.visual_weights,
                                        audio_weights=config.audio_weights,
                                        audio_clip_seconds=config.audio_clip_seconds,
                                        trust_checkpoint=trust_checkpoint,
                                        shared_audio_frontend=config.shared_audio_frontend)
    return visual, audio


def build_model(config: ExperimentConfig, task_options: dict[str, Any], *, backbones_on_meta: bool = False,
                trust_checkpoint: bool = False,
                backbones: tuple[nn.Module, nn.Module] | None = None) -> AudioVisualModel:
    """Build backbones, method and head from an experiment config.

    ``task_options`` holds what the data decides for the head (e.g. ``num_classes`` for AVE).
    ``backbones_on_meta=True`` builds the frozen backbones on PyTorch's ``meta`` device (shapes only: no memory,
    no weights read) for training from a feature cache, where batches carry the taps; they still report the
    weights files of the config (``weights_hash``) so adapter files record what the cache was extracted with.
    ``trust_checkpoint`` lets the audio weights file pickle more than tensors (``--trust-checkpoint``).
    ``backbones`` are the config's backbones, already built (:func:`build_config_backbones`).
    ``config.backbone_dtype`` other than float32 stores and runs the frozen backbones in that dtype
    (:meth:`~molt.backbones.base.TapBackbone.set_compute_dtype`); adapters and head stay float32.
    """
    if backbones is None:
        visual, audio = build_config_backbones(config, backbones_on_meta=backbones_on_meta,
                                               trust_checkpoint=trust_checkpoint)
    else:
        visual, audio = backbones
    refuse_inblock_without_sublayers(config.method, visual, audio)
    if config.backbone_dtype != "float32":
        if not get_method(config.method).reads_taps:
            raise ValueError(f"backbone_dtype {config.backbone_dtype}: {config.method} adapters run inside the "
                             f"backbone blocks in float32; use backbone_dtype float32 (or --precision bf16-mixed) "
                             f"with {config.method}, or a tap-reading method (molt, mettle)")
        for backbone in {id(b): b for b in (visual, audio) if b is not None}.values():
            backbone.set_compute_dtype(config.backbone_dtype)
    spec = get_method(config.method)
    method, visual_blocks, audio_blocks = build_method(spec, config.method_config, visual, audio)
    features = spec.wrapper(visual=visual, audio=audio, method=method, visual_blocks=visual_blocks,
                            audio_blocks=audio_blocks)
    task = build_task_head(config, method, visual, task_options)
    return AudioVisualModel(features=features, task=task, config=config, task_options=task_options)
