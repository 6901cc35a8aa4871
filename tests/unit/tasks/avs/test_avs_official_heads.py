"""The peers' own AVS decoders (``method_config.head: official``): sizes against the authors' classes at paper
scale, the loss of each setting, one training step through the model with the tiny backbones, and the counts of
``molt params avs --heads``."""
import pytest
import torch
import torch.nn.functional as F

from molt.config import ExperimentConfig
from molt.model import build_model
from molt.tasks.avs.head import AVSHeadConfig, _ResidualConvUnit
from molt.tasks.avs.official import (PVT_V2_B5_PARAMETERS, AVMoEAVSHead, DGSCTAVSHead, LAVisHAVSHead,
                                     StageTemporalGates)

# Parameter counts of the authors' classes at paper scale, obtained by building them on the meta device in a scratch
# directory outside this repository: DG-SCT @211fc57 DG-SCT/AVS/avs_scripts/avs_s4/model/PVT_AVSModel.py
# ``TemporalAttention()``, ``Classifier_Module`` x4 (vis_dim 64, 128, 320, 512 -> 256), ``FeatureFusionBlock(256)``
# x4, ``output_conv``, ``x{1-4}_linear``, ``x{1-4}_linear_``, ``audio_linear`` and TPAVI.py ``TPAVIModule(256)`` x4
# (AVMoE @edd2383 PVT_AVSModel_v2.py: the same numbers); LAVisH @97722b0 AVS/avs_scripts/avs_s4/model/
# PVT_AVSModel.py likewise without the temporal attention, ``audio_linear`` 1536 -> 128; model/pvt.py
# ``pvt_v2_b5()`` for the encoder. Then the parts their forward never calls were summed module by module.
AUTHORS_DGSCT_HEAD = 64_719_689         # everything of Pred_endecoder but swin, htsat, the adapters and the PVT
AUTHORS_DGSCT_CALLED = 29_050_185       # what its forward uses
AUTHORS_DGSCT_TEMPORAL_GATED = 26_544   # the 2 x 12 visual and 2 x 12 audio adapters' Linear(D, 1)
AUTHORS_LAVISH_HEAD = 21_168_961
AUTHORS_LAVISH_CALLED = 19_988_801
AUTHORS_PVT_V2_B5 = 81_443_008
SWIN_L = [192, 384, 768, 1536]
TINY = [24, 48, 96, 192]                # tiny Swin-V2 at 64 px: grids 16, 8, 4, 2
GRIDS = [16, 8, 4, 2]
B, T, M, A = 2, 5, 64, 12
SMALL = {"dim": 16, "out_heads": 4, "num_tokens": 3, "num_latents": 2, "reduction": 4}


def _count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_official_heads_count_as_the_authors_classes_at_paper_scale():
    with torch.device("meta"):
        dgsct = DGSCTAVSHead(visual_dim=1536, audio_dim=768, mask_size=224, stage_dims=SWIN_L)
        avmoe = AVMoEAVSHead(visual_dim=1536, audio_dim=768, mask_size=224, stage_dims=SWIN_L)
        lavish = LAVisHAVSHead(visual_dim=1536, audio_dim=1536, mask_size=224, stage_dims=SWIN_L)
    assert _count(dgsct) == _count(avmoe) == AUTHORS_DGSCT_CALLED
    assert _count(lavish) == AUTHORS_LAVISH_CALLED
    assert PVT_V2_B5_PARAMETERS == AUTHORS_PVT_V2_B5
    dgsct_only = DGSCTAVSHead.script_only_parameters()
    assert dgsct_only.pop("adapters' temporal_gated (output unused)") == AUTHORS_DGSCT_TEMPORAL_GATED
    assert AUTHORS_DGSCT_CALLED + sum(dgsct_only.values()) == AUTHORS_DGSCT_HEAD + AUTHORS_PVT_V2_B5
    assert AVMoEAVSHead.script_only_parameters() == dgsct_only
    assert AUTHORS_LAVISH_CALLED + sum(LAVisHAVSHead.script_only_parameters().values()) == \
        AUTHORS_LAVISH_HEAD + AUTHORS_PVT_V2_B5


