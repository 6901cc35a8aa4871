"""Where to adapt: per-block input/output similarity of frozen backbones (MoLT paper, Sec. 4.3.1, Fig. 4).

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT), Rho et al.

For every transformer block of a frozen backbone, the cosine similarity between the tokens entering the block and
the tokens leaving it. A block whose output is close to its input (similarity near 1) changes the representation
little; the paper calls the first blocks, where the similarity is lowest, *early*, the last two *late* and the rest
*mid*, and adapts only the late blocks.

Definition used here (:func:`layer_similarity`): for block ``b`` with input ``x`` and output ``y`` of the same shape
``(B, N, D)`` (or ``(B, H, W, D)``), the cosine similarity is taken **per token** along the channel axis ``D``,
averaged over the ``N`` tokens of a sample (prefix tokens such as ViT's class token included), then averaged over
the samples; the standard deviation over samples is reported next to it. The input of a block that opens a stage
is the token grid *after* the stage's patch merging, i.e. exactly what the block's attention and MLP receive
(timm Swin-V2 merges at the start of a stage, HTS-AT at the end of the previous one: both are handled because the
values are read with forward hooks on the block modules themselves, see :func:`block_modules`). Any timm model
that exposes its blocks (``model.blocks``, ``model.layers[i].blocks``, ``model.stages[i].blocks``) works, and so
does any :class:`~molt.backbones.timm_image.TimmBackbone` (its blocks come from the model's ``feature_info``).

Entry point: :func:`analyze_layers` (``molt analyze layers``); the building blocks (:func:`block_modules`,
:func:`layer_similarity`, :func:`suggest_split`, :func:`write_layer_csv`, :func:`plot_layer_similarity`,
:func:`sample_clips`) are public too.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.taps import EARLY_BLOCKS, LATE_BLOCKS

__all__ = ["LayerAnalysis", "LayerSimilarity", "LayerSplit", "analyze_layers", "measure_layers", "block_modules",
           "layer_similarity", "plot_layer_similarity", "sample_clips", "save_figure", "suggest_split",
           "write_layer_csv"]

_logger = logging.getLogger(__name__)

_STAGE_COLOURS = {"early": "#f4b183", "mid": "#d9d9d9", "late": "#9dc3e6"}


# ----------------------------------------------------------------------------------------------------------------
# Blocks of a backbone
# ----------------------------------------------------------------------------------------------------------------

def _as_module_list(value: Any) -> list[nn.Module] | None:
    if isinstance(value, (nn.ModuleList, nn.Sequential)) and len(value) > 0:
        return list(value)
    return None


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer block modules of ``model``, in execution order (each maps ``(N, D)`` tokens to ``(N, D)``).

    Supported: a backbone that lists its own blocks (``block_modules()``:
    :class:`~molt.backbones.timm_image.TimmBackbone`, from the timm model's ``feature_info``), the project's
    backbones (:class:`~molt.backbones.SwinV2Backbone` -> its timm model, :class:`~molt.backbones.HTSATBackbone`,
    :class:`~molt.backbones.SpectrogramSwin` -> the shared Swin), and any module laid out like timm models:
    ``model.blocks`` (ViT, DeiT, BEiT, EVA, ...), or ``model.layers[i].blocks`` / ``model.stages[i].blocks`` (Swin
    V1/V2, HTS-AT, and other staged models) flattened across stages.

    Raises:
        ValueError: no such layout was found, or a tap backbone's block count disagrees with ``num_blocks``.
    """
    listed = getattr(model, "block_modules", None)
    if callable(listed):
        return list(listed())
    inner = model
    while True:  # unwrap the project's wrappers: SpectrogramSwin.swin, SwinV2Backbone.model
        swin = getattr(inner, "swin", None)
        timm_model = getattr(inner, "model", None)
        if isinstance(swin, nn.Module) and hasattr(swin, "run_block"):
            inner = swin
        elif isinstance(timm_model, nn.Module) and not _find_blocks(inner):
            inner = timm_model
        else:
            break
    blocks = _find_blocks(inner)
    if not blocks:
        raise ValueError(f"{type(model).__name__} does not expose per-block modules: expected `.blocks`, "
                         f"`.layers[i].blocks` or `.stages[i].blocks` (timm layout); pass the block modules "
                         f"explicitly with `blocks=`")
    expected = getattr(model, "num_blocks", None)
    if isinstance(expected, int) and expected != len(blocks):
        raise ValueError(f"{type(model).__name__} reports {expected} blocks but {len(blocks)} block modules "
                         f"were found")
    return blocks


