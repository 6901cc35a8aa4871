"""MUSIC-AVQA reader on the real annotation files; synthetic generator; `prepare_avqa` + `PreparedAVQA`."""
import json
import logging
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from helpers import needs_shared_fixtures, shared_fixture_dir
from molt.data.media import read_clip, write_clip
from molt.tasks.avqa.reader import (
    PAD,
    QUESTION_TYPES,
    UNK,
    MusicAVQA,
    encode_question,
    fill_placeholders,
    find_video,
    read_questions,
    tokenize,
)
from molt.tasks.avqa.prepared import PreparedAVQA, ensure_prepared, prepare_avqa, segment_seconds
from molt.tasks.avqa.synthetic import TEMPLATES, generate_avqa, plan_avqa_videos
from molt.tasks.avqa import majority_baseline




REAL = shared_fixture_dir("music_avqa", "avqa-val.json", "MOLT_AVQA_FIXTURES")
needs_real = needs_shared_fixtures(REAL, "real MUSIC-AVQA files")

# counts of the corrected (json_update) files, per (family, sub-type)
VAL_TYPES = {("Audio", "Comparative"): 295, ("Audio", "Counting"): 511, ("Audio-Visual", "Comparative"): 549,
             ("Audio-Visual", "Counting"): 633, ("Audio-Visual", "Existential"): 495,
             ("Audio-Visual", "Location"): 461, ("Audio-Visual", "Temporal"): 411, ("Visual", "Counting"): 600,
             ("Visual", "Location"): 613}
TEST_TYPES = {("Audio", "Comparative"): 594, ("Audio", "Counting"): 1017, ("Audio-Visual", "Comparative"): 1101,
              ("Audio-Visual", "Counting"): 1265, ("Audio-Visual", "Existential"): 988,
              ("Audio-Visual", "Location"): 920, ("Audio-Visual", "Temporal"): 822, ("Visual", "Counting"): 1197,
              ("Visual", "Location"): 1225}


@pytest.fixture(scope="module")
def real():
    return MusicAVQA.from_dir(REAL)


@needs_real
def test_real_counts_per_split_and_type(real):
    assert {split: len(real.records(split)) for split in real.splits} == {"val": 4568, "test": 9129,
                                                                           "test_original": 9185}
    assert real.type_counts("val") == VAL_TYPES
    assert real.type_counts("test") == TEST_TYPES
    assert set(real.type_counts()) == set(QUESTION_TYPES)
    assert len(real.video_ids("val")) == 3815 and len(real.video_ids("test")) == 6399
    assert not real.dropped    # the corrected files repeat no question id
    # ans_vocab.txt beside the files fixes the 42 answers and their order
    assert len(real.answers) == 42 and real.answers[:5] == ["two", "cello", "congas", "zero", "no"]
    assert Counter(r.answer for r in real.records("val"))["yes"] == 1191
    assert "ten" in real.answers and all(r.answer != "ten" for r in real.records())


@needs_real
def test_both_test_files_the_original_with_its_repeated_ids(real):
    """The first release's test file (LAVisH / DG-SCT evaluate on it) is split ``test_original``, every record kept;
    its per-type counts are those of the raw file, counted here without the reader."""
    raw = json.loads((REAL / "original" / "avqa-test.json").read_text())
    raw_types = Counter(tuple(json.loads(record["type"])) for record in raw)
    assert len(raw) == 9185 and len(raw) - len({record["question_id"] for record in raw}) == 55
    original = real.records("test_original")
    assert len(original) == 9185 and len({r.question_id for r in original}) == 9185 - 55
    assert real.type_counts("test_original") == dict(raw_types)
    assert sum(raw_types.values()) - sum(TEST_TYPES.values()) == 56  # the update removed 56 records
    assert real.files["test_original"] == REAL / "original" / "avqa-test.json"
    assert real.files["test"] == REAL / "avqa-test.json"
    # a root holding only the first release reads it as the test split (duplicates dropped) and has no variant
    only = MusicAVQA.from_dir(REAL / "original")
    assert set(only.splits) == {"test"} and len(only.records("test")) == 9185 - 55