def _inputs(seed=0, valid=None):
    generator = torch.Generator().manual_seed(seed)
    stages = [torch.randn(B * T, grid * grid, width, generator=generator) for grid, width in zip(GRIDS, TINY)]
    masks = (torch.rand(B, T, M, M, generator=generator) > 0.5).float()
    batch = {"visual_stages": stages, "masks": masks,
             "mask_valid": torch.ones(B, T) if valid is None else valid}
    return torch.randn(B * T, 1, A, generator=generator), batch


def _head(head_class, setting="s4"):
    torch.manual_seed(0)
    return head_class(AVSHeadConfig(channels=16), visual_dim=192, audio_dim=A, mask_size=M, stage_dims=TINY,
                      setting=setting)


@pytest.mark.parametrize("head_class", [DGSCTAVSHead, LAVisHAVSHead])
def test_s4_loss_is_the_bce_of_the_first_frame(head_class):
    head = _head(head_class)
    valid = torch.zeros(B, T)
    valid[:, 0] = 1
    audio, batch = _inputs(valid=valid)
    outputs = head(None, audio, batch)
    assert outputs["mask_logits"].shape == (B, T, M, M)
    assert outputs["masked_visual"].shape == outputs["stage_audio"].shape == (B, T, 4, 16)
    first = torch.sigmoid(outputs["mask_logits"][:, 0])
    torch.testing.assert_close(head.loss(outputs, batch), F.binary_cross_entropy(first, batch["masks"][:, 0]))
    assert set(head.loss_terms(outputs, batch)) == {"mask"}
    head.update_metrics(outputs, batch)
    assert 0.0 <= head.compute_metrics()["mIoU"] <= 1.0


def test_ms3_adds_half_the_audio_visual_matching_term():
    head = _head(DGSCTAVSHead, "ms3")
    assert (head.gamma, head.match_weight, _head(DGSCTAVSHead).gamma) == (0.1, 0.5, 0.05)
    head.eval()                                    # no dropout: the guidance is recomputed below
    audio, batch = _inputs()
    outputs = head(None, audio, batch)
    terms = head.loss_terms(outputs, batch)
    visual, aligned = outputs["masked_visual"].flatten(0, 1), outputs["stage_audio"].flatten(0, 1)
    expected = torch.stack([(F.softmax(aligned[:, s], -1) * (F.log_softmax(aligned[:, s], -1)
                                                             - F.log_softmax(visual[:, s], -1))).sum()
                            for s in range(4)]).mean()
    torch.testing.assert_close(terms["match"], expected)
    torch.testing.assert_close(head.loss(outputs, batch), terms["mask"] + 0.5 * terms["match"])
    # the matching term reads the aligned guidance of each TPAVI block and the ReLU'd post-TPAVI maps
    torch.testing.assert_close(outputs["stage_audio"][:, :, 0], head.tpavi["0"].align(
        head.temporal(head_maps(head, batch), head.audio_in(audio.mean(1)).reshape(B, T, -1), head.gamma)[1]))
    assert bool((outputs["masked_visual"] >= 0).all())
    lavish = _head(LAVisHAVSHead, "ms3")      # no MS3 script: BCE only
    assert set(lavish.loss_terms(lavish(None, audio, batch), batch)) == {"mask"}


def head_maps(head, batch):
    return [head._project(i, stage, grid) for i, (stage, grid) in enumerate(zip(batch["visual_stages"], GRIDS))]


def test_temporal_gates_scale_the_maps_and_the_guidance():
    torch.manual_seed(0)
    gates = StageTemporalGates(8, stages=2).eval()
    maps = [torch.randn(B * T, 8, 4, 4), torch.randn(B * T, 8, 2, 2)]
    audio = torch.randn(B, T, 128)
    same, guidance = gates(maps, audio, gamma=0.0)
    assert all(torch.equal(a, b) for a, b in zip(same, maps)) and torch.equal(guidance, audio)
    gated, guidance = gates(maps, audio, gamma=0.05)
    ratio = gated[0] / maps[0]                     # one factor 1 + 0.05 g per frame, g in (0, 1)
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-5)
    assert bool(((ratio > 1) & (ratio < 1.05)).all()) and not torch.equal(guidance, audio)


