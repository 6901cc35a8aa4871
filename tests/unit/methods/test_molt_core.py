"""MoLT core: the equations (TD, UDA, CDA, router, TFM, TOR), gradient flow, frozen backbones, configs."""
import math

import pytest
import torch

from helpers import SMALL, FakeAudio, FakeVisual, fake_inputs
from molt.methods import (CrossModalDistillationAdapter, FeatureDistillationModule, MethodOutput, MoLT, MoLTConfig,
                          TokenDistillation, TokenFusion, UniModalDistillationAdapter, build_method, build_molt,
                          count_parameters, get_method, print_trainable_parameters, token_orthogonality_loss)
from molt.methods.base import fuse_and_zero_fill


def _taps(batch=3, seed=0, visual_dims=(16, 16), audio_dims=(12, 12)):
    generator = torch.Generator().manual_seed(seed)
    visual = [torch.randn(batch, 16, d, generator=generator) for d in visual_dims]
    audio = [torch.randn(batch, 8, d, generator=generator) for d in audio_dims]
    return visual, audio


def _manual_attention(queries, features, module, num_heads):
    """softmax(q W^Q (f W^K)^T / sqrt(d_H)) f W^V, head by head, heads concatenated (eq. 2)."""
    q = queries @ module.q_proj.weight.T
    k = features @ module.k_proj.weight.T
    v = features @ module.v_proj.weight.T
    head = q.shape[-1] // num_heads
    outputs = []
    for h in range(num_heads):
        part = slice(h * head, (h + 1) * head)
        scores = q[..., part] @ k[..., part].transpose(-1, -2) / math.sqrt(head)
        outputs.append(torch.softmax(scores, dim=-1) @ v[..., part])
    return torch.cat(outputs, dim=-1)


# ---- eq. 2: token distillation -------------------------------------------------------------------------------

def test_token_distillation_matches_hand_written_attention():
    torch.manual_seed(0)
    td = TokenDistillation(in_dim=6, dim=8, num_tokens=3, num_heads=2)
    with torch.no_grad():
        td.latent_tokens.normal_()  # sharper attention than the 0.02 init: a stronger check
    features = torch.randn(2, 5, 6)
    out = td(features)
    assert out.shape == (2, 3, 8)
    expected = _manual_attention(td.latent_tokens.expand(2, -1, -1), features, td, num_heads=2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # one head would give a different result: the head split matters
    assert not torch.allclose(out, _manual_attention(td.latent_tokens.expand(2, -1, -1), features, td, num_heads=1),
                              atol=1e-4)


def test_token_distillation_with_given_queries():
    torch.manual_seed(1)
    td = TokenDistillation(in_dim=6, dim=8, num_tokens=3, num_heads=4)
    features, queries = torch.randn(2, 5, 6), torch.randn(2, 7, 6)
    out = td(features, queries)
    assert out.shape == (2, 7, 8)
    torch.testing.assert_close(out, _manual_attention(queries, features, td, num_heads=4), rtol=1e-5, atol=1e-6)


# ---- eqs. 1 and 3: the adapters ------------------------------------------------------------------------------

def test_uni_modal_adapter_is_td_plus_pooled_projection():
    torch.manual_seed(2)
    uda = UniModalDistillationAdapter(in_dim=6, dim=8, num_tokens=3, num_heads=2)
    features = torch.randn(2, 5, 6)
    residual = uda.residual(features).mean(dim=1, keepdim=True)  # W f for every token, averaged over N_l
    torch.testing.assert_close(uda(features), uda.distill(features) + residual, rtol=1e-5, atol=1e-6)


def test_cross_modal_adapter_equation_for_both_modalities():
    torch.manual_seed(3)
    cda = CrossModalDistillationAdapter(visual_dim=6, audio_dim=4, dim=8, num_tokens_visual=3, num_tokens_audio=2,
                                        num_heads=2)
    visual, audio = torch.randn(2, 5, 6), torch.randn(2, 7, 4)
    out_visual, out_audio = cda(visual, audio)
    assert out_visual.shape == (2, 3, 8) and out_audio.shape == (2, 2, 8)
    td_v, td_a = cda.distill_visual(visual), cda.distill_audio(audio)
    expected_v = (_manual_attention(td_v, td_a, cda.cross_visual, 2)
                  + cda.residual_visual(visual).mean(dim=1, keepdim=True))
    expected_a = (_manual_attention(td_a, td_v, cda.cross_audio, 2)
                  + cda.residual_audio(audio).mean(dim=1, keepdim=True))
    torch.testing.assert_close(out_visual, expected_v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_audio, expected_a, rtol=1e-5, atol=1e-6)
    # the visual output really depends on the audio input (cross-modal)
    assert not torch.allclose(cda(visual, audio + 1.0)[0], out_visual)


# ---- eqs. 4-5: router and mixture ----------------------------------------------------------------------------

@pytest.mark.parametrize("num_uda, num_cda", [(2, 2), (0, 1), (1, 0)])
def test_router_weights_and_weighted_sum(num_uda, num_cda):
    torch.manual_seed(4)
    fdm = FeatureDistillationModule(visual_dim=6, audio_dim=4, dim=8, num_tokens_visual=3, num_tokens_audio=2,
                                    num_uda=num_uda, num_cda=num_cda, num_heads=2)
    visual, audio = torch.randn(5, 9, 6) * 3, torch.randn(5, 7, 4)
    tokens, weights = fdm(visual, audio)
    assert weights.shape == (5, num_uda + num_cda)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))
    nv, na = fdm.norms["visual"](visual), fdm.norms["audio"](audio)
    outputs_v = [uda(nv) for uda in fdm.udas["visual"]] + [cda(nv, na)[0] for cda in fdm.cdas]
    outputs_a = [uda(na) for uda in fdm.udas["audio"]] + [cda(nv, na)[1] for cda in fdm.cdas]
    expected_v = sum(weights[:, i, None, None] * out for i, out in enumerate(outputs_v))
    expected_a = sum(weights[:, i, None, None] * out for i, out in enumerate(outputs_a))
    torch.testing.assert_close(tokens["visual"], expected_v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tokens["audio"], expected_a, rtol=1e-5, atol=1e-6)
    # router input is the concatenation of the pooled (normalised) visual and audio tokens
    pooled = torch.cat([nv.mean(1), na.mean(1)], dim=-1)
    torch.testing.assert_close(weights, fdm.router.mlp(pooled).softmax(-1))