@needs_real
def test_every_placeholder_is_filled(real):
    records = real.records()
    assert len({r.template for r in records}) == 33
    assert all("<" not in r.question and ">" not in r.question for r in records)
    assert max(len(r.words) for r in records) == 14 == real.max_question_length()
    first = next(r for r in records if r.question_id == 10)
    assert first.question == "Is the guzheng louder than the piano?" and first.templ_values == ("guzheng", "piano")
    assert first.words == ("is", "the", "guzheng", "louder", "than", "the", "piano")
    # the full-width question mark and trailing spaces of some templates leave no token behind
    wide = next(r for r in records if r.template.endswith("\uff1f"))
    assert wide.words[-2:] == ("the", "video") and wide.words[3] in real.answers
    spaced = next(r for r in records if r.template.endswith("sound? "))
    assert spaced.words[-1] == "sound"
    # placeholders other than <Object> are filled too, in order
    located = next(r for r in records if r.template == "Is the <FL> sound coming from the <LR> instrument?")
    assert located.question == f"Is the {located.templ_values[0]} sound coming from the {located.templ_values[1]} " \
                               f"instrument?"
    assert {r.family for r in records} == {"Audio", "Visual", "Audio-Visual"}


@needs_real
def test_vocabularies_from_train_only(tmp_path, real):
    val = json.loads((REAL / "avqa-val.json").read_text())
    (tmp_path / "avqa-train.json").write_text(json.dumps(val[:300]))
    shutil.copy(REAL / "avqa-test.json", tmp_path / "avqa-test.json")
    data = MusicAVQA.from_dir(tmp_path)          # no ans_vocab.txt: answers of train first, then the rest
    train_words = {w for r in data.records("train") for w in r.words}
    assert data.question_vocab[:2] == [PAD, UNK] and set(data.question_vocab[2:]) == train_words
    assert data.answers[:len({r["anser"] for r in val[:300]})] == list(dict.fromkeys(r["anser"] for r in val[:300]))
    assert len(data.answers) == 41                # "ten" is never used in val / test
    unseen = next(r for r in data.records("test") if any(w not in train_words for w in r.words))
    ids = data.encode(unseen, 16)
    assert len(ids) == 16 and ids[len(unseen.words):] == [0] * (16 - len(unseen.words))
    assert 1 in ids[:len(unseen.words)]           # <unk>


@needs_real
def test_duplicated_question_ids(tmp_path, caplog):
    val = json.loads((REAL / "avqa-val.json").read_text())
    repeated = dict(val[5])
    conflicting = dict(val[7], anser="yes" if val[7]["anser"] != "yes" else "no")
    (tmp_path / "avqa-val.json").write_text(json.dumps(val[:20] + [repeated, conflicting] + val[20:40]))
    with caplog.at_level(logging.WARNING, logger="molt.tasks.avqa.reader"):
        data = MusicAVQA.from_dir(tmp_path)
    assert len(data.records("val")) == 40
    assert [r.question_id for r in data.dropped["val"]] == [val[5]["question_id"], val[7]["question_id"]]
    kept = next(r for r in data.records("val") if r.question_id == val[7]["question_id"])
    assert kept.answer == val[7]["anser"]        # the first record wins
    ids = ", ".join(str(i) for i in sorted([val[5]["question_id"], val[7]["question_id"]]))
    assert any(f"2 record(s) repeat 2 question_id(s) (1 with another answer): {ids}; kept the first" in m
               for m in caplog.messages)
    assert len(MusicAVQA.from_dir(tmp_path, duplicates="keep").records("val")) == 42
    with pytest.raises(ValueError, match=f"repeat 2 question_id.*: {ids}; use the corrected"):
        MusicAVQA.from_dir(tmp_path, duplicates="error")


@needs_real
def test_duplicated_ids_listed_first_ten_and_a_count(tmp_path, caplog):
    val = json.loads((REAL / "avqa-val.json").read_text())[:40]
    (tmp_path / "avqa-val.json").write_text(json.dumps(val + val[:13]))
    with caplog.at_level(logging.WARNING, logger="molt.tasks.avqa.reader"):
        MusicAVQA.from_dir(tmp_path)
    first_ten = ", ".join(str(i) for i in sorted(r["question_id"] for r in val[:13])[:10])
    assert any(f"13 record(s) repeat 13 question_id(s) (0 with another answer): {first_ten} and 3 more" in m
               for m in caplog.messages)


