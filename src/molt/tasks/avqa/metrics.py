"""MUSIC-AVQA metrics: accuracy per question family and type, the majority baseline and the Tab.-1 table.

Part of molt-av (Apache-2.0).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from .reader import FAMILIES, FAMILY_ABBREVIATIONS, SUBTYPES

__all__ = ["avqa_metrics", "metrics_from_counts", "cell_counts", "majority_baseline", "format_avqa_table"]

_NUM_CELLS = len(FAMILIES) * len(SUBTYPES)


def _cells(family: torch.Tensor, subtype: torch.Tensor) -> torch.Tensor:
    family, subtype = torch.as_tensor(family).long().reshape(-1), torch.as_tensor(subtype).long().reshape(-1)
    if family.numel() and (int(family.min()) < 0 or int(family.max()) >= len(FAMILIES)
                           or int(subtype.min()) < 0 or int(subtype.max()) >= len(SUBTYPES)):
        raise ValueError(f"family indices must lie in [0, {len(FAMILIES)}) and subtype indices in "
                         f"[0, {len(SUBTYPES)}) (see molt.tasks.avqa.reader.FAMILIES / SUBTYPES)")
    return family * len(SUBTYPES) + subtype


def cell_counts(correct: torch.Tensor, family: torch.Tensor,
                subtype: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct and total counts per (family, sub-type), both float64 ``(F, S)``."""
    cells = _cells(family, subtype)
    correct = torch.as_tensor(correct).reshape(-1).to(torch.float64)
    if correct.numel() != cells.numel():
        raise ValueError(f"got {correct.numel()} answers but {cells.numel()} family / subtype labels")
    shape = (len(FAMILIES), len(SUBTYPES))
    hits = torch.bincount(cells, weights=correct, minlength=_NUM_CELLS).to(torch.float64).reshape(shape)
    totals = torch.bincount(cells, minlength=_NUM_CELLS).to(torch.float64).reshape(shape)
    return hits, totals


def metrics_from_counts(correct: torch.Tensor, total: torch.Tensor) -> dict[str, float]:
    """Accuracies from correct / total counts per (family, sub-type), ``(3, 5)`` each (see the module docstring).

    ``accuracy`` is ``nan`` when nothing was counted; families and sub-types without questions are left out.
    """
    correct, total = torch.as_tensor(correct, dtype=torch.float64), torch.as_tensor(total, dtype=torch.float64)
    all_total = float(total.sum())
    metrics = {"accuracy": float(correct.sum()) / all_total if all_total else float("nan")}
    for f, family in enumerate(FAMILIES):
        abbreviation = FAMILY_ABBREVIATIONS[family]
        if float(total[f].sum()):
            metrics[f"{abbreviation}/accuracy"] = float(correct[f].sum() / total[f].sum())
        for s, subtype in enumerate(SUBTYPES):
            if float(total[f, s]):
                metrics[f"{abbreviation}/{subtype}/accuracy"] = float(correct[f, s] / total[f, s])
    return metrics


def avqa_metrics(predictions: Any, answers: Any, family: Any, subtype: Any) -> dict[str, float]:
    """Accuracy overall, per family and per sub-type of predicted answer indices against the true ones (``(N,)``
    each; ``family`` / ``subtype`` index :data:`FAMILIES` / :data:`SUBTYPES`)."""
    predictions, answers = torch.as_tensor(predictions).reshape(-1), torch.as_tensor(answers).reshape(-1)
    if predictions.shape != answers.shape:
        raise ValueError(f"got {predictions.numel()} predictions for {answers.numel()} answers")
    return metrics_from_counts(*cell_counts(predictions == answers, family, subtype))


def majority_baseline(train: Mapping[str, Any], evaluation: Mapping[str, Any]) -> dict[str, float]:
    """Metrics of answering every question with the most frequent training answer of its (family, sub-type).

    Args:
        train, evaluation: dicts with ``answer``, ``family`` and ``subtype`` index tensors ``(N,)``, as
            :meth:`molt.tasks.avqa.prepared.PreparedAVQA.labels` gives. A type unseen in training is answered with
            the overall most frequent training answer. Ties go to the lowest answer index.
    """
    answers = torch.as_tensor(train["answer"]).long().reshape(-1)
    cells = _cells(train["family"], train["subtype"])
    if answers.numel() == 0:
        raise ValueError("majority_baseline needs at least one training question")
    valid = answers >= 0
    overall = int(torch.bincount(answers[valid]).argmax())
    majority = torch.full((_NUM_CELLS,), overall, dtype=torch.long)
    for cell in cells.unique().tolist():
        chosen = answers[(cells == cell) & valid]
        if chosen.numel():
            majority[cell] = int(torch.bincount(chosen).argmax())
    predictions = majority[_cells(evaluation["family"], evaluation["subtype"])]
    return avqa_metrics(predictions, evaluation["answer"], evaluation["family"], evaluation["subtype"])



# ----------------------------------------------------------------------------------------------------------------
# reports

TABLE_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Audio", ("Counting", "Comparative")),
    ("Visual", ("Counting", "Location")),
    ("Audio-Visual", ("Existential", "Counting", "Location", "Comparative", "Temporal")),
)
TYPE_SHORT_NAMES = {"Counting": "Count", "Comparative": "Comp", "Existential": "Exist", "Location": "Loc",
                    "Temporal": "Temp"}


def format_avqa_table(metrics: Mapping[str, Any], *, name: str = "MoLT") -> str:
    """Accuracies (in %) as a text table shaped like the paper's Tab. 1: the AQ, VQ and AVQ averages and the overall
    average, preceded within each family by its sub-types (the columns of the MUSIC-AVQA paper).

    Args:
        metrics: one result (keys of :meth:`AVQAHead.compute_metrics`) or several, as ``{row name: metrics}``.
        name: the row name of a single result.

    Missing figures print as ``-``.
    """
    rows = dict(metrics) if metrics and all(isinstance(v, Mapping) for v in metrics.values()) else {name: metrics}
    header_top, header, keys = ["Method"], [""], []
    for family, subtypes in TABLE_COLUMNS:
        abbreviation = FAMILY_ABBREVIATIONS[family]
        header_top.append(f"{family} ({abbreviation})")
        header += [TYPE_SHORT_NAMES[s] for s in subtypes] + [abbreviation]
        keys += [f"{abbreviation}/{s}/accuracy" for s in subtypes] + [f"{abbreviation}/accuracy"]
    header.append("Avg.")
    keys.append("accuracy")
    width = max(6, *(len(h) for h in header))
    first = max(len("Method"), *(len(str(r)) for r in rows))
    spans = [len(subtypes) + 1 for _, subtypes in TABLE_COLUMNS]

    def cell(value: Any) -> str:
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return "-".rjust(width)
        return f"{100.0 * value:.1f}".rjust(width)

    groups = [title.center(span * (width + 1) - 1) for title, span in zip(header_top[1:], spans)]
    lines = [" " * first + " | " + " | ".join(groups) + " | " + " " * width,
             "Method".ljust(first) + " | " + " | ".join(
                 " ".join(h.rjust(width) for h in header[1 + sum(spans[:i]):1 + sum(spans[:i + 1])])
                 for i in range(len(spans))) + " | " + header[-1].rjust(width)]
    lines.append("-" * len(lines[1]))
    for row_name, values in rows.items():
        cells = [cell(values.get(key)) for key in keys]
        parts, start = [], 0
        for span in spans:
            parts.append(" ".join(cells[start:start + span]))
            start += span
        lines.append(str(row_name).ljust(first) + " | " + " | ".join(parts) + " | " + cells[-1])
    return "\n".join(lines)