# ---- eqs. 6-7: token fusion ----------------------------------------------------------------------------------

def test_token_fusion_mlp_weights_and_weighted_sum():
    torch.manual_seed(5)
    fusion = TokenFusion(dim=8, num_layers=3, fusion="mlp")
    tokens = torch.randn(4, 3, 2, 8)
    fused, weights = fusion(tokens)
    assert fused.shape == (4, 2, 8) and weights.shape == (4, 3)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    torch.testing.assert_close(weights, fusion.score(tokens.mean(2)).squeeze(-1).softmax(-1))
    torch.testing.assert_close(fused, sum(weights[:, l, None, None] * tokens[:, l] for l in range(3)))
    # input-dependent: two samples get different weights
    assert not torch.allclose(weights[0], weights[1])


def test_token_fusion_avg_is_plain_mean():
    tokens = torch.randn(4, 3, 2, 8)
    fused, weights = TokenFusion(dim=8, num_layers=3, fusion="avg")(tokens)
    torch.testing.assert_close(fused, tokens.mean(1))
    torch.testing.assert_close(weights, torch.full((4, 3), 1 / 3))


def test_token_fusion_gates_are_input_independent_and_learnable():
    fusion = TokenFusion(dim=8, num_layers=3, fusion="gates")
    with torch.no_grad():
        fusion.gate_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    fused_a, weights_a = fusion(torch.randn(2, 3, 2, 8))
    _, weights_b = fusion(torch.randn(2, 3, 2, 8) * 10)
    torch.testing.assert_close(weights_a, weights_b)
    torch.testing.assert_close(weights_a[0], torch.tensor([0.5, -1.0, 2.0]).softmax(0))
    fused_a.sum().backward()
    assert fusion.gate_logits.grad is not None and fusion.gate_logits.grad.abs().sum() > 0


def test_token_fusion_per_token_mixes_each_token_with_its_own_layer_weights():
    torch.manual_seed(0)
    fusion = TokenFusion(dim=8, num_layers=3, fusion="mlp_token")
    tokens = torch.randn(4, 3, 2, 8)
    fused, weights = fusion(tokens)
    per_token = fusion.score(tokens).squeeze(-1).softmax(dim=1)                     # (B, L, K), softmax over L
    torch.testing.assert_close(per_token.sum(1), torch.ones(4, 2))
    for k in range(2):
        torch.testing.assert_close(fused[:, k], sum(per_token[:, l, k, None] * tokens[:, l, k] for l in range(3)))
    assert not torch.allclose(per_token[:, :, 0], per_token[:, :, 1])  # the two tokens mix the layers differently
    torch.testing.assert_close(weights, per_token.mean(2))


