"""Every real annotation file (``tools/fetch_fixtures.py`` lists them; ../shared/fixtures, tests/fixtures/real or
$MOLT_FIXTURES holds them) is read by its reader here (the per-dataset tests check their contents in detail); files
no reader takes are listed with the reason. The fetch script's pinned hashes are checked against the files."""
import importlib.util
import json

import pytest

from helpers import ROOT, needs_shared_fixtures, real_fixtures_root
from molt.tasks.ave.reader import AVEAnnotations
from molt.tasks.avqa.reader import MusicAVQA
from molt.tasks.avs.reader import read_label2idx, read_semantic_meta
from molt.tasks.avvp.reader import LLPAnnotations, read_weak_labels

REAL = real_fixtures_root()
needs_real = needs_shared_fixtures(REAL, "the real annotation files")

NOT_READ = {"SOURCES.md": "provenance notes", "ave/ReadMe.txt": "the dataset's free-text read-me",
            "htsat_state_dict_keys.tsv": "HTS-AT's parameter names (a copy is in tests/fixtures; test_htsat reads it)"}


def _fetch_script():
    spec = importlib.util.spec_from_file_location("fetch_fixtures", ROOT / "tools" / "fetch_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_every_file() -> dict[str, int]:
    """Relative path -> records the reader returned."""
    counts: dict[str, int] = {}
    ave = AVEAnnotations.from_dir(REAL / "ave")
    counts["ave/Annotations.txt"] = len(ave.records())
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        counts[f"ave/{name}"] = len(ave.records(split))
    counts["ave/categories.txt"] = ave.num_classes
    counts["avsbench/metadata.csv"] = len(read_semantic_meta(REAL / "avsbench" / "metadata.csv"))
    counts["avsbench/label2idx.json"] = len(read_label2idx(REAL / "avsbench" / "label2idx.json"))
    llp = LLPAnnotations.from_dir(REAL / "llp")
    for split, name in (("train", "AVVP_train.csv"), ("val", "AVVP_val_pd.csv"), ("test", "AVVP_test_pd.csv")):
        counts[f"llp/{name}"] = len(llp.records(split))
    for modality, name in (("audio", "AVVP_eval_audio.csv"), ("visual", "AVVP_eval_visual.csv")):
        counts[f"llp/{name}"] = sum(len(llp.events(r, modality)) for s in ("val", "test") for r in llp.records(s))
    full = read_weak_labels(REAL / "llp" / "AVVP_dataset_full.csv")
    counts["llp/AVVP_dataset_full.csv"] = len(full)
    avqa = MusicAVQA.from_dir(REAL / "music_avqa")
    counts["music_avqa/avqa-val.json"] = len(avqa.records("val"))
    counts["music_avqa/avqa-test.json"] = len(avqa.records("test"))
    counts["music_avqa/original/avqa-test.json"] = len(avqa.records("test_original"))
    counts["music_avqa/ans_vocab.txt"] = len(avqa.answers)
    return counts


@needs_real
def test_every_fixture_file_is_read():
    present = {str(path.relative_to(REAL)) for path in REAL.rglob("*") if path.is_file()}
    counts = _read_every_file()
    assert present - set(NOT_READ) == set(counts), "a fixture file has no reader here (or a listed one is gone)"
    assert counts == {
        "ave/Annotations.txt": 4143, "ave/trainSet.txt": 3339, "ave/valSet.txt": 402, "ave/testSet.txt": 402,
        "ave/categories.txt": 28, "avsbench/metadata.csv": 11356, "avsbench/label2idx.json": 71,
        "llp/AVVP_train.csv": 10000, "llp/AVVP_val_pd.csv": 649, "llp/AVVP_test_pd.csv": 1200,
        "llp/AVVP_eval_audio.csv": counts["llp/AVVP_eval_audio.csv"],
        "llp/AVVP_eval_visual.csv": counts["llp/AVVP_eval_visual.csv"], "llp/AVVP_dataset_full.csv": 11849,
        "music_avqa/avqa-val.json": 4568, "music_avqa/avqa-test.json": 9129,
        "music_avqa/original/avqa-test.json": 9185, "music_avqa/ans_vocab.txt": 42}
    # eval lines: 4,131 audio and 2,495 visual in the files, less the 25 of no val/test clip
    assert counts["llp/AVVP_eval_audio.csv"] + counts["llp/AVVP_eval_visual.csv"] == 4131 + 2495 - 25


@needs_real
def test_the_full_llp_list_is_the_three_splits():
    full = {r.filename: set(r.labels) for r in read_weak_labels(REAL / "llp" / "AVVP_dataset_full.csv")}
    llp = LLPAnnotations.from_dir(REAL / "llp")
    splits = {r.filename: set(r.labels) for s in ("train", "val", "test") for r in llp.records(s)}
    assert full == splits
    assert json.loads((REAL / "avsbench" / "label2idx.json").read_text())["background"] == 1


@needs_real
def test_the_fetch_script_pins_every_real_file_by_its_hash():
    fetch = _fetch_script()
    present = {str(path.relative_to(REAL)) for path in REAL.rglob("*") if path.is_file()}
    not_fetched = {"SOURCES.md", "htsat_state_dict_keys.tsv"}     # notes and a list made here, not upstream files
    assert {fixture.path for fixture in fetch.FIXTURES} == present - not_fetched
    assert fetch.problems(REAL) == []


@needs_real
def test_the_fetch_script_copies_checks_and_refuses_an_altered_file(tmp_path):
    fetch = _fetch_script()
    out = tmp_path / "fetched"
    assert len(fetch.fetch(out, source=REAL)) == len(fetch.FIXTURES)
    assert fetch.problems(out) == [] and fetch.fetch(out, source=REAL) == []   # kept: already there and unchanged
    source = tmp_path / "altered"
    (source / "ave").mkdir(parents=True)
    data = bytearray((REAL / "ave" / "valSet.txt").read_bytes())
    data[0] ^= 1
    (source / "ave" / "valSet.txt").write_bytes(bytes(data))
    (out / "ave" / "valSet.txt").unlink()
    with pytest.raises(ValueError, match="valSet.txt: git blob .* expected b932f09.*not written"):
        fetch.fetch(out, source=source)
    assert not (out / "ave" / "valSet.txt").exists()
    assert fetch.problems(out) == [f"{out / 'ave' / 'valSet.txt'}: missing"]
