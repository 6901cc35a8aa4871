"""AVE: audio-visual event localization (Tian et al., ECCV 2018): a category or background for every second.

Part of molt-av (Apache-2.0). ``reader`` reads the release's annotation files, ``prepared`` decodes its mp4 files
into memory-mapped arrays, ``synthetic`` writes procedural clips in the same layout, ``head`` is the event head
and its loss, ``metrics`` the baselines, ``figures`` the timelines picture and ``predict`` runs a trained model
on one video. The metric is the official segment accuracy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports
from ..spec import (BenchHooks, PaperFigures, TaskParts, TaskSpec, register_official_heads,
                    register_task)

if TYPE_CHECKING:
    from .figures import plot_timelines
    from .head import AVE_NUM_SEGMENTS, AVEHead, AVEHeadConfig
    from .metrics import majority_accuracy, majority_class
    from .predict import predict_video
    from .prepared import PreparedAVE, ensure_prepared, prepare_ave
    from .reader import AVEAnnotations
    from .synthetic import generate_ave

__all__ = ["SPEC", "AVEHead", "AVEHeadConfig", "AVEAnnotations", "PreparedAVE", "ensure_prepared", "prepare_ave",
           "generate_ave", "majority_accuracy", "majority_class", "plot_timelines", "predict_video", "AVE_NUM_SEGMENTS"]

__getattr__ = lazy_exports(__name__, {
    ".figures": ("plot_timelines",), ".head": ("AVE_NUM_SEGMENTS", "AVEHead", "AVEHeadConfig"),
    ".metrics": ("majority_accuracy", "majority_class"), ".predict": ("predict_video",),
    ".prepared": ("PreparedAVE", "ensure_prepared", "prepare_ave"), ".reader": ("AVEAnnotations",),
    ".synthetic": ("generate_ave",)})


def _parts() -> TaskParts:
    from .figures import plot_timelines
    from .head import AVEHead, bench_targets
    from .official import OFFICIAL_AVE_HEADS
    from .predict import predict_video
    from .prepared import PreparedAVE, ensure_prepared
    from .reader import AVEAnnotations
    from .synthetic import generate_ave

    register_official_heads("ave", OFFICIAL_AVE_HEADS)
    return TaskParts(reader=AVEAnnotations, prepare=ensure_prepared, dataset=PreparedAVE, synthesize=generate_ave,
                     head=AVEHead, figures=plot_timelines, predictor=predict_video, bench=BenchHooks(bench_targets))


SPEC = register_task(TaskSpec(
    name="ave", description="audio-visual event localization (AVE): a class or background per second",
    dataset_name="AVE", parts=_parts, monitor="accuracy", metric_columns=(("Acc.", "accuracy"),),
    presets={"tiny": "ave_molt_tiny", "paper": "ave_molt_paper", "shared": "ave_molt_shared"},
    paper=PaperFigures(
        task_options={"num_classes": 28},
        parameters={"paper": (6.2, 290.3), "shared": (3.0, 248.5)},
        # MoLT's Tab. 3 (AVE): trainable %, total params (M), GPU training memory (GB)
        efficiency={("paper", "molt"): (6.2, 290.3, 0.7), ("paper", "mettle"): (23.0, 338.0, 1.5),
                    ("paper", "lavish"): (30.6, 374.9, 11.9), ("paper", "dgsct"): (43.6, 461.3, 13.1),
                    ("paper", "avmoe"): (34.9, 404.0, 12.1), ("shared", "molt"): (3.0, 248.5, 0.6),
                    ("shared", "mettle"): (37.2, 364.4, 1.8), ("shared", "lavish"): (2.7, 238.8, 15.4),
                    ("shared", "avmoe"): (39.4, 374.4, 16.8)})))
