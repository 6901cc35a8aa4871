"""A real headless browser for the tests of ``molt app`` (and ``benchmarks/app_screenshot.py``): Debian's chromium
driven by Playwright (``playwright`` from the package index, its browser never downloaded: ``executable_path``).

:func:`browser_or_reason` installs what is missing when it can (``pip install playwright``; ``apt-get install
chromium`` as root) and otherwise returns the reason, for a skip that says it. :func:`start_app` runs ``molt app``
as a process on a free localhost port and waits for its page."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

#: how the machine's docs say to start chromium here: no sandbox (root), no GPU, nothing reached outside
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str | None:
    return next((path for path in CHROMIUM_PATHS if os.access(path, os.X_OK)), shutil.which("chromium"))


def browser_or_reason() -> tuple[str | None, str | None]:
    """``(chromium executable, None)``, installing Playwright and chromium when missing, or ``(None, reason)``."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], capture_output=True,
                              text=True)
        if done.returncode != 0:
            return None, f"playwright is not installed and pip could not install it: {done.stderr.strip()[-300:]}"
    if _chromium() is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return None, "chromium is not installed (apt-get install chromium as root) and this user cannot install it"
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if done.returncode != 0:
                return None, f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    executable = _chromium()
    return (executable, None) if executable else (None, "chromium is still missing after apt-get install chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def start_app(*arguments: str, log: Path, timeout: float = 180.0, cwd: Path | None = None):
    """``molt app ARGUMENTS --port P`` as a process (in ``cwd``); yields the page's address once it answers, stops
    it after."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "molt.app.cli", "app", *arguments, "--port", str(port)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.time() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"molt app exited with {process.returncode}: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise TimeoutError(f"molt app did not answer on {url} within {timeout:.0f} s")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def chromium_page(executable: str, profile: Path, width: int = 1280, height: int = 900):
    """A Playwright page in headless chromium with a new empty profile folder."""
    from playwright.sync_api import sync_playwright

    profile.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": height})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def run_in_page(page, url: str, video: Path, *, timeout_ms: int = 180_000, question: str | None = None) -> str:
    """Open the app, upload ``video``, (type ``question``), press Run and wait for the picture; the shown label."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_selector("#molt-run", timeout=timeout_ms)
    page.set_input_files("#molt-video input[type=file]", str(video))
    page.wait_for_selector(f"#molt-video >> text={video.name}", timeout=timeout_ms)
    if question is not None:
        page.fill("#molt-question textarea", question)
    page.click("#molt-run")
    page.wait_for_selector("#molt-picture img", state="visible", timeout=timeout_ms)
    page.wait_for_function("document.querySelector('#molt-label h2') !== null", timeout=timeout_ms)
    return page.inner_text("#molt-label h2").strip()
