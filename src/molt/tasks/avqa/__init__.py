"""MUSIC-AVQA: audio-visual question answering (Li et al., CVPR 2022), accuracy per question family and type.

Part of molt-av (Apache-2.0). ``reader`` reads the release's question files and vocabularies, ``prepared``
decodes the videos into memory-mapped arrays (one media row per video, one item per question), ``synthetic``
writes procedural music scenes with templated questions, ``head`` is the question-grounded answer head and its
loss, ``metrics`` the per-type accuracy, majority baseline and Tab.-1 table, ``figures`` the pictures.
"""
from __future__ import annotations

from typing import Any

import torch

from ..spec import BenchHooks, PaperFigures, TaskOption, TaskSpec, register_task
from .figures import plot_attention, plot_type_accuracy
from .head import AVQAHeadConfig, AVQAHead, negative_partners
from .metrics import avqa_metrics, format_avqa_table, majority_baseline, metrics_from_counts
from .predict import predict_video
from .prepared import PreparedAVQA, ensure_prepared, prepare_avqa
from .reader import DUPLICATE_POLICIES, ORIGINAL_TEST_SPLIT, QUESTION_TYPES, SPLIT_FILES, MusicAVQA
from .synthetic import generate_avqa

__all__ = ["SPEC", "AVQAHead", "AVQAHeadConfig", "MusicAVQA", "PreparedAVQA", "ensure_prepared", "prepare_avqa",
           "generate_avqa", "avqa_metrics", "metrics_from_counts", "majority_baseline", "format_avqa_table",
           "plot_type_accuracy", "plot_attention", "negative_partners", "predict_video", "QUESTION_TYPES"]

# MUSIC-AVQA: about 93 question words (as the peers build the vocabulary) and 42 answers
_PAPER_VOCABULARY = ["<pad>", "<unk>"] + [f"w{i}" for i in range(91)]


def bench_targets(batch_clips: int, num_segments: int, task_options: dict[str, Any],
                  generator: torch.Generator) -> dict[str, Any]:
    """Random questions of 14 words ``(B, 14)`` from the vocabulary and answers ``(B,)`` for one benchmark step;
    one video per clip (so the audio-visual match loss pairs clips of different videos)."""
    vocabulary, answers = len(task_options["question_vocab"]), len(task_options["answers"])
    return {"question": torch.randint(2, vocabulary, (batch_clips, 14), generator=generator),
            "question_length": torch.full((batch_clips,), 14),
            "answer": torch.randint(0, answers, (batch_clips,), generator=generator),
            "video_id": [f"bench{i}" for i in range(batch_clips)]}


SPEC = register_task(TaskSpec(
    name="avqa", description="audio-visual question answering (MUSIC-AVQA): one of the answers per question",
    dataset_name="MUSIC-AVQA", reader=MusicAVQA, prepare=ensure_prepared, dataset=PreparedAVQA,
    synthesize=generate_avqa, head=AVQAHead, monitor="accuracy",
    metric_columns=(("AQ", "AQ/accuracy"), ("VQ", "VQ/accuracy"), ("AVQ", "AVQ/accuracy"), ("Avg.", "accuracy")),
    figures=plot_type_accuracy,
    presets={"tiny": "avqa_molt_tiny", "paper": "avqa_molt_paper", "shared": "avqa_molt_shared"},
    paper=PaperFigures(
        task_options={"question_vocab": _PAPER_VOCABULARY, "answers": [f"a{i}" for i in range(42)]},
        parameters={"paper": (25.9, 441.4), "shared": (19.5, 366.2)},
        # MoLT's Tab. 1 (MUSIC-AVQA): trainable %, total M, memory GB
        efficiency={("paper", "molt"): (25.9, 441.4, 2.0), ("paper", "mettle"): (29.4, 452.2, 3.1),
                    ("paper", "lavish"): (28.7, 367.4, None), ("paper", "dgsct"): (50.0, 520.2, 11.3),
                    ("paper", "avmoe"): (42.7, 456.6, 11.4), ("shared", "molt"): (19.5, 366.2, 1.7),
                    ("shared", "lavish"): (8.4, 249.8, 10.8)}),
    # the corrected json_update file (default) or the first release's, which LAVisH and DG-SCT report on
    test_variants={"corrected": "test", "original": ORIGINAL_TEST_SPLIT},
    splits=(*SPLIT_FILES, ORIGINAL_TEST_SPLIT),
    prepare_options=(TaskOption("duplicates", "question ids repeated within a question file: keep the first record "
                                "of each, keep all, or refuse the file", DUPLICATE_POLICIES, "first"),),
    predictor=predict_video, bench=BenchHooks(bench_targets),
    predict_options=(TaskOption("question", "the question to answer about the video, e.g. \"Is the violin playing "
                                "longer than the piano?\"", required=True),)))
