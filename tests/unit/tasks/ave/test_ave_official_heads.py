"""The peers' own AVE heads (``method_config.head: official``): sizes against the authors' classes, one training step
through the trainer's loss and optimiser with each, save / load, and refusals."""
import json

import pytest
import torch

from molt.config import ExperimentConfig
from molt.methods import DGSCTConfig, LavishConfig
from molt.model import AudioVisualModel, build_model
from molt.tasks.ave.official import AVMoEAVEHead, DGSCTAVEHead, LAVisHAVEHead

SMALL = {"dim": 16, "out_heads": 4, "num_tokens": 3, "num_latents": 2, "reduction": 4}
C = 5

# Parameter counts of the authors' classes at paper scale (Swin-V2-L 1536 + HTS-AT 768 pooled widths, 28 classes),
# obtained by building them on the meta device in a scratch directory outside this repository: DG-SCT @211fc57
# DG-SCT/AVE/nets/net_trans.py ``TemporalAttention()`` and ``CMBS(opt)`` (with nets/models.py), AVMoE @edd2383
# AVMOE/AVE/nets/net_trans_v3.py ``TemporalAttention(opt)`` and ``CMBS(opt)`` with ``model_size="large"``,
# ``is_inter_in_cmbs=0`` (AVE/train.sh), LAVisH AVE/nets/net_trans.py ``mlp_class`` + ``mlp_class_2``; then the
# parts their forward never calls were summed module by module.
AUTHORS_TEMPORAL_ATTENTION = 12_071_554     # same class in both repositories
AUTHORS_DGSCT_CMBS = 550_229
AUTHORS_AVMOE_CMBS = 21_845
AUTHORS_LAVISH_MLP = 1_588_253              # Linear(1536 * 2, 512) + Linear(512, 29), the shared setting
AUTHORS_CALLED = 7_881_687                  # what their forward uses (DG-SCT and AVMoE alike)


def _count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_official_heads_count_as_the_authors_classes_at_paper_scale():
    with torch.device("meta"):
        dgsct = DGSCTAVEHead(visual_dim=1536, audio_dim=768, num_classes=28)
        avmoe = AVMoEAVEHead(visual_dim=1536, audio_dim=768, num_classes=28)
        lavish = LAVisHAVEHead(visual_dim=1536, audio_dim=1536, num_classes=28)
    assert _count(dgsct) == _count(avmoe) == AUTHORS_CALLED
    assert _count(dgsct) + sum(DGSCTAVEHead.script_only_parameters().values()) == \
        AUTHORS_TEMPORAL_ATTENTION + AUTHORS_DGSCT_CMBS
    assert _count(avmoe) + sum(AVMoEAVEHead.script_only_parameters().values()) == \
        AUTHORS_TEMPORAL_ATTENTION + AUTHORS_AVMOE_CMBS
    assert _count(lavish) == AUTHORS_LAVISH_MLP and LAVisHAVEHead.script_only_parameters() == {}


def _config(method, backbone="tiny", **overrides):
    return ExperimentConfig(task="ave", method=method, backbone=backbone,
                            method_config={**SMALL, "head": "official", **overrides})


def _batch(segments=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"frames": torch.randint(0, 256, (2, segments, 3, 64, 64), dtype=torch.uint8, generator=generator),
            "audio": 0.1 * torch.randn(2, segments, 32000, generator=generator),
            "labels": torch.tensor([[1, 1, C], [C, 3, 3]])[:, :segments], "video_id": ["a", "b"]}


@pytest.mark.parametrize("method, backbone, head_class", [
    ("dgsct", "tiny", DGSCTAVEHead), ("avmoe", "tiny", AVMoEAVEHead), ("lavish", "tiny-shared", LAVisHAVEHead),
    ("lavish", "tiny", DGSCTAVEHead)])
def test_one_training_step_with_each_official_head(method, backbone, head_class):
    from molt.app.train import LitAudioVisual

    torch.manual_seed(0)
    config = _config(method, backbone, **({"skip_stages": []} if method == "avmoe" else {}))
    model = build_model(config, {"num_classes": C})
    assert type(model.task) is head_class and model.method.readout is None
    module = LitAudioVisual(model, config, {"num_classes": C})
    optimizer = module.configure_optimizers()["optimizer"]
    batch = _batch()
    model.train()
    loss, parts, output = module._losses(batch)
    pooled = output.method.visual
    assert pooled.shape == (6, 1, model.method.final_dims["visual"])
    assert torch.isfinite(loss) and set(parts) == {"task"}
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer.zero_grad()
    loss.backward()
    head_grads = [p.grad for p in model.task.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert sum(float(g.abs().sum()) for g in head_grads) > 0
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(before[name], p)}
    assert any(name.startswith("task.") for name in changed)
    assert any(name.startswith("features.method.") for name in changed)   # the adapters train with the head
    model.eval()
    with torch.no_grad():
        model.task.reset_metrics()
        model.task.update_metrics(model(batch).predictions, batch)
        accuracy = model.task.compute_metrics()["accuracy"]
    assert 0.0 <= accuracy <= 1.0
    assert model.task.predict(model(batch).predictions).shape == (2, 3)


