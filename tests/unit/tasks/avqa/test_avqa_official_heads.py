"""The peers' own MUSIC-AVQA head (``method_config.head: official``, DG-SCT's and AVMoE's net_avst): size against the
authors' layers, one training step through the trainer's loss and optimiser, the grounding, save / load."""
import pytest
import torch

from molt.config import ExperimentConfig
from molt.model import AudioVisualModel, build_model
from molt.tasks.avqa.official import AVSTAVQAHead

SMALL = {"dim": 16, "out_heads": 4, "num_tokens": 3, "num_latents": 2, "reduction": 4, "head": "official"}
OPTIONS = {"question_vocab": ["<pad>", "what", "is", "the", "sound"], "answers": ["yes", "no", "two"]}

# DG-SCT @211fc57 DG-SCT/AVQA/net_grd_avst/net_avst.py, AVQA_Fusion_Net.__init__ l.272-313 at its sizes (1536 wide,
# HTS-AT 768, 93 words, 42 answers), counted on the meta device in a scratch directory outside this repository:
# ``QstEncoder(93, 1536, 1536, 1, 1536)`` built from the file (23,749,632), the other layers as declared there;
# the forward (l.416-626) never calls fc_a1_pure, fc_a2_pure, norm3. AVMoE's net_avst_v2.py declares the same.
AUTHORS_CALLED = 66_870_444
AUTHORS_NEVER_CALLED = 3_545_088


def _count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_the_official_avqa_head_counts_as_the_authors_layers_at_paper_scale():
    with torch.device("meta"):
        head = AVSTAVQAHead(visual_dim=1536, audio_dim=768, question_vocab=["<pad>"] + [f"w{i}" for i in range(92)],
                            answers=[f"a{i}" for i in range(42)])
    assert _count(head) == AUTHORS_CALLED
    assert sum(AVSTAVQAHead.script_only_parameters(1536, 768).values()) == AUTHORS_NEVER_CALLED


def _batch():
    generator = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8, generator=generator),
            "audio": 0.1 * torch.randn(2, 3, 32000, generator=generator),
            "question": torch.tensor([[1, 2, 3, 4], [1, 4, 0, 0]]), "question_length": torch.tensor([4, 2]),
            "answer": torch.tensor([0, 2]), "family": torch.tensor([0, 2]), "subtype": torch.tensor([0, 1]),
            "video_id": ["a", "b"]}


def _model(method):
    torch.manual_seed(0)
    config = ExperimentConfig(task="avqa", method=method, backbone="tiny",
                              method_config={**SMALL, **({"skip_stages": []} if method == "avmoe" else {})})
    return config, build_model(config, OPTIONS)


@pytest.mark.parametrize("method", ["dgsct", "avmoe"])
def test_one_training_step_with_the_official_avqa_head(method):
    from molt.app.train import LitAudioVisual

    config, model = _model(method)
    assert type(model.task) is AVSTAVQAHead and model.method.pooled_modalities == ("audio",)
    module = LitAudioVisual(model, config, OPTIONS)
    optimizer = module.configure_optimizers()["optimizer"]
    batch = _batch()
    model.train()
    loss, _, output = module._losses(batch)
    dims = model.method.final_dims
    # the grounding reads the visual grid; the audio reaches the head pooled
    assert output.method.visual.shape[0] == 6 and output.method.visual.shape[1] > 1
    assert output.method.visual.shape[2] == dims["visual"] and output.method.audio.shape == (6, 1, dims["audio"])
    terms = model.task.loss_terms(output.predictions, batch)
    assert set(terms) == {"answer", "match"} and bool(output.predictions["negative_valid"].all())
    torch.testing.assert_close(loss, terms["answer"] + 0.5 * terms["match"])
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(before[name], p)}
    assert any(name.startswith("task.question.") for name in changed)
    assert any(name.startswith("features.method.adapters.") for name in changed)
    model.eval()
    with torch.no_grad():
        model.task.reset_metrics()
        model.task.update_metrics(model(batch).predictions, batch)
        assert 0.0 <= model.task.compute_metrics()["accuracy"] <= 1.0


def test_grounding_sums_the_normalised_visual_tokens():
    torch.manual_seed(0)
    head = AVSTAVQAHead(visual_dim=8, audio_dim=4, **OPTIONS)
    audio, visual = torch.randn(1, 1, 8), torch.randn(1, 1, 5, 8)
    segments, weights = head._ground(audio, visual)
    unit = visual / visual.norm(dim=-1, keepdim=True)
    expected_weights = torch.softmax((unit[0, 0] @ (audio[0, 0] / audio[0, 0].norm())), dim=0)
    torch.testing.assert_close(weights[0, 0], expected_weights)
    grounded = expected_weights @ unit[0, 0]
    torch.testing.assert_close(segments[0, 0], head.visual_segment(torch.tanh(torch.cat([visual[0, 0].mean(0),
                                                                                         grounded]))))


def test_a_saved_avqa_model_rebuilds_its_official_head(tmp_path):
    _, model = _model("dgsct")
    model.save_pretrained(tmp_path)
    loaded = AudioVisualModel.from_pretrained(tmp_path)
    assert type(loaded.task) is AVSTAVQAHead and loaded.method.pooled_modalities == ("audio",)
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_batch()).predictions["answer_logits"],
                                   model(_batch()).predictions["answer_logits"])


def test_lavish_has_no_official_avqa_head():
    with pytest.raises(ValueError, match="avqa has no official head for lavish"):
        build_model(ExperimentConfig(task="avqa", method="lavish", backbone="tiny", method_config=SMALL), OPTIONS)
