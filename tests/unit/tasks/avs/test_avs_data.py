"""AVSBench readers on the real semantic metadata, path resolution of both layouts, the synthetic generator and
`prepare_avs` + `PreparedAVS` on generated and hand-made clips."""
import json
import logging
import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import needs_shared_fixtures, shared_fixture_dir
from molt.tasks.avs.reader import (AVSBenchLayout, annotated_frames, read_label2idx, read_object_meta,
                                read_semantic_meta, unknown_objects)
from molt.tasks.avs.prepared import PreparedAVS, ensure_prepared, prepare_avs
from molt.data.synthetic import GROUND_TRUTH_FILE
from molt.tasks.avs.synthetic import generate_avs, plan_avs_videos, render_avs_clip




REAL = shared_fixture_dir("avsbench", "metadata.csv", "MOLT_AVS_FIXTURES")
needs_real = needs_shared_fixtures(REAL, "real AVSBench metadata.csv")


# real metadata ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def semantic():
    return read_semantic_meta(REAL / "metadata.csv")


@needs_real
def test_real_semantic_counts(semantic):
    assert len(semantic) == 11356
    counts = {(setting, split): 0 for setting in ("s4", "ms3", "v2") for split in ("train", "val", "test")}
    for record in semantic:
        counts[(record.setting, record.split)] += 1
    assert [counts[("s4", s)] for s in ("train", "val", "test")] == [3452, 740, 740]
    assert [counts[("ms3", s)] for s in ("train", "val", "test")] == [296, 64, 64]
    assert sum(counts[("v2", s)] for s in ("train", "val", "test")) == 6000
    assert len({r.name for r in semantic}) == 11356


@needs_real
def test_real_semantic_quirks(semantic, caplog):
    with caplog.at_level(logging.INFO, logger="molt.tasks.avs.reader"):
        records = read_semantic_meta(REAL / "metadata.csv")
    assert any("h orse" in message for message in caplog.messages)
    horse = next(r for r in records if r.name == "zVfLHhs9uv8_3000_8000")
    assert horse.objects == ("horse",) and horse.setting == "s4" and horse.split == "train"
    label2idx = read_label2idx(REAL / "label2idx.json")
    assert len(label2idx) == 71 and label2idx["background"] == 1
    assert unknown_objects(records, label2idx) == {"off-the-screen": 27}
    assert unknown_objects([r for r in records if r.setting in ("s4", "ms3")], label2idx) == {}
    ms3 = [r for r in records if r.setting == "ms3"]
    assert all(r.name == r.video_id for r in ms3)
    suffixed = [r for r in ms3 if re.fullmatch(r".{11}_\d+", r.name)]
    bare = [r for r in ms3 if len(r.name) == 11]
    assert (len(suffixed), len(bare)) == (398, 25)
    assert [r.name for r in ms3 if r not in suffixed and r not in bare] == ["baby_dog_2_1"]
    assert next(r for r in ms3 if r.name == "_fvpYLXtQHQ_0").objects == ("guitar", "tabla")
    assert next(r for r in records if r.name == "puugfzdXYz4_120000_130000").start == 120.0   # s_sec = 60
    s4 = [r for r in records if r.setting == "s4"]
    assert len({o for r in s4 for o in r.objects}) == 23


@needs_real
def test_real_semantic_layout_paths(tmp_path, semantic):
    shutil.copy(REAL / "metadata.csv", tmp_path / "metadata.csv")
    s4 = AVSBenchLayout.find(tmp_path, "s4")
    ms3 = AVSBenchLayout.find(tmp_path, "ms3")
    assert s4.kind == "semantic" and s4.split_counts() == {"train": 3452, "val": 740, "test": 740}
    assert ms3.split_counts() == {"train": 296, "val": 64, "test": 64}
    record = next(r for r in s4.records if r.split == "train")
    frames = s4.frame_paths(record)
    assert frames[0] == tmp_path / "v1s" / record.name / "frames" / "0.jpg" and frames[-1].name == "4.jpg"
    masks = s4.mask_paths(record)
    assert masks[0] == [tmp_path / "v1s" / record.name / "labels_semantic" / "0.png",
                        tmp_path / "v1s" / record.name / "labels_rgb" / "0.png"]
    assert masks[1:] == [None] * 4                             # S4 train: only the first frame is annotated
    assert s4.audio_path(record) == tmp_path / "v1s" / record.name / "audio.wav"
    test_record = next(r for r in ms3.records if r.split == "test")
    assert all(m is not None for m in ms3.mask_paths(test_record))
    assert ms3.frame_paths(test_record)[0].parent.parent.parent.name == "v1m"


# object meta files -----------------------------------------------------------------------------------------------

