"""`backbone_dtype`: the frozen backbones stored and run in bfloat16 / float16, adapters and head in float32."""
from dataclasses import replace

import pytest
import torch

from molt.app.cli import main
from molt.config import load_config, switch_method
from molt.features import TapGroupSpec
from molt.model import build_model

# relative L2 error of the taps against float32, with the tiny backbones (bfloat16 keeps 8 mantissa bits, float16 10)
TOLERANCE = {"bfloat16": 0.08, "float16": 0.015}


def _batch(model):
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 255, (2, 2, 3, *model.visual.input_size), dtype=torch.uint8, generator=generator)
    return {"frames": frames, "audio": 0.1 * torch.randn(2, 2, 32000, generator=generator),
            "labels": torch.nn.functional.one_hot(torch.tensor([[0, 4], [1, 1]]), 5).float()}


def _taps(backbone, dtype):
    model = build_model(load_config("ave_molt_tiny", {"backbone": backbone, "backbone_dtype": dtype}),
                        {"num_classes": 4})
    model.eval()
    with torch.no_grad():
        visual, audio = model.compute_taps(_batch(model))
    return model, visual + audio


@pytest.mark.parametrize("backbone", ["tiny", "tiny-shared"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_taps_stay_close_to_float32_and_nothing_trainable_is_cast(backbone, dtype):
    reference = _taps(backbone, "float32")[1]
    model, taps = _taps(backbone, dtype)
    for tap, expected in zip(taps, reference):
        assert tap.dtype == torch.float32
        assert float((tap - expected).norm() / expected.norm()) < TOLERANCE[dtype]
        assert not torch.equal(tap, expected)           # really computed in the other dtype
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    frozen = {name: p.dtype for name, p in model.named_parameters() if not p.requires_grad}
    front_end = ("spectrogram_extractor", "logmel_extractor", "bn0", "frontend")
    assert {d for n, d in frozen.items() if not any(f".{m}." in n for m in front_end)} == {getattr(torch, dtype)}
    assert {d for n, d in frozen.items() if any(f".{m}." in n for m in front_end)} <= {torch.float32}


def test_a_training_step_with_a_bfloat16_backbone_reaches_only_the_adapters():
    model = build_model(load_config("ave_molt_tiny", {"backbone_dtype": "bfloat16"}), {"num_classes": 4})
    model.train()
    batch = _batch(model)
    output = model(batch)
    loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable[:5]) and any(p.grad.abs().sum() > 0 for p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_cache_identity_and_in_block_methods():
    model = build_model(load_config("ave_molt_tiny", {"backbone_dtype": "bfloat16"}), {"num_classes": 4})
    spec = TapGroupSpec.from_backbone(model.visual, model.features.visual_blocks)
    assert spec.preprocessing["compute_dtype"] == "bfloat16"
    plain = build_model(load_config("ave_molt_tiny"), {"num_classes": 4})
    assert "compute_dtype" not in TapGroupSpec.from_backbone(plain.visual, "late").preprocessing
    with pytest.raises(ValueError, match="backbone_dtype bfloat16: lavish adapters run inside the backbone"):
        build_model(replace(switch_method(load_config("ave_molt_tiny"), "lavish"), backbone_dtype="bfloat16"),
                    {"num_classes": 4})
    with pytest.raises(ValueError, match="backbone_dtype must be float32, bfloat16 or float16"):
        load_config("ave_molt_tiny", {"backbone_dtype": "int8"})


def test_cli_flag(ave_data, tmp_path):
    assert main(["--quiet", "train", "ave", "--data", str(ave_data), "--epochs", "1", "--backbone-dtype",
                 "bfloat16", "--out", str(tmp_path / "runs")]) == 0
    config = next((tmp_path / "runs").rglob("adapter_config.json")).read_text()
    assert '"backbone_dtype": "bfloat16"' in config