def test_token_fusion_rejects_wrong_number_of_layers():
    with pytest.raises(ValueError, match="L=3"):
        TokenFusion(dim=8, num_layers=3)(torch.randn(2, 2, 2, 8))
    with pytest.raises(ValueError, match="fusion"):
        TokenFusion(dim=8, num_layers=3, fusion="max")


# ---- eq. 8: TOR ----------------------------------------------------------------------------------------------

def test_tor_zero_for_orthonormal_tokens():
    basis, _ = torch.linalg.qr(torch.randn(16, 16))
    tokens = (basis.T[:6] * torch.tensor([1.0, 2, 3, 4, 5, 6])[:, None]).unsqueeze(0)  # orthogonal, any norm
    assert token_orthogonality_loss(tokens).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_tor_of_identical_tokens_is_n_times_n_minus_one(n):
    tokens = torch.randn(1, 1, 8).expand(3, n, 8) * torch.tensor([1.0, 2.0, 0.5])[:, None, None]
    assert token_orthogonality_loss(tokens).item() == pytest.approx(n * (n - 1), rel=1e-5)


def test_tor_is_averaged_over_the_batch():
    identical = torch.ones(1, 4, 8)
    orthogonal = torch.eye(8)[:4].unsqueeze(0)
    assert token_orthogonality_loss(torch.cat([identical, orthogonal])).item() == pytest.approx(12 / 2)


# ---- the MoLT module -----------------------------------------------------------------------------------------

def test_molt_output_shapes_and_extras():
    torch.manual_seed(6)
    config = MoLTConfig(**SMALL, num_tokens_audio=2)
    molt = MoLT(config, [16, 16], [12, 12])
    visual, audio = _taps()
    out = molt(visual, audio)
    assert isinstance(out, MethodOutput)
    assert out.visual.shape == (3, 3, 8) and out.audio.shape == (3, 2, 8)
    assert out.extras["router_weights"].shape == (3, 2, 4)
    assert out.extras["fusion_weights"]["visual"].shape == (3, 2)
    assert out.extras["layer_tokens"]["audio"].shape == (3, 2, 2, 8)
    expected_tor = sum(token_orthogonality_loss(out.extras["layer_tokens"][m].flatten(1, 2))
                       for m in ("visual", "audio"))
    torch.testing.assert_close(out.aux_losses["tor"], config.tor_weight * expected_tor)
    # fused tokens are the TFM of the layer tokens
    weights = out.extras["fusion_weights"]["visual"]
    torch.testing.assert_close(out.visual, torch.einsum("blkd,bl->bkd", out.extras["layer_tokens"]["visual"], weights))


def test_tor_weight_zero_disables_the_loss():
    molt = MoLT(MoLTConfig(**SMALL, tor_weight=0.0), [16, 16], [12, 12])
    assert molt(*_taps()).aux_losses == {}


@pytest.mark.parametrize("num_uda, num_cda", [(0, 2), (2, 0), (1, 1)])
def test_any_number_of_adapters(num_uda, num_cda):
    molt = MoLT(MoLTConfig(**SMALL, num_uda=num_uda, num_cda=num_cda), [16, 16], [12, 12])
    out = molt(*_taps())
    assert out.visual.shape == (3, 3, 8)
    assert out.extras["router_weights"].shape == (3, 2, num_uda + num_cda)
    assert len(molt.fdms[0].cdas) == num_cda and len(molt.fdms[0].udas["visual"]) == num_uda


def test_no_adapter_at_all_is_rejected():
    with pytest.raises(ValueError, match="at least one distillation adapter"):
        MoLTConfig(num_uda=0, num_cda=0)


def test_mismatched_selection_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        MoLT(MoLTConfig(**SMALL), [16, 16], [12, 12, 12])
    with pytest.raises(ValueError, match="same length"):
        build_molt(FakeVisual(), FakeAudio(), MoLTConfig(**SMALL, blocks_visual="late", blocks_audio=3))