def _find_blocks(module: nn.Module) -> list[nn.Module]:
    direct = _as_module_list(getattr(module, "blocks", None))
    if direct:
        return direct
    for name in ("layers", "stages"):
        stages = _as_module_list(getattr(module, name, None))
        if not stages:
            continue
        per_stage = [_as_module_list(getattr(stage, "blocks", None)) for stage in stages]
        if all(blocks is not None for blocks in per_stage):
            return [block for blocks in per_stage for block in blocks]
    return []


# ----------------------------------------------------------------------------------------------------------------
# Layer similarity (Fig. 4)
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class LayerSimilarity:
    """Input/output cosine similarity of every block of one backbone.

    Attributes:
        name: backbone name (plot and CSV label).
        similarity: per block, the cosine similarity between the block's input and output tokens (per token
            along the channel axis, mean over tokens, then mean over samples), in ``[-1, 1]``.
        std: per block, standard deviation over samples of the per-sample mean similarity.
        tokens: per block, tokens per sample ``N`` (product of the non-channel axes).
        dims: per block, channel width ``D``.
        stages: per block, stage index (a new stage starts where ``(N, D)`` changes, i.e. after patch merging).
        num_samples: samples averaged over.
    """

    name: str
    similarity: list[float]
    std: list[float]
    tokens: list[int]
    dims: list[int]
    stages: list[int]
    num_samples: int

    @property
    def num_blocks(self) -> int:
        return len(self.similarity)


