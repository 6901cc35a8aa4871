"""Fetch the real annotation files some tests read (AVE, AVSBench, MUSIC-AVQA, LLP) from their public repositories
at pinned commits, and check each one against its git blob hash.

    python tools/fetch_fixtures.py                       # download into tests/fixtures/real (ignored by git)
    python tools/fetch_fixtures.py --out DIR             # anywhere; then export MOLT_FIXTURES=DIR
    python tools/fetch_fixtures.py --from DIR            # copy from a folder that already has them, checking hashes
    python tools/fetch_fixtures.py --check DIR           # only check a folder

The tests look for the files in ``$MOLT_FIXTURES``, then ``tests/fixtures/real``, then ``../shared/fixtures`` beside
the checkout, and skip (saying how to get them) when none holds them. Each file is copied byte for byte; a file
whose git blob hash (``git hash-object``) differs from the pinned one is refused and not written. Nothing is
re-encoded. Where each file comes from: the table below (repository, commit, path in it, git blob).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "real"

_DGSCT = "haoyi-duan/DG-SCT@211fc57f0093e2111f43f670362a41f0a4c2322b"
_AVQA = "GeWu-Lab/MUSIC-AVQA@cc8809514a2ee3d7ae81a3021c15e7c0679170d7"
_LLP = "YapengTian/AVVP-ECCV20@fde56118f2c2e7c19188dfefa2569a37b70054fe"


class Fixture(NamedTuple):
    """One file: where it goes (relative to the fixtures folder), where it comes from and its git blob SHA-1."""

    path: str
    source: str     # owner/name@commit
    upstream: str   # path inside that repository
    blob: str


FIXTURES = (
    Fixture("ave/Annotations.txt", _DGSCT, "data/AVE/Annotations.txt", "057c6ac11ef8a2307a188d109ff861d5a02fe967"),
    Fixture("ave/trainSet.txt", _DGSCT, "data/AVE/trainSet.txt", "aee5bb834601559e1a02094bfaeb03ec3ca36f7a"),
    Fixture("ave/valSet.txt", _DGSCT, "data/AVE/valSet.txt", "b932f0932be8480f59ead530c8945c43c46864d1"),
    Fixture("ave/testSet.txt", _DGSCT, "data/AVE/testSet.txt", "77f255c9b5ea9073244063c5dc307ff4ce4c9a12"),
    Fixture("ave/categories.txt", _DGSCT, "data/AVE/categories.txt", "0099efddc524d0c221ea46bf405e5e701fe283af"),
    Fixture("ave/ReadMe.txt", _DGSCT, "data/AVE/ReadMe.txt", "49e0e9ad195e7081216bbf6e4f8ee8c165eaa3fa"),
    Fixture("avsbench/metadata.csv",
            "GeWu-Lab/Generalizable-Audio-Visual-Segmentation@753b23b09e8922be71573b961be1e3c9c52a5bfe",
            "GAVS/segment_anything/dataset/v3/metadata.csv", "d25358cc85bf11b3406a72ca946945ac78284247"),
    Fixture("avsbench/label2idx.json", "YenanLiu/DDESeg@75a8471a8a5c54b5ed11e7b689ea17de7ae84110", "label2idx.json",
            "7621c0d2640af514c624ce3d7bef7f4144591f3c"),
    Fixture("music_avqa/avqa-val.json", _AVQA, "data/json_update/avqa-val.json",
            "dcda27ddfd5de55e8e5723b5ffe5b40d35efeabc"),
    Fixture("music_avqa/avqa-test.json", _AVQA, "data/json_update/avqa-test.json",
            "84e8b4579b1bd62e5bf0b5e1e6545a3e68b39f88"),
    Fixture("music_avqa/original/avqa-test.json", _AVQA, "data/json/avqa-test.json",
            "835b8b552ce71548a04bfb50806d619f94bd5947"),
    Fixture("music_avqa/ans_vocab.txt", _DGSCT, "data/AVQA/ans_vocab.txt", "4360c6c18cb719a75a28ee6eff20374ee2735625"),
    Fixture("llp/AVVP_dataset_full.csv", _LLP, "data/AVVP_dataset_full.csv",
            "52ccacee6331722cd8f989a0e980f6351168a7ce"),
    Fixture("llp/AVVP_train.csv", _LLP, "data/AVVP_train.csv", "abb4cc7480b9066b99ce10bfa9ae01ae982df68b"),
    Fixture("llp/AVVP_val_pd.csv", _LLP, "data/AVVP_val_pd.csv", "75435575223d68fe475483aea0f6ce505b02f244"),
    Fixture("llp/AVVP_test_pd.csv", _LLP, "data/AVVP_test_pd.csv", "f70e74365f44aecfb427c7bf7a8a0d2d94c09b11"),
    Fixture("llp/AVVP_eval_audio.csv", _LLP, "data/AVVP_eval_audio.csv", "b36b47d176cddb3a664628a024d26f926d4bc11a"),
    Fixture("llp/AVVP_eval_visual.csv", _LLP, "data/AVVP_eval_visual.csv",
            "82f314a2f8fa56cf78395cd61e8a2d6b22773695"),
)


def git_blob_sha1(data: bytes) -> str:
    """The hash ``git hash-object`` prints for a file holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def url(fixture: Fixture) -> str:
    repository, commit = fixture.source.split("@")
    return f"https://raw.githubusercontent.com/{repository}/{commit}/{fixture.upstream}"