def test_residual_units_add_back_the_relu_of_their_input_as_avsbench_does():
    torch.manual_seed(0)
    unit = _ResidualConvUnit(4, relu_residual=True)
    plain = _ResidualConvUnit(4)
    plain.load_state_dict(unit.state_dict())
    x = torch.randn(1, 4, 5, 5)
    branch = unit.conv2(F.relu(unit.conv1(F.relu(x))))
    torch.testing.assert_close(unit(x), F.relu(x) + branch)
    torch.testing.assert_close(plain(x), x + branch)


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="four stages"):
        DGSCTAVSHead(visual_dim=8, audio_dim=4, mask_size=32, stage_dims=[8])
    with pytest.raises(ValueError, match="setting"):
        DGSCTAVSHead(visual_dim=8, audio_dim=4, mask_size=32, stage_dims=TINY, setting="s5")
    head = _head(DGSCTAVSHead)
    audio, batch = _inputs()
    with pytest.raises(ValueError, match="pooled audio tokens"):
        head(None, torch.randn(B * T, 1, A + 1), batch)
    with pytest.raises(ValueError, match="visual_stages"):
        head(None, audio, {**batch, "visual_stages": batch["visual_stages"][:3]})


def test_one_training_step_through_the_model(monkeypatch):
    torch.manual_seed(0)
    config = ExperimentConfig(task="avs", method="dgsct", backbone="tiny",
                              method_config={**SMALL, "head": "official"}, head={"channels": 16})
    model = build_model(config, {"mask_size": M, "setting": "s4"})
    assert type(model.task) is DGSCTAVSHead and model.method.pooled_modalities == ("audio",)
    normed = []
    final_norm = model.visual.final_norm
    monkeypatch.setattr(model.visual, "final_norm", lambda tokens: normed.append(tokens.shape) or final_norm(tokens))
    generator = torch.Generator().manual_seed(0)
    valid = torch.zeros(1, T)
    valid[:, 0] = 1
    batch = {"frames": torch.randint(0, 256, (1, T, 3, 64, 64), dtype=torch.uint8, generator=generator),
             "audio": 0.1 * torch.randn(1, T, 32000, generator=generator),
             "masks": (torch.rand(1, T, M, M, generator=generator) > 0.5).float(), "mask_valid": valid}
    model.train()
    output = model(batch)
    assert normed == [(T, 4, 192)]                 # the last stage through the Swin's final norm, as the scripts
    assert output.predictions["mask_logits"].shape == (1, T, M, M)
    loss = model.task.loss(output.predictions, batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.task.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    adapters = [p.grad for p in model.method.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in adapters)   # the stages come from the adapters


def test_params_rows_reproduce_the_published_counts():
    from molt.app.params import count_heads

    rows = {(r.method, r.head): r for r in count_heads("avs", "paper", methods=("dgsct",))}
    row = rows["dgsct", "official"]
    assert row.head_class == "DGSCTAVSHead" and row.head_params == AUTHORS_DGSCT_CALLED
    assert sum(row.script_only.values()) == \
        AUTHORS_DGSCT_HEAD + AUTHORS_PVT_V2_B5 + AUTHORS_DGSCT_TEMPORAL_GATED - AUTHORS_DGSCT_CALLED
    assert row.frozen_as_trainable == {"HTS-AT, trained by the S4 script": 31_292_311}
    # DG-SCT's published AVS efficiency: 61.5 % of 594.8 M (S4's count)
    assert (round(100 * row.counted_trainable / row.counted_total, 1), round(row.counted_total / 1e6, 1)) == \
        (61.5, 594.8)
    ms3 = {(r.method, r.head): r for r in count_heads("avs", "paper", methods=("dgsct",), setting="ms3")}
    assert ms3["dgsct", "official"].frozen_as_trainable == {}     # the MS3 scripts freeze HTS-AT
    with pytest.raises(ValueError, match="settings s4, ms3"):
        count_heads("avs", "paper", methods=("dgsct",), setting="s5")
