"""Clip lengths as the real releases have them: MUSIC-AVQA clips of any length from 10 s up (about 60 s, some
shorter), AVE and LLP clips of 10 s that are sometimes a few frames short. Clips are written with PyAV's encoder."""
import json

import numpy as np
import torch

from molt.data.media import write_clip
from molt.tasks.avqa.prepared import PreparedAVQA, prepare_avqa, segment_seconds
from molt.tasks.ave.prepared import PreparedAVE, prepare_ave
from molt.tasks.avvp.prepared import prepare_llp

FPS, RATE = 4, 16000


def _write(path, seconds: float) -> None:
    """A clip whose frame brightness encodes the second it is in (10 + 5 * second) and with a steady tone."""
    count = int(round(seconds * FPS))
    brightness = (10 + 5 * (np.arange(count) // FPS)).astype(np.uint8)
    frames = np.broadcast_to(brightness[:, None, None, None], (count, 16, 16, 3)).copy()
    t = np.arange(int(round(seconds * RATE))) / RATE
    write_clip(path, frames, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), fps=FPS, sample_rate=RATE)


def _question(video_id: str, number: int) -> dict:
    return {"video_id": video_id, "question_id": number, "type": "[\"Visual\", \"Location\"]",
            "question_content": "Where is the performance?", "templ_values": "[]", "question_deleted": 0,
            "anser": "indoor"}


def test_music_avqa_clips_of_45_s_and_9_6_s_are_spread_and_a_6_s_clip_is_skipped(tmp_path):
    lengths = {"00000045": 45.0, "00000009": 9.6, "00000006": 6.0}
    for video_id, seconds in lengths.items():
        _write(tmp_path / f"{video_id}.mp4", seconds)
    (tmp_path / "avqa-test.json").write_text(json.dumps([_question(v, i) for i, v in enumerate(lengths)]))
    report = prepare_avqa(tmp_path, tmp_path / "out", image_size=16, workers=1, show_progress=False)
    assert sorted(report.stored) == ["00000009", "00000045"]
    assert [(video_id, reason) for video_id, reason, _ in report.skipped] == [("00000006", "too short")]
    assert "6.0" in report.skipped[0][2] or "6.00" in report.skipped[0][2]
    dataset = PreparedAVQA(tmp_path / "out", "test")
    by_video = {row["video_id"]: dataset[i] for i, row in enumerate(dataset.rows)}
    # 45 s: seconds 0, 4, 9, ..., 44 (spread over the clip's own seconds)
    assert segment_seconds(45) == [0, 4, 9, 14, 19, 24, 29, 34, 39, 44]
    means = by_video["00000045"]["frames"].float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([10.0 + 5 * s for s in segment_seconds(45)]), atol=3)
    # 9.6 s: within the 0.5-s tolerance, its ten seconds
    means = by_video["00000009"]["frames"].float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([10.0 + 5 * s for s in range(10)]), atol=3)
    assert by_video["00000009"]["audio"].shape == (10, 32000)


def _ave_root(root, lengths):
    lines = [f"Church bell&{video_id}&good&0&10" for video_id in lengths]
    (root / "Annotations.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\n" + "\n".join(lines) + "\n")
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (root / name).write_text("\n".join(lines) + "\n" if name == "testSet.txt" else "")
    (root / "AVE").mkdir()
    for video_id, seconds in lengths.items():
        _write(root / "AVE" / f"{video_id}.mp4", seconds)


def test_ave_clips_up_to_half_a_second_short_are_kept_longer_gaps_skipped(tmp_path):
    lengths = {"aaaaaaaaaa1": 10.0, "aaaaaaaaaa2": 9.6, "aaaaaaaaaa3": 9.0}
    _ave_root(tmp_path, lengths)
    report = prepare_ave(tmp_path, tmp_path / "out", image_size=16, workers=1, show_progress=False)
    assert report.stored == ["aaaaaaaaaa1", "aaaaaaaaaa2"]
    assert [(video_id, reason) for video_id, reason, _ in report.skipped] == [("aaaaaaaaaa3", "too short")]
    item = PreparedAVE(tmp_path / "out", "test")[1]
    means = item["frames"].float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([10.0 + 5 * s for s in range(10)]), atol=3)
    skipped = (tmp_path / "out" / "skipped.tsv").read_text().splitlines()
    assert skipped[1].startswith("aaaaaaaaaa3\ttoo short\t") and skipped[1].endswith("aaaaaaaaaa3.mp4")


def test_llp_clips_up_to_half_a_second_short_are_kept_longer_gaps_skipped(tmp_path):
    names = {"bbbbbbbbbb1_0_10": 9.6, "bbbbbbbbbb2_0_10": 9.0}
    rows = "".join(f"{name}\tSpeech\n" for name in names)
    for split in ("AVVP_train.csv", "AVVP_val_pd.csv", "AVVP_test_pd.csv"):
        (tmp_path / split).write_text("filename\tevent_labels\n" + (rows if split == "AVVP_train.csv" else ""))
    video_dir = tmp_path / "LLP_dataset" / "video"
    video_dir.mkdir(parents=True)
    for name, seconds in names.items():
        _write(video_dir / f"{name[:11]}.mp4", seconds)
    report = prepare_llp(tmp_path, tmp_path / "out", image_size=16, workers=1, show_progress=False)
    assert report.stored == ["bbbbbbbbbb1_0_10"]
    assert [(name, reason) for name, reason, _ in report.skipped] == [("bbbbbbbbbb2_0_10", "too short")]
