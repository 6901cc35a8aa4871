"""Reader of the MUSIC-AVQA annotation files (Li et al., CVPR 2022): questions, vocabularies, question types.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT).

Files: ``avqa-train.json``, ``avqa-val.json``, ``avqa-test.json`` (the corrected ``json_update`` release: val 4,568
and test 9,129 questions; train 31,927 in the update, 32,087 in the first release). Each is a JSON array of records
with exactly these keys::

    video_id          "00000093" (real videos: 8 digits; the synthetic part of the release: "sa"/"va"/"vv" + 8)
    question_id       int
    type              a JSON *string* holding [family, sub-type], e.g. "[\\"Audio\\", \\"Counting\\"]"
    question_content  template with placeholders <Object>, <LR>, <FL>, <TH>, <LRer>, <LL>, <BA>, ...
    templ_values      a JSON *string* holding the fill-ins, in placeholder order, e.g. "[\\"violin\\"]"
    question_deleted  0
    anser             the answer (sic), one of 42 strings in the full data set

Question types: three families, **Audio** (``AQ``: Counting, Comparative), **Visual** (``VQ``: Counting, Location)
and **Audio-Visual** (``AVQ``: Existential, Counting, Location, Comparative, Temporal): nine types in all
(:data:`QUESTION_TYPES`, in the column order of the MUSIC-AVQA paper's table).

Question text and tokens (what the peers' dataloaders do, re-implemented): each placeholder ``<...>`` is replaced
by the next value of ``templ_values``; the filled question is lower-cased and split into words of letters, digits
and ``_`` (so ``acoustic_guitar`` stays one word and the final ``?`` -- one template ends in a full-width ``？`` and
some in a trailing space -- disappears). The longest real question has 14 words, the peers' fixed length.

Vocabularies (:func:`question_vocabulary`, :func:`answer_vocabulary`): the question vocabulary comes from the
**training** questions only (``<pad>`` = 0, ``<unk>`` = 1, then words in order of first appearance); words of
val/test questions that training never used map to ``<unk>``. The answer vocabulary is the ``anser`` values of
the training split in order of first appearance (the order of the peers' ``ans_vocab.txt``), followed by any
answer that only val/test use (logged as a warning: a model cannot learn such a class; in the real data ``ten``
never appears in val/test, so nothing is appended). An ``ans_vocab.txt`` file (one answer per line) beside the
json files fixes the order instead; it must hold every answer used.

Quirks of the real files and how they are handled (on purpose):

* ``type`` and ``templ_values`` are JSON-encoded strings, not lists; lists are accepted too.
* **Duplicated question ids.** The first release repeats 27 question ids in val and 55 in test, some with another
  answer; the update has none. :class:`MusicAVQA` keeps the **first** record of each id within a split (the
  update's choice) and logs how many were dropped and how many of those disagreed on the answer
  (``duplicates="keep"`` keeps every record, ``"error"`` refuses the file). What was dropped is in
  :attr:`MusicAVQA.dropped`.
* **Two test files.** The published peers (LAVisH, DG-SCT) evaluate on the first release's ``data/json/avqa-test.json``
  (9,185 records, 55 question ids repeated), the update's ``data/json_update/avqa-test.json`` has 9,129. When a root
  holds both, the corrected one is split ``test`` and the original one, read with its repeated ids **kept** (as the
  peers count them), split ``test_original`` (:data:`ORIGINAL_TEST_SPLIT`, found by :func:`find_original_test`);
  ``molt eval avqa --test-json original`` evaluates on it.
* ``question_deleted``: always 0 in the released files; a record with another value is dropped (logged).
* The number of placeholders must equal the number of ``templ_values``, or the file and question id are named in a
  ``ValueError`` (the released files have no such record).

Videos: ``{video_id}.mp4``. The release ships two archives, ``MUSIC-AVQA-videos-Real`` (8-digit ids) and
``MUCIS-AVQA-videos-Synthetic`` (sic; ids with a letter prefix); :func:`find_video` looks in both (and in the
correctly spelled ``MUSIC-AVQA-videos-Synthetic``, ``video/``, ``videos/`` and the root).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ...data.files import check_name, read_json, read_names

__all__ = ["AVQARecord", "MusicAVQA", "ORIGINAL_TEST_SPLIT", "ORIGINAL_TEST_DIRS", "find_original_test", "FAMILIES",
           "FAMILY_ABBREVIATIONS", "SUBTYPES", "QUESTION_TYPES",
           "SPLIT_FILES", "ANSWER_VOCAB_FILE", "PAD", "UNK", "VIDEO_DIRS", "read_questions", "fill_placeholders",
           "tokenize", "question_vocabulary", "answer_vocabulary", "encode_question", "find_video",
           "find_annotation_dir", "question_type_name"]

_logger = logging.getLogger(__name__)

FAMILIES = ("Audio", "Visual", "Audio-Visual")
FAMILY_ABBREVIATIONS = {"Audio": "AQ", "Visual": "VQ", "Audio-Visual": "AVQ"}
SUBTYPES = ("Counting", "Comparative", "Existential", "Location", "Temporal")
#: The nine (family, sub-type) pairs of MUSIC-AVQA, in the column order of the paper's results table.
QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    ("Audio", "Counting"), ("Audio", "Comparative"),
    ("Visual", "Counting"), ("Visual", "Location"),
    ("Audio-Visual", "Existential"), ("Audio-Visual", "Counting"), ("Audio-Visual", "Location"),
    ("Audio-Visual", "Comparative"), ("Audio-Visual", "Temporal"),
)
SPLIT_FILES = {"train": "avqa-train.json", "val": "avqa-val.json", "test": "avqa-test.json"}
ANSWER_VOCAB_FILE = "ans_vocab.txt"
PAD, UNK = "<pad>", "<unk>"
#: Sub-directories searched (in this order, then the root itself) for ``{video_id}.mp4``.
VIDEO_DIRS = ("MUSIC-AVQA-videos-Real", "MUCIS-AVQA-videos-Synthetic", "MUSIC-AVQA-videos-Synthetic", "video",
              "videos")
#: Where the json files may sit below a data set root (the updated release first).
ANNOTATION_DIRS = (".", "json_update", "data/json_update", "json", "data/json")
#: The first release's test file, read beside the corrected one: its split name and the folders searched for it.
ORIGINAL_TEST_SPLIT = "test_original"
ORIGINAL_TEST_DIRS = ("original", "json", "data/json")
_KEYS = ("video_id", "question_id", "type", "question_content", "templ_values", "question_deleted", "anser")
_PLACEHOLDER = re.compile(r"<[^<>\s]+>")
_WORD = re.compile(r"[a-z0-9_]+")
DUPLICATE_POLICIES = ("first", "keep", "error")


def question_type_name(family: str, subtype: str) -> str:
    """``"Audio-Visual/Temporal"``-style name of a question type (the form used in ``task_options``)."""
    return f"{family}/{subtype}"


@dataclass(frozen=True)
class AVQARecord:
    """One question of an annotation file.

    Attributes:
        video_id: the clip (``{video_id}.mp4``).
        question_id: id given by the file (unique within a split after duplicate handling).
        family: ``"Audio"``, ``"Visual"`` or ``"Audio-Visual"``.
        subtype: ``"Counting"``, ``"Comparative"``, ``"Existential"``, ``"Location"`` or ``"Temporal"``.
        template: ``question_content`` as written (with placeholders).
        templ_values: the fill-ins, in placeholder order.
        question: the filled question text.
        words: its lower-cased words (see :func:`tokenize`).
        answer: the ``anser`` string.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None``.
        position: 0-based position of the record in its file.
    """

    video_id: str
    question_id: int
    family: str
    subtype: str
    template: str
    templ_values: tuple[str, ...]
    question: str
    words: tuple[str, ...]
    answer: str
    split: str | None
    position: int

    @property
    def question_type(self) -> str:
        return question_type_name(self.family, self.subtype)


def fill_placeholders(template: str, values: Sequence[str], *, where: str = "question") -> str:
    """Replace each ``<...>`` placeholder of ``template`` by the next of ``values``.

    Raises:
        ValueError: the number of placeholders differs from ``len(values)`` (``where`` names the record).
    """
    found = _PLACEHOLDER.findall(template)
    if len(found) != len(values):
        raise ValueError(f"{where}: {len(found)} placeholder(s) {found} in {template!r} but {len(values)} "
                         f"templ_values {list(values)}")
    filled = iter(values)
    return _PLACEHOLDER.sub(lambda _: str(next(filled)), template)


def tokenize(text: str) -> list[str]:
    """Lower-cased words of letters, digits and ``_`` (punctuation, incl. full-width ``？``, is dropped)."""
    return _WORD.findall(text.lower())


def _json_field(value: Any, key: str, where: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: field {key!r} is not valid JSON ({error}): {value!r}") from None
    return value


def _parse_record(raw: Any, split: str | None, position: int, where: str) -> tuple[AVQARecord, int]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    missing = [key for key in _KEYS if key not in raw]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; MUSIC-AVQA records have {list(_KEYS)}")
    question_id = raw["question_id"]
    if isinstance(question_id, bool) or not isinstance(question_id, int):
        raise ValueError(f"{where}: question_id must be an integer, got {question_id!r}")
    where = f"{where} (question_id {question_id})"
    kind = _json_field(raw["type"], "type", where)
    if not (isinstance(kind, list) and len(kind) == 2 and all(isinstance(part, str) for part in kind)):
        raise ValueError(f"{where}: type must encode [family, sub-type], got {raw['type']!r}")
    family, subtype = kind
    if family not in FAMILIES or subtype not in SUBTYPES:
        raise ValueError(f"{where}: unknown question type {kind}; families {list(FAMILIES)}, sub-types "
                         f"{list(SUBTYPES)}")
    values = _json_field(raw["templ_values"], "templ_values", where)
    if not isinstance(values, list):
        raise ValueError(f"{where}: templ_values must encode a list, got {raw['templ_values']!r}")
    template = raw["question_content"]
    if not isinstance(template, str) or not isinstance(raw["anser"], str) or not raw["anser"].strip():
        raise ValueError(f"{where}: question_content and anser must be non-empty strings, got "
                         f"{template!r} and {raw['anser']!r}")
    if not all(isinstance(value, (str, int, float)) and not isinstance(value, bool) for value in values):
        raise ValueError(f"{where}: templ_values must hold words, got {values!r}")
    question = fill_placeholders(template, [str(v) for v in values], where=where)
    words = tokenize(question)
    if not words:
        raise ValueError(f"{where}: the question {question!r} has no word")
    if isinstance(raw["video_id"], bool) or not isinstance(raw["video_id"], (str, int)):
        raise ValueError(f"{where}: video_id must be a string such as \"00000093\", got {raw['video_id']!r}")
    video_id = str(raw["video_id"]).strip()
    if not video_id:
        raise ValueError(f"{where}: empty video_id")
    check_name(video_id, where, "video_id")
    deleted = raw["question_deleted"]
    if deleted is not None and (isinstance(deleted, bool) or not isinstance(deleted, int)):
        raise ValueError(f"{where}: question_deleted must be 0 or 1, got {deleted!r}")
    record = AVQARecord(video_id=video_id, question_id=question_id, family=family, subtype=subtype,
                        template=template, templ_values=tuple(str(v) for v in values), question=question.strip(),
                        words=tuple(words), answer=raw["anser"].strip(), split=split, position=position)
    return record, int(deleted or 0)


def read_questions(path: str | os.PathLike, split: str | None = None) -> tuple[list[AVQARecord], int]:
    """Parse one annotation file. Returns ``(records, deleted)``: every record with ``question_deleted == 0``, in
    file order (duplicates included), and the number of records dropped as deleted.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a JSON array of MUSIC-AVQA records, or a malformed record (file, position and question id
            are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MUSIC-AVQA annotation file not found: {path}")
    data = read_json(path, what="MUSIC-AVQA annotation file", fix="expected the MUSIC-AVQA question list")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of question records, got {type(data).__name__}")
    records, deleted = [], 0
    for position, raw in enumerate(data):
        try:
            record, flag = _parse_record(raw, split, position, f"{path} record {position}")
        except ValueError as error:
            raise ValueError(f"{error}; correct or remove that record") from None
        if flag:
            deleted += 1
        else:
            records.append(record)
    return records, deleted


def question_vocabulary(records: Iterable[AVQARecord]) -> list[str]:
    """``[<pad>, <unk>, words in order of first appearance]`` of ``records`` (pass the training questions)."""
    words = dict.fromkeys(word for record in records for word in record.words)
    words.pop(PAD, None)
    words.pop(UNK, None)
    return [PAD, UNK, *words]


def answer_vocabulary(records: Iterable[AVQARecord]) -> list[str]:
    """Distinct answers of ``records`` in order of first appearance."""
    return list(dict.fromkeys(record.answer for record in records))


def encode_question(words: Sequence[str], vocabulary: Sequence[str] | dict[str, int], length: int) -> list[int]:
    """Token ids of ``words`` padded with ``<pad>`` (0) to ``length`` (longer questions are cut); unknown words
    are ``<unk>``."""
    index = vocabulary if isinstance(vocabulary, dict) else {word: i for i, word in enumerate(vocabulary)}
    if index.get(PAD) != 0 or UNK not in index:
        raise ValueError(f"a question vocabulary must start with {PAD!r} (id 0) and hold {UNK!r}")
    ids = [index.get(word, index[UNK]) for word in words[:length]]
    return ids + [index[PAD]] * (length - len(ids))


def find_video(root: str | os.PathLike, video_id: str) -> Path | None:
    """``{video_id}.mp4`` in one of :data:`VIDEO_DIRS` below ``root`` or in ``root``; ``None`` if absent."""
    root = Path(root)
    for folder in (*VIDEO_DIRS, "."):
        candidate = root / folder / f"{video_id}.mp4"
        if candidate.exists():
            return candidate
    return None


def find_annotation_dir(root: str | os.PathLike) -> Path | None:
    """The first of ``root``, ``root/json_update``, ``root/data/json_update``, ``root/json``, ``root/data/json``
    that holds an ``avqa-{train,val,test}.json`` file; ``None`` if none does."""
    root = Path(root)
    for folder in ANNOTATION_DIRS:
        candidate = root / folder
        if any((candidate / name).is_file() for name in SPLIT_FILES.values()):
            return candidate
    return None


def find_original_test(root: str | os.PathLike, annotation_dir: str | os.PathLike | None = None) -> Path | None:
    """The first release's ``avqa-test.json`` below ``root`` (in one of :data:`ORIGINAL_TEST_DIRS`, or in ``json/``
    beside ``annotation_dir``), unless it is the test file of ``annotation_dir`` itself; ``None`` if absent."""
    root = Path(root)
    name = SPLIT_FILES["test"]
    candidates = [root / folder / name for folder in ORIGINAL_TEST_DIRS]
    if annotation_dir is not None:
        candidates.append(Path(annotation_dir).parent / "json" / name)
    main_test = (Path(annotation_dir) / name).resolve() if annotation_dir is not None else None
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve() != main_test:
            return candidate
    return None


class MusicAVQA:
    """The MUSIC-AVQA questions of a data set root, with vocabularies and question types.

    Args:
        splits: records per split name (``"train"``, ``"val"``, ``"test"``), duplicates already handled.
        answers: answer vocabulary (default: :func:`answer_vocabulary` of train, then answers only val/test use).
        source: where the records came from (for messages).

    Use :meth:`from_dir` to read a directory.
    """

    def __init__(self, *, splits: dict[str, list[AVQARecord]], answers: Sequence[str] | None = None,
                 source: str = "MUSIC-AVQA") -> None:
        known = [*SPLIT_FILES, ORIGINAL_TEST_SPLIT]
        unknown = sorted(set(splits) - set(known))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; expected some of {known}")
        self.splits = {name: list(splits[name]) for name in known if name in splits}
        self.files: dict[str, Path] = {}
        self.source = source
        self.dropped: dict[str, list[AVQARecord]] = {}
        train = self.splits.get("train", [])
        if answers is None:
            answers = answer_vocabulary(train)
            extra = [a for a in answer_vocabulary(r for s in self.splits.values() for r in s) if a not in answers]
            if extra and train:
                _logger.warning("%s: answer(s) %s appear only outside the training split: appended to the answer "
                                "vocabulary (no model can learn them from this training set)", source, extra)
            answers = [*answers, *extra]
        self.answers = list(answers)
        if len(set(self.answers)) != len(self.answers):
            raise ValueError(f"{source}: duplicate answers in the answer vocabulary {self.answers}")
        self.answer_index = {answer: i for i, answer in enumerate(self.answers)}
        used = {r.answer for records in self.splits.values() for r in records}
        missing = sorted(used - set(self.answer_index))
        if missing:
            raise ValueError(f"{source}: answer(s) {missing} are not in the answer vocabulary "
                             f"({len(self.answers)} answers); add them to {ANSWER_VOCAB_FILE}")
        if not train:
            _logger.warning("%s: no training split: the question vocabulary is empty (every word is %s)", source,
                            UNK)
        self.question_vocab = question_vocabulary(train)
        self.word_index = {word: i for i, word in enumerate(self.question_vocab)}

    @classmethod
    def from_dir(cls, root: str | os.PathLike, *, duplicates: str = "first") -> "MusicAVQA":
        """Read the ``avqa-{train,val,test}.json`` files that exist (see :func:`find_annotation_dir`), the optional
        ``ans_vocab.txt`` beside them and, when the root also holds the first release's test file
        (:func:`find_original_test`), that file as split ``test_original`` with every record kept.

        Args:
            root: data set root (or the folder holding the json files).
            duplicates: ``"first"`` (keep the first record of each question id within a split), ``"keep"`` or
                ``"error"`` (a ``ValueError`` naming the file and the ids).
        """
        if duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, got {duplicates!r}")
        folder = find_annotation_dir(root)
        if folder is None:
            raise FileNotFoundError(f"no MUSIC-AVQA annotation file ({', '.join(SPLIT_FILES.values())}) in {root} "
                                    f"or its {', '.join(d for d in ANNOTATION_DIRS if d != '.')} folders")
        splits: dict[str, list[AVQARecord]] = {}
        dropped: dict[str, list[AVQARecord]] = {}
        files: dict[str, Path] = {}
        for split, name in SPLIT_FILES.items():
            path = folder / name
            if not path.is_file():
                continue
            records, deleted = read_questions(path, split)
            if deleted:
                _logger.warning("%s: dropped %d record(s) marked question_deleted", path, deleted)
            splits[split], dropped[split] = _handle_duplicates(records, path, duplicates)
            files[split] = path
        original = find_original_test(root, folder)
        if original is not None:
            records, deleted = read_questions(original, ORIGINAL_TEST_SPLIT)
            repeated = len(records) - len({record.question_id for record in records})
            _logger.info("%s: the first release's test file, read as split %r: %d questions, %d repeated question "
                         "ids kept (as the peers count them)", original, ORIGINAL_TEST_SPLIT, len(records), repeated)
            splits[ORIGINAL_TEST_SPLIT] = records
            files[ORIGINAL_TEST_SPLIT] = original
        answers = None
        vocab_path = folder / ANSWER_VOCAB_FILE
        if vocab_path.is_file():
            answers = read_names(vocab_path, what="answer vocabulary")
        result = cls(splits=splits, answers=answers, source=str(folder))
        result.files = files
        result.dropped = {split: records for split, records in dropped.items() if records}
        result._log_overlaps()
        return result

    def _log_overlaps(self) -> None:
        names = [name for name in self.splits if name != ORIGINAL_TEST_SPLIT]  # the same questions as test, by design
        for i, first in enumerate(names):
            ids = {r.question_id for r in self.splits[first]}
            for second in names[i + 1:]:
                shared = ids & {r.question_id for r in self.splits[second]}
                if shared:
                    _logger.warning("%s: %d question id(s) are in both %s and %s", self.source, len(shared), first,
                                    second)

    def records(self, split: str | None = None) -> list[AVQARecord]:
        """Records of ``split``, or of every split (train, val, test order) for ``None``."""
        if split is None:
            return [record for records in self.splits.values() for record in records]
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; available: {list(self.splits)}")
        return list(self.splits[split])

    def video_ids(self, split: str | None = None) -> list[str]:
        """Distinct video ids of ``split`` (or of all splits) in order of first appearance."""
        return list(dict.fromkeys(record.video_id for record in self.records(split)))

    def type_counts(self, split: str | None = None) -> dict[tuple[str, str], int]:
        """Number of questions per ``(family, sub-type)``."""
        counts: dict[tuple[str, str], int] = {}
        for record in self.records(split):
            key = (record.family, record.subtype)
            counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def question_types(self) -> list[str]:
        """``"Family/Sub-type"`` names of the nine MUSIC-AVQA types, then any other type the files use."""
        names = [question_type_name(*pair) for pair in QUESTION_TYPES]
        seen = {record.question_type for record in self.records()}
        return names + sorted(seen - set(names))

    def encode(self, record: AVQARecord, length: int) -> list[int]:
        """Token ids of a record's question, padded to ``length`` (see :func:`encode_question`)."""
        return encode_question(record.words, self.word_index, length)

    def max_question_length(self) -> int:
        """Most words in any question of any split."""
        return max((len(record.words) for record in self.records()), default=0)


def _handle_duplicates(records: list[AVQARecord], path: Path, policy: str) -> tuple[list[AVQARecord],
                                                                                     list[AVQARecord]]:
    """``(kept, dropped)`` records of one file under the duplicate ``policy`` (see :meth:`MusicAVQA.from_dir`)."""
    first: dict[int, AVQARecord] = {}
    kept, dropped = [], []
    for record in records:
        if record.question_id not in first:
            first[record.question_id] = record
            kept.append(record)
        else:
            dropped.append(record)
    if not dropped:
        return records, []
    conflicting = sum(record.answer != first[record.question_id].answer for record in dropped)
    ids = sorted({record.question_id for record in dropped})
    repeated = (f"{len(dropped)} record(s) repeat {len(ids)} question_id(s) ({conflicting} with another answer): "
                f"{', '.join(map(str, ids[:10]))}" + (f" and {len(ids) - 10} more" if len(ids) > 10 else ""))
    if policy == "error":
        raise ValueError(f"{path}: {repeated}; use the corrected json_update files, or --duplicates first (keep the "
                         f"first record of each id) or keep")
    if policy == "keep":
        _logger.warning("%s: %s; all kept (--duplicates keep)", path, repeated)
        return records, []
    _logger.warning("%s: %s; kept the first record of each (--duplicates first)", path, repeated)
    return kept, dropped
