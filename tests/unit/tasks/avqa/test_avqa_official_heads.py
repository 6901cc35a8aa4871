"""The peers' own MUSIC-AVQA heads (``method_config.head: official``, DG-SCT's and AVMoE's net_avst, LAVisH's): size
against the authors' layers, one training step through the trainer's loss and optimiser, the grounding, save / load."""
import pytest
import torch

from molt.config import ExperimentConfig
from molt.model import AudioVisualModel, build_model
from molt.tasks.avqa.official import AVSTAVQAHead, LAVisHAVQAHead

SMALL = {"dim": 16, "out_heads": 4, "num_tokens": 3, "num_latents": 2, "reduction": 4, "head": "official"}
OPTIONS = {"question_vocab": ["<pad>", "what", "is", "the", "sound"], "answers": ["yes", "no", "two"]}

# DG-SCT @211fc57 DG-SCT/AVQA/net_grd_avst/net_avst.py, AVQA_Fusion_Net.__init__ l.272-313 at its sizes (1536 wide,
# HTS-AT 768, 93 words, 42 answers), counted on the meta device in a scratch directory outside this repository:
# ``QstEncoder(93, 1536, 1536, 1, 1536)`` built from the file (23,749,632), the other layers as declared there;
# the forward (l.416-626) never calls fc_a1_pure, fc_a2_pure, norm3. AVMoE's net_avst_v2.py declares the same.
AUTHORS_CALLED = 66_870_444
AUTHORS_NEVER_CALLED = 3_545_088
# LAVisH @97722b0 AVQA/net_grd_avst/net_avst.py, AVQA_Fusion_Net built from the file with the options of
# base_options.py on the meta device in a scratch directory outside this repository (timm 1.0.31's
# swinv2_large_window12_192): its parameters outside ``swin`` and ``adapter_blocks`` (l.212-264) are 12,182,188, of
# which the forward (l.301-489) never calls fc_a1, fc_a1_pure, fc_a2_pure, fc_v, fc_st, fc, fc_aq, fc_vq, norm3.
# Its main_avst.py count (l.250-286) gives 16,825,276 trainable (with the 4,562,064 of adapter_blocks and 81,024
# Swin norm weights) of 245,516,801.
LAVISH_HEAD = 12_182_188
LAVISH_NEVER_CALLED = 2_757_632


def _count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_the_official_avqa_head_counts_as_the_authors_layers_at_paper_scale():
    with torch.device("meta"):
        head = AVSTAVQAHead(visual_dim=1536, audio_dim=768, question_vocab=["<pad>"] + [f"w{i}" for i in range(92)],
                            answers=[f"a{i}" for i in range(42)])
    assert _count(head) == AUTHORS_CALLED
    assert sum(AVSTAVQAHead.script_only_parameters(1536, 768).values()) == AUTHORS_NEVER_CALLED


def test_lavish_avqa_head_counts_as_the_authors_layers_at_paper_scale():
    vocab, answers = ["<pad>"] + [f"w{i}" for i in range(92)], [f"a{i}" for i in range(42)]
    with torch.device("meta"):
        shared = LAVisHAVQAHead(visual_dim=1536, audio_dim=1536, question_vocab=vocab, answers=answers)
        separate = LAVisHAVQAHead(visual_dim=1536, audio_dim=768, question_vocab=vocab, answers=answers)
    never_called = sum(LAVisHAVQAHead.script_only_parameters().values())
    assert never_called == LAVISH_NEVER_CALLED
    assert _count(shared) + never_called == LAVISH_HEAD
    assert _count(shared) - _count(separate) == (1536 - 768) * 512      # only yb_fc_a reads the audio width
    assert shared.width == 512 and isinstance(shared.visual_in, torch.nn.Linear)


