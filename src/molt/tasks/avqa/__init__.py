"""MUSIC-AVQA: audio-visual question answering (Li et al., CVPR 2022), accuracy per question family and type.

Part of molt-av (Apache-2.0). ``reader`` reads the release's question files and vocabularies, ``prepared``
decodes the videos into memory-mapped arrays (one media row per video, one item per question), ``synthetic``
writes procedural music scenes with templated questions, ``head`` is the question-grounded answer head and its
loss, ``metrics`` the per-type accuracy, majority baseline and Tab.-1 table, ``figures`` the pictures.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports
from ..spec import (BenchHooks, PaperFigures, TaskOption, TaskParts, TaskSpec, register_official_heads,
                    register_task)
from .reader import DUPLICATE_POLICIES, ORIGINAL_TEST_SPLIT, QUESTION_TYPES, SPLIT_FILES

if TYPE_CHECKING:
    from .figures import plot_attention, plot_type_accuracy
    from .head import AVQAHead, AVQAHeadConfig, negative_partners
    from .metrics import avqa_metrics, format_avqa_table, majority_baseline, metrics_from_counts
    from .predict import predict_video
    from .prepared import PreparedAVQA, ensure_prepared, prepare_avqa
    from .reader import MusicAVQA
    from .synthetic import generate_avqa

__all__ = ["SPEC", "AVQAHead", "AVQAHeadConfig", "MusicAVQA", "PreparedAVQA", "ensure_prepared", "prepare_avqa",
           "generate_avqa", "avqa_metrics", "metrics_from_counts", "majority_baseline", "format_avqa_table",
           "plot_type_accuracy", "plot_attention", "negative_partners", "predict_video", "QUESTION_TYPES"]

__getattr__ = lazy_exports(__name__, {
    ".figures": ("plot_attention", "plot_type_accuracy"), ".head": ("AVQAHead", "AVQAHeadConfig", "negative_partners"),
    ".metrics": ("avqa_metrics", "format_avqa_table", "majority_baseline", "metrics_from_counts"),
    ".predict": ("predict_video",), ".prepared": ("PreparedAVQA", "ensure_prepared", "prepare_avqa"),
    ".reader": ("MusicAVQA",), ".synthetic": ("generate_avqa",)})

# MUSIC-AVQA: about 93 question words (as the peers build the vocabulary) and 42 answers
_PAPER_VOCABULARY = ["<pad>", "<unk>"] + [f"w{i}" for i in range(91)]


def _parts() -> TaskParts:
    from .figures import plot_type_accuracy
    from .head import AVQAHead, bench_targets
    from .official import OFFICIAL_AVQA_HEADS
    from .predict import predict_video
    from .prepared import PreparedAVQA, ensure_prepared
    from .reader import MusicAVQA
    from .synthetic import generate_avqa

    register_official_heads("avqa", OFFICIAL_AVQA_HEADS)
    return TaskParts(reader=MusicAVQA, prepare=ensure_prepared, dataset=PreparedAVQA, synthesize=generate_avqa,
                     head=AVQAHead, figures=plot_type_accuracy, predictor=predict_video,
                     bench=BenchHooks(bench_targets))


SPEC = register_task(TaskSpec(
    name="avqa", description="audio-visual question answering (MUSIC-AVQA): one of the answers per question",
    dataset_name="MUSIC-AVQA", parts=_parts, monitor="accuracy",
    metric_columns=(("AQ", "AQ/accuracy"), ("VQ", "VQ/accuracy"), ("AVQ", "AVQ/accuracy"), ("Avg.", "accuracy")),
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
    predict_options=(TaskOption("question", "the question to answer about the video, e.g. \"Is the violin playing "
                                "longer than the piano?\"", required=True),)))
