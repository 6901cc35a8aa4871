"""What the full model reads from the frozen backbones: taps, multi-scale stage features, cached inputs."""
import pytest
import torch

from molt.config import load_config
from molt.model import build_model, resolve_device
from molt.tasks import TaskHead
from molt.tasks.base import batch_to


class _StageProbe(TaskHead):
    """A head that needs the visual stage features and returns their pooled values, so tests can see them."""

    name = "probe"
    needs_visual_stages = True

    def forward(self, visual, audio, batch):
        self.seen_stages = batch["visual_stages"]
        return {"pooled": visual.mean(dim=(1, 2)) + sum(stage.mean(dim=(1, 2)) for stage in batch["visual_stages"])}


def _model(method="molt"):
    config = load_config("ave_molt_tiny")
    if method != "molt":
        from molt.config import switch_method

        config = switch_method(config, method)
    model = build_model(config, {"num_classes": 3})
    model.task = _StageProbe()
    return model.eval()


def _batch(clips=2, segments=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"frames": torch.randint(0, 256, (clips, segments, 3, 64, 64), dtype=torch.uint8, generator=generator),
            "audio": torch.randn(clips, segments, 32000, generator=generator) * 0.1,
            "video_id": [f"clip{i}" for i in range(clips)]}


def test_stage_end_blocks_of_the_tiny_swin():
    model = _model()
    # depths 2, 2, 2, 2: stages end at blocks 1, 3, 5, 7; grids 16, 8, 4, 2 at 64 px
    assert model.visual.stage_end_blocks == [1, 3, 5, 7]
    assert model.audio.stage_end_blocks[-1] == model.audio.num_blocks - 1


@pytest.mark.parametrize("method", ["molt", "lavish"])
def test_stage_features_match_a_direct_backbone_pass(method):
    model = _model(method)
    batch = _batch()
    with torch.no_grad():
        model(batch)
        stages = model.task.seen_stages
        frames = model.visual.preprocess(batch["frames"].flatten(0, 1))
        expected = model.visual.forward_taps(frames, [1, 3, 5, 7])
    assert [tuple(s.shape) for s in stages] == [(6, 256, 24), (6, 64, 48), (6, 16, 96), (6, 4, 192)]
    for got, want in zip(stages, expected):
        torch.testing.assert_close(got, want)


def test_stage_features_do_not_change_the_method_taps():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        with_stages = model.compute_inputs(batch)
        model.task.needs_visual_stages = False
        without = model.compute_inputs(batch)
    assert without["visual_stages"] is None and len(with_stages["visual_stages"]) == 4
    for key in ("visual_taps", "audio_taps"):
        for a, b in zip(with_stages[key], without[key]):
            torch.testing.assert_close(a, b)


def test_cached_inputs_per_clip_give_the_online_output():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        online = model(batch).predictions["pooled"]
        inputs = model.compute_inputs(batch)
        cached = {"video_id": batch["video_id"],
                  **{key: [tap.unflatten(0, (2, 3)) for tap in taps] for key, taps in inputs.items()}}
        offline = model(cached).predictions["pooled"]
    torch.testing.assert_close(offline, online)


def test_batch_to_moves_every_tensor_and_leaves_the_rest():
    batch = {"frames": torch.zeros(2, 3), "visual_taps": [torch.ones(1), torch.ones(2)], "video_id": ["a", "b"],
             "nested": {"mask": torch.zeros(1, dtype=torch.bool)}, "count": 3, "empty": []}
    moved = batch_to(batch, "meta")
    assert moved["frames"].device.type == "meta" and moved["frames"].shape == (2, 3)
    assert [t.device.type for t in moved["visual_taps"]] == ["meta", "meta"]
    assert moved["nested"]["mask"].device.type == "meta" and moved["nested"]["mask"].dtype == torch.bool
    assert moved["video_id"] == ["a", "b"] and moved["count"] == 3 and moved["empty"] == []
    assert batch["frames"].device.type == "cpu"                 # the input is not changed
    assert batch_to(batch, "cpu")["frames"] is batch["frames"]    # nothing copied when already there


def test_resolve_device_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    visible = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None) == visible
    with pytest.raises(ValueError, match="choose auto, cpu, gpu, cuda or mps"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_resolve_device_refuses_a_gpu_that_is_not_there():
    for choice in ("gpu", "cuda"):
        with pytest.raises(ValueError, match=f"--accelerator {choice}: no CUDA GPU is visible.*--accelerator cpu"):
            resolve_device(choice)


def test_a_model_with_its_backbones_on_meta_reads_cached_taps_where_its_head_is():
    """Training from a feature cache keeps the backbones on ``meta``: batches go to the head's device, not there."""
    config = load_config("ave_molt_tiny")
    torch.manual_seed(0)
    full = build_model(config, {"num_classes": 3}).eval()
    light = build_model(config, {"num_classes": 3}, backbones_on_meta=True).eval()
    light.load_state_dict({key: value for key, value in full.state_dict().items()
                           if not key.startswith(("features.visual.", "features.audio."))}, strict=False)
    assert next(light.visual.parameters()).device.type == "meta" and light.input_device == torch.device("cpu")
    batch = _batch(segments=10)
    with torch.no_grad():
        inputs = full.compute_inputs(batch)
        cached = {**{key: [tap.unflatten(0, (2, 10)) for tap in taps] for key, taps in inputs.items()
                     if taps is not None}, "video_id": batch["video_id"]}
        expected = full(batch).predictions
        got = light(cached).predictions
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].device.type == "cpu"
        torch.testing.assert_close(got[key], value)