def test_layers_of_different_widths_are_projected_to_dim():
    # visual blocks 1 and 3 (widths 8 and 16) paired with audio blocks 0 and 2 (widths 6 and 12)
    model = build_molt(FakeVisual(), FakeAudio(), MoLTConfig(**SMALL, blocks_visual=[1, 3], blocks_audio=[0, -1]))
    assert model.visual_blocks == [1, 3] and model.audio_blocks == [0, 2]
    assert model.method.visual_dims == [8, 16] and model.method.audio_dims == [6, 12]
    out = model(*fake_inputs())
    assert out.visual.shape == (3, 3, 8) and out.audio.shape == (3, 3, 8)


def test_taps_of_wrong_width_or_count_raise():
    molt = MoLT(MoLTConfig(**SMALL), [16, 16], [12, 12])
    visual, audio = _taps()
    with pytest.raises(ValueError, match="visual tap 1"):
        molt([visual[0], torch.randn(3, 16, 15)], audio)
    with pytest.raises(ValueError, match="2 audio taps"):
        molt(visual, audio[:1])
    with pytest.raises(ValueError, match="batch size"):
        molt(visual, [a[:2] for a in audio])


def test_gradient_reaches_every_trainable_parameter_and_no_backbone_parameter():
    torch.manual_seed(7)
    visual, audio = FakeVisual(), FakeAudio()
    model = build_molt(visual, audio, MoLTConfig(**SMALL))
    model.train()
    assert not visual.training and not audio.training  # frozen backbones stay in eval mode
    out = model(*fake_inputs())
    loss = out.visual.pow(2).sum() + out.audio.pow(2).sum() + out.aux_losses["tor"]
    loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("method.") for name, _ in trainable)
    for name, parameter in trainable:
        assert parameter.grad is not None, f"no gradient reaches {name}"
        assert parameter.grad.abs().sum() > 0, f"zero gradient at {name}"
    for name, parameter in list(visual.named_parameters()) + list(audio.named_parameters()):
        assert not parameter.requires_grad and parameter.grad is None, name


def test_backbone_taps_are_bit_identical_with_and_without_molt():
    torch.manual_seed(8)
    visual, audio = FakeVisual(), FakeAudio()
    frames, waveform = fake_inputs()
    before_v = visual.forward_taps(frames, "late")
    before_a = audio.forward_taps(waveform, "late")
    model = build_molt(visual, audio, MoLTConfig(**SMALL))
    model.train()
    out = model(frames, waveform)
    (out.visual.sum() + out.aux_losses["tor"]).backward()
    after_v, after_a = model.compute_taps(frames, waveform)
    for old, new in zip(before_v + before_a, after_v + after_a):
        assert torch.equal(old, new)
    for old, new in zip(before_v, visual.forward_taps(frames, "late")):
        assert torch.equal(old, new)
    model.eval()
    from_inputs, from_taps = model(frames, waveform), model.forward_from_taps(before_v, before_a)
    assert torch.equal(from_inputs.visual, from_taps.visual) and torch.equal(from_inputs.audio, from_taps.audio)


@pytest.mark.parametrize("modality", ["visual", "audio"])
def test_single_modality_variant(modality):
    torch.manual_seed(9)
    config = MoLTConfig(**SMALL, modalities=modality, num_cda=2)
    backbones = {"visual": FakeVisual() if modality == "visual" else None,
                 "audio": FakeAudio() if modality == "audio" else None}
    model = build_molt(backbones["visual"], backbones["audio"], config)
    assert len(model.method.fdms[0].cdas) == 0  # CDAs need both senses
    frames, waveform = fake_inputs()
    out = model(frames if modality == "visual" else None, waveform if modality == "audio" else None)
    other = "audio" if modality == "visual" else "visual"
    present, absent = getattr(out, modality), getattr(out, other)
    assert present.shape == (3, 3, 8) and present.abs().sum() > 0
    assert absent.shape == (3, 3, 8) and torch.equal(absent, torch.zeros_like(absent))
    assert set(out.extras["fusion_weights"]) == {modality}
    assert out.extras["router_weights"].shape == (3, 2, 2)
    with pytest.raises(ValueError, match="num_uda >= 1"):
        MoLTConfig(modalities=modality, num_uda=0)


