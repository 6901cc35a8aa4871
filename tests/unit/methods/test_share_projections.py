"""`share_projections: modality`: eq. 2's W^Q_m, W^K_m, W^V_m shared by every adapter of a modality at a layer."""
import pytest
import torch

from molt.config import load_config
from molt.methods.molt import FeatureDistillationModule, MoLTConfig
from molt.model import AudioVisualModel, build_model

SIZES = dict(visual_dim=48, audio_dim=32, dim=16, num_tokens_visual=4, num_tokens_audio=3, num_uda=2, num_cda=2,
             num_heads=4)


def _tied_copy(shared: FeatureDistillationModule) -> FeatureDistillationModule:
    """A per-adapter FDM whose every TD holds the shared module's projections of its modality (all else equal)."""
    separate = FeatureDistillationModule(**SIZES)
    source, state = shared.state_dict(), separate.state_dict()
    for key in state:
        if key in source:
            state[key] = source[key].clone()
            continue
        modality = "visual" if (".visual." in key or "distill_visual." in key) else "audio"
        projection = key.split(".")[-2]                                          # q_proj, k_proj, v_proj
        state[key] = source[f"shared.{modality}.{projection}.weight"].clone()
    separate.load_state_dict(state)
    return separate


def test_outputs_equal_the_per_adapter_module_with_tied_weights():
    torch.manual_seed(0)
    shared = FeatureDistillationModule(**SIZES, share_projections="modality")
    separate = _tied_copy(shared)
    visual, audio = torch.randn(3, 10, 48), torch.randn(3, 7, 32)
    tokens, weights = shared(visual, audio)
    expected, expected_weights = separate(visual, audio)
    for name in ("visual", "audio"):
        torch.testing.assert_close(tokens[name], expected[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=1e-6)


def test_one_set_of_projections_per_modality_and_each_tap_projected_once():
    shared = FeatureDistillationModule(**SIZES, share_projections="modality")
    separate = FeatureDistillationModule(**SIZES)
    projections = {name: (SIZES[f"{name}_dim"] * SIZES["dim"]) * 3 for name in ("visual", "audio")}
    adapters = SIZES["num_uda"] + SIZES["num_cda"]
    saved = sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters())
    assert saved == (adapters - 1) * sum(projections.values())
    assert not any(name.endswith("k_proj.weight") for name, _ in shared.udas.named_parameters())
    calls = {"visual": 0, "audio": 0}
    for name in calls:
        shared.shared[name].k_proj.register_forward_hook(lambda *_, name=name: calls.__setitem__(name,
                                                                                                 calls[name] + 1))
    shared(torch.randn(2, 10, 48), torch.randn(2, 7, 32))
    assert calls == {"visual": 1, "audio": 1}


def test_config_and_adapter_round_trip(tmp_path):
    with pytest.raises(ValueError, match="share_projections must be one of adapter, modality"):
        MoLTConfig(share_projections="layer")
    config = load_config("ave_molt_tiny", {"method_config": {"share_projections": "modality"}})
    model = build_model(config, {"num_classes": 4})
    model.save_pretrained(tmp_path / "adapters")
    loaded = AudioVisualModel.from_pretrained(tmp_path / "adapters")
    assert loaded.features.method.config.share_projections == "modality"
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(value, loaded.trainable_state_dict()[key])
