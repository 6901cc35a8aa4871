"""``molt app`` as a person uses it: the app runs as a process on a free localhost port, headless chromium (Debian's,
driven by Playwright; both installed here when missing, else the test is skipped with the reason) loads the page,
uploads a generated clip, presses Run and waits for the picture; the label it shows is ``molt predict``'s, and a
screenshot is saved in the test's folder. Also: ``molt --help`` and ``molt app --help`` import neither torch nor
gradio."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from browser import browser_or_reason, chromium_page, run_in_page, start_app
from helpers import predict_with_cli
from molt.config import load_config
from molt.data.media import write_clip
from molt.model import build_model


@pytest.fixture(scope="module")
def chromium():
    executable, reason = browser_or_reason()
    if executable is None:
        pytest.skip(f"no headless browser for the molt app test: {reason}")
    pytest.importorskip("gradio", reason="molt app needs the app extra: pip install 'molt-av[app]'")
    return executable


def _clip(path, seconds=5, fps=4, sample_rate=16000):
    frames = np.zeros((seconds * fps, 64, 64, 3), dtype=np.uint8)
    frames[:, 8:40, 20:52, 2] = 230
    t = np.arange(seconds * sample_rate) / sample_rate
    write_clip(path, frames, (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), fps=fps,
               sample_rate=sample_rate)
    return path


def test_the_page_in_a_browser_shows_molt_predicts_label(chromium, tmp_path):
    torch.manual_seed(2)
    model = build_model(load_config("ave_molt_tiny"), {"num_classes": 3, "class_names": ["dog", "car", "bell"]})
    adapters = model.save_pretrained(tmp_path / "adapters")
    clips = tmp_path / "clips"
    clips.mkdir()
    video = _clip(clips / "generated.mp4")
    expected = predict_with_cli(adapters, "ave", tmp_path / "cli", "--video", str(video))
    with start_app("ave", "--checkpoint", str(adapters), "--clips", str(clips), log=tmp_path / "app.log") as url:
        with chromium_page(chromium, tmp_path / "profile") as page:
            shown = run_in_page(page, url, video)
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            summary = page.input_value("#molt-status textarea")
    assert shown == expected["clip_category"]
    assert summary.splitlines()[1:] == expected["summary"][1:]
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_help_imports_neither_torch_nor_gradio():
    script = textwrap.dedent("""
        import contextlib, io, sys
        from molt.app.cli import main
        for argv in (["--help"], ["app", "--help"], ["predict", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "gradio")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_screenshot_script_of_the_docs_runs(chromium, tmp_path):
    """benchmarks/app_screenshot.py (docs/app.png) end to end, on a smaller budget."""
    from helpers import ROOT

    script = ROOT / "benchmarks" / "app_screenshot.py"
    done = subprocess.run([sys.executable, str(script), "--workdir", str(tmp_path / "work"), "--videos", "16",
                           "--epochs", "1", "--out", str(tmp_path / "app.png")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the page shows" in done.stdout and (tmp_path / "app.png").stat().st_size > 10_000
