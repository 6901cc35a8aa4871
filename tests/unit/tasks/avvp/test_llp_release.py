"""The LLP release as users download it (the authors' csv files, byte for byte in ../shared/fixtures/llp)."""
import json
import logging
import shutil

import numpy as np
import pytest

from helpers import needs_shared_fixtures, shared_fixture_dir
from molt.data.media import write_clip
from molt.app.cli import main
from molt.tasks.avvp.prepared import PreparedLLP
from molt.tasks.avvp.reader import EVAL_FILES, SPLIT_FILES, LLPAnnotations, parse_filename

REAL = shared_fixture_dir("llp", "AVVP_train.csv", "MOLT_LLP_FIXTURES")
pytestmark = needs_shared_fixtures(REAL, "the real LLP csv files")


@pytest.fixture(scope="module")
def real():
    return LLPAnnotations.from_dir(REAL)


def test_split_counts_categories_and_ids(real):
    assert {split: len(real.records(split)) for split in SPLIT_FILES} == {"train": 10000, "val": 649, "test": 1200}
    assert real.num_classes == 25 and real.has_eval
    records = [r for split in SPLIT_FILES for r in real.records(split)]
    assert len({r.filename for r in records}) == 11849
    assert all(r.video_id == r.filename[:11] for r in records)  # the authors' loaders take the first 11 characters
    assert real.unmatched_events == 25  # eval lines of no val/test clip, unused by the official evaluation too


def test_fractional_times_in_file_names(real):
    fractional = [r for r in real.records("train") if not (r.start.is_integer() and r.end.is_integer())]
    assert [(r.filename, r.line) for r in fractional] == [
        ("AP0061o0Nvk_101.8_111.8", 3274), ("AKVyIQoSyBA_131.8_141.8", 4929), ("ApKgnUPayqU_8.5_18.5", 6377),
        ("BYEc9L5kGKQ_48.7_58.7", 6705), ("Br4mum2rWtY_9.3_19.3", 7996)]
    assert parse_filename("AP0061o0Nvk_101.8_111.8") == ("AP0061o0Nvk", 101.8, 111.8)
    assert parse_filename("J_Z8OiW9z_E_430_440") == ("J_Z8OiW9z_E", 430.0, 440.0)
    for bad in ("BjCEufrlXm4_20", "BjCEufrlXm4_x_30", "BjCEufrlXm4_-5_5", "BjCEufrlXm4_nan_5", "_20_30"):
        with pytest.raises(ValueError, match="expected an LLP filename"):
            parse_filename(bad)


def test_an_event_with_onset_after_offset_marks_nothing_and_is_logged_once(caplog):
    with caplog.at_level(logging.WARNING):
        annotations = LLPAnnotations.from_dir(REAL)
    reversed_events = [message for message in caplog.messages if "onset > offset" in message]
    assert len(reversed_events) == 1
    assert EVAL_FILES["audio"] in reversed_events[0] and "line 3770" in reversed_events[0]
    record = next(r for r in annotations.records("val") if r.filename == "8DF2PxdT5tE_390_400")
    event = next(e for e in annotations.events(record, "audio") if e.line == 3770)
    assert (event.onset, event.offset, event.label) == (9, 0, "Cheering")
    audio, _ = annotations.segment_labels(record)
    cheering = annotations.category_index["Cheering"]
    others = [e for e in annotations.events(record, "audio") if e.label == "Cheering" and e.line != 3770]
    expected = np.zeros(10, dtype=np.float32)
    for other in others:
        expected[other.onset:other.offset] = 1.0
    np.testing.assert_array_equal(audio[:, cheering], expected)  # the 9 -> 0 line adds nothing


def _clip(seed: int, seconds: float = 10.0):
    rng = np.random.default_rng(seed)
    fps, rate = 4, 16000
    frames = np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), int(seconds * fps), axis=0)
    audio = (0.2 * np.sin(2 * np.pi * (300 + 50 * seed) * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    return frames, audio, fps, rate


def test_prepare_reads_the_real_csv_files_with_a_handful_of_clips(real, tmp_path, caplog):
    root = tmp_path / "LLP"
    root.mkdir()
    for name in list(SPLIT_FILES.values()) + list(EVAL_FILES.values()):
        shutil.copy(REAL / name, root / name)
    chosen = [real.records("train")[3272], real.records("val")[0], real.records("test")[5],
              next(r for r in real.records("val") if r.filename == "8DF2PxdT5tE_390_400")]
    assert chosen[0].filename == "AP0061o0Nvk_101.8_111.8"
    video_dir = root / "LLP_dataset" / "video"
    video_dir.mkdir(parents=True)
    for seed, record in enumerate(chosen):
        frames, audio, fps, rate = _clip(seed)
        write_clip(video_dir / f"{record.video_id}.mp4", frames, audio, fps=fps, sample_rate=rate)
    with caplog.at_level(logging.WARNING):
        assert main(["prepare", "avvp", "--data", str(root), "--out", str(tmp_path / "prepared"), "--image-size",
                     "32", "--workers", "1"]) == 0
    index = json.loads((tmp_path / "prepared" / "index.json").read_text())
    assert sorted(index["videos"]) == sorted(r.filename for r in chosen) and index["skipped"] == 11849 - 4
    assert sum("skipped" in message for message in caplog.messages) <= 21  # the first 20, then a count
    assert np.load(tmp_path / "prepared" / "frames.npy", mmap_mode="r").shape == (4, 10, 32, 32, 3)
    assert index["splits"] == {"train": 1, "val": 2, "test": 1}
    by_name = {r.filename: r for r in chosen}
    for split in ("val", "test"):
        dataset = PreparedLLP(tmp_path / "prepared", split)
        for position, row in enumerate(dataset.rows):
            item = dataset[position]
            audio_labels, visual_labels = real.segment_labels(by_name[row["filename"]])
            np.testing.assert_array_equal(item["audio_labels"].numpy(), audio_labels)
            np.testing.assert_array_equal(item["visual_labels"].numpy(), visual_labels)
            assert item["frames"].shape == (10, 3, 32, 32)
    lines = (tmp_path / "prepared" / "skipped.tsv").read_text().splitlines()
    assert lines[0].startswith("filename\treason") and len(lines) == 1 + 11845
    assert {line.split("\t")[1] for line in lines[1:]} == {"missing file"}
