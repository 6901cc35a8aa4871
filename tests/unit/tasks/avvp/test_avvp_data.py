"""LLP reader on hand-written files in the real format, and synthetic LLP generation + prepare round trip."""
import json

import numpy as np
import pytest
import torch

from molt.tasks.avvp.reader import (EVAL_FILES, LLP_CATEGORIES, SPLIT_FILES, LLPAnnotations, parse_filename,
                           read_segment_events, read_weak_labels)
from molt.tasks.avvp.prepared import PreparedLLP, ensure_prepared
from molt.data.synthetic import GROUND_TRUTH_FILE
from molt.tasks.avvp.synthetic import VIDEO_SUBDIR, generate_llp, plan_llp_videos

# lines in the format of the authors' data/ files (tab-separated, header first); most are real lines, chosen for
# their quirks: ids holding '_', a repeated weak label, empty (onset == offset) and repeated eval lines, and eval
# lines of a filename that no split file lists
FILES = {
    "AVVP_train.csv": ["filename\tevent_labels", "BjCEufrlXm4_20_30\tSpeech,Dog",
                       "J_Z8OiW9z_E_430_440\tCello,Violin_fiddle", "0PKI3zo26_4_12_22\tSpeech,Clapping"],
    "AVVP_val_pd.csv": ["filename\tevent_labels", "4O9rI-FpqLg_10_20\tCheering,Speech,Clapping"],
    "AVVP_test_pd.csv": ["filename\tevent_labels", "CaC2xvdLC34_250_260\tSinging,Violin_fiddle,Speech,Cello,Clapping",
                         "H5WcJwyjxIg_2_12\tBaby_cry_infant_cry", "LcFWKgFphXI_20_30\tClapping,Clapping",
                         "Ishr8cHsJkc_180_190\tSpeech,Dog"],
    "AVVP_eval_audio.csv": ["filename\tonset\toffset\tevent_labels", "4O9rI-FpqLg_10_20\t0\t4\tCheering",
                            "CaC2xvdLC34_250_260\t0\t9\tViolin_fiddle", "CaC2xvdLC34_250_260\t0\t8\tSinging",
                            "CaC2xvdLC34_250_260\t9\t10\tClapping", "CaC2xvdLC34_250_260\t9\t9\tSpeech",
                            "P7x4FV4lg_570_580\t0\t10\tFrying_(food)", "H5WcJwyjxIg_2_12\t0\t0\tBaby_cry_infant_cry",
                            "Ishr8cHsJkc_180_190\t5\t6\tSpeech", "Ishr8cHsJkc_180_190\t1\t2\tDog",
                            "Ishr8cHsJkc_180_190\t5\t6\tSpeech"],
    "AVVP_eval_visual.csv": ["filename\tonset\toffset\tevent_labels", "CaC2xvdLC34_250_260\t0\t10\tViolin_fiddle",
                             "P7x4FV4lg_570_580\t0\t10\tFrying_(food)", "P7x4FV4lg_570_580\t3\t6\tSpeech",
                             "H5WcJwyjxIg_2_12\t0\t10\tBaby_cry_infant_cry", "Ishr8cHsJkc_180_190\t0\t10\tDog"],
}
INDEX = {name: i for i, name in enumerate(LLP_CATEGORIES)}


def write_files(folder, files=FILES):
    for name, lines in files.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_reader_on_real_format(tmp_path):
    annotations = LLPAnnotations.from_dir(write_files(tmp_path))
    assert annotations.categories == list(LLP_CATEGORIES) and annotations.num_classes == 25
    assert annotations.categories[0] == "Speech" and annotations.categories[24] == "Clapping"
    assert {s: len(annotations.records(s)) for s in SPLIT_FILES} == {"train": 3, "val": 1, "test": 4}
    train = annotations.records("train")
    assert [(r.video_id, r.start, r.end) for r in train] == [("BjCEufrlXm4", 20, 30), ("J_Z8OiW9z_E", 430, 440),
                                                             ("0PKI3zo26_4", 12, 22)]
    assert train[0].labels == ("Speech", "Dog") and train[0].line == 2
    np.testing.assert_array_equal(np.flatnonzero(annotations.weak_labels(train[0])), [INDEX["Speech"], INDEX["Dog"]])
    assert not annotations.has_segment_labels(train[0])
    assert all(not m.any() for m in annotations.segment_labels(train[0]))

    test = {r.filename: r for r in annotations.records("test")}
    assert test["LcFWKgFphXI_20_30"].labels == ("Clapping",)                      # repeated weak label once
    audio, visual = annotations.segment_labels(test["CaC2xvdLC34_250_260"])
    assert audio.shape == visual.shape == (10, 25) and audio.dtype == np.float32
    assert audio[:, INDEX["Violin_fiddle"]].tolist() == [1] * 9 + [0]
    assert audio[:, INDEX["Singing"]].tolist() == [1] * 8 + [0, 0]
    assert audio[:, INDEX["Clapping"]].tolist() == [0] * 9 + [1]
    assert audio[:, INDEX["Speech"]].sum() == 0                                   # empty event (9-9)
    assert visual[:, INDEX["Violin_fiddle"]].sum() == 10 and visual.sum() == 10
    audio, visual = annotations.segment_labels(test["Ishr8cHsJkc_180_190"])      # repeated line = union
    assert audio[:, INDEX["Speech"]].tolist() == [0] * 5 + [1] + [0] * 4 and audio.sum() == 2
    audio, visual = annotations.segment_labels(test["H5WcJwyjxIg_2_12"])
    assert audio.sum() == 0 and visual[:, INDEX["Baby_cry_infant_cry"]].sum() == 10
    assert annotations.has_segment_labels(test["LcFWKgFphXI_20_30"])            # annotated: nothing happens
    assert all(not m.any() for m in annotations.segment_labels(test["LcFWKgFphXI_20_30"]))
    assert annotations.unmatched_events == 3                                      # P7x4FV4lg_570_580 lines
    assert len(annotations.events(test["CaC2xvdLC34_250_260"], "audio")) == 4


