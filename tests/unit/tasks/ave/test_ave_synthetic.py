"""The procedural AVE generator: AVE format, determinism, balance, and the 'needs both senses' design."""
import json
from collections import Counter

import numpy as np
import pytest

from molt.tasks.ave.reader import AVEAnnotations
from molt.data.media import read_clip
from molt.data.synthetic import CLASS_SPECS, GROUND_TRUTH_FILE, NONE
from molt.tasks.ave.synthetic import generate_ave, plan_videos, single_modality_oracle

ANNOTATION_FILES = ("Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt")
SMALL = dict(image_size=32, fps=2, num_classes=4, show_progress=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    first = generate_ave(base / "a", num_videos=10, seed=3, workers=1, **SMALL)
    generate_ave(base / "b", num_videos=10, seed=3, workers=2, **SMALL)
    generate_ave(base / "c", num_videos=10, seed=4, workers=1, **SMALL)
    return base, first


def test_layout_and_ave_format(generated):
    base, summary = generated
    root = base / "a"
    assert (root / "Annotations.txt").read_text().splitlines()[0] == "Category&VideoID&Quality&StartTime&EndTime"
    annotations = AVEAnnotations.from_dir(root)
    assert annotations.categories == [spec.name for spec in CLASS_SPECS[:4]]
    assert len(annotations.records()) == 10
    sizes = {split: len(annotations.records(split)) for split in ("train", "val", "test")}
    assert sizes == summary["splits"] == {"train": 8, "val": 1, "test": 1}
    for record in annotations.records():
        assert len(record.video_id) == 11 and record.quality == "good"
        assert 0 <= record.start < record.end <= 10
        assert (root / "AVE" / f"{record.video_id}.mp4").is_file()
    truth = json.loads((root / GROUND_TRUTH_FILE).read_text())
    for video in truth["videos"]:
        labels = annotations.labels(video["video_id"], video["split"])
        assert labels.argmax(-1).tolist() == video["label"]


def test_deterministic_for_a_seed(generated):
    base, _ = generated
    for name in ANNOTATION_FILES + (GROUND_TRUTH_FILE,):
        assert (base / "a" / name).read_bytes() == (base / "b" / name).read_bytes()   # 1 vs 2 workers
    assert (base / "a" / "Annotations.txt").read_bytes() != (base / "c" / "Annotations.txt").read_bytes()
    video_id = AVEAnnotations.from_dir(base / "a").video_ids("train")[0]
    one = read_clip(base / "a" / "AVE" / f"{video_id}.mp4", image_size=32)
    two = read_clip(base / "b" / "AVE" / f"{video_id}.mp4", image_size=32)
    np.testing.assert_array_equal(one.frames, two.frames)
    np.testing.assert_array_equal(one.audio, two.audio)


def test_decoded_content_follows_the_ground_truth(generated):
    base, _ = generated
    truth = json.loads((base / "a" / GROUND_TRUTH_FILE).read_text())
    video = truth["videos"][0]
    spec = CLASS_SPECS[video["class_index"]]
    clip = read_clip(base / "a" / "AVE" / f"{video['video_id']}.mp4", image_size=32)
    colour = np.array(spec.colour, dtype=np.float32)
    for segment in range(10):
        close = np.abs(clip.frames[segment].astype(np.float32) - colour).max(axis=-1) < 45
        shown = video["visual"][segment] == video["class_index"]
        assert (close.mean() > 0.02) == shown, segment
        spectrum = np.abs(np.fft.rfft(clip.audio[segment]))
        band = spectrum[int(spec.pitch_hz * 0.9):int(spec.pitch_hz * 1.1) + 1].max()
        heard = video["audio"][segment] == video["class_index"]
        assert (band > 20 * np.median(spectrum)) == heard, segment


def test_class_balance_and_stratified_splits():
    plans = plan_videos(200, seed=0, num_classes=8)
    assert set(Counter(p["class_index"] for p in plans).values()) == {25}
    splits = Counter(p["split"] for p in plans)
    assert splits == {"train": 160, "val": 20, "test": 20}
    for split in ("val", "test"):
        per_class = Counter(p["class_index"] for p in plans if p["split"] == split)
        assert len(per_class) == 8 and max(per_class.values()) - min(per_class.values()) <= 1
    assert len({p["video_id"] for p in plans}) == 200


def test_needs_both_senses():
    plans = plan_videos(300, seed=1, num_classes=8)
    kinds = Counter()
    for p in plans:
        cls = p["class_index"]
        for v, a, kind, label in zip(p["visual"], p["audio"], p["kind"], p["label"]):
            kinds[kind] += 1
            # an event segment is exactly one where the video's pattern is seen *and* its sound heard
            assert (label == cls) == (v == cls and a == cls)
            assert label in (cls, 8)
            if kind == "visual_only":
                assert v == cls and a == NONE
            elif kind == "audio_only":
                assert v == NONE and a == cls
            elif kind == "mismatch":
                assert (v == cls) != (a == cls) and NONE not in (v, a)
    assert min(kinds.values()) > 50 and set(kinds) == {"event", "visual_only", "audio_only", "mismatch", "empty"}
    # background segments show the event's pattern (or play its sound) about as often as event segments do
    background = [(v, a, p["class_index"]) for p in plans for v, a, y in zip(p["visual"], p["audio"], p["label"])
                  if y == 8]
    assert np.mean([v == c for v, a, c in background]) > 0.35
    assert np.mean([a == c for v, a, c in background]) > 0.35
    for modality in ("visual", "audio"):
        assert 0.6 < single_modality_oracle(plans, modality) < 0.82
    majority = max(Counter(y for p in plans for y in p["label"]).values()) / (10 * len(plans))
    assert majority < 0.6


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        plan_videos(10, 0, num_classes=1)
    with pytest.raises(ValueError, match="even"):
        generate_ave(tmp_path, 4, 0, image_size=33)
    with pytest.raises(ValueError, match="too few"):
        plan_videos(2, 0, split_fractions=(0.0, 0.5, 0.5))