def problems(folder: Path) -> list[str]:
    """One line per missing or altered file of ``folder``; empty when every file is there and unchanged."""
    found = []
    for fixture in FIXTURES:
        path = folder / fixture.path
        if not path.is_file():
            found.append(f"{path}: missing")
        elif git_blob_sha1(path.read_bytes()) != fixture.blob:
            found.append(f"{path}: differs from {fixture.source} {fixture.upstream} (git blob {fixture.blob})")
    return found


def _write_checked(fixture: Fixture, data: bytes, out: Path, origin: str) -> None:
    digest = git_blob_sha1(data)
    if digest != fixture.blob:
        raise ValueError(f"{origin}: git blob {digest}, expected {fixture.blob} ({fixture.source} "
                         f"{fixture.upstream}); not written")
    target = out / fixture.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, target)


def fetch(out: Path, source: Path | None = None, timeout: float = 60.0) -> list[Path]:
    """Every fixture into ``out``, from ``source`` (a folder of the same layout) or downloaded; files already there
    with the right hash are kept. Returns the files written."""
    written = []
    for fixture in FIXTURES:
        target = out / fixture.path
        if target.is_file() and git_blob_sha1(target.read_bytes()) == fixture.blob:
            continue
        if source is not None:
            origin = source / fixture.path
            if not origin.is_file():
                raise FileNotFoundError(f"{origin}: missing; fetch it from {url(fixture)}")
            data = origin.read_bytes()
        else:
            origin = url(fixture)
            with urllib.request.urlopen(origin, timeout=timeout) as response:
                data = response.read()
        _write_checked(fixture, data, out, str(origin))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"destination (default: {DEFAULT_OUT})")
    parser.add_argument("--from", dest="source", type=Path, help="copy from this folder instead of downloading")
    parser.add_argument("--check", type=Path, metavar="DIR", help="only check the files of DIR")
    args = parser.parse_args(argv)
    if args.check is not None:
        found = problems(args.check)
        for line in found:
            print(line, file=sys.stderr)
        print(f"{len(FIXTURES) - len(found)} of {len(FIXTURES)} fixture files present and unchanged in {args.check}")
        return 1 if found else 0
    try:
        written = fetch(args.out, args.source)
    except (OSError, ValueError) as error:
        print(f"fetch_fixtures: {error}", file=sys.stderr)
        return 1
    print(f"{len(written)} file(s) written, {len(FIXTURES) - len(written)} already there; all {len(FIXTURES)} "
          f"checked in {args.out}")
    if args.out.resolve() != DEFAULT_OUT.resolve():
        print(f"point the tests at them: export MOLT_FIXTURES={args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
