"""The screenshot of ``molt app`` in the docs (docs/app.png): a generated demo model, tried in a real browser.

    python benchmarks/app_screenshot.py [--workdir /tmp/molt-app-shot] [--videos 160] [--epochs 10] [--out docs/app.png]

Generates a small synthetic AVE set, trains the tiny preset on it with `molt train`, starts `molt app` on a free
localhost port with those adapters and the set's test clips as demo clips, and drives headless chromium (Debian's,
through Playwright, as the browser test does: tests/browser.py) to upload a test clip, press Run and wait for the
picture; saves the page as ``--out`` and prints the label the page shows beside `molt predict`'s.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # the browser driver the test of molt app uses

from browser import browser_or_reason, chromium_page, run_in_page, start_app  # noqa: E402

from molt.app.cli import main as molt  # noqa: E402
from molt.tasks.ave.synthetic import generate_ave  # noqa: E402


def _run(*argv: str) -> None:
    print("molt " + " ".join(argv), flush=True)
    if molt(["--quiet", *argv]) != 0:
        raise SystemExit(f"molt {' '.join(argv)} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="where the data, the run and the app's log go (default: a new temporary "
                                          "folder)")
    parser.add_argument("--videos", type=int, default=160, help="generated AVE clips")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the tiny preset")
    parser.add_argument("--out", default=str(ROOT / "docs" / "app.png"), help="the screenshot")
    args = parser.parse_args()
    executable, reason = browser_or_reason()
    if executable is None:
        raise SystemExit(f"no headless browser: {reason}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="molt-app-shot-")).resolve()
    data = work / "data"
    generate_ave(data, num_videos=args.videos, seed=0, image_size=64, fps=4, workers=1, show_progress=False)
    _run("train", "ave", "--data", str(data), "--epochs", str(args.epochs), "--out", str(work / "runs"))
    adapters = next((work / "runs").glob("ave_molt_tiny/version_*/adapters/best"))
    clips = sorted((data / "AVE").glob("*.mp4"))
    test_ids = [line.split("&")[1] for line in (data / "testSet.txt").read_text().splitlines() if "&" in line]
    video = next((clip for clip in clips if clip.stem in test_ids), clips[0])
    _run("predict", "ave", "--checkpoint", str(adapters), "--video", str(video), "--out", str(work / "predicted"))
    expected = json.loads((work / "predicted" / "predictions.json").read_text())["clip_category"]
    demo = work / "demo_clips"
    demo.mkdir(exist_ok=True)
    for clip in clips[:4]:
        (demo / clip.name).write_bytes(clip.read_bytes())
    shown_path = adapters.relative_to(work)     # the page shows the path as typed in the run's folder
    with start_app("ave", "--checkpoint", str(shown_path), "--clips", str(demo), log=work / "app.log",
                   cwd=work) as url:
        with chromium_page(executable, work / "profile", width=1280, height=860) as page:
            shown = run_in_page(page, url, video)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
    print(f"the page shows {shown!r}; molt predict says {expected!r}; wrote {args.out}")
    if shown != expected:
        raise SystemExit("the page and molt predict disagree")


if __name__ == "__main__":
    main()
