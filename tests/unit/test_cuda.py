"""The GPU path against the CPU (issue S): tests marked ``cuda`` run where ``torch.cuda.is_available()`` (select
them with ``-m cuda``; ``benchmarks/gpu_run.py`` runs them with ``--runslow`` on a lent GPU) and are skipped, with
the reason, elsewhere. Each check is a function of ``device`` in tests/device_checks.py; the unmarked tests at the
end run the same functions with ``device="cpu"``, so the checks themselves are exercised by every unit run.

On a GPU: every method's training step leaves the frozen backbones without gradients and the adapters and head
with them; the taps equal the CPU's within float32 tolerance (TF32 off) and, with bfloat16 backbones, within the
CPU tests' bfloat16 bound; ``molt extract`` on the GPU writes the CPU's cache; ``molt predict`` and ``molt eval``
with ``--accelerator gpu`` give the CPU's labels and metrics; adapters saved on either side load on the other
bit for bit; the peak memory of one MoLT AVE step at paper scale is printed (reported, not asserted).
"""
import pytest
import torch

from device_checks import (BF16_TAP_TOLERANCE, FLOAT32_TAP_TOLERANCE, METHODS, checkpoint_round_trip,
                           evaluations_on, extraction_differences, paper_step_peak, predictions_on, relative_errors,
                           taps_on, training_step_gradients)
from helpers import write_tone_clip

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False); on a GPU machine: "
                                       "python -m pytest -m cuda --runslow tests/unit/test_cuda.py")


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory):
    """A 10-s generated mp4 clip (64 px, 4 fps, a tone)."""
    return write_tone_clip(tmp_path_factory.mktemp("clip") / "tone.mp4")


def _same_predictions(on_cpu: dict, on_device: dict) -> None:
    assert on_cpu["seconds"] == 10 and len(on_cpu["segments"]) == 10
    assert [s["label"] for s in on_device["segments"]] == [s["label"] for s in on_cpu["segments"]]
    assert on_device["clip_category"] == on_cpu["clip_category"]
    for mine, theirs in zip(on_device["segments"], on_cpu["segments"]):
        assert mine["event_probability"] == pytest.approx(theirs["event_probability"], abs=2e-4)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_training_step_reaches_only_the_adapters(method):
    on_cuda = training_step_gradients(method, "cuda")
    on_cpu = training_step_gradients(method, "cpu")
    # the same parts got gradients on both devices (a parameter may get none, e.g. an expert no token chose)
    assert set(on_cuda) == set(on_cpu) == {"method", "head"}
    assert set(on_cuda["head"]) == set(on_cpu["head"])


@pytest.mark.cuda
@needs_cuda
def test_cuda_taps_equal_the_cpu_taps():
    reference = taps_on("cpu")
    assert max(relative_errors(taps_on("cuda"), reference)) < FLOAT32_TAP_TOLERANCE
    half = relative_errors(taps_on("cuda", "bfloat16"), reference)
    assert max(half) < BF16_TAP_TOLERANCE and min(half) > 0      # really computed in bfloat16


@pytest.mark.cuda
@needs_cuda
def test_cuda_extraction_writes_the_cpu_cache(ave_data, tmp_path):
    assert extraction_differences(ave_data, tmp_path, "cuda") < FLOAT32_TAP_TOLERANCE


@pytest.mark.cuda
@needs_cuda
def test_cuda_predictions_are_the_cpu_labels(tone_clip, tmp_path):
    _same_predictions(*predictions_on(tmp_path, tone_clip, "cuda"))


def _same_metrics(on_cpu: dict, on_device: dict) -> None:
    assert on_cpu["items"] == on_device["items"] > 0
    assert on_device["accuracy"] == pytest.approx(on_cpu["accuracy"], abs=1e-6)
    assert len(on_device["figures"]) == len(on_cpu["figures"]) > 0


@pytest.mark.cuda
@needs_cuda
def test_cuda_evaluation_gives_the_cpu_metrics(ave_data, tmp_path):
    _same_metrics(*evaluations_on(ave_data, tmp_path, "cuda"))


@pytest.mark.cuda
@needs_cuda
def test_cuda_checkpoints_load_on_the_cpu_and_back(tmp_path):
    checkpoint_round_trip(tmp_path, "cuda")


@pytest.mark.cuda
@pytest.mark.slow
@needs_cuda
def test_cuda_paper_scale_molt_step_peak_memory_is_reported():
    measured = paper_step_peak("cuda")
    assert measured["peak_kind"] == "cuda_max_allocated" and measured["peak_bytes"] > 0
    gib = 2 ** 30
    print(f"paper-scale MoLT AVE step, 1 clip of 10 segments, float32: peak {measured['peak_bytes'] / gib:.3f} GiB "
          f"(torch.cuda.max_memory_allocated), step {measured['step_s']:.3f} s, activations "
          f"{measured['activation_bytes'] / gib:.3f} GiB")


# the same checks with the CPU as the other device: they must hold trivially, and run every line of the checks

@pytest.mark.parametrize("method", METHODS)
def test_training_step_check_on_the_cpu(method):
    norms = training_step_gradients(method, "cpu")
    assert norms["method"] and norms["head"]


def test_tap_check_on_the_cpu():
    reference = taps_on("cpu")
    assert max(relative_errors(taps_on("cpu"), reference)) == 0.0
    half = relative_errors(taps_on("cpu", "bfloat16"), reference)
    assert 0 < max(half) < BF16_TAP_TOLERANCE


def test_prediction_check_on_the_cpu(tone_clip, tmp_path):
    _same_predictions(*predictions_on(tmp_path, tone_clip, "cpu"))


def test_evaluation_check_on_the_cpu(ave_data, tmp_path):
    _same_metrics(*evaluations_on(ave_data, tmp_path, "cpu"))


def test_checkpoint_check_on_the_cpu(tmp_path):
    checkpoint_round_trip(tmp_path, "cpu")


def test_extraction_check_on_the_cpu(ave_data, tmp_path):
    assert extraction_differences(ave_data, tmp_path, "cpu") == 0.0