def test_parse_filename():
    assert parse_filename("BjCEufrlXm4_20_30") == ("BjCEufrlXm4", 20, 30)
    assert parse_filename("J_Z8OiW9z_E_430_440") == ("J_Z8OiW9z_E", 430, 440)
    assert parse_filename("-1IqjtYVuK4_2_12") == ("-1IqjtYVuK4", 2, 12)
    for bad in ("BjCEufrlXm4", "BjCEufrlXm4_20", "BjCEufrlXm4_a_30", "_20_30"):
        with pytest.raises(ValueError, match="LLP filename"):
            parse_filename(bad)


def test_reader_errors_name_file_and_line(tmp_path):
    path = tmp_path / "AVVP_train.csv"
    path.write_text("filename,event_labels\nBjCEufrlXm4_20_30,Speech\n")
    with pytest.raises(ValueError, match=r"AVVP_train.csv:1: .*tab-separated"):
        read_weak_labels(path)
    path.write_text("filename\tevent_labels\nBjCEufrlXm4_20_30\tSpeech,Barking\n")
    with pytest.raises(ValueError, match=r"AVVP_train.csv:2: unknown category 'Barking'"):
        read_weak_labels(path, categories=LLP_CATEGORIES)
    path.write_text("filename\tevent_labels\nBjCEufrlXm4_20_30\tSpeech\textra\n")
    with pytest.raises(ValueError, match=r"AVVP_train.csv:2: expected 2 tab-separated fields"):
        read_weak_labels(path)
    events = tmp_path / "AVVP_eval_audio.csv"
    # onset > offset is not an error: the official evaluation marks nothing for it (tests/test_llp_release.py)
    for line, message in (("X_0_10\t-1\t3\tSpeech", "in 0..10"), ("X_0_10\t0\t11\tSpeech", "in 0..10"),
                          ("X_0_10\t0.5\t3\tSpeech", "whole number"), ("X_0_10\t0\t3\t", "empty event label")):
        events.write_text(f"filename\tonset\toffset\tevent_labels\n{line}\n")
        with pytest.raises(ValueError, match=f"AVVP_eval_audio.csv:2: .*{message}"):
            read_segment_events(events, "audio")
    events.write_text("filename\tonset\toffset\tevent_labels\nX_0_10\t3.0\t4\tSpeech\n")
    assert [(e.onset, e.offset) for e in read_segment_events(events, "audio")] == [(3, 4)]
    with pytest.raises(FileNotFoundError, match="no LLP split file"):
        LLPAnnotations.from_dir(tmp_path / "nowhere")


def test_eval_files_come_as_a_pair_and_are_optional(tmp_path, caplog):
    files = {name: lines for name, lines in FILES.items() if name != EVAL_FILES["visual"]}
    with pytest.raises(FileNotFoundError, match="AVVP_eval_visual.csv"):
        LLPAnnotations.from_dir(write_files(tmp_path, files))
    (tmp_path / EVAL_FILES["audio"]).unlink()
    annotations = LLPAnnotations.from_dir(tmp_path)
    assert not annotations.has_eval and "no segment-level labels" in caplog.text
    assert not annotations.has_segment_labels(annotations.records("test")[0])


def test_categories_file_overrides_the_llp_list(tmp_path):
    write_files(tmp_path, {"AVVP_train.csv": ["filename\tevent_labels", "abc_0_10\tBeep,Boop"]})
    (tmp_path / "categories.txt").write_text("Boop\nBeep\n")
    annotations = LLPAnnotations.from_dir(tmp_path)
    assert annotations.categories == ["Boop", "Beep"]
    assert annotations.weak_labels(annotations.records("train")[0]).tolist() == [1.0, 1.0]


