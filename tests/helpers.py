"""Helpers the tests import (``from helpers import ...``; ``tests/`` is on pytest's ``pythonpath``): where the
test files and the real annotation fixtures are, checks and CLI steps several test modules share, and two tiny
fake backbones for the method tests."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from molt.backbones.base import TapBackbone

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"
FETCHED_FIXTURES = FIXTURES / "real"      # where tools/fetch_fixtures.py writes by default
HOW_TO_FETCH = "run python tools/fetch_fixtures.py, or set MOLT_FIXTURES to a folder holding them"


def real_fixtures_root() -> Path | None:
    """The folder of real annotation files (``ave/``, ``avsbench/``, ``llp/``, ``music_avqa/``): ``$MOLT_FIXTURES``,
    ``tests/fixtures/real`` (``tools/fetch_fixtures.py``) or ``../shared/fixtures`` beside the checkout, the first
    that exists; ``None`` when none does."""
    for candidate in (os.environ.get("MOLT_FIXTURES"), FETCHED_FIXTURES, SHARED_FIXTURES):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def shared_fixture_dir(name: str, marker: str, environment: str | None = None) -> Path | None:
    """A folder of real annotation files: ``$environment``, ``tests/fixtures/<name>`` or ``<real root>/<name>``
    (:func:`real_fixtures_root`; the first holding ``marker``), or ``None``."""
    root = real_fixtures_root()
    candidates = [os.environ.get(environment) if environment else None, FIXTURES / name, root / name if root else None]
    for candidate in candidates:
        if candidate and (Path(candidate) / marker).is_file():
            return Path(candidate)
    return None


def needs_shared_fixtures(found: Path | None, what: str):
    """Skip, saying how to get them, when the real files are not on this machine (a clone on its own, outside CI);
    when ``../shared`` is beside the checkout, or under CI, a missing file is a failure."""
    return pytest.mark.skipif(found is None and not SHARED_FIXTURES.parent.is_dir() and not os.environ.get("CI"),
                              reason=f"{what} are not on this machine: {HOW_TO_FETCH}")


def backward_and_check_side_gradients(model, backbones, out) -> None:
    """Back-propagate a loss on both modalities' fused tokens and check that every trainable parameter of the
    method got a gradient and no frozen backbone parameter did."""
    (out.visual.square().mean() + out.audio.square().mean()).backward()
    for name, parameter in model.method.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for backbone in backbones:
        assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())


def train_one_epoch(task: str, data: Path, out: Path, *extra: str) -> Path:
    """``molt train TASK`` for one epoch on ``data``; the run's best adapters folder."""
    from molt.app.cli import main

    assert main(["--quiet", "train", task, "--data", str(data), "--epochs", "1", "--out", str(out), *extra]) == 0
    return next(Path(out).glob("*/version_0/adapters/best"))


def model_outputs(adapters: Path, prepared: Path, split: str, index: int):
    """The trained model and its predictions for one prepared item (in eval mode, as ``molt eval`` runs it)."""
    from torch.utils.data import default_collate

    from molt.app.evaluate import load_trained
    from molt.tasks import get_task

    model, config, _ = load_trained(adapters)
    model.eval()
    dataset = get_task(config.task).dataset(prepared, split)
    batch = default_collate([dataset[index]])
    with torch.no_grad():
        outputs = model(batch).predictions
    return model, outputs


def predict_with_cli(adapters: Path, task: str, out: Path, *inputs: str) -> dict:
    """``molt predict TASK`` with these inputs; its ``predictions.json``, after checking the files it names exist."""
    import json

    from molt.app.cli import main

    assert main(["--quiet", "predict", task, "--checkpoint", str(adapters), "--out", str(out), *inputs]) == 0
    result = json.loads((Path(out) / "predictions.json").read_text())
    assert all(Path(path).is_file() for path in result["files"]), result["files"]
    return result


def fit_head(head, visual, audio, batch, *, lr: float, steps: int) -> list[float]:
    """Train a task head alone with Adam on one batch of fused tokens for ``steps`` steps; the loss of each step,
    computed before that step's update."""
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = head.loss(head(visual, audio, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


class FakeVisual(TapBackbone):
    """Pixels as tokens: (B, 3, H, W) -> (B, H*W, 3) -> Linear blocks of widths ``dims``."""

    def __init__(self, dims=(8, 8, 16, 16), image=4):
        super().__init__()
        self.name, self.tag = "fake-visual", "random"
        self.block_dims = list(dims)
        self.block_tokens = [image * image] * len(dims)
        self.stem = nn.Linear(3, dims[0])
        self.blocks = nn.ModuleList(nn.Linear(dims[max(i - 1, 0)], d) for i, d in enumerate(dims))
        self.freeze()

    def embed(self, x):
        return self.stem(x.flatten(2).transpose(1, 2))

    def run_block(self, index, tokens):
        return torch.tanh(self.blocks[index](tokens))

    def to_sequence(self, tokens):
        return tokens


class FakeAudio(TapBackbone):
    """Waveform chunks of 16 samples as tokens."""

    def __init__(self, dims=(6, 12, 12)):
        super().__init__()
        self.name, self.tag = "fake-audio", "random"
        self.block_dims = list(dims)
        self.block_tokens = [8] * len(dims)
        self.stem = nn.Linear(16, dims[0])
        self.blocks = nn.ModuleList(nn.Linear(dims[max(i - 1, 0)], d) for i, d in enumerate(dims))
        self.freeze()

    def embed(self, x):
        return self.stem(x.unflatten(-1, (-1, 16)))

    def run_block(self, index, tokens):
        return torch.tanh(self.blocks[index](tokens))

    def to_sequence(self, tokens):
        return tokens


#: a small MoLT config for the fake backbones
SMALL = dict(num_tokens=3, dim=8, num_heads=2, router_hidden=6, fusion_hidden=5)


def fake_inputs(batch=3, seed=0):
    """Frames ``(B, 3, 4, 4)`` for :class:`FakeVisual` and waveforms ``(B, 128)`` for :class:`FakeAudio`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 4, 4, generator=generator), torch.randn(batch, 128, generator=generator)


def video_without_audio(path: Path) -> Path:
    """A short H.264 clip with no audio track (what ``molt predict`` refuses with "no audio track")."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def refused_in_one_line(argv: list[str], caplog, capfd) -> str:
    """Run ``molt ARGV``, check it is refused as bad input (exit 2, one error line, no traceback); the line."""
    from molt.app.cli import main

    caplog.clear()
    assert main(argv) == 2, argv
    errors = [record for record in caplog.records if record.levelname == "ERROR" and record.name == "molt"]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return errors[0].getMessage()


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """A tmpfs mounted on ``folder`` with mount ``options`` (``size=2m``, ``ro,size=1m``), always unmounted; the
    test is skipped, with the reason, when this user cannot mount one (not root, or mount refused)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def write_tone_clip(path: Path, seconds: float = 10.0, fps: int = 4, sample_rate: int = 16000) -> Path:
    """A 64 x 64 mp4 clip of ``seconds`` with a red square and a 523 Hz tone (what ``molt predict`` reads)."""
    import numpy as np

    from molt.data.media import write_clip

    frames = np.zeros((int(seconds * fps), 64, 64, 3), dtype=np.uint8)
    frames[:, 16:48, 16:48, 0] = 220
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    write_clip(path, frames, (0.3 * np.sin(2 * np.pi * 523 * t)).astype(np.float32), fps=fps,
               sample_rate=sample_rate)
    return path
