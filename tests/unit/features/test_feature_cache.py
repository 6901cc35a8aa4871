"""Feature cache: round trip against online taps of the tiny backbones, refusal of mismatched caches, resume after a
kill, detection of corrupt chunks, and the dataset wrapper."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from molt.backbones import build_backbones
from molt.data import files
from molt.data.files import StorageError
from molt.features import (DONE_FILE, CachedDataset, FeatureCache, FeatureManifest, TapGroupSpec, chunks,
                           data_fingerprint, extract_features)

NUM_CLIPS, SEGMENTS, BLOCKS = 7, 2, "late"
QUIET = {"show_progress": False}


class Clips(Dataset):
    """Random uint8 frames and noise audio, plus targets; counts how often media are read."""

    def __init__(self, num_clips=NUM_CLIPS, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.frames = torch.randint(0, 256, (num_clips, SEGMENTS, 3, 64, 64), generator=generator, dtype=torch.uint8)
        self.audio = 0.1 * torch.randn(num_clips, SEGMENTS, 32000, generator=generator)
        self.labels = torch.randint(0, 5, (num_clips, SEGMENTS), generator=generator)
        self.num_segments = SEGMENTS
        self.media_reads = 0

    def __len__(self):
        return len(self.labels)

    def targets(self, index):
        return {"labels": self.labels[index], "video_id": f"clip{index:03d}", "index": index}

    def item_without_media(self, index):
        return self.targets(index)

    def __getitem__(self, index):
        self.media_reads += 1
        return {"frames": self.frames[index], "audio": self.audio[index], **self.targets(index)}

    def task_options(self):
        return {"num_classes": 5}


class MediaOnlyClips(Clips):
    item_without_media = None  # a dataset without the hook: the wrapper falls back to __getitem__


class Taps:
    """compute_taps of the tiny Swin-V2 + HTS-AT; counts calls and can simulate a kill after ``fail_after`` calls."""

    def __init__(self, visual, audio, fail_after=None):
        self.visual, self.audio, self.fail_after, self.calls = visual, audio, fail_after, 0

    def __call__(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated kill")
        frames, audio = batch["frames"].flatten(0, 1), batch["audio"].flatten(0, 1)
        return {"visual_taps": self.visual.forward_taps(self.visual.preprocess(frames), BLOCKS),
                "audio_taps": self.audio.forward_taps(audio, BLOCKS)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    visual, audio = build_backbones("tiny")
    data_dir = tmp_path_factory.mktemp("prepared")
    (data_dir / "index.json").write_text(json.dumps({"rows": NUM_CLIPS}))
    manifest = FeatureManifest(
        task="ave", num_segments=SEGMENTS, data_fingerprint=data_fingerprint(data_dir), dtype="float32", chunk_size=3,
        groups={"visual_taps": TapGroupSpec.from_backbone(visual, BLOCKS, preprocessing={"image_size": 64}),
                "audio_taps": TapGroupSpec.from_backbone(audio, BLOCKS)})
    clips = Clips()
    online = [Taps(visual, audio)({"frames": clips.frames[i:i + 1], "audio": clips.audio[i:i + 1]})
              for i in range(NUM_CLIPS)]
    return visual, audio, manifest, clips, online


def _assert_matches(cache, online, **tolerance):
    assert len(cache) == len(online)
    for index, reference in enumerate(online):
        item = cache[index]
        assert set(item) == set(reference)
        for group, taps in reference.items():
            assert len(item[group]) == len(taps)
            for stored, tap in zip(item[group], taps):
                assert stored.dtype == torch.float32 and stored.shape == tap.shape  # (T, N, D)
                if tolerance:
                    torch.testing.assert_close(stored, tap, **tolerance)
                else:
                    assert torch.equal(stored, tap), f"clip {index} {group} differs"


def test_manifest_describes_backbones_and_round_trips_json(setup, tmp_path):
    _visual, _audio, manifest, _, _ = setup
    spec = manifest.groups["visual_taps"]
    assert spec.backbone == "swinv2_tiny_test" and spec.blocks == [6, 7] and spec.token_shapes == [(4, 192)] * 2
    assert spec.weights_hash is None and spec.weights_tag == "" and spec.init_seed == 0  # random init: seed kept
    assert spec.preprocessing == {"input_size": [64, 64], "image_size": 64}
    assert manifest.groups["audio_taps"].preprocessing == {"sample_rate": 32000}
    manifest.save(tmp_path / "manifest.json")
    loaded = FeatureManifest.load(tmp_path)
    assert loaded == manifest and loaded.differences(manifest) == []
    assert manifest.bytes_per_item() == SEGMENTS * 4 * (192 + 192 + 128 + 128) * 4
    with pytest.raises(ValueError, match="storage dtype"):
        FeatureManifest(task="ave", num_segments=2, groups=manifest.groups, dtype="int8")
    with pytest.raises(ValueError, match="version"):
        FeatureManifest.from_dict({**manifest.to_dict(), "format_version": 99})


def test_round_trip_equals_online_taps_and_cached_dataset_collates(setup, tmp_path):
    visual, audio, manifest, clips, online = setup
    taps = Taps(visual, audio)
    report = extract_features(clips, taps, tmp_path, manifest, split="train", batch_size=2, **QUIET)
    # chunks of 3 clips (3, 3, 1), batches of 2 never straddle a chunk: 2 + 2 + 1 calls
    assert (report.num_chunks, report.chunks_written, report.chunks_skipped, report.items_computed) == (3, 3, 0, 7)
    assert taps.calls == 5 and report.bytes_written > NUM_CLIPS * manifest.bytes_per_item()
    assert report.clips_per_second > 0 and "7 clip(s)" in report.summary()
    assert sorted(p.name for p in (tmp_path / "train" / "chunk_00002").iterdir()) == \
        ["audio_taps_6.npy", "audio_taps_7.npy", DONE_FILE, "visual_taps_6.npy", "visual_taps_7.npy"]
    assert FeatureManifest.load(tmp_path).splits == ["train"]
    cache = FeatureCache(tmp_path, "train", expected=manifest)
    _assert_matches(cache, online, rtol=1e-5, atol=1e-5)  # batches of 2 vs one clip at a time
    assert cache.verify() == []

    clips.media_reads = 0
    dataset = CachedDataset(clips, pickle.loads(pickle.dumps(cache)))  # as a DataLoader worker gets it
    item = dataset[4]
    assert "frames" not in item and "audio" not in item and item["video_id"] == "clip004"
    assert torch.equal(item["labels"], clips.labels[4]) and clips.media_reads == 0
    assert dataset.task_options() == {"num_classes": 5} and dataset.num_segments == SEGMENTS
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert [tuple(t.shape) for t in batch["visual_taps"]] == [(3, SEGMENTS, 4, 192)] * 2
    assert [tuple(t.shape) for t in batch["audio_taps"]] == [(3, SEGMENTS, 4, 128)] * 2
    assert batch["video_id"] == ["clip000", "clip001", "clip002"] and batch["labels"].shape == (3, SEGMENTS)
    torch.testing.assert_close(batch["visual_taps"][1][2], online[2]["visual_taps"][1], rtol=1e-5, atol=1e-5)
    fallback = CachedDataset(MediaOnlyClips(), cache)[1]
    assert "frames" not in fallback and torch.equal(fallback["audio_taps"][0], cache[1]["audio_taps"][0])


def test_batch_of_one_is_bit_exact_and_half_precision_is_close(setup, tmp_path):
    visual, audio, manifest, clips, online = setup
    extract_features(clips, Taps(visual, audio), tmp_path / "f32", manifest, split="val", batch_size=1, **QUIET)
    _assert_matches(FeatureCache(tmp_path / "f32", "val"), online)
    for dtype, tolerance in (("float16", 2e-3), ("bfloat16", 1e-2)):
        extract_features(clips, Taps(visual, audio), tmp_path / dtype, manifest, split="val", batch_size=4,
                         dtype=dtype, **QUIET)
        cache = FeatureCache(tmp_path / dtype, "val")
        assert cache.manifest.dtype == dtype
        _assert_matches(cache, online, rtol=tolerance, atol=tolerance * 4)
        assert cache.verify() == []
    as_half = FeatureCache(tmp_path / "float16", "val", dtype=torch.float16)[5]["audio_taps"][1]
    assert as_half.dtype == torch.float16
    assert torch.equal(as_half.float(), FeatureCache(tmp_path / "float16", "val")[5]["audio_taps"][1])
    half = (tmp_path / "float16" / "val" / "chunk_00000" / "visual_taps_7.npy").stat().st_size
    single = (tmp_path / "f32" / "val" / "chunk_00000" / "visual_taps_7.npy").stat().st_size
    assert half < 0.6 * single


def test_mismatched_cache_is_refused_naming_the_fields(setup, tmp_path):
    visual, audio, manifest, clips, _ = setup
    extract_features(clips, Taps(visual, audio), tmp_path, manifest, split="train", batch_size=4, **QUIET)
    other = FeatureManifest(
        task="ave", num_segments=SEGMENTS, data_fingerprint=manifest.data_fingerprint, dtype="float32",
        groups={"visual_taps": TapGroupSpec.from_backbone(visual, [4, 5], preprocessing={"image_size": 64}),
                "audio_taps": manifest.groups["audio_taps"]})
    with pytest.raises(ValueError, match=r"groups\.visual_taps\.blocks: cache has \[6, 7\], expected \[4, 5\]") as info:
        FeatureCache(tmp_path, "train", expected=other)
    assert "token_shapes" in str(info.value) and "another directory" in str(info.value)
    stale = FeatureManifest.from_dict({**manifest.to_dict(), "data_fingerprint": "sha256:00", "dtype": "float16"})
    with pytest.raises(ValueError, match="data_fingerprint") as info:
        FeatureCache(tmp_path, "train", expected=stale)
    assert "dtype: cache has 'float32', expected 'float16'" in str(info.value)
    with pytest.raises(ValueError, match="groups.visual_taps.blocks"):  # extracting into it is refused too
        extract_features(clips, Taps(visual, audio), tmp_path, other, split="train", **QUIET)
    with pytest.raises(ValueError, match="not complete"):
        FeatureCache(tmp_path, "test")
    # a cache holding more groups serves a run needing fewer (e.g. an audio-only variant)
    audio_only = FeatureManifest.from_dict({**manifest.to_dict(), "groups": {
        "audio_taps": manifest.groups["audio_taps"].to_dict()}})
    assert set(FeatureCache(tmp_path, "train", expected=audio_only)[0]) == {"audio_taps"}


def test_resume_after_kill_recomputes_only_missing_chunks(setup, tmp_path):
    visual, audio, manifest, clips, online = setup
    options = dict(split="train", batch_size=2, chunk_size=2, **QUIET)
    with pytest.raises(RuntimeError, match="simulated kill"):
        # chunks [0,2) [2,4) [4,6) [6,7): killed during the third chunk
        extract_features(clips, Taps(visual, audio, fail_after=2), tmp_path, manifest, **options)
    split_dir = tmp_path / "train"
    assert (split_dir / "chunk_00001" / DONE_FILE).is_file() and not (split_dir / "chunk_00002" / DONE_FILE).exists()
    with pytest.raises(ValueError, match="not complete"):
        FeatureCache(tmp_path, "train")
    first_done = (split_dir / "chunk_00000" / DONE_FILE).stat().st_mtime_ns
    taps = Taps(visual, audio)
    report = extract_features(clips, taps, tmp_path, manifest, **options)
    assert taps.calls == 2 and (report.chunks_skipped, report.chunks_written, report.items_computed) == (2, 2, 3)
    assert (split_dir / "chunk_00000" / DONE_FILE).stat().st_mtime_ns == first_done
    assert not list(split_dir.glob("chunk_*/*.partial"))
    _assert_matches(FeatureCache(tmp_path, "train"), online, rtol=1e-5, atol=1e-5)
    again = Taps(visual, audio)
    assert extract_features(clips, again, tmp_path, manifest, **options).chunks_skipped == 4 and again.calls == 0
    with pytest.raises(ValueError, match="chunk_size: cache has 2, expected 3"):
        extract_features(clips, again, tmp_path, manifest, split="train", **QUIET)


def test_corrupt_chunks_are_detected_named_and_redone(setup, tmp_path):
    visual, audio, manifest, clips, online = setup
    extract_features(clips, Taps(visual, audio), tmp_path, manifest, split="train", batch_size=3, **QUIET)
    truncated = tmp_path / "train" / "chunk_00001" / "audio_taps_7.npy"
    os.truncate(truncated, truncated.stat().st_size - 100)
    cache = FeatureCache(tmp_path, "train")
    torch.testing.assert_close(cache[0]["visual_taps"][0], online[0]["visual_taps"][0])  # other chunks still read
    with pytest.raises(ValueError, match="chunk_00001/audio_taps_7.npy.*truncated.*run the extraction again"):
        cache[4]
    flipped = tmp_path / "train" / "chunk_00002" / "visual_taps_6.npy"
    data = bytearray(flipped.read_bytes())
    data[-5:] = bytes(255 - b for b in data[-5:])
    flipped.write_bytes(bytes(data))
    problems = cache.verify()
    assert len(problems) == 2 and "truncated" in problems[0] and str(truncated) in problems[0]
    assert str(flipped) in problems[1] and "CRC-32 mismatch" in problems[1]

    taps = Taps(visual, audio)  # a plain rerun redoes the truncated chunk; the flipped one needs a checksum pass
    assert extract_features(clips, taps, tmp_path, manifest, split="train", batch_size=3, **QUIET).chunks_written == 1
    assert taps.calls == 1 and FeatureCache(tmp_path, "train").verify() == [problems[1]]
    report = extract_features(clips, taps, tmp_path, manifest, split="train", batch_size=3, verify_existing=True,
                              **QUIET)
    assert report.chunks_written == 1 and report.items_computed == 1 and taps.calls == 2
    fixed = FeatureCache(tmp_path, "train")
    assert fixed.verify() == []
    _assert_matches(fixed, online, rtol=1e-5, atol=1e-5)

    data = bytearray(flipped.read_bytes())
    data[-1] ^= 1
    flipped.write_bytes(bytes(data))
    assert len(fixed.verify(repair=True)) == 1  # repair: the split must be finished again, then it is clean
    with pytest.raises(ValueError, match="not complete"):
        FeatureCache(tmp_path, "train")
    assert extract_features(clips, taps, tmp_path, manifest, split="train", batch_size=3, **QUIET).chunks_written == 1
    assert FeatureCache(tmp_path, "train").verify() == []


def test_bad_taps_overflow_and_full_disk_are_clear_errors(setup, tmp_path, monkeypatch):
    _, _, manifest, clips, _ = setup
    shapes = {name: spec.token_shapes for name, spec in manifest.groups.items()}

    def constant(value, drop=None):
        def compute(batch):
            rows = len(batch["video_id"]) * SEGMENTS
            return {name: [torch.full((rows, n, d), value) for n, d in shape]
                    for name, shape in shapes.items() if name != drop}
        return compute

    with pytest.raises(ValueError, match="overflow float16.*bfloat16"):
        extract_features(clips, constant(1e6), tmp_path / "a", manifest, split="train", dtype="float16", **QUIET)
    with pytest.raises(ValueError, match="NaN or inf"):
        extract_features(clips, constant(float("nan")), tmp_path / "b", manifest, split="train", **QUIET)
    with pytest.raises(ValueError, match="tap groups"):
        extract_features(clips, constant(0.0, drop="audio_taps"), tmp_path / "c", manifest, split="train", **QUIET)
    bad = FeatureManifest.from_dict({**manifest.to_dict(), "num_segments": 3})
    with pytest.raises(ValueError, match=r"\(B\*T, N, D\)"):
        extract_features(clips, constant(0.0), tmp_path / "d", bad, split="train", **QUIET)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(StorageError, match=r"extracting split 'train' needs [0-9.]+ (kB|MB) in .*, only 0.0 kB free: "
                                           r"free space, or extract into another directory \(--out DIR\)"):
        extract_features(clips, constant(0.0), tmp_path / "e", manifest, split="train", **QUIET)


def test_write_errors_reach_the_caller_and_keep_finished_chunks(setup, tmp_path, monkeypatch):
    visual, audio, manifest, clips, _ = setup
    original = chunks.ChunkWriter.write

    def failing(self, rows):
        if self.start >= 3:
            raise OSError(28, "No space left on device")
        original(self, rows)

    monkeypatch.setattr(chunks.ChunkWriter, "write", failing)
    with pytest.raises(StorageError, match="disk holding .* is full .*No space left.*: free space"):
        extract_features(clips, Taps(visual, audio), tmp_path, manifest, split="train", batch_size=3, **QUIET)
    assert (tmp_path / "train" / "chunk_00000" / DONE_FILE).is_file()
    assert not (tmp_path / "train" / "chunk_00001" / DONE_FILE).exists()
    assert not list((tmp_path / "train").glob("chunk_*/*.partial"))  # the failed chunk's files are removed


def test_nan_and_inf_are_named_by_file_and_row(setup, tmp_path):
    """A chunk whose values are NaN or Inf, with its recorded CRC-32 matching (written so) or not (damaged later):
    ``verify(values=True)`` names the file and the first row holding one."""
    visual, audio, manifest, clips, _ = setup
    extract_features(clips, Taps(visual, audio), tmp_path, manifest, split="train", batch_size=3, **QUIET)
    chunk = tmp_path / "train" / "chunk_00001"
    path = chunk / "visual_taps_7.npy"
    values = np.load(path)
    values[1, 0, 3, 2] = np.inf
    np.save(path, values)
    done = json.loads((chunk / DONE_FILE).read_text())
    done["files"][path.name]["crc32"] = chunks.file_crc32(path)
    (chunk / DONE_FILE).write_text(json.dumps(done))
    cache = FeatureCache(tmp_path, "train")
    assert cache.verify() == []                  # the checksums match: only the values tell
    assert cache.verify(values=True) == [f"{path}: row 1 (clip 4 of split 'train') holds NaN or Inf"]
    values[:] = np.nan
    np.save(path, values)
    problems = cache.verify(values=True)
    assert problems == [f"{path}: CRC-32 mismatch (contents changed since extraction); row 0 (clip 3 of split "
                        f"'train') holds NaN or Inf"]