def _first_tensor(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _run(model: nn.Module, inputs: torch.Tensor) -> None:
    """Run ``model`` over ``inputs`` so that every block module executes once (outputs discarded)."""
    if hasattr(model, "forward_taps") and isinstance(getattr(model, "num_blocks", None), int):
        model.forward_taps(inputs, list(range(model.num_blocks)))  # a tap backbone: runs all its blocks once
    elif hasattr(model, "forward_features"):
        model.forward_features(inputs)
    else:
        model(inputs)


@torch.no_grad()
def layer_similarity(backbone: nn.Module, inputs: torch.Tensor, *, batch_size: int = 16,
                     blocks: Sequence[nn.Module] | None = None, channel_dim: int = -1,
                     name: str | None = None) -> LayerSimilarity:
    """Cosine similarity between the input and output tokens of every block of a frozen ``backbone``.

    Forward hooks on the block modules (:func:`block_modules`, or ``blocks``) read each block's first tensor
    argument and its output; for every token the cosine similarity of the two vectors along ``channel_dim`` is
    computed in float64, averaged over the tokens of the sample, and the per-sample values are averaged over all
    samples (the mean and the standard deviation over samples are returned).

    Args:
        backbone: a :class:`~molt.backbones.TapBackbone` (run with ``forward_taps`` over all its blocks, e.g. a
            :class:`~molt.backbones.timm_image.TimmBackbone`), a timm model (``forward_features``), or any module
            whose call runs its blocks. Its ``preprocess`` method, when it has one, is applied to each batch first.
        inputs: the backbone's raw inputs, ``(S, ...)`` (frames ``(S, 3, H, W)``, waveforms ``(S, R)``, ...).
        batch_size: samples per forward pass.
        blocks: the block modules to hook (default: :func:`block_modules` of ``backbone``).
        channel_dim: channel axis of the block tokens (``-1`` for ``(B, N, D)`` and NHWC layouts; ``1`` for NCHW
            convolutional blocks).
        name: label of the result (default: ``backbone.name`` or the class name).

    Returns:
        a :class:`LayerSimilarity` with one value per block, each in ``[-1, 1]``.

    Raises:
        ValueError: empty inputs, a block whose output shape differs from its input shape, or a block that did
            not run exactly once per forward pass.
    """
    if inputs.shape[0] == 0:
        raise ValueError("layer_similarity needs at least one input sample, got an empty tensor")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    modules = list(blocks) if blocks is not None else block_modules(backbone)
    per_sample: list[list[torch.Tensor]] = [[] for _ in modules]
    shapes: list[tuple[int, int] | None] = [None] * len(modules)

    def make_hook(index: int):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            x = _first_tensor(args, kwargs)
            y = output[0] if isinstance(output, (tuple, list)) else output
            if x is None or not isinstance(y, torch.Tensor) or x.shape != y.shape:
                raise ValueError(f"block {index} ({type(module).__name__}) does not map tokens to tokens of the "
                                 f"same shape: input {None if x is None else tuple(x.shape)}, output "
                                 f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
            cosine = F.cosine_similarity(x.double(), y.double(), dim=channel_dim, eps=1e-12)  # (B, *token axes)
            per_sample[index].append(cosine.reshape(cosine.shape[0], -1).mean(dim=1).clamp(-1.0, 1.0).cpu())
            dim = x.shape[channel_dim]
            shapes[index] = (x[0].numel() // dim, dim)
        return hook

    handles = [module.register_forward_hook(make_hook(i), with_kwargs=True) for i, module in enumerate(modules)]
    preprocess = getattr(backbone, "preprocess", None)
    was_training = backbone.training
    backbone.eval()
    try:
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start:start + batch_size]
            if callable(preprocess):
                batch = preprocess(batch)
            _run(backbone, batch)
            done = start + batch.shape[0]
            counts = [sum(v.shape[0] for v in values) for values in per_sample]
            if any(count != done for count in counts):
                raise ValueError(f"every block must run exactly once per forward pass; after {done} samples the "
                                 f"blocks saw {counts}")
    finally:
        for handle in handles:
            handle.remove()
        backbone.train(was_training)

    values = [torch.cat(v) for v in per_sample]
    similarity = [float(v.mean()) for v in values]
    std = [float(v.std(unbiased=False)) for v in values]
    stages, stage = [], 0
    for index, shape in enumerate(shapes):
        if index > 0 and shape != shapes[index - 1]:
            stage += 1
        stages.append(stage)
    return LayerSimilarity(
        name=name or getattr(backbone, "name", None) or type(backbone).__name__, similarity=similarity, std=std,
        tokens=[s[0] for s in shapes], dims=[s[1] for s in shapes], stages=stages, num_samples=inputs.shape[0])


@dataclass
class LayerSplit:
    """Early / mid / late block indices of one backbone and why they were chosen.

    Attributes:
        early, mid, late: block indices (together: every block, in order).
        reason: how the split was chosen (the numbers behind it for a data-driven split).
    """

    early: list[int]
    mid: list[int]
    late: list[int]
    reason: str

    def stage_of(self, block: int) -> str:
        return "early" if block in self.early else "late" if block in self.late else "mid"

    @property
    def late_selection(self) -> str:
        """The late blocks as a ``blocks_visual`` / ``blocks_audio`` selection string (e.g. ``"22,23"``)."""
        return ",".join(str(b) for b in self.late)

    def describe(self) -> str:
        def span(blocks: list[int]) -> str:
            if not blocks:
                return "none"
            return str(blocks[0]) if len(blocks) == 1 else f"{blocks[0]}-{blocks[-1]}"
        return f"early {span(self.early)}, mid {span(self.mid)}, late {span(self.late)}"

    def to_dict(self) -> dict[str, Any]:
        return {"early": self.early, "mid": self.mid, "late": self.late, "reason": self.reason}


def suggest_split(similarities: LayerSimilarity | Sequence[float], *, early: int | None = None,
                  late: int | None = LATE_BLOCKS, tolerance: float = 0.25, min_gap: float = 0.05) -> LayerSplit:
    """Suggest the early / mid / late blocks from a layer-similarity curve (paper Sec. 4.3.1).

    ``late`` is a count (default 2, the paper's choice: late blocks encode high-level semantics, which a similarity
    curve cannot show). ``early=None`` chooses the early stage from the data:

    1. *body* = the blocks before the late ones; *plateau* = the median similarity of the back half of the body
       (where the curve has settled); *dip* = the lowest similarity in the front half of the body.
    2. If ``plateau - dip < min_gap`` the curve is flat: there is no distinct early stage, and the paper's 4
       blocks (``EARLY_BLOCKS``) are used.
    3. Otherwise early = every block before the first block after the dip whose similarity is back within
       ``tolerance * (plateau - dip)`` of the plateau ("until the curve flattens"): the blocks that change the
       representation most, and the ones before them.

    An integer ``early`` uses that many blocks (the paper: 4). Early is clamped so that at least one mid block
    remains when the backbone has more than ``late + 1`` blocks.

    ``late=None`` (what ``blocks_visual: auto`` uses) reads the late stage off the curve's tail instead: the last
    blocks whose similarity falls more than ``min_gap`` below the median of the middle half of the blocks (the
    blocks at the end that change the representation again, towards the pretraining objective), at least one and
    at most a quarter of the blocks (two for backbones under eight blocks); a tail that stays on the plateau gets
    the paper's 2.

    Args:
        similarities: a :class:`LayerSimilarity` or the per-block values.
        early: number of early blocks, or ``None`` for the data-driven choice.
        late: number of late blocks, or ``None`` for the data-driven choice.
        tolerance: share of the dip-to-plateau gap within which the curve counts as flat.
        min_gap: smallest dip below the plateau that counts as an early stage.
    """
    values = list(similarities.similarity if isinstance(similarities, LayerSimilarity) else similarities)
    num_blocks = len(values)
    if num_blocks == 0:
        raise ValueError("suggest_split needs at least one similarity value")
    if (late is not None and late < 0) or (early is not None and early < 0):
        raise ValueError(f"early and late must be non-negative, got early={early}, late={late}")
    late, late_reason = _late_count(values) if late is None else (min(late, num_blocks), "")
    body = values[:num_blocks - late]
    max_early = max(len(body) - 1, 0)
    if early is not None:
        count = min(early, max_early)
        reason = f"fixed: first {count} block(s) early, last {late} late"
    elif len(body) < 2:
        count = 0
        reason = f"only {len(body)} block(s) before the last {late}: no early stage"
    else:
        half = (len(body) + 1) // 2
        plateau = statistics.median(body[len(body) // 2:])
        dip_index = int(np.argmin(body[:half]))
        dip = body[dip_index]
        gap = plateau - dip
        if gap < min_gap:
            count = min(EARLY_BLOCKS, max_early)
            reason = (f"flat curve (plateau {plateau:.3f}, lowest early value {dip:.3f}, gap {gap:.3f} < "
                      f"{min_gap}): paper default, first {count} block(s) early")
        else:
            threshold = plateau - tolerance * gap
            settled = [i for i in range(dip_index + 1, len(body)) if body[i] >= threshold]
            count = min(max(settled[0] if settled else len(body) - 1, 1), max_early)
            reason = (f"data-driven: similarity dips to {dip:.3f} at block {dip_index} and is back within "
                      f"{tolerance:.0%} of the plateau {plateau:.3f} (>= {threshold:.3f}) at block {count}; "
                      f"last {late} block(s) late")
    return LayerSplit(early=list(range(count)), mid=list(range(count, num_blocks - late)),
                      late=list(range(num_blocks - late, num_blocks)), reason=reason + late_reason)


def _late_count(values: Sequence[float], min_gap: float = 0.05) -> tuple[int, str]:
    """The data-driven late count of :func:`suggest_split` and the reason for it."""
    num_blocks = len(values)
    most = max(LATE_BLOCKS, num_blocks // 4) if num_blocks >= 8 else min(LATE_BLOCKS, num_blocks)
    middle = values[num_blocks // 4:max(num_blocks - num_blocks // 4, num_blocks // 4 + 1)]
    plateau = statistics.median(middle)
    tail = 0
    while tail < min(most, num_blocks) and values[num_blocks - 1 - tail] < plateau - min_gap:
        tail += 1
    if tail == 0:
        return min(LATE_BLOCKS, num_blocks), (f"; late: the tail stays on the plateau {plateau:.3f}, paper default "
                                              f"{min(LATE_BLOCKS, num_blocks)}")
    return tail, f"; late: the last {tail} block(s) fall more than {min_gap} below the plateau {plateau:.3f}"


def write_layer_csv(results: Sequence[LayerSimilarity], path: str | os.PathLike,
                    splits: Sequence[LayerSplit] | None = None) -> Path:
    """Write one row per (backbone, block): ``backbone, block, stage, tokens, dim, similarity, std, num_samples,
    position`` (position = early / mid / late from ``splits``, empty without)."""
    if splits is not None and len(splits) != len(results):
        raise ValueError(f"expected one split per result ({len(results)}), got {len(splits)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["backbone", "block", "stage", "tokens", "dim", "similarity", "std", "num_samples",
                         "position"])
        for k, result in enumerate(results):
            for block in range(result.num_blocks):
                writer.writerow([result.name, block, result.stages[block], result.tokens[block], result.dims[block],
                                 f"{result.similarity[block]:.6f}", f"{result.std[block]:.6f}", result.num_samples,
                                 splits[k].stage_of(block) if splits is not None else ""])
    return path


def plot_layer_similarity(results: Sequence[LayerSimilarity], path: str | os.PathLike,
                          splits: Sequence[LayerSplit] | None = None, titles: Sequence[str] | None = None,
                          suptitle: str | None = None) -> Path:
    """Fig.-4-style PNG: one panel per backbone, block index on x, input/output cosine similarity on y (mean and
    +/- one standard deviation over samples), early / mid / late shaded, stage changes (patch merging) dotted.
    Rendered with matplotlib's Agg canvas (no display, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not results:
        raise ValueError("plot_layer_similarity needs at least one result")
    splits = list(splits) if splits is not None else [suggest_split(r) for r in results]
    figure = Figure(figsize=(4.6 * len(results) + 0.6, 3.9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(results), sharey=True, squeeze=False)[0]
    low = min(min(m - s for m, s in zip(r.similarity, r.std)) for r in results)
    bottom = max(-1.0, min(0.9, math.floor((low - 0.15 * (1.0 - low)) * 20) / 20))
    for k, (axis, result, split) in enumerate(zip(axes, results, splits)):
        x = np.arange(result.num_blocks)
        for stage in ("early", "mid", "late"):
            blocks = getattr(split, stage)
            if blocks:
                axis.axvspan(blocks[0] - 0.5, blocks[-1] + 0.5, color=_STAGE_COLOURS[stage], alpha=0.6, lw=0)
        for block in range(1, result.num_blocks):
            if result.stages[block] != result.stages[block - 1]:
                axis.axvline(block - 0.5, color="0.35", ls=":", lw=0.9)
        mean, std = np.array(result.similarity), np.array(result.std)
        axis.fill_between(x, mean - std, np.minimum(mean + std, 1.0), color="C0", alpha=0.2, lw=0)
        axis.plot(x, mean, "o-", color="C0", ms=4, lw=1.5)
        axis.set_xlim(-0.5, result.num_blocks - 0.5)
        axis.set_ylim(bottom, 1.02)
        step = max(1, math.ceil(result.num_blocks / 12))
        axis.set_xticks(x[::step])
        axis.set_xlabel("block index")
        axis.set_title(titles[k] if titles else f"{result.name} ({result.num_samples} samples)", fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("cos(block input, block output)")
    handles = [Patch(color=_STAGE_COLOURS[s], alpha=0.6, label=s) for s in ("early", "mid", "late")]
    handles.append(axes[0].plot([], [], color="0.35", ls=":", lw=0.9, label="new stage (patch merging)")[0])
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if suptitle:
        figure.suptitle(suptitle, fontsize=11)
    return save_figure(figure, path, dpi=130)


def save_figure(figure: Any, path: str | os.PathLike, *, dpi: int) -> Path:
    """Save a matplotlib figure as ``path`` (its folder created when missing); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


@dataclass
class LayerAnalysis:
    """What :func:`analyze_layers` found and wrote.

    Attributes:
        results: per modality (``"visual"``, ``"audio"``), the :class:`LayerSimilarity`.
        splits: per modality, the suggested :class:`LayerSplit`.
        csv_path, png_path, json_path: the written files.
    """

    results: dict[str, LayerSimilarity]
    splits: dict[str, LayerSplit]
    csv_path: Path
    png_path: Path
    json_path: Path
    seconds: float = 0.0

    def summary(self) -> str:
        """One line per modality: backbone, suggested split, late selection."""
        return "\n".join(f"{modality}: {self.results[modality].name}, {split.describe()} "
                         f"(late blocks {split.late_selection}); {split.reason}"
                         for modality, split in self.splits.items())


def sample_clips(dataset: Any, clips: int) -> list[int]:
    """Row indices of ``clips`` distinct videos, evenly spread over the dataset."""
    first_row: dict[str, int] = {}
    for index, row in enumerate(dataset.rows):
        first_row.setdefault(row["video_id"], index)
    rows = list(first_row.values())
    if not rows:
        raise ValueError(f"{dataset.root}: no clips in split {dataset.split!r}")
    if clips >= len(rows):
        return rows
    return [rows[int(i)] for i in np.linspace(0, len(rows) - 1, clips).round().astype(int)]


def _side_name(text: str, side: str) -> str:
    """A ``--visual-backbone`` / ``--audio-backbone`` name; a bare timm name (visual) or HTS-AT preset (audio), as
    earlier releases took, gets its kind."""
    from ...backbones.registry import BACKBONE_KINDS

    if text.partition(":")[0].lower() in BACKBONE_KINDS:
        return text
    return f"timm:{text}" if side == "visual" else f"htsat:{text}"


def _build_layer_backbones(backbone: str | Mapping[str, Any], visual: str | None, audio: str | None, *,
                           visual_weights: str | os.PathLike | None, audio_weights: str | os.PathLike | None,
                           trust_checkpoint: bool = False) -> dict[str, nn.Module]:
    """The backbones to measure: ``backbone`` (a pair name or mapping) with ``visual`` / ``audio`` replacing a
    side (``"none"`` skips it), seeded as training seeds them."""
    from ...backbones.registry import backbone_options, backbone_sides, build_backbone, with_backbone_sides

    skip = {"none", ""}
    visual_skip = visual is not None and visual.lower() in skip
    audio_skip = audio is not None and audio.lower() in skip
    if visual_skip and audio_skip:
        raise ValueError("both backbones are disabled (visual='none', audio='none'): nothing to analyse")
    pair = with_backbone_sides(backbone, visual=None if visual is None or visual_skip else _side_name(visual, "visual"),
                               audio=None if audio is None or audio_skip else _side_name(audio, "audio"))
    visual_name, audio_name = backbone_sides(pair)
    backbones: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = None
        if not visual_skip or (not audio_skip and audio_name.kind == "shared"):
            built = build_backbone(visual_name, "visual", weights=visual_weights,
                                   options=backbone_options(pair, "visual"))
        if not visual_skip:
            backbones["visual"] = built
        if not audio_skip:
            backbones["audio"] = build_backbone(audio_name, "audio", weights=audio_weights, visual=built,
                                                options=backbone_options(pair, "audio"),
                                                trust_checkpoint=trust_checkpoint)
    return backbones


def analyze_layers(data_dir: str | os.PathLike, *, out_dir: str | os.PathLike,
                   backbone: str | Mapping[str, Any] = "tiny", visual: str | None = None, audio: str | None = None,
                   visual_weights: str | os.PathLike | None = None, audio_weights: str | os.PathLike | None = None,
                   clips: int = 16, segments_per_clip: int | None = None,
                   split: str | None = None, batch_size: int = 16, early: int | None = None,
                   late: int = LATE_BLOCKS, task: str = "ave", setting: str | None = None,
                   trust_checkpoint: bool = False) -> LayerAnalysis:
    """Per-block input/output similarity of both frozen backbones on a sample of a task's data (paper Fig. 4).

    Frames go through the visual backbone (after its ``preprocess``), the 1-s audio segments through the audio
    backbone; every block's similarity is measured with :func:`layer_similarity` and a split is suggested with
    :func:`suggest_split`.

    Args:
        data_dir: a dataset root of ``task``'s layout (prepared on first use) or a prepared directory.
        out_dir: where ``layer_similarity.csv``, ``layer_similarity.png`` and ``layer_similarity.json`` go.
        backbone: a named pair (``tiny``, ``tiny-shared``, ``paper``, ``shared``) or a mapping
            ``{visual: NAME, audio: NAME}`` (see :mod:`molt.backbones.registry`).
        visual, audio: a backbone name replacing that side of the pair (``timm:vit_base_patch16_224``,
            ``hf:/models/ast``, ...; a bare timm name or HTS-AT preset is taken as one), or ``"none"`` to skip it.
        visual_weights, audio_weights: the weights of each side, as :func:`~molt.backbones.build_backbones` takes
            them (a file, a folder for ``timm:``, ``random``; unset: ``timm:`` / ``hf:`` published weights).
        clips: number of distinct videos sampled evenly from the set.
        segments_per_clip: 1-s segments per clip (evenly spaced); ``None`` for all of them.
        split: ``train``, ``val``, ``test`` or ``None`` (all rows).
        batch_size: samples per forward pass.
        early, late: passed to :func:`suggest_split` (``early=None``: data-driven).
        task, setting: the registered task whose data is read (any task: only frames and audio are used).
        trust_checkpoint: let an audio weights file pickle more than tensors (see
            :func:`molt.backbones.build_backbones`).
    """
    from ...backbones.audio_frontend import check_sample_rate
    from ...tasks import get_task

    start = time.time()
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if segments_per_clip is not None and segments_per_clip < 1:
        raise ValueError(f"segments_per_clip must be >= 1 or None, got {segments_per_clip}")
    spec = get_task(task)
    prepared = spec.open_prepared(data_dir, setting, show_progress=False)
    dataset = spec.dataset(prepared, split)
    backbones = _build_layer_backbones(backbone, visual, audio, visual_weights=visual_weights,
                                       audio_weights=audio_weights, trust_checkpoint=trust_checkpoint)
    if "audio" in backbones:
        check_sample_rate(dataset.sample_rate, getattr(backbones["audio"], "sample_rate", dataset.sample_rate),
                          source=prepared)
    return measure_layers(backbones, dataset, out_dir=out_dir, clips=clips, segments_per_clip=segments_per_clip,
                          batch_size=batch_size, early=early, late=late, started=start,
                          about={"task": task, "data": os.fspath(prepared), "split": split, "backbone": backbone,
                                 "visual": visual, "audio": audio})


def measure_layers(backbones: Mapping[str, nn.Module], dataset: Any, *, out_dir: str | os.PathLike,
                   clips: int = 16, segments_per_clip: int | None = None, batch_size: int = 16,
                   early: int | None = None, late: int | None = LATE_BLOCKS, started: float | None = None,
                   about: Mapping[str, Any] | None = None) -> LayerAnalysis:
    """The measurement of :func:`analyze_layers` for backbones at hand (``{"visual": ..., "audio": ...}``, either
    may be missing) on ``clips`` clips of a task's ``dataset``; writes ``layer_similarity.{csv,png,json}`` into
    ``out_dir`` (the JSON with ``about``). ``late=None`` reads the late stage off the curves (``blocks: auto``)."""
    start = time.time() if started is None else started
    rows = sample_clips(dataset, clips)
    num_segments = dataset.num_segments
    count = num_segments if segments_per_clip is None else min(segments_per_clip, num_segments)
    segments = np.linspace(0, num_segments - 1, count).round().astype(int).tolist()
    frames, audio_segments = [], []
    for row in rows:
        item = dataset[row]
        frames.append(item["frames"][segments])
        audio_segments.append(item["audio"][segments])
    inputs = {"visual": torch.cat(frames), "audio": torch.cat(audio_segments)}

    results: dict[str, LayerSimilarity] = {}
    splits: dict[str, LayerSplit] = {}
    for modality, module in backbones.items():
        began = time.time()
        results[modality] = layer_similarity(module, inputs[modality], batch_size=batch_size)
        splits[modality] = suggest_split(results[modality], early=early, late=late)
        result = results[modality]
        _logger.info("%s (%s): %d blocks on %d samples in %.1f s; %s", modality, result.name, result.num_blocks,
                     result.num_samples, time.time() - began, splits[modality].describe())

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ordered = list(results)
    weights_note = "random weights" if all(getattr(b, "weights_hash", lambda: None)() is None and
                                           not getattr(b, "tag", "") for b in backbones.values()) else "pretrained"
    csv_path = write_layer_csv([results[m] for m in ordered], out / "layer_similarity.csv",
                               [splits[m] for m in ordered])
    png_path = plot_layer_similarity(
        [results[m] for m in ordered], out / "layer_similarity.png", [splits[m] for m in ordered],
        titles=[f"{m}: {results[m].name}" for m in ordered],
        suptitle=f"Block input/output cosine similarity ({len(rows)} clips x {count} segments, {weights_note})")
    json_path = out / "layer_similarity.json"
    payload = {
        **dict(about or {}), "weights": weights_note, "clips": [dataset.rows[r]["video_id"] for r in rows],
        "segments": segments,
        "backbones": {m: {"name": results[m].name, "similarity": results[m].similarity, "std": results[m].std,
                          "tokens": results[m].tokens, "dims": results[m].dims, "stages": results[m].stages,
                          "num_samples": results[m].num_samples, "split": splits[m].to_dict()} for m in ordered},
    }
    json_path.write_text(json.dumps(payload, indent=1, default=str))
    return LayerAnalysis(results=results, splits=splits, csv_path=csv_path, png_path=png_path, json_path=json_path,
                         seconds=round(time.time() - start, 1))
