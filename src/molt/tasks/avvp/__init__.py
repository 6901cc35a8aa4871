"""LLP: audio-visual video parsing (Tian, Li and Xu, ECCV 2020): heard and seen events per second from
video-level labels.

Part of molt-av (Apache-2.0). ``reader`` reads the release's csv files, ``prepared`` decodes the videos into
memory-mapped arrays, ``synthetic`` writes procedural clips with separate audio and visual events, ``head`` is the
HAN-style MMIL head and its loss, ``metrics`` the official segment- and event-level F1, ``figures`` the parsing
picture.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports
from ..spec import PaperFigures, TaskParts, TaskSpec, register_task

if TYPE_CHECKING:
    from .figures import plot_parsing
    from .head import AVVP_NUM_SEGMENTS, AVVPHead, AVVPHeadConfig
    from .metrics import avvp_scores, event_level_f1, segment_level_f1
    from .predict import predict_video
    from .prepared import PreparedLLP, ensure_prepared, prepare_llp
    from .reader import LLPAnnotations
    from .synthetic import generate_llp

__all__ = ["SPEC", "AVVPHead", "AVVPHeadConfig", "LLPAnnotations", "PreparedLLP", "ensure_prepared", "prepare_llp",
           "generate_llp", "avvp_scores", "segment_level_f1", "event_level_f1", "plot_parsing", "predict_video",
           "AVVP_NUM_SEGMENTS"]

__getattr__ = lazy_exports(__name__, {
    ".figures": ("plot_parsing",), ".head": ("AVVP_NUM_SEGMENTS", "AVVPHead", "AVVPHeadConfig"),
    ".metrics": ("avvp_scores", "event_level_f1", "segment_level_f1"), ".predict": ("predict_video",),
    ".prepared": ("PreparedLLP", "ensure_prepared", "prepare_llp"), ".reader": ("LLPAnnotations",),
    ".synthetic": ("generate_llp",)})


def _parts() -> TaskParts:
    from .figures import plot_parsing
    from .head import AVVPHead
    from .predict import predict_video
    from .prepared import PreparedLLP, ensure_prepared
    from .reader import LLPAnnotations
    from .synthetic import generate_llp

    return TaskParts(reader=LLPAnnotations, prepare=ensure_prepared, dataset=PreparedLLP, synthesize=generate_llp,
                     head=AVVPHead, figures=plot_parsing, predictor=predict_video)


SPEC = register_task(TaskSpec(
    name="avvp", description="audio-visual video parsing (LLP): audio and visual events per second from "
                             "video-level labels",
    dataset_name="LLP", parts=_parts, monitor="segment_type_av_f1",
    metric_columns=(("Seg. Type@AV", "segment_type_av_f1"), ("Seg. Event@AV", "segment_event_av_f1"),
                    ("Event Type@AV", "event_type_av_f1"), ("Event Event@AV", "event_event_av_f1")),
    presets={"tiny": "avvp_molt_tiny", "paper": "avvp_molt_paper", "shared": "avvp_molt_shared"},
    paper=PaperFigures(task_options={"num_classes": 25})))