def test_object_meta_and_layout_paths(tmp_path):
    single = tmp_path / "Single-source"
    (single / "s4_data").mkdir(parents=True)
    (single / "s4_meta_data.csv").write_text("name,start_time,category,split\n"
                                             "abc_1000_6000,1,dog_barking,train\nxyz_0_5000,0,race_car,test\n")
    multi = tmp_path / "Multi-sources"
    multi.mkdir()
    (multi / "ms3_meta_data.csv").write_text("\ufeffvideo_id,split\nmmm_1,val\n\nnnn_2,train\n")
    s4 = AVSBenchLayout.find(tmp_path, "s4")
    assert s4.kind == "object" and s4.data_dir == single / "s4_data"
    record = s4.records[0]
    assert (record.name, record.category, record.split, record.start) == ("abc_1000_6000", "dog_barking", "train", 1.0)
    base = single / "s4_data"
    assert s4.frame_paths(record)[4] == base / "visual_frames/train/dog_barking/abc_1000_6000/abc_1000_6000_5.png"
    assert s4.mask_paths(record)[0] == [base / "gt_masks/train/dog_barking/abc_1000_6000/abc_1000_6000_1.png"]
    assert s4.mask_paths(record)[1] is None
    assert s4.mask_paths(s4.records[1])[4] == [base / "gt_masks/test/race_car/xyz_0_5000/xyz_0_5000_5.png"]
    assert s4.audio_path(record) == base / "audio_wav/train/dog_barking/abc_1000_6000.wav"
    ms3 = AVSBenchLayout.find(tmp_path, "ms3")
    assert ms3.data_dir == multi and [r.name for r in ms3.records] == ["mmm_1", "nnn_2"]
    clip = ms3.records[0]
    assert ms3.frame_paths(clip)[0] == multi / "visual_frames/mmm_1/mmm_1.mp4_1.png"    # no split in frame paths
    assert ms3.mask_paths(clip)[2] == [multi / "gt_masks/val/mmm_1/mmm_1_3.png"]
    assert ms3.audio_path(clip) == multi / "audio_wav/val/mmm_1.wav"
    assert annotated_frames("ms3", "train") == (True,) * 5
    with pytest.raises(FileNotFoundError, match="MS3"):
        AVSBenchLayout.find(tmp_path / "nowhere", "ms3")


@pytest.mark.parametrize("text, message", [
    ("name,category\nabc,dog\n", "no 'split' column"),
    ("name,split\nabc,train\n", "'category' column"),
    ("name,start_time,category,split\nabc,0,dog,training\n", "s4_meta_data.csv:2: unknown split"),
    ("name,start_time,category,split\nabc,0,dog,train\nabc,1,cat,val\n", ":3: clip 'abc' already listed on line 2"),
])
def test_object_meta_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "s4_meta_data.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_object_meta(path)


