"""Every real annotation file under ../shared/fixtures that a reader exists for is read by that reader here (the
per-dataset tests check their contents in detail); files no reader takes are listed with the reason."""
import json

from helpers import SHARED_FIXTURES, needs_shared_fixtures
from molt.tasks.ave.reader import AVEAnnotations
from molt.tasks.avqa.reader import MusicAVQA
from molt.tasks.avs.reader import read_label2idx, read_semantic_meta
from molt.tasks.avvp.reader import LLPAnnotations, read_weak_labels

pytestmark = needs_shared_fixtures(SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else None, "the real fixtures")

NOT_READ = {"SOURCES.md": "provenance notes", "ave/ReadMe.txt": "the dataset's free-text read-me"}


def _read_every_file() -> dict[str, int]:
    """Relative path -> records the reader returned."""
    counts: dict[str, int] = {}
    ave = AVEAnnotations.from_dir(SHARED_FIXTURES / "ave")
    counts["ave/Annotations.txt"] = len(ave.records())
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        counts[f"ave/{name}"] = len(ave.records(split))
    counts["ave/categories.txt"] = ave.num_classes
    counts["avsbench/metadata.csv"] = len(read_semantic_meta(SHARED_FIXTURES / "avsbench" / "metadata.csv"))
    counts["avsbench/label2idx.json"] = len(read_label2idx(SHARED_FIXTURES / "avsbench" / "label2idx.json"))
    llp = LLPAnnotations.from_dir(SHARED_FIXTURES / "llp")
    for split, name in (("train", "AVVP_train.csv"), ("val", "AVVP_val_pd.csv"), ("test", "AVVP_test_pd.csv")):
        counts[f"llp/{name}"] = len(llp.records(split))
    for modality, name in (("audio", "AVVP_eval_audio.csv"), ("visual", "AVVP_eval_visual.csv")):
        counts[f"llp/{name}"] = sum(len(llp.events(r, modality)) for s in ("val", "test") for r in llp.records(s))
    full = read_weak_labels(SHARED_FIXTURES / "llp" / "AVVP_dataset_full.csv")
    counts["llp/AVVP_dataset_full.csv"] = len(full)
    avqa = MusicAVQA.from_dir(SHARED_FIXTURES / "music_avqa")
    counts["music_avqa/avqa-val.json"] = len(avqa.records("val"))
    counts["music_avqa/avqa-test.json"] = len(avqa.records("test"))
    counts["music_avqa/original/avqa-test.json"] = len(avqa.records("test_original"))
    counts["music_avqa/ans_vocab.txt"] = len(avqa.answers)
    shapes = [line for line in (SHARED_FIXTURES / "htsat_state_dict_keys.tsv").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    counts["htsat_state_dict_keys.tsv"] = len(shapes)  # test_htsat builds the model against every name and shape
    return counts


def test_every_fixture_file_is_read():
    present = {str(path.relative_to(SHARED_FIXTURES)) for path in SHARED_FIXTURES.rglob("*") if path.is_file()}
    counts = _read_every_file()
    assert present - set(NOT_READ) == set(counts), "a fixture file has no reader here (or a listed one is gone)"
    assert counts == {
        "ave/Annotations.txt": 4143, "ave/trainSet.txt": 3339, "ave/valSet.txt": 402, "ave/testSet.txt": 402,
        "ave/categories.txt": 28, "avsbench/metadata.csv": 11356, "avsbench/label2idx.json": 71,
        "llp/AVVP_train.csv": 10000, "llp/AVVP_val_pd.csv": 649, "llp/AVVP_test_pd.csv": 1200,
        "llp/AVVP_eval_audio.csv": counts["llp/AVVP_eval_audio.csv"],
        "llp/AVVP_eval_visual.csv": counts["llp/AVVP_eval_visual.csv"], "llp/AVVP_dataset_full.csv": 11849,
        "music_avqa/avqa-val.json": 4568, "music_avqa/avqa-test.json": 9129,
        "music_avqa/original/avqa-test.json": 9185, "music_avqa/ans_vocab.txt": 42,
        "htsat_state_dict_keys.tsv": counts["htsat_state_dict_keys.tsv"]}
    # eval lines: 4,131 audio and 2,495 visual in the files, less the 25 of no val/test clip
    assert counts["llp/AVVP_eval_audio.csv"] + counts["llp/AVVP_eval_visual.csv"] == 4131 + 2495 - 25


def test_the_full_llp_list_is_the_three_splits():
    full = {r.filename: set(r.labels) for r in read_weak_labels(SHARED_FIXTURES / "llp" / "AVVP_dataset_full.csv")}
    llp = LLPAnnotations.from_dir(SHARED_FIXTURES / "llp")
    splits = {r.filename: set(r.labels) for s in ("train", "val", "test") for r in llp.records(s)}
    assert full == splits
    assert json.loads((SHARED_FIXTURES / "avsbench" / "label2idx.json").read_text())["background"] == 1