def test_config_round_trip_and_validation(tmp_path):
    config = MoLTConfig(blocks_visual=(20, 21), num_tokens=4, fusion="gates", tor_weight=0.0, modalities="audio")
    assert config.blocks_visual == [20, 21]
    assert MoLTConfig.from_json(config.to_json()) == config
    config.save(tmp_path / "molt.json")
    assert MoLTConfig.load(tmp_path / "molt.json") == config
    with pytest.raises(ValueError, match="unknown key"):
        MoLTConfig.from_dict({"num_token": 4})
    with pytest.raises(ValueError, match="fusion"):
        MoLTConfig(fusion="max")
    with pytest.raises(ValueError, match="num_heads"):
        MoLTConfig(dim=10, num_heads=4)
    with pytest.raises(ValueError, match="modalities"):
        MoLTConfig(modalities="video")


def test_build_method_entry_point():
    method, visual_blocks, audio_blocks = build_method("molt", MoLTConfig(**SMALL), FakeVisual(), FakeAudio())
    assert isinstance(method, MoLT) and method.output_dim == 8
    assert visual_blocks == [2, 3] and audio_blocks == [1, 2]
    with pytest.raises(ValueError, match="unknown method"):
        build_method("lora", MoLTConfig(), FakeVisual(), FakeAudio())
    with pytest.raises(TypeError, match="MoLTConfig"):
        build_method("molt", SMALL, FakeVisual(), FakeAudio())
    with pytest.raises(TypeError, match="MettleConfig"):
        build_method(get_method("mettle"), MoLTConfig(**SMALL), FakeVisual(), FakeAudio())


def test_config_set_fields_follow_the_source():
    parsed = MoLTConfig.from_dict({"num_uda": 2, "dim": 8, "num_heads": 2}, source="x.yaml: method_config")
    assert parsed.to_dict(only_set=True) == {"num_uda": 2, "dim": 8, "num_heads": 2}
    assert parsed.replace(num_tokens=3).to_dict(only_set=True) == {"num_uda": 2, "dim": 8, "num_heads": 2,
                                                                  "num_tokens": 3}
    assert MoLTConfig(num_tokens=3).to_dict(only_set=True) == {"num_tokens": 3}
    assert parsed.to_dict() == MoLTConfig(dim=8, num_heads=2).to_dict()
    with pytest.raises(ValueError, match="^x.yaml: method_config: dim \\(10\\) must be a positive multiple"):
        MoLTConfig.from_dict({"dim": 10, "num_heads": 4}, source="x.yaml: method_config")


def test_fuse_and_zero_fill_gives_the_absent_modality_zeros():
    fusion = {"audio": TokenFusion(dim=8, num_layers=2, fusion="avg")}
    layer_tokens = {"audio": torch.randn(3, 2, 4, 8, requires_grad=True)}
    fused, weights = fuse_and_zero_fill(fusion, layer_tokens, batch=3, num_tokens={"visual": 5, "audio": 4}, dim=8)
    assert torch.allclose(fused["audio"], layer_tokens["audio"].mean(dim=1)) and weights["audio"].shape == (3, 2)
    assert fused["visual"].shape == (3, 5, 8) and not fused["visual"].any() and not fused["visual"].requires_grad
    assert set(weights) == {"audio"}


def test_parameter_counting_dedupes_shared_backbone_and_works_on_meta():
    shared = FakeVisual(dims=(8, 8, 16, 16))
    model = build_molt(shared, shared, MoLTConfig(**SMALL))
    backbone_total = sum(p.numel() for p in shared.parameters())
    molt_total = sum(p.numel() for p in model.method.parameters())
    assert count_parameters(model) == (molt_total, molt_total + backbone_total)
    assert count_parameters(model.method, shared, shared) == (molt_total, molt_total + backbone_total)
    line = print_trainable_parameters(model)
    assert line.startswith(f"trainable params: {molt_total:,} || all params: {molt_total + backbone_total:,}")
    assert "trainable%: " in line
    with torch.device("meta"):
        small_meta = MoLT(MoLTConfig(**SMALL), [16, 16], [12, 12])
        meta = MoLT(MoLTConfig(), [1536, 1536], [768, 768])
    assert count_parameters(small_meta) == count_parameters(MoLT(MoLTConfig(**SMALL), [16, 16], [12, 12]))
    assert count_parameters(meta)[0] == count_parameters(meta)[1]
    # the paper-scale count is a closed form of the widths: check one FDM's visual UDA
    uda = meta.fdms[0].udas["visual"][0]
    assert count_parameters(uda)[1] == 8 * 1536 + 3 * 1536 * 512 + 1536 * 512 + 512
