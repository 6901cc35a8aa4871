"""AVSBench: audio-visual segmentation (Zhou et al., ECCV 2022), S4 (one sounding object) and MS3 (several).

Part of molt-av (Apache-2.0). ``reader`` reads the release's layout (meta csv, frames, masks, audio), ``prepared``
decodes it into memory-mapped arrays, ``synthetic`` writes procedural clips in the same layout, ``head`` is the
TPAVI + FPN mask decoder and its loss, ``official`` the peers' own decoders
(``head: official``), ``metrics`` the official M_J (mIoU) and M_F, ``figures`` the mask overlays.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports
from ..spec import (BenchHooks, PaperFigures, TaskOption, TaskParts, TaskSpec, register_official_heads,
                    register_task)
from .reader import SETTINGS

if TYPE_CHECKING:
    from .figures import plot_masks
    from .head import AVS_NUM_FRAMES, TPAVI, AVSHead, AVSHeadConfig
    from .metrics import f_curves, f_measure, f_thresholds, frame_iou, mask_iou
    from .predict import predict_video
    from .prepared import PreparedAVS, ensure_prepared, prepare_avs
    from .reader import AVSBenchLayout
    from .synthetic import generate_avs

__all__ = ["SPEC", "AVSHead", "AVSHeadConfig", "TPAVI", "AVSBenchLayout", "PreparedAVS", "ensure_prepared",
           "prepare_avs", "generate_avs", "plot_masks", "frame_iou", "mask_iou", "f_thresholds", "f_curves",
           "f_measure", "AVS_NUM_FRAMES", "SETTINGS", "predict_video"]

__getattr__ = lazy_exports(__name__, {
    ".figures": ("plot_masks",), ".head": ("AVS_NUM_FRAMES", "TPAVI", "AVSHead", "AVSHeadConfig"),
    ".metrics": ("f_curves", "f_measure", "f_thresholds", "frame_iou", "mask_iou"), ".predict": ("predict_video",),
    ".prepared": ("PreparedAVS", "ensure_prepared", "prepare_avs"), ".reader": ("AVSBenchLayout",),
    ".synthetic": ("generate_avs",)})


def _parts() -> TaskParts:
    from .figures import plot_masks
    from .head import AVS_NUM_FRAMES, AVSHead, bench_targets
    from .official import OFFICIAL_AVS_HEADS
    from .predict import predict_video
    from .prepared import PreparedAVS, ensure_prepared
    from .reader import AVSBenchLayout
    from .synthetic import generate_avs

    register_official_heads("avs", OFFICIAL_AVS_HEADS)
    return TaskParts(reader=AVSBenchLayout, prepare=ensure_prepared, dataset=PreparedAVS, synthesize=generate_avs,
                     head=AVSHead, figures=plot_masks, predictor=predict_video,
                     bench=BenchHooks(bench_targets, segments=AVS_NUM_FRAMES))


SPEC = register_task(TaskSpec(
    name="avs", description="audio-visual segmentation (AVSBench S4 / MS3): masks of the sounding objects",
    dataset_name="AVSBench", parts=_parts, monitor="mIoU", metric_columns=(("M_J", "mIoU"), ("M_F", "F_score")),
    presets={"tiny": "avs_molt_tiny", "paper": "avs_molt_paper", "shared": "avs_molt_shared"},
    paper=PaperFigures(
        task_options={"mask_size": 224, "setting": "s4"},
        parameters={"paper": (6.3, 339.5), "shared": (8.3, 313.1)},
        # MoLT's Tab. 2 (AVSBench, one set of efficiency columns for S4 and MS3): trainable %, total M, memory GB
        efficiency={("paper", "molt"): (6.3, 339.5, 3.7), ("paper", "mettle"): (21.6, 291.7, 2.9),
                    ("paper", "lavish"): (47.6, 389.7, None), ("paper", "dgsct"): (61.5, 594.8, 9.0),
                    ("paper", "avmoe"): (54.4, 501.2, 9.5), ("shared", "molt"): (8.3, 313.1, 3.6),
                    ("shared", "mettle"): (11.1, 257.2, 2.7), ("shared", "lavish"): (14.0, 266.4, 5.9)}),
    settings=tuple(SETTINGS), default_setting="s4",
    predict_options=(TaskOption("frames", "instead of --video: a folder of the clip's 5 frames (AVSBench layout)"),
                     TaskOption("audio", "with --frames: the clip's WAV file"),
                     TaskOption("overlay_video", "also write overlay.mp4 (tinted frames with the audio)",
                                switch=True))))