def test_semantic_meta_errors(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("vid,uid,split\n")
    with pytest.raises(ValueError, match="header"):
        read_semantic_meta(path)
    path.write_text("vid,uid,s_min,s_sec,a_obj,split,label\na,a_0_5000,0,0,dog,train,v3")
    with pytest.raises(ValueError, match="metadata.csv:2: unknown label 'v3'"):
        read_semantic_meta(path)


# synthetic generator -> prepare -> dataset ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s4_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("avs_synth")
    summary = generate_avs(root, num_videos=10, seed=4, image_size=32, workers=1, show_progress=False)
    return root, summary


def test_generator_writes_the_s4_release_layout(s4_root):
    root, summary = s4_root
    assert summary["splits"] == {"train": 6, "val": 2, "test": 2}
    layout = AVSBenchLayout.find(root, "s4")
    assert layout.kind == "object" and len(layout.records) == 10
    for record in layout.records:
        assert all(p.is_file() for p in layout.frame_paths(record))
        assert layout.audio_path(record).is_file()
        masks = layout.mask_paths(record)
        assert all(c[0].is_file() for c in masks if c is not None)
        mask_dir = layout.data_dir / "gt_masks" / record.split / record.category / record.name
        written = sorted(p.name for p in mask_dir.iterdir())
        # the release has no masks for S4 train frames 2-5
        assert written == ([f"{record.name}_1.png"] if record.split == "train" else
                           [f"{record.name}_{i}.png" for i in range(1, 6)])
    with wave.open(str(layout.audio_path(layout.records[0]))) as handle:
        assert (handle.getnchannels(), handle.getframerate(), handle.getnframes()) == (1, 16000, 80000)
    truth = json.loads((root / "Single-source" / GROUND_TRUTH_FILE).read_text())
    assert all(len(v["sounding"]) == 1 and 2 <= len(v["classes"]) <= 3 for v in truth["videos"])


def test_generator_is_deterministic_across_workers(tmp_path):
    first = generate_avs(tmp_path / "a", num_videos=4, seed=2, image_size=16, workers=1, setting="ms3",
                         show_progress=False)
    second = generate_avs(tmp_path / "b", num_videos=4, seed=2, image_size=16, workers=2, setting="ms3",
                          show_progress=False)
    assert first["foreground_fraction"] == second["foreground_fraction"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for name in files:
        if name.suffix in (".png", ".wav", ".csv"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    plans = plan_avs_videos(30, 0, setting="ms3")
    assert {len(p["sounding"]) for p in plans} >= {1, 2} and max(len(p["sounding"]) for p in plans) <= 3


def test_prepare_s4_and_dataset_items(s4_root):
    root, _ = s4_root
    prepared = ensure_prepared(root, show_progress=False)
    assert prepared == root / "prepared_s4" and ensure_prepared(prepared) == prepared
    train, test = PreparedAVS(prepared, "train"), PreparedAVS(prepared, "test")
    assert (len(train), len(test)) == (6, 2)
    assert (train.sample_rate, train.image_size, train.mask_size, train.num_segments) == (32000, 32, 32, 5)
    assert train.task_options() == {"mask_size": 32, "setting": "s4"}
    item = train[0]
    assert item["frames"].shape == (5, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert item["audio"].shape == (5, 32000) and item["audio"].dtype == torch.float32
    assert item["masks"].shape == (5, 32, 32) and set(item["masks"].unique().tolist()) <= {0.0, 1.0}
    assert item["mask_valid"].tolist() == [1, 0, 0, 0, 0]
    assert item["masks"][1:].sum() == 0 and item["masks"][0].sum() > 0
    assert test[1]["mask_valid"].tolist() == [1] * 5
    # the prepared masks are the generator's exact masks
    truth = json.loads((root / "Single-source" / GROUND_TRUTH_FILE).read_text())
    plans = {p["name"]: p for p in plan_avs_videos(10, 4)}
    clip = test[0]
    _, masks, _ = render_avs_clip(plans[clip["video_id"]], 4, image_size=32)
    assert torch.equal(clip["masks"], torch.from_numpy(masks).float())
    assert truth["setting"] == "s4" and float(clip["audio"].abs().max()) > 0.05
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=3)))
    assert batch["masks"].shape == (3, 5, 32, 32) and batch["mask_valid"].shape == (3, 5)
    with pytest.raises(ValueError, match="not MS3"):
        ensure_prepared(prepared, setting="ms3")


def _write_clip(folder: Path, colour=(200, 10, 10), sample_rate: int = 16000, seconds: float = 5.0) -> None:
    (folder / "frames").mkdir(parents=True)
    (folder / "labels_rgb").mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 30 * i, dtype=np.uint8)).save(folder / "frames" / f"{i}.jpg")
        label = np.zeros((40, 40, 3), dtype=np.uint8)
        label[10:20, 5:25] = colour
        Image.fromarray(label).save(folder / "labels_rgb" / f"{i}.png")
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sample_rate)) / sample_rate) * 32767)
    with wave.open(str(folder / "audio.wav"), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(samples.astype("<i2").tobytes())


def test_prepare_semantic_layout_with_missing_and_short_clips(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "vid,uid,s_min,s_sec,a_obj,split,label\n"
        "aaa_0,aaa_0,0,0,guitar_tabla,test,v1m\n"
        "bbb_0,bbb_0,0,0,dog,train,v1m\n"
        "ccc_0,ccc_0,0,0,dog,val,v1m\n"
        "ddd,ddd_0_5000,0,0,dog,train,v1s")
    _write_clip(tmp_path / "v1m" / "aaa_0")
    _write_clip(tmp_path / "v1m" / "ccc_0", seconds=2.0)
    report = prepare_avs(tmp_path, tmp_path / "out", setting="ms3", image_size=16, mask_size=20, workers=1,
                         show_progress=False)
    assert report.stored == ["aaa_0", "ccc_0"] and report.silent == ["ccc_0"]   # short audio: tiled, kept
    assert [(name, reason) for name, reason, _ in report.skipped] == [("bbb_0", "missing file")]
    assert "bbb_0\tmissing file" in (tmp_path / "out" / "skipped.tsv").read_text()
    data = PreparedAVS(tmp_path / "out", "test")
    item = data[0]
    assert item["frames"].shape == (5, 3, 16, 16) and item["masks"].shape == (5, 20, 20)
    expected = np.zeros((40, 40), dtype=np.uint8)
    expected[10:20, 5:25] = 255
    expected = np.asarray(Image.fromarray(expected).resize((20, 20), Image.Resampling.NEAREST)) > 127
    assert torch.equal(item["masks"][3], torch.from_numpy(expected).float())
    assert item["mask_valid"].tolist() == [1] * 5
    short = PreparedAVS(tmp_path / "out", "val")[0]["audio"]
    assert torch.allclose(short[2], short[0], atol=1e-3)      # 2 s of audio tiled to 5 s
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["rows"][0]["objects"] == ["guitar", "tabla"] and index["layout"]["kind"] == "semantic"


def test_ensure_prepared_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no AVSBench S4 metadata"):
        ensure_prepared(tmp_path)
    with pytest.raises(ValueError, match="unknown AVSBench setting"):
        ensure_prepared(tmp_path, setting="s5")
    (tmp_path / "index.json").write_text(json.dumps({"format": "molt-prepared-ave", "format_version": 1}))
    with pytest.raises(ValueError, match="not a prepared AVSBench set"):
        ensure_prepared(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a prepared AVSBench directory"):
        PreparedAVS(tmp_path / "missing")
