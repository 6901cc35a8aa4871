"""Checks of one device against the CPU, each a function of ``device`` (``from device_checks import ...``; ``tests/``
is on pytest's ``pythonpath``): tests/unit/test_cuda.py runs them with ``device="cuda"`` where a GPU is visible, and
with ``device="cpu"`` everywhere, so a mistake in a check shows on the CPU before a GPU is lent.

Everything runs on the tiny backbones (random weights, fixed initialisation seed) and AVE's paper task options
(28 classes), except :func:`paper_step_peak`, the one paper-scale measurement.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from molt.app.bench import measure_training_step, random_batch
from molt.model import AudioVisualModel, build_model

__all__ = ["BF16_TAP_TOLERANCE", "FLOAT32_TAP_TOLERANCE", "METHODS", "full_float32", "tiny_model",
           "training_step_gradients", "taps_on", "relative_errors", "extraction_differences",
           "tiny_adapters", "predictions_on", "evaluations_on", "checkpoint_round_trip", "paper_step_peak"]

METHODS = ("molt", "mettle", "lavish", "dgsct", "avmoe")
# relative L2 error of the bfloat16 taps against float32 that the CPU tests allow (tests/unit/backbones/
# test_backbone_dtype.py); float32 on two devices differs only by the order of the sums
BF16_TAP_TOLERANCE = 0.08
FLOAT32_TAP_TOLERANCE = 1e-4
TASK = "ave"


@contextlib.contextmanager
def full_float32():
    """No TF32 in CUDA matrix products and convolutions inside the block (an Ampere or later GPU uses it for
    convolutions by default: 10 mantissa bits, too coarse for a float32 comparison)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def tiny_model(method: str = "molt", backbone_dtype: str = "float32",
               task_options: dict | None = None) -> AudioVisualModel:
    """AVE with ``method`` on the tiny backbones, on the CPU, the same weights at every call; ``task_options``:
    the classes (default: the paper's 28)."""
    from molt.app.bench import bench_config
    from molt.tasks import get_task

    torch.manual_seed(0)
    return build_model(bench_config(TASK, "tiny", method, backbone_dtype),
                       dict(task_options or get_task(TASK).paper.task_options))


def training_step_gradients(method: str, device: str) -> dict[str, dict[str, float]]:
    """One training step (forward, task loss + auxiliary losses, backward) of ``method`` on ``device`` with a batch
    of 2 random clips; the gradient norm of each trainable parameter by part (``method``, ``head``).

    Asserts what a step must leave: no frozen parameter has a gradient (or asks for one), every gradient is finite,
    on ``device`` and float32, and both the method's adapters and the head got a non-zero gradient.
    """
    model = tiny_model(method).to(device)
    model.train()
    batch = random_batch(model, TASK, 2, device=device)
    output = model(batch)
    loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
    assert torch.isfinite(loss), f"{method}: loss {float(loss)}"
    loss.backward()
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert all(not p.requires_grad for backbone in (model.visual, model.audio) for p in backbone.parameters())
    norms: dict[str, dict[str, float]] = {}
    for part, module in (("method", model.method), ("head", model.task)):
        norms[part] = {}
        for name, parameter in module.named_parameters():
            if parameter.grad is None:
                continue
            grad = parameter.grad
            assert grad.device == parameter.device and grad.device.type == torch.device(device).type, name
            assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all()), name
            norms[part][name] = float(grad.norm())
        assert any(norm > 0 for norm in norms[part].values()), f"{method}: no gradient reached the {part}"
    return norms


def _fixed_batch(model: AudioVisualModel) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    height, width = model.visual.input_size
    return {"frames": torch.randint(0, 256, (2, 2, 3, height, width), dtype=torch.uint8, generator=generator),
            "audio": 0.1 * torch.randn(2, 2, int(getattr(model.audio, "sample_rate", 32000)), generator=generator)}


@torch.no_grad()
def taps_on(device: str, backbone_dtype: str = "float32") -> list[torch.Tensor]:
    """The taps MoLT reads (visual then audio, each ``(B*T, N_l, D_l)`` = ``(4, N_l, D_l)``) for two fixed random
    clips of 2 segments, computed on ``device`` with the backbones stored in ``backbone_dtype``; on the CPU, as
    float32."""
    model = tiny_model("molt", backbone_dtype).to(device)
    model.eval()
    with full_float32():
        visual, audio = model.compute_taps({k: v.to(device) for k, v in _fixed_batch(model).items()})
    return [tap.float().cpu() for tap in visual + audio]


def relative_errors(taps: list[torch.Tensor], reference: list[torch.Tensor]) -> list[float]:
    """``||tap - ref|| / ||ref||`` for each pair (after checking their shapes match)."""
    assert [t.shape for t in taps] == [r.shape for r in reference]
    return [float((tap - ref).norm() / ref.norm()) for tap, ref in zip(taps, reference)]