def test_dgsct_pools_with_the_last_adapters_spatial_scores():
    torch.manual_seed(0)
    model = build_model(_config("dgsct"), {"num_classes": C})
    batch = _batch()
    output = model(batch)
    guide = model.method.adapters["visual"][-1][1].core.guide
    final, _ = model.method.run_backbones(model.features._backbones(),
                                          model.features._inputs(batch["frames"].flatten(0, 1),
                                                                 batch["audio"].flatten(0, 1)))
    weights = torch.softmax(torch.tanh(guide.spatial_scores).transpose(1, 2), dim=-1)
    torch.testing.assert_close(output.method.visual, weights @ final["visual"])
    assert not torch.allclose(output.method.visual, final["visual"].mean(dim=1, keepdim=True))
    # the pooling weights are trained: the spatial layers of the last p2 adapter get a gradient from the head
    model.task.loss(output.predictions, batch).backward()
    assert guide.spatial_out.weight.grad is not None and guide.spatial_out.weight.grad.abs().sum() > 0


def test_losses_follow_the_scripts():
    torch.manual_seed(0)
    dgsct = DGSCTAVEHead(visual_dim=8, audio_dim=6, num_classes=C)
    avmoe = AVMoEAVEHead(visual_dim=8, audio_dim=6, num_classes=C)
    avmoe.load_state_dict(dgsct.state_dict())
    visual, audio = torch.randn(6, 1, 8), torch.randn(6, 1, 6)
    batch = {"labels": torch.tensor([[1, 1, C], [C, C, C]])}
    dgsct.eval(), avmoe.eval()
    outputs = dgsct(visual, audio, batch)
    terms = dgsct.loss_terms(outputs, batch)
    assert set(terms) == {"event", "gate", "category", "av_score"}
    assert set(avmoe.loss_terms(outputs, batch)) == {"event", "category", "av_score"}
    is_event = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # the gate term is BCE-with-logits of the gate probability, as DG-SCT's main_trans.py applies it
    torch.testing.assert_close(terms["gate"], torch.nn.functional.binary_cross_entropy_with_logits(
        outputs["gate"], is_event))
    # only the first clip has an event class: the all-background clip is left out of the cross-entropies
    torch.testing.assert_close(terms["category"], torch.nn.functional.cross_entropy(outputs["class_logits"][:1],
                                                                                    torch.tensor([1])))
    torch.testing.assert_close(dgsct.loss(outputs, batch), sum(terms.values()))
    lavish = LAVisHAVEHead(visual_dim=8, audio_dim=6, num_classes=C)
    logits = lavish(visual, audio, batch)["segment_logits"]
    assert logits.shape == (2, 3, C + 1)
    target = torch.nn.functional.one_hot(torch.tensor([[1, 1, C], [C, C, C]]), C + 1).float()
    torch.testing.assert_close(lavish.loss({"segment_logits": logits}, batch),
                               torch.nn.functional.binary_cross_entropy(logits.softmax(-1), target))


def test_saved_model_records_and_rebuilds_its_official_head(tmp_path):
    torch.manual_seed(0)
    model = build_model(_config("dgsct"), {"num_classes": C})
    with torch.no_grad():
        for parameter in model.task.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["method"]["config"]["head"] == "official"
    loaded = AudioVisualModel.from_pretrained(tmp_path)
    assert type(loaded.task) is DGSCTAVEHead
    model.eval(), loaded.eval()
    batch = _batch()
    with torch.no_grad():
        expected, got = model(batch).predictions, loaded(batch).predictions
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_common_head_stays_the_default_and_refusals_name_the_fix():
    assert DGSCTConfig().head == "common" and LavishConfig().head == "common"
    with pytest.raises(ValueError, match="head must be one of common, official"):
        DGSCTConfig(head="theirs")
    with pytest.raises(ValueError, match=r"avvp has no official head for dgsct .*method_config.head: common"):
        build_model(ExperimentConfig(task="avvp", method="dgsct", backbone="tiny",
                                     method_config={**SMALL, "head": "official"}), {"num_classes": C})
    with pytest.raises(ValueError, match="head"):
        ExperimentConfig(task="ave", method="molt", backbone="tiny", method_config={"head": "official"})


def test_the_predictor_reads_a_head_with_one_distribution_per_segment():
    from molt.tasks.ave.predict import _event_and_class_probabilities

    logits = torch.log(torch.tensor([[[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]]))     # C = 2 classes + background
    event, classes = _event_and_class_probabilities({"segment_logits": logits})
    torch.testing.assert_close(event, torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(classes, torch.tensor([0.7, 0.3]))
    event, classes = _event_and_class_probabilities({"event_logits": torch.zeros(1, 2),
                                                     "class_logits": torch.zeros(1, 2)})
    torch.testing.assert_close(event, torch.full((2,), 0.5))
    torch.testing.assert_close(classes, torch.full((2,), 0.5))