def test_record_quirks_and_errors(tmp_path):
    record = {"video_id": "00000086", "question_id": 28, "type": "[\"Audio-Visual\", \"Existential\"]",
              "question_content": "Is the <Object> in the video always playing?", "templ_values": "[\"violin\"]",
              "question_deleted": 0, "anser": "no"}
    listed = dict(record, question_id=29, type=["Visual", "Counting"], templ_values=["cello"])
    deleted = dict(record, question_id=30, question_deleted=1)
    path = tmp_path / "avqa-val.json"
    path.write_text(json.dumps([record, listed, deleted]))
    records, dropped = read_questions(path, "val")
    assert dropped == 1 and [r.question for r in records] == ["Is the violin in the video always playing?",
                                                              "Is the cello in the video always playing?"]
    assert (records[1].family, records[1].subtype) == ("Visual", "Counting")
    path.write_text(json.dumps([dict(record, templ_values="[]")]))
    with pytest.raises(ValueError, match=r"avqa-val.json record 0 \(question_id 28\).*placeholder"):
        read_questions(path)
    path.write_text(json.dumps([dict(record, type="[\"Audio\", \"Loudness\"]")]))
    with pytest.raises(ValueError, match="unknown question type"):
        read_questions(path)
    path.write_text(json.dumps([{k: v for k, v in record.items() if k != "anser"}]))
    with pytest.raises(ValueError, match="missing key"):
        read_questions(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_questions(path)
    with pytest.raises(FileNotFoundError):
        MusicAVQA.from_dir(tmp_path / "nowhere")
    assert tokenize("How many sounding acoustic_guitar in the video\uff1f") == \
        ["how", "many", "sounding", "acoustic_guitar", "in", "the", "video"]
    assert fill_placeholders("Is the <LRer> <Object>?", ["leftest", "drum"]) == "Is the leftest drum?"
    assert encode_question(["is", "x"], [PAD, UNK, "is"], 4) == [2, 1, 0, 0]


def test_video_lookup_in_the_release_folders(tmp_path):
    for folder, video_id in (("MUSIC-AVQA-videos-Real", "00000001"), ("MUCIS-AVQA-videos-Synthetic", "sa00000002"),
                             (".", "00000003")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{video_id}.mp4").write_bytes(b"x")
        assert find_video(tmp_path, video_id) == tmp_path / folder / f"{video_id}.mp4"
    assert find_video(tmp_path, "00000004") is None


def test_segments_spread_over_a_long_clip(tmp_path):
    assert segment_seconds(10) == list(range(10))
    assert segment_seconds(60) == [0, 6, 13, 19, 26, 32, 39, 45, 52, 59]
    assert segment_seconds(5) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    seconds, fps = 20, 2
    brightness = np.repeat(np.arange(seconds) * 12 + 10, fps).astype(np.uint8)
    frames = np.broadcast_to(brightness[:, None, None, None], (seconds * fps, 16, 16, 3)).copy()
    t = np.arange(seconds * 16000) / 16000
    write_clip(tmp_path / "00000001.mp4", frames, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
               fps=fps, sample_rate=16000)
    (tmp_path / "avqa-train.json").write_text(json.dumps([{
        "video_id": "00000001", "question_id": 1, "type": "[\"Visual\", \"Location\"]",
        "question_content": "Where is the performance?", "templ_values": "[]", "question_deleted": 0,
        "anser": "indoor"}]))
    report = prepare_avqa(tmp_path, tmp_path / "out", image_size=16, workers=1, show_progress=False)
    assert report.stored == ["00000001"]
    item = PreparedAVQA(tmp_path / "out", "train")[0]
    means = item["frames"].float().mean(dim=(1, 2, 3))
    expected = torch.tensor([12.0 * s + 10 for s in segment_seconds(seconds)])
    assert torch.allclose(means, expected, atol=4)
    assert item["audio"].shape == (10, 32000) and item["audio"].abs().max() > 0.1


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth_avqa")
    summary = generate_avqa(base / "a", num_videos=10, seed=3, image_size=32, fps=2, workers=1, show_progress=False)
    generate_avqa(base / "b", num_videos=10, seed=3, image_size=32, fps=2, workers=2, show_progress=False)
    return base, summary


def test_synthetic_files_follow_the_real_format(synthetic):
    base, summary = synthetic
    root = base / "a"
    text = (root / "avqa-train.json").read_text()
    assert not text.endswith("\n") and text.startswith("[\n  {\n    \"video_id\": ")
    for split in ("train", "val", "test"):
        for record in json.loads((root / f"avqa-{split}.json").read_text()):
            assert list(record) == ["video_id", "question_id", "type", "question_content", "templ_values",
                                    "question_deleted", "anser"]
            assert isinstance(record["type"], str) and isinstance(record["templ_values"], str)
            assert tuple(json.loads(record["type"])) in TEMPLATES and len(record["video_id"]) == 8
            assert (root / "MUSIC-AVQA-videos-Real" / f"{record['video_id']}.mp4").is_file()
    data = MusicAVQA.from_dir(root)
    assert {s: len(data.records(s)) for s in data.splits} == summary["questions"]
    assert all("<" not in r.question for r in data.records())
    for name in ("avqa-train.json", "avqa-val.json", "avqa-test.json", "synthetic_ground_truth.json"):
        assert (root / name).read_bytes() == (base / "b" / name).read_bytes()   # 1 vs 2 workers
    video = data.video_ids("train")[0]
    one = read_clip(root / "MUSIC-AVQA-videos-Real" / f"{video}.mp4", image_size=32)
    two = read_clip(base / "b" / "MUSIC-AVQA-videos-Real" / f"{video}.mp4", image_size=32)
    np.testing.assert_array_equal(one.frames, two.frames)


def test_synthetic_answers_follow_the_scene():
    plans = plan_avqa_videos(400, seed=0)
    kinds, answers = Counter(), {}
    for plan in plans:
        stage = plan["objects"]
        for q in plan["questions"]:
            kind = (q["family"], q["subtype"])
            kinds[kind] += 1
            answers.setdefault(kind, Counter())[q["answer"]] += 1
            if kind == ("Audio-Visual", "Counting"):
                assert q["answer"] == ("zero", "one", "two")[sum(s["window"] is not None for s in stage)]
            if kind == ("Visual", "Location"):
                named = next(s for s in stage if s["side"] != q["templ_values"][0])
                assert q["templ_values"][1] != q["answer"] and named is not None
    assert set(kinds) == set(QUESTION_TYPES) and min(kinds.values()) > 200
    # no type is answered well by its majority answer
    for kind, counter in answers.items():
        assert max(counter.values()) / sum(counter.values()) < 0.7, kind
    # "no" to "is there an X sound?" is often about an instrument in view that stays silent (sight misleads)
    misleading = 0
    for plan in plans:
        silent = {s["instrument"] for s in plan["objects"] if s["window"] is None}
        for q in plan["questions"]:
            if (q["family"], q["subtype"]) == ("Audio", "Counting") and q["answer"] == "no":
                misleading += q["templ_values"][0] in {("violin", "piano", "cello", "flute", "trumpet")[k]
                                                       for k in silent}
    assert misleading > 100


def test_prepared_dataset_items(synthetic, tmp_path):
    base, summary = synthetic
    root = base / "a"
    truth = json.loads((root / "synthetic_ground_truth.json").read_text())
    data = MusicAVQA.from_dir(root)
    broken = data.video_ids("test")[0]
    shutil.copytree(root, tmp_path / "root")
    (tmp_path / "root" / "MUSIC-AVQA-videos-Real" / f"{broken}.mp4").unlink()
    prepared = ensure_prepared(tmp_path / "root", workers=2, show_progress=False)
    assert prepared == tmp_path / "root" / "prepared" and ensure_prepared(prepared) == prepared
    assert ensure_prepared(tmp_path / "root") == prepared          # reused
    skipped = (prepared / "skipped.tsv").read_text().splitlines()
    assert skipped[1].split("\t")[:2] == [broken, "missing file"]
    train, test = PreparedAVQA(prepared, "train"), PreparedAVQA(prepared, "test")
    assert len(train) == summary["questions"]["train"]
    assert len(test) == summary["questions"]["test"] - sum(r.video_id == broken for r in data.records("test"))
    assert train.image_size == truth["options"]["image_size"] == 32 and train.sample_rate == 32000
    options = train.task_options()
    assert json.loads(json.dumps(options)) == options
    assert options["question_vocab"] == data.question_vocab and options["answers"] == data.answers
    assert options["question_types"][:9] == [f"{f}/{s}" for f, s in QUESTION_TYPES]
    item = train[3]
    assert item["frames"].shape == (10, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert item["audio"].shape == (10, 32000) and item["audio"].dtype == torch.float32
    row = train.rows[3]
    record = next(r for r in data.records("train") if r.question_id == row["question_id"])
    assert item["question"].shape == (train.max_question_length,) and item["question"].dtype == torch.int64
    assert int(item["question_length"]) == len(record.words)
    words = [options["question_vocab"][i] for i in item["question"][:int(item["question_length"])]]
    assert words == list(record.words) and (item["question"][len(words):] == 0).all()
    assert options["answers"][int(item["answer"])] == record.answer
    assert (int(item["family"]), int(item["subtype"])) == (("Audio", "Visual", "Audio-Visual").index(record.family),
                                                           ("Counting", "Comparative", "Existential", "Location",
                                                            "Temporal").index(record.subtype))
    clip = read_clip(root / "MUSIC-AVQA-videos-Real" / f"{record.video_id}.mp4", image_size=32)
    assert torch.equal(item["frames"], torch.from_numpy(clip.frames).permute(0, 3, 1, 2))
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch["question"].shape == (4, train.max_question_length) and len(batch["video_id"]) == 4
    labels = train.labels()
    assert labels["answer"].shape == (len(train),) and (labels["answer"] >= 0).all()
    assert 0.3 < majority_baseline(labels, labels)["accuracy"] < 0.75        # answers are balanced per type
    assert sum(summary["per_type"].values()) == sum(summary["questions"].values())
    # another vocabulary (e.g. a checkpoint's) re-encodes the same words
    other = PreparedAVQA(prepared, "train", question_vocab=[PAD, UNK, "is"], answers=["yes"])
    assert set(other[3]["question"].tolist()) <= {0, 1, 2} and int(other[3]["answer"]) in (-1, 0)
    with pytest.raises(ValueError, match="split"):
        PreparedAVQA(prepared, "dev")
    with pytest.raises(FileNotFoundError, match="index.json"):
        PreparedAVQA(tmp_path)
    with pytest.raises(ValueError, match="no settings"):
        ensure_prepared(prepared, setting="s4")


def test_prepare_cli_duplicates_policy(synthetic, tmp_path, caplog):
    from molt.app.cli import main

    root = tmp_path / "root"
    shutil.copytree(synthetic[0] / "a", root)
    questions = json.loads((root / "avqa-train.json").read_text())
    (root / "avqa-train.json").write_text(json.dumps(questions + questions[:2]))
    repeated = ", ".join(str(i) for i in sorted(r["question_id"] for r in questions[:2]))
    assert main(["prepare", "avqa", "--data", str(root), "--duplicates", "error", "--workers", "1"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{root / 'avqa-train.json'}: 2 record(s) repeat 2 question_id(s) (0 with another answer): "
                      f"{repeated}; use the corrected json_update files, or --duplicates first (keep the first "
                      f"record of each id) or keep"]
    for policy, rows in (("keep", len(questions) + 2), ("first", len(questions))):
        assert main(["prepare", "avqa", "--data", str(root), "--duplicates", policy, "--workers", "1"]) == 0
        assert len(PreparedAVQA(root / "prepared", "train")) == rows
    index = json.loads((root / "prepared" / "index.json").read_text())
    assert sorted(index["dropped_duplicates"]["train"]) == sorted(r["question_id"] for r in questions[:2])