def extraction_differences(data: Path, out: Path, device: str) -> float:
    """``molt extract ave`` (float32 cache, the test split) of the prepared AVE set ``data`` on the CPU into
    ``out/cpu`` and on ``device`` into ``out/device``; asserts both caches are complete, have the same manifest
    (but for the extraction record) and items; returns the largest relative L2 difference of any tap of any clip."""
    from molt.app.extract import extract
    from molt.config import load_config
    from molt.features import FeatureCache

    config = load_config("ave_molt_tiny")
    caches = {}
    with full_float32():
        for name, where in (("cpu", "cpu"), ("device", device)):
            extract(config, data=data, out_dir=out / name, splits=("test",), dtype="float32", batch_size=2,
                    device=where, show_progress=False)
            caches[name] = FeatureCache(out / name, "test")
    cpu, other = caches["cpu"], caches["device"]
    assert len(cpu) == len(other) > 0
    assert cpu.manifest.groups == other.manifest.groups and cpu.manifest.dtype == other.manifest.dtype == "float32"
    worst = 0.0
    for index in range(len(cpu)):
        mine, theirs = cpu[index], other[index]
        assert set(mine) == set(theirs) == {"visual_taps", "audio_taps"}
        for group in mine:
            worst = max([worst, *relative_errors(theirs[group], mine[group])])
    return worst


def _accelerator(device: str) -> str:
    """The ``--accelerator`` choice of a torch device name (``cuda:0`` -> ``gpu``)."""
    return "gpu" if device.startswith("cuda") else device


def tiny_adapters(out: Path, task_options: dict | None = None) -> Path:
    """Adapters of one tiny MoLT AVE model (``task_options``: see :func:`tiny_model`) whose head is moved off its
    initialisation, saved once in ``out``."""
    adapters = out / "adapters"
    if not adapters.is_dir():
        model = tiny_model(task_options=task_options)
        with torch.no_grad():                           # a head that is not at its initialisation
            for parameter in model.task.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2)))
        model.save_pretrained(adapters)
    return adapters


def predictions_on(out: Path, video: Path, device: str) -> tuple[dict, dict]:
    """The AVE predictions for ``video`` of one tiny model (:func:`tiny_adapters`) through ``molt predict
    --accelerator cpu`` and through ``molt predict --accelerator`` of ``device``."""
    import json

    from molt.app.cli import main

    adapters = tiny_adapters(out)
    results = []
    for name, accelerator in (("cpu", "cpu"), (f"on_{device}", _accelerator(device))):
        with full_float32():
            assert main(["--quiet", "predict", "ave", "--checkpoint", str(adapters), "--video", str(video), "--out",
                         str(out / name), "--accelerator", accelerator]) == 0
        results.append(json.loads((out / name / "predictions.json").read_text()))
    return results[0], results[1]


def evaluations_on(data: Path, out: Path, device: str) -> tuple[dict, dict]:
    """``molt eval ave`` of one tiny model (:func:`tiny_adapters`) on the test split of the prepared set ``data``,
    with ``--accelerator cpu`` and with the ``--accelerator`` of ``device``: both ``metrics.json``."""
    import json

    from molt.app.cli import main

    from molt.tasks import get_task

    spec = get_task(TASK)
    adapters = tiny_adapters(out, spec.open_split(spec.open_prepared(data, None), "test").task_options())
    results = []
    for name, accelerator in (("cpu", "cpu"), (f"on_{device}", _accelerator(device))):
        with full_float32():
            assert main(["--quiet", "eval", "ave", "--data", str(data), "--checkpoint", str(adapters), "--out",
                         str(out / name), "--batch-size", "3", "--accelerator", accelerator]) == 0
        results.append(json.loads((out / name / "metrics.json").read_text()))
    return results[0], results[1]


def checkpoint_round_trip(out: Path, device: str) -> None:
    """Adapters saved from a model on ``device`` load on the CPU, and adapters saved on the CPU load and move to
    ``device``, with every trainable tensor bit for bit (asserted)."""
    for source, target in ((device, "cpu"), ("cpu", device)):
        model = tiny_model("molt").to(source)
        with torch.no_grad():
            for parameter in (p for p in model.parameters() if p.requires_grad):
                parameter.add_(0.01)                    # not the initialisation a rebuild would give anyway
        saved = model.save_pretrained(out / f"{source}_to_{target}")
        loaded = AudioVisualModel.from_pretrained(saved).to(target)
        expected, got = model.trainable_state_dict(), loaded.trainable_state_dict()
        assert set(expected) == set(got) and expected
        for name, tensor in expected.items():
            assert got[name].device.type == torch.device(target).type, name
            assert torch.equal(got[name].cpu(), tensor.cpu()), name


def paper_step_peak(device: str) -> dict:
    """One MoLT AVE training step at paper scale (Swin-V2-L + HTS-AT, random weights, 1 clip of 10 segments) on
    ``device``, after one warm-up step: the measurement of :func:`molt.app.bench.measure_training_step`."""
    return measure_training_step(TASK, "paper", "molt", batch_clips=1, device=device, steps=1, warmup=1)