def test_plan_is_deterministic_and_consistent():
    plans = plan_llp_videos(30, seed=5)
    assert plans == plan_llp_videos(30, seed=5) and plans != plan_llp_videos(30, seed=6)
    assert {p["split"] for p in plans} == {"train", "val", "test"}
    for plan in plans:
        assert 1 <= len(plan["events"]) <= 3 and len(set(plan["labels"])) == len(plan["labels"])
        for event in plan["events"]:
            assert (event["audio"] is None) == (event["kind"] == "visual")
            assert (event["visual"] is None) == (event["kind"] == "audio")
        first = plan["events"][0]
        assert first["kind"] == "audio_visual" and first["audio"] == first["visual"]
        heard = {k for segment in plan["audio"] for k in segment}
        seen = {k for segment in plan["visual"] for k in segment}
        assert heard | seen == {e["class_index"] for e in plan["events"]}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_llp")
    summary = generate_llp(root, num_videos=8, seed=3, image_size=32, fps=4, workers=1, show_progress=False,
                           split_fractions=(0.5, 0.25, 0.25))
    return root, summary


def test_synthetic_layout_reads_back(synthetic):
    root, summary = synthetic
    assert summary["splits"] == {"train": 4, "val": 2, "test": 2}
    annotations = LLPAnnotations.from_dir(root)
    plans = {p["filename"]: p for p in json.loads((root / GROUND_TRUTH_FILE).read_text())["videos"]}
    assert annotations.categories == summary["categories"] and annotations.has_eval
    for split in SPLIT_FILES:
        for record in annotations.records(split):
            plan = plans[record.filename]
            assert (root / VIDEO_SUBDIR / f"{record.video_id}.mp4").is_file()
            assert list(record.labels) == plan["labels"] and plan["split"] == split
            if split != "train":
                audio, visual = annotations.segment_labels(record)
                for t in range(10):
                    assert np.flatnonzero(audio[t]).tolist() == sorted(plan["audio"][t])
                    assert np.flatnonzero(visual[t]).tolist() == sorted(plan["visual"][t])
    with pytest.raises(ValueError, match="no settings"):
        generate_llp(root / "other", num_videos=2, setting="s4")


def test_prepare_round_trip(synthetic, tmp_path):
    root, summary = synthetic
    prepared = ensure_prepared(root, workers=1, show_progress=False)
    assert ensure_prepared(root) == prepared and ensure_prepared(prepared) == prepared
    plans = {p["filename"]: p for p in json.loads((root / GROUND_TRUTH_FILE).read_text())["videos"]}
    train, test = PreparedLLP(prepared, "train"), PreparedLLP(prepared, "test")
    assert (len(train), len(test), len(PreparedLLP(prepared))) == (4, 2, 8)
    assert train.image_size == 32 and train.sample_rate == 32000 and train.num_segments == 10
    assert train.task_options() == {"class_names": summary["categories"]}
    item = train[0]
    assert item["frames"].shape == (10, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert item["audio"].shape == (10, 32000) and item["audio"].dtype == torch.float32
    assert item["labels"].shape == (6,) and item["audio_labels"].shape == item["visual_labels"].shape == (10, 6)
    assert float(item["label_valid"]) == 0.0 and item["audio_labels"].sum() == 0 == item["visual_labels"].sum()
    loud, quiet, colourful, plain = [], [], [], []
    for data in (train, test):
        for i in range(len(data)):
            item, plan = data[i], plans[data[i]["video_id"]]
            expected = torch.zeros(6)
            expected[[e["class_index"] for e in plan["events"]]] = 1
            assert torch.equal(item["labels"], expected)
            if data is test:
                assert float(item["label_valid"]) == 1.0
                assert [torch.nonzero(row).flatten().tolist() for row in item["audio_labels"]] == \
                       [sorted(s) for s in plan["audio"]]
            # the decoded media carry the plan: class sounds are loud, class patterns are saturated colours
            rms = item["audio"].pow(2).mean(dim=1).sqrt()
            frames = item["frames"].int()
            chroma = ((frames.amax(dim=1) - frames.amin(dim=1)) > 120).float().mean(dim=(1, 2))
            for t in range(10):
                (loud if plan["audio"][t] else quiet).append(float(rms[t]))
                (colourful if plan["visual"][t] else plain).append(float(chroma[t]))
    assert np.mean(loud) > 2 * np.mean(quiet) and np.median(loud) > max(quiet)
    assert np.mean(colourful) > 0.03 > 10 * np.mean(plain)


def test_prepare_skips_missing_clips(synthetic, tmp_path):
    root, _ = synthetic
    copy = tmp_path / "copy"
    (copy / VIDEO_SUBDIR).mkdir(parents=True)
    for path in root.glob("*.csv"):
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "categories.txt").write_bytes((root / "categories.txt").read_bytes())
    records = LLPAnnotations.from_dir(copy).records("test")
    kept = records[0]
    (copy / f"{kept.filename}.mp4").write_bytes((root / VIDEO_SUBDIR / f"{kept.video_id}.mp4").read_bytes())
    prepared = ensure_prepared(copy, image_size=32, workers=1, show_progress=False)
    assert [row["filename"] for row in json.loads((prepared / "index.json").read_text())["rows"]] == [kept.filename]
    skipped = (prepared / "skipped.tsv").read_text().splitlines()
    assert skipped[0].startswith("filename\treason") and len(skipped) == 8
    assert all("missing file" in line for line in skipped[1:])
    with pytest.raises(ValueError, match="no settings"):
        ensure_prepared(copy, setting="ms3")
