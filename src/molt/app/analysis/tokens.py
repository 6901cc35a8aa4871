"""What the layer-wise tokens do: token similarity maps and fusion weights of a trained MoLT model (Fig. 5).

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT), Rho et al. (Sec. 4.3.4, Fig. 5).

For a trained MoLT model, the cosine-similarity map between all ``L * K`` layer-wise latent tokens of a modality
(``extras["layer_tokens"]``) and the Token Fusion Module's weight of each layer (``extras["fusion_weights"]``):
without TOR the tokens tend to collapse (map close to 1 everywhere) and the weights to be uniform.

Entry point: :func:`analyze_tokens` (``molt analyze tokens``); :func:`token_diagnostics` and
:func:`plot_token_diagnostics` are public too.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .layers import sample_clips, save_figure

__all__ = ["analyze_tokens", "plot_token_diagnostics", "token_diagnostics"]


def token_diagnostics(extras: Mapping[str, Any], *, segment: int | None = None) -> dict[str, dict[str, Any]]:
    """Fig.-5 numbers of one clip from MoLT's ``MethodOutput.extras`` (batch = the clip's ``T`` segments).

    For each modality: ``similarity`` ``(L*K, L*K)``, the cosine similarity between all layer-wise tokens
    (``extras["layer_tokens"][m]`` ``(T, L, K, D)`` flattened layer-major: token ``l * K + k``), and
    ``fusion_weights`` ``(L,)``; both averaged over the ``T`` segments (``segment=None``) or taken at one
    segment. Also ``mean_offdiag_similarity`` (mean over the ``N(N-1)`` off-diagonal entries),
    ``weights_entropy`` (entropy of the fusion weights divided by ``log L``: 1 = uniform) and, when present,
    ``router_weights`` ``(L, E)``.
    """
    from ...methods.orthogonality import token_cosine_similarity

    if "layer_tokens" not in extras or "fusion_weights" not in extras:
        raise ValueError("token diagnostics need MoLT outputs with extras 'layer_tokens' and 'fusion_weights' "
                         f"(got extras {sorted(extras)}); is this a MoLT checkpoint?")
    diagnostics: dict[str, dict[str, Any]] = {}
    router = extras.get("router_weights")
    for modality, tokens in extras["layer_tokens"].items():
        if tokens.ndim != 4:
            raise ValueError(f"expected {modality} layer tokens (T, L, K, D), got {tuple(tokens.shape)}")
        steps, layers, per_layer = tokens.shape[:3]
        if segment is not None and not 0 <= segment < steps:
            raise ValueError(f"segment {segment} out of range for a clip of {steps} segments")
        chosen = slice(None) if segment is None else slice(segment, segment + 1)
        similarity = token_cosine_similarity(tokens[chosen].flatten(1, 2).float()).mean(dim=0)
        weights = extras["fusion_weights"][modality][chosen].float().mean(dim=0)
        size = similarity.shape[0]
        offdiag = (similarity.sum() - similarity.diagonal().sum()) / max(size * (size - 1), 1)
        entropy = float(-(weights.clamp_min(1e-12) * weights.clamp_min(1e-12).log()).sum())
        entry = {"num_layers": layers, "num_tokens": per_layer, "similarity": similarity.tolist(),
                 "fusion_weights": weights.tolist(), "mean_offdiag_similarity": float(offdiag),
                 "weights_entropy": entropy / math.log(layers) if layers > 1 else 1.0}
        if router is not None:
            entry["router_weights"] = router[chosen].float().mean(dim=0).tolist()
        diagnostics[modality] = entry
    return diagnostics


def plot_token_diagnostics(diagnostics: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *,
                           blocks: Mapping[str, Sequence[int]] | None = None, title: str | None = None) -> Path:
    """Fig.-5-style PNG: one row per modality, (a) the token cosine-similarity map, (b) the fusion weight of each
    layer (dashed line: uniform ``1/L``). ``blocks`` names the backbone block of each layer (axis labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modalities = list(diagnostics)
    if not modalities:
        raise ValueError("plot_token_diagnostics needs at least one modality")
    figure = Figure(figsize=(8.2, 3.5 * len(modalities)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(modalities), 2, squeeze=False, width_ratios=(1.25, 1.0))
    for row, modality in enumerate(modalities):
        entry = diagnostics[modality]
        layers, per_layer = entry["num_layers"], entry["num_tokens"]
        if blocks and blocks.get(modality):
            names = [f"b{b}" for b in blocks[modality]]
        else:
            names = [f"layer {index}" for index in range(layers)]
        similarity = np.asarray(entry["similarity"])
        axis = axes[row][0]
        image = axis.imshow(similarity, vmin=-1.0, vmax=1.0, cmap="RdBu_r", interpolation="nearest")
        centres = [layer * per_layer + (per_layer - 1) / 2 for layer in range(layers)]
        for layer in range(1, layers):
            axis.axhline(layer * per_layer - 0.5, color="k", lw=0.8)
            axis.axvline(layer * per_layer - 0.5, color="k", lw=0.8)
        axis.set_xticks(centres, names)
        axis.set_yticks(centres, names)
        axis.set_title(f"(a) {modality} tokens: cosine similarity\nmean off-diagonal "
                       f"{entry['mean_offdiag_similarity']:.2f} ({layers} layers x {per_layer} tokens)", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.85)
        axis = axes[row][1]
        weights = np.asarray(entry["fusion_weights"])
        axis.bar(np.arange(layers), weights, color="C1" if modality == "audio" else "C0")
        axis.axhline(1.0 / layers, color="0.3", ls="--", lw=1, label="uniform 1/L")
        for layer, weight in enumerate(weights):
            axis.text(layer, weight, f"{weight:.2f}", ha="center", va="bottom", fontsize=8)
        axis.set_xticks(np.arange(layers), names)
        axis.set_ylim(0, max(1.0, float(weights.max()) * 1.15))
        axis.set_ylabel("TFM weight")
        axis.set_title(f"(b) {modality} fusion weights\nnormalised entropy {entry['weights_entropy']:.2f} "
                       f"(1 = uniform)", fontsize=9)
        axis.legend(fontsize=8, loc="upper right")
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path, dpi=120)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "clip"


@torch.no_grad()
def analyze_tokens(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, *, out_dir: str | os.PathLike,
                   split: str = "test", clips: int = 4, segment: int | None = None,
                   task: str | None = None, trust_checkpoint: bool = False, visual_weights: str | None = None,
                   audio_weights: str | None = None) -> dict[str, Any]:
    """Token similarity maps and TFM weights of a trained MoLT model on a few clips (paper Fig. 5).

    Each clip's ``T`` segments go through the model as one batch; per modality, :func:`token_diagnostics` gives the
    ``L*K x L*K`` cosine-similarity map of the layer-wise tokens and the fusion weight of each layer, averaged over
    the segments (``segment=None``) or at one segment. Writes ``tokens_{i}_{video_id}.png`` per clip
    (:func:`plot_token_diagnostics`) and ``tokens.json`` with every number plus a per-modality summary over the
    clips (mean off-diagonal similarity, mean weights, mean normalised entropy).

    Args:
        checkpoint: an adapter directory or a training checkpoint (see :func:`molt.app.evaluate.load_trained`).
        data_dir: a dataset root or prepared directory of the task the model was trained for.
        out_dir: output directory.
        split: which split to sample clips from.
        clips: number of distinct videos, evenly spread over the split.
        segment: one segment index instead of the mean over segments.
        task: when given, the task the checkpoint must have been trained for.
        trust_checkpoint: as for :func:`~molt.app.analysis.layers.analyze_layers`.
        visual_weights, audio_weights: the encoders' weights, instead of what the checkpoint records (see
            :func:`molt.app.evaluate.load_trained`).

    Returns:
        the JSON payload, with the written files under ``"files"``.
    """
    from ...backbones.audio_frontend import check_sample_rate
    from ...tasks import get_task
    from ..evaluate import load_trained

    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    model, config, _ = load_trained(checkpoint, task=task, trust_checkpoint=trust_checkpoint,
                                    visual_weights=visual_weights, audio_weights=audio_weights)
    model.eval()
    spec = get_task(config.task)
    prepared = spec.open_prepared(data_dir, config.setting, show_progress=False)
    dataset = spec.dataset(prepared, split)
    if model.audio is not None:
        check_sample_rate(dataset.sample_rate, model.audio.sample_rate, source=prepared)
    features = model.features
    blocks = {modality: list(getattr(features, f"{modality}_blocks", [])) for modality in ("visual", "audio")}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, files = [], []
    for position, row in enumerate(sample_clips(dataset, clips)):
        item = dataset[row]
        output = features(item["frames"], item["audio"].float())
        diagnostics = token_diagnostics(output.extras, segment=segment)
        video_id = item["video_id"]
        category = dataset.rows[row].get("category")
        where = "mean over segments" if segment is None else f"segment {segment}"
        png = plot_token_diagnostics(
            diagnostics, out / f"tokens_{position:02d}_{_safe_name(video_id)}.png", blocks=blocks,
            title=f"{video_id}" + (f" ({category})" if category else "") + f", {split} split, {where}")
        files.append(str(png))
        records.append({"video_id": video_id, "category": category, "modalities": diagnostics})
    summary = {}
    for modality in records[0]["modalities"]:
        entries = [r["modalities"][modality] for r in records]
        summary[modality] = {
            "blocks": blocks.get(modality, []),
            "mean_offdiag_similarity": float(np.mean([e["mean_offdiag_similarity"] for e in entries])),
            "mean_fusion_weights": np.mean([e["fusion_weights"] for e in entries], axis=0).tolist(),
            "mean_weights_entropy": float(np.mean([e["weights_entropy"] for e in entries])),
        }
    payload = {"checkpoint": os.fspath(checkpoint), "task": config.task, "data": os.fspath(prepared), "split": split,
               "segment": segment, "method": config.method,
               "tor_weight": getattr(getattr(features, "config", None), "tor_weight", None),
               "summary": summary, "clips": records}
    json_path = out / "tokens.json"
    files.append(str(json_path))
    payload["files"] = files
    json_path.write_text(json.dumps(payload, indent=1))
    return payload