def test_lavish_projects_the_negatives_with_gradient():
    """The script runs the negatives' frozen Swin under ``no_grad`` but projects them (``yb_fc_v``) outside it: the
    match loss of the negatives alone reaches the projection."""
    torch.manual_seed(0)
    head = LAVisHAVQAHead(visual_dim=8, audio_dim=6, **OPTIONS)
    visual = torch.randn(2 * 3, 5, 8, requires_grad=True)
    batch = {"question": torch.tensor([[1, 2], [3, 4]]), "video_id": ["a", "b"]}
    outputs = head(visual, torch.randn(2 * 3, 1, 6), batch)
    assert outputs["answer_logits"].shape == (2, 3) and outputs["negative_match_logits"].shape == (2, 3, 2)
    assert outputs["spatial_attention"].shape == (2, 3, 5) and outputs["temporal_attention_visual"].shape == (2, 3)
    outputs["negative_match_logits"].sum().backward()
    assert head.visual_in.weight.grad is not None and bool(head.visual_in.weight.grad.abs().sum() > 0)
    assert visual.grad is None or not bool(visual.grad.any())          # the negative tokens are detached
    with pytest.raises(ValueError, match="multiple of 4 attention heads"):
        AVSTAVQAHead(visual_dim=6, audio_dim=4, **OPTIONS)


def _batch():
    generator = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8, generator=generator),
            "audio": 0.1 * torch.randn(2, 3, 32000, generator=generator),
            "question": torch.tensor([[1, 2, 3, 4], [1, 4, 0, 0]]), "question_length": torch.tensor([4, 2]),
            "answer": torch.tensor([0, 2]), "family": torch.tensor([0, 2]), "subtype": torch.tensor([0, 1]),
            "video_id": ["a", "b"]}


def _model(method, backbone="tiny"):
    torch.manual_seed(0)
    config = ExperimentConfig(task="avqa", method=method, backbone=backbone,
                              method_config={**SMALL, **({"skip_stages": []} if method == "avmoe" else {})})
    return config, build_model(config, OPTIONS)


@pytest.mark.parametrize("method, head_class, backbone", [
    ("dgsct", AVSTAVQAHead, "tiny"), ("avmoe", AVSTAVQAHead, "tiny"), ("lavish", LAVisHAVQAHead, "tiny"),
    ("lavish", LAVisHAVQAHead, "tiny-shared")])
def test_one_training_step_with_the_official_avqa_head(method, head_class, backbone):
    from molt.app.train import LitAudioVisual

    config, model = _model(method, backbone)
    assert type(model.task) is head_class and model.method.pooled_modalities == ("audio",)
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
    assert ("task.visual_in.weight" in changed) == (head_class is LAVisHAVQAHead)
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


def test_lavish_gets_its_own_avqa_head_with_one_backbone_or_two():
    from molt.tasks import get_task

    spec = get_task("avqa")
    assert spec.official_head("lavish", shared=True) is LAVisHAVQAHead
    assert spec.official_head("lavish", shared=False) is LAVisHAVQAHead


@pytest.mark.parametrize("method", ["molt", "dgsct:official", "lavish:official"])
def test_a_bf16_mixed_step_on_the_cpu_runs_the_question_lstm_in_float32(method):
    """``--precision bf16-mixed`` on a CPU: oneDNN has no bfloat16 LSTM for these shapes, so the question LSTMs run
    in float32 inside autocast (it failed with "could not create a primitive descriptor")."""
    from molt.app.bench import bench_config, random_batch
    from molt.config import with_head
    from molt.tasks import get_task

    name, _, head = method.partition(":")
    config = bench_config("avqa", "tiny", name)
    config = with_head(config, head) if head else config
    torch.manual_seed(0)
    model = build_model(config, dict(get_task("avqa").paper.task_options))
    batch = random_batch(model, "avqa", 2)
    seen = []
    model.task.question.lstm.register_forward_hook(lambda module, inputs, output: seen.append(output[1][0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(batch)
        loss = model.task.loss(output.predictions, batch)
    loss.backward()
    assert seen == [torch.float32] and torch.isfinite(loss)
    assert model.task.question.lstm.weight_ih_l0.grad is not None
