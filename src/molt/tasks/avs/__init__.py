"""AVSBench: audio-visual segmentation (Zhou et al., ECCV 2022), S4 (one sounding object) and MS3 (several).

Part of molt-av (Apache-2.0). ``reader`` reads the release's layout (meta csv, frames, masks, audio), ``prepared``
decodes it into memory-mapped arrays, ``synthetic`` writes procedural clips in the same layout, ``head`` is the
TPAVI + FPN mask decoder and its loss, ``metrics`` the official M_J (mIoU) and M_F, ``figures`` the mask overlays.
"""
from __future__ import annotations

from ..spec import TaskOption, TaskSpec, register_task
from .figures import plot_masks
from .head import AVS_NUM_FRAMES, TPAVI, AVSTask
from .metrics import f_curves, f_measure, f_thresholds, frame_iou, mask_iou
from .predict import predict_video
from .prepared import PreparedAVS, ensure_prepared, prepare_avs
from .reader import SETTINGS, AVSBenchLayout
from .synthetic import generate_avs

__all__ = ["SPEC", "AVSTask", "TPAVI", "AVSBenchLayout", "PreparedAVS", "ensure_prepared", "prepare_avs",
           "generate_avs", "plot_masks", "frame_iou", "mask_iou", "f_thresholds", "f_curves", "f_measure",
           "AVS_NUM_FRAMES", "SETTINGS"]

SPEC = register_task(TaskSpec(
    name="avs", description="audio-visual segmentation (AVSBench S4 / MS3): masks of the sounding objects",
    dataset_name="AVSBench", reader=AVSBenchLayout, prepare=ensure_prepared, dataset=PreparedAVS,
    synthesize=generate_avs, head=AVSTask, monitor="mIoU", metric_columns=(("M_J", "mIoU"), ("M_F", "F_score")),
    figures=plot_masks,
    presets={"tiny": "avs_molt_tiny", "paper": "avs_molt_paper", "shared": "avs_molt_shared"},
    paper_task_options={"mask_size": 224, "setting": "s4"},
    paper_parameters={"paper": (6.3, 339.5), "shared": (8.3, 313.1)},
    settings=tuple(SETTINGS), default_setting="s4", predict=predict_video,
    predict_options=(TaskOption("frames", "instead of --video: a folder of the clip's 5 frames (AVSBench layout)"),
                     TaskOption("audio", "with --frames: the clip's WAV file"),
                     TaskOption("overlay_video", "also write overlay.mp4 (tinted frames with the audio)", ("no", "yes"),
                                "no"))))
