"""AVE reader on the real annotation files, and `prepare_ave` + `PreparedAVE` on generated clips."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from helpers import needs_shared_fixtures, shared_fixture_dir
from molt.tasks.ave.reader import HEADER, AVEAnnotations, read_records
from molt.data.media import read_clip
from molt.tasks.ave.prepared import PreparedAVE, ensure_prepared, prepare_ave
from molt.data.synthetic import GROUND_TRUTH_FILE
from molt.tasks.ave.synthetic import generate_ave




REAL = shared_fixture_dir("ave", "Annotations.txt", "MOLT_AVE_FIXTURES")
needs_real = needs_shared_fixtures(REAL, "real AVE annotation files")


@pytest.fixture(scope="module")
def real():
    return AVEAnnotations.from_dir(REAL)


@needs_real
def test_real_counts_and_categories(real):
    assert len(real.records()) == 4143
    assert {s: len(real.records(s)) for s in ("train", "val", "test")} == {"train": 3339, "val": 402, "test": 402}
    assert real.num_classes == 28 and real.background_index == 28
    assert real.categories[:3] == ["Church bell", "Male speech, man speaking", "Bark"]
    assert len(real.video_ids()) == 4097


@needs_real
def test_categories_without_file_and_annotations_without_header(tmp_path, real):
    for name in ("Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt"):
        shutil.copy(REAL / name, tmp_path / name)
    inferred = AVEAnnotations.from_dir(tmp_path)   # no categories.txt: order of first appearance
    assert inferred.categories == real.categories
    lines = (REAL / "Annotations.txt").read_text().splitlines()
    assert lines[0] == HEADER
    (tmp_path / "Annotations.txt").write_text("\n".join(lines[1:]) + "\n")
    headerless = AVEAnnotations.from_dir(tmp_path)
    assert [(r.category, r.video_id, r.start, r.end) for r in headerless.records()] == \
           [(r.category, r.video_id, r.start, r.end) for r in real.records()]


@needs_real
def test_real_label_matrices(real):
    full = real.labels("RUhOCu3LNXM", "train")                 # Church bell 0-10
    assert full.shape == (10, 29) and (full.argmax(-1) == 0).all()
    record = next(r for r in real.records() if r.video_id == "MH3m4AwEcRY")   # Church bell 6-8
    partial = real.labels(record)
    assert partial.argmax(-1).tolist() == [28] * 6 + [0, 0] + [28] * 2
    assert (partial.sum(-1) == 1).all()


@needs_real
def test_zero_length_event_is_kept_as_background(caplog):
    with caplog.at_level(logging.WARNING, logger="molt.tasks.ave.reader"):
        annotations = AVEAnnotations.from_dir(REAL)
    assert any("VWi2ENBuTbw" in message for message in caplog.messages)
    record = next(r for r in annotations.records("train") if r.video_id == "VWi2ENBuTbw")
    assert record.start == record.end == 0
    assert (annotations.labels(record).argmax(-1) == 28).all()


@needs_real
def test_several_events_and_ids_in_two_splits(real):
    lines = [r for r in real.records() if r.video_id == "0f_iTO5t3hU"]   # Ukulele, Banjo, Mandolin on 0-10
    assert len(lines) == 3
    merged = real.labels("0f_iTO5t3hU")
    assert (merged.sum(-1) == 3).all() and merged[:, 28].sum() == 0
    for line in lines:
        assert (real.labels(line).sum(-1) == 1).all()
    train_ids, val_ids, test_ids = (set(real.video_ids(s)) for s in ("train", "val", "test"))
    assert (len(train_ids & val_ids), len(train_ids & test_ids), len(val_ids & test_ids)) == (10, 8, 0)
    shared = "0qvQIuQoODo"   # Male speech in train, Female speech in test, both on 1-4
    train_labels, test_labels = real.labels(shared, "train"), real.labels(shared, "test")
    male = real.category_index["Male speech, man speaking"]
    female = real.category_index["Female speech, woman speaking"]
    assert train_labels[1:4, male].all() and not train_labels[:, female].any()
    assert test_labels[1:4, female].all() and not test_labels[:, male].any()
    with pytest.raises(KeyError):
        real.labels("RUhOCu3LNXM", "test")


def test_malformed_lines_name_the_file_and_line(tmp_path):
    bad = tmp_path / "trainSet.txt"
    bad.write_text("Bark&abcdefghijk&good&0&10\nBark&abcdefghijk&good&zero&10\n")
    with pytest.raises(ValueError, match=r"trainSet.txt:2"):
        read_records(bad)
    bad.write_text("Bark&abcdefghijk&good&3\n")
    with pytest.raises(ValueError, match="5 '&'-separated fields"):
        read_records(bad)
    bad.write_text("Bark&abcdefghijk&good&4&11\n")
    with pytest.raises(ValueError, match="EndTime"):
        read_records(bad)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ave_root")
    generate_ave(root, num_videos=8, seed=5, image_size=32, fps=2, num_classes=3, workers=1, show_progress=False)
    annotations = AVEAnnotations.from_dir(root)
    train = annotations.video_ids("train")
    broken = {train[0]: "empty file", train[1]: "missing file", train[2]: "undecodable"}
    (root / "AVE" / f"{train[0]}.mp4").write_bytes(b"")
    (root / "AVE" / f"{train[1]}.mp4").unlink()
    (root / "AVE" / f"{train[2]}.mp4").write_bytes(b"\x00\x01garbage" * 300)
    shutil.move(root / "AVE" / f"{train[3]}.mp4", root / f"{train[3]}.mp4")   # found at the root too
    # a second event line on the same window, another category (like the 45 multi-event ids of AVE)
    first = next(r for r in annotations.records("train") if r.video_id == train[4])
    other = next(c for c in annotations.categories if c != first.category)
    extra = f"{other}&{first.video_id}&good&{first.start}&{first.end}\n"
    for name in ("trainSet.txt", "Annotations.txt"):
        with open(root / name, "a") as handle:
            handle.write(extra)
    out = root / "prepared"
    report = prepare_ave(root, out, image_size=24, workers=2, show_progress=False)
    return root, out, report, broken, annotations


def test_prepare_skips_broken_clips_and_stores_the_rest(prepared):
    root, out, report, broken, annotations = prepared
    assert {video_id: reason for video_id, reason, _ in report.skipped} == broken
    assert len(report.stored) == 5 and report.rows == {"train": 4, "val": 1, "test": 1}
    assert "skipped 3" in report.summary()
    rows = (out / "skipped.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["video_id", "reason", "detail", "path"]
    assert {line.split("\t")[0]: line.split("\t")[1] for line in rows[1:]} == broken
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "molt-prepared-ave" and index["image_size"] == 24 and index["num_classes"] == 3
    assert sorted(v for v in index["videos"] if v) == sorted(report.stored)
    assert not list(out.glob("*.partial"))
    frames = np.load(out / "frames.npy", mmap_mode="r")
    assert frames.shape == (8, 10, 24, 24, 3) and frames.dtype == np.uint8
    assert np.load(out / "audio.npy", mmap_mode="r").dtype == np.int16


def test_prepared_dataset_items(prepared):
    root, out, report, broken, annotations = prepared
    truth = {v["video_id"]: v for v in json.loads((root / GROUND_TRUTH_FILE).read_text())["videos"]}
    dataset = PreparedAVE(out, "train")
    assert len(dataset) == 4 and len(PreparedAVE(out)) == 6
    pair = [dataset[i] for i in range(len(dataset)) if dataset.rows[i]["video_id"] == annotations.video_ids("train")[4]]
    assert len(pair) == 2 and torch.equal(pair[0]["frames"], pair[1]["frames"])
    assert not torch.equal(pair[0]["labels"], pair[1]["labels"])
    assert torch.equal(pair[0]["valid_labels"], torch.maximum(pair[0]["labels"], pair[1]["labels"]))
    assert dataset.task_options() == {"num_classes": 3, "class_names": annotations.categories}
    item = dataset[0]
    assert item["frames"].shape == (10, 3, 24, 24) and item["frames"].dtype == torch.uint8
    assert item["audio"].shape == (10, 32000) and item["audio"].dtype == torch.float32
    assert item["labels"].shape == (10, 4)
    assert item["labels"].argmax(-1).tolist() == truth[item["video_id"]]["label"]
    assert torch.equal(item["labels"], item["valid_labels"])
    path = root / "AVE" / f"{item['video_id']}.mp4"
    clip = read_clip(path if path.exists() else root / f"{item['video_id']}.mp4", image_size=24)
    assert torch.equal(item["frames"], torch.from_numpy(clip.frames).permute(0, 3, 1, 2))
    assert torch.allclose(item["audio"], torch.from_numpy(clip.audio), atol=1 / 32768)
    labels = dataset.segment_labels()
    assert labels.shape == (4, 10) and labels.dtype == torch.long
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["frames"].shape == (2, 10, 3, 24, 24) and len(batch["video_id"]) == 2
    with pytest.raises(ValueError, match="split"):
        PreparedAVE(out, "dev")


def test_ensure_prepared_and_incomplete_directories(prepared, tmp_path):
    root, out, *_ = prepared
    assert ensure_prepared(out) == out
    assert ensure_prepared(root) == out   # reuses the prepared copy
    with pytest.raises(FileNotFoundError, match="index.json"):
        PreparedAVE(tmp_path)
    with pytest.raises(FileNotFoundError):
        ensure_prepared(tmp_path)
