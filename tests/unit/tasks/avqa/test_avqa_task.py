"""AVQA head: shapes, loss and negatives, per-type accuracy on hand-made predictions, batch-size independence,
majority baseline, the Tab.-1-shaped table and the pictures."""
import math

import pytest
import torch

from helpers import fit_head
from molt.tasks import TaskHead, build_head
from molt.tasks.avqa import (
    AVQAHead,
    avqa_metrics,
    format_avqa_table,
    majority_baseline,
    metrics_from_counts,
    negative_partners,
)

DIM, T, K = 16, 10, 4
VOCAB = ["<pad>", "<unk>", "is", "there", "a", "violin", "piano", "sound", "how", "many", "left", "right"]
ANSWERS = ["yes", "no", "zero", "one", "two", "violin", "piano"]
AUDIO, VISUAL, AV = 0, 1, 2
COUNTING, COMPARATIVE, EXISTENTIAL, LOCATION, TEMPORAL = range(5)


def make_task(**kwargs) -> AVQAHead:
    torch.manual_seed(0)
    options = dict(dim=DIM, question_vocab=VOCAB, answers=ANSWERS, hidden_dim=32, num_heads=4, dropout=0.0)
    options.update(kwargs)
    return build_head("avqa", **options)


def make_batch(size: int, seed: int = 0, video_ids=None) -> dict:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (size,), generator=generator)
    question = torch.randint(2, len(VOCAB), (size, 8), generator=generator)
    question[torch.arange(8)[None] >= lengths[:, None]] = 0
    return {"question": question, "question_length": lengths,
            "answer": torch.randint(0, len(ANSWERS), (size,), generator=generator),
            "family": torch.randint(0, 3, (size,), generator=generator),
            "subtype": torch.randint(0, 5, (size,), generator=generator),
            "video_id": video_ids or [f"v{i}" for i in range(size)]}


def tokens(size: int, seed: int = 0, k: int = K) -> torch.Tensor:
    return torch.randn(size * T, k, DIM, generator=torch.Generator().manual_seed(seed))


def test_shapes_loss_and_backward():
    task = make_task(temporal_layers=1)
    assert isinstance(task, TaskHead) and task.name == "avqa" and task.num_answers == len(ANSWERS)
    batch = make_batch(3)
    out = task(tokens(3, 1), tokens(3, 2, k=6), batch)
    assert out["answer_logits"].shape == (3, len(ANSWERS))
    assert out["match_logits"].shape == out["negative_match_logits"].shape == (3, T, 2)
    assert out["spatial_attention"].shape == (3, T, K)
    assert torch.allclose(out["spatial_attention"].sum(-1), torch.ones(3, T))
    assert out["temporal_attention_audio"].shape == out["temporal_attention_visual"].shape == (3, T)
    assert task.predict(out).shape == (3,) and task.predict(out).dtype == torch.int64
    terms = task.loss_terms(out, batch)
    assert set(terms) == {"answer", "match"} and all(torch.isfinite(v) for v in terms.values())
    loss = task.loss(out, batch)
    assert torch.allclose(loss, terms["answer"] + 0.5 * terms["match"])
    loss.backward()
    assert task.question.embed.weight.grad is not None and task.match[0].weight.grad.abs().sum() > 0
    # fewer segments than num_segments are fine; rows that are not B*T are not
    assert task(tokens(3)[:3 * 6], tokens(3)[:3 * 6], batch)["answer_logits"].shape == (3, len(ANSWERS))
    with pytest.raises(ValueError, match="B\\*T"):
        task(torch.randn(29, K, DIM), torch.randn(29, K, DIM), batch)
    with pytest.raises(ValueError, match="visual tokens"):
        task(torch.randn(30, K, DIM + 1), tokens(3), batch)


def test_vocabulary_sizes_come_from_the_options():
    task = make_task(question_vocab=VOCAB + ["extra"], answers=ANSWERS[:3])
    assert task.question.embed.num_embeddings == len(VOCAB) + 1 and task.classifier[-1].out_features == 3
    with pytest.raises(ValueError, match="<pad>"):
        make_task(question_vocab=["is", "there"])
    with pytest.raises(ValueError, match="distinct"):
        make_task(answers=["yes", "yes"])
    with pytest.raises(ValueError, match="Family/Sub-type"):
        make_task(question_types=["Audio/Loudness"])
    with pytest.raises(ValueError, match="modalities"):
        make_task(modalities="text")
    with pytest.raises(ValueError, match="out of range"):
        task = make_task(answers=ANSWERS[:3])
        batch = dict(make_batch(2), answer=torch.tensor([0, 5]))
        task.loss(task(tokens(2), tokens(2), batch), batch)


def test_negatives_come_from_other_videos_of_the_batch():
    partner, valid = negative_partners(["a", "a", "b", "c", "c"], 5)
    assert partner.tolist() == [2, 2, 3, 0, 0] and valid.all()
    partner, valid = negative_partners(["a", "a", "a"], 3)
    assert not valid.any()
    assert negative_partners(None, 1)[1].tolist() == [False]
    task = make_task()
    batch = make_batch(3, video_ids=["a", "a", "a"])
    out = task(tokens(3), tokens(3, 1), batch)
    assert task.loss_terms(out, batch)["match"].item() == 0.0
    # a negative pairs this clip's audio with the other clip's visual tokens
    visual = tokens(2, 3)
    batch = make_batch(2)
    out = task.eval()(visual, tokens(2, 4), batch)
    swapped = task(visual.reshape(2, T, K, DIM).flip(0).reshape(2 * T, K, DIM), tokens(2, 4), batch)
    assert torch.allclose(out["negative_match_logits"], swapped["match_logits"], atol=1e-5)


def test_predictions_do_not_depend_on_the_batch():
    task = make_task(temporal_layers=1).eval()
    batch = make_batch(4)
    visual, audio = tokens(4, 5), tokens(4, 6)
    together = task(visual, audio, batch)["answer_logits"]
    for i in range(4):
        alone = {k: v[i:i + 1] for k, v in batch.items()}
        logits = task(visual[i * T:(i + 1) * T], audio[i * T:(i + 1) * T], alone)["answer_logits"]
        assert torch.allclose(logits, together[i:i + 1], atol=1e-5)
    # padding beyond question_length changes nothing
    longer = dict(batch, question=torch.cat([batch["question"], torch.zeros(4, 3, dtype=torch.long)], dim=1))
    assert torch.allclose(task(visual, audio, longer)["answer_logits"], together, atol=1e-6)


@pytest.mark.parametrize("modality, other", [("audio", "visual"), ("visual", "audio")])
def test_single_modality_head_ignores_the_other_tokens(modality, other):
    task = make_task(modalities=modality).eval()
    batch = make_batch(2)
    inputs = {"visual": tokens(2, 7), "audio": tokens(2, 8)}
    reference = task(inputs["visual"], inputs["audio"], batch)["answer_logits"]
    missing = dict(inputs, **{other: None})
    assert torch.equal(task(missing["visual"], missing["audio"], batch)["answer_logits"], reference)
    out = task(missing["visual"], missing["audio"], batch)
    assert "match_logits" not in out and set(task.loss_terms(out, batch)) == {"answer"}
    assert not any(name.startswith(f"project.{other}") for name, _ in task.named_parameters())


def _outputs_for(predictions: torch.Tensor) -> dict:
    return {"answer_logits": torch.nn.functional.one_hot(predictions, len(ANSWERS)).float() * 5}


# ten hand-made questions: (family, subtype, answer, predicted)
HAND_MADE = [
    (AUDIO, COUNTING, 0, 0), (AUDIO, COUNTING, 1, 0), (AUDIO, COMPARATIVE, 0, 0),            # AQ 2/3
    (VISUAL, COUNTING, 3, 3), (VISUAL, LOCATION, 5, 6), (VISUAL, LOCATION, 6, 6),            # VQ 2/3
    (AV, EXISTENTIAL, 1, 1), (AV, TEMPORAL, 5, 0), (AV, TEMPORAL, 6, 6), (AV, COUNTING, 4, 2),  # AVQ 2/4
]


def _hand_made():
    family, subtype, answer, predicted = (torch.tensor(c) for c in zip(*HAND_MADE))
    return {"family": family, "subtype": subtype, "answer": answer}, predicted


def test_metrics_on_hand_made_predictions_are_batch_size_independent():
    task = make_task()
    batch, predicted = _hand_made()
    outputs = _outputs_for(predicted)
    expected = {"accuracy": 6 / 10, "AQ/accuracy": 2 / 3, "AQ/Counting/accuracy": 1 / 2,
                "AQ/Comparative/accuracy": 1.0, "VQ/accuracy": 2 / 3, "VQ/Counting/accuracy": 1.0,
                "VQ/Location/accuracy": 1 / 2, "AVQ/accuracy": 2 / 4, "AVQ/Existential/accuracy": 1.0,
                "AVQ/Counting/accuracy": 0.0, "AVQ/Temporal/accuracy": 1 / 2}
    results = []
    for parts in ([slice(0, 10)], [slice(i, i + 1) for i in range(10)], [slice(0, 3), slice(3, 10)]):
        task.reset_metrics()
        for part in parts:
            task.update_metrics({k: v[part] for k, v in outputs.items()}, {k: v[part] for k, v in batch.items()})
        results.append(task.compute_metrics())
    assert results[0] == pytest.approx(expected) and set(results[0]) == set(expected)
    assert results[0] == results[1] == results[2]
    # family figures are summed-correct / summed-count, not the mean of the sub-type accuracies
    assert results[0]["VQ/accuracy"] != (results[0]["VQ/Counting/accuracy"] + results[0]["VQ/Location/accuracy"]) / 2
    assert avqa_metrics(predicted, batch["answer"], batch["family"], batch["subtype"]) == pytest.approx(expected)
    # the sums live in metric_state (for DDP), never in the state dict
    assert task.metric_state["total"].shape == (3, 5) and int(task.metric_state["total"].sum()) == 10
    assert not any("correct" in key or "total" in key for key in task.state_dict())
    task.reset_metrics()
    assert math.isnan(task.compute_metrics()["accuracy"])
    assert math.isnan(metrics_from_counts(torch.zeros(3, 5), torch.zeros(3, 5))["accuracy"])


def test_unknown_answers_are_ignored_by_the_loss_and_count_as_wrong():
    task = make_task()
    batch = dict(make_batch(2), answer=torch.tensor([-1, 2]), family=torch.tensor([0, 0]),
                 subtype=torch.tensor([0, 0]))
    out = task(tokens(2), tokens(2, 1), batch)
    expected = torch.nn.functional.cross_entropy(out["answer_logits"][1:], torch.tensor([2]))
    assert torch.allclose(task.loss_terms(out, batch)["answer"], expected)
    task.update_metrics(_outputs_for(torch.tensor([0, 2])), batch)
    assert task.compute_metrics()["accuracy"] == 0.5
    only_unknown = dict(batch, answer=torch.tensor([-1, -1]))
    assert task.loss_terms(out, only_unknown)["answer"].item() == 0.0


def test_majority_baseline_per_question_type():
    train = {"answer": torch.tensor([0, 0, 1, 5, 6, 6, 3]), "family": torch.tensor([0, 0, 0, 1, 1, 1, 2]),
             "subtype": torch.tensor([0, 0, 0, 3, 3, 3, 1])}
    evaluation = {"answer": torch.tensor([0, 1, 6, 5, 3, 2]), "family": torch.tensor([0, 0, 1, 1, 2, 2]),
                  "subtype": torch.tensor([0, 0, 3, 3, 1, 4])}
    result = majority_baseline(train, evaluation)
    # AQ/Counting -> 0 (1 of 2 right), VQ/Location -> 6 (1 of 2), AVQ/Comparative -> 3 (1 of 1),
    # AVQ/Temporal is unseen in training -> overall majority 0 or 6 (tie -> lowest index 0): wrong
    assert result["AQ/Counting/accuracy"] == 0.5 and result["VQ/Location/accuracy"] == 0.5
    assert result["AVQ/Comparative/accuracy"] == 1.0 and result["AVQ/Temporal/accuracy"] == 0.0
    assert result["accuracy"] == pytest.approx(3 / 6)


def test_table_is_shaped_like_tab1():
    batch, predicted = _hand_made()
    metrics = avqa_metrics(predicted, batch["answer"], batch["family"], batch["subtype"])
    table = format_avqa_table(metrics)
    lines = table.splitlines()
    assert "Audio (AQ)" in lines[0] and "Visual (VQ)" in lines[0] and "Audio-Visual (AVQ)" in lines[0]
    assert lines[1].split()[-1] == "Avg." and lines[3].startswith("MoLT")
    values = lines[3].replace("|", " ").split()[1:]
    # AQ: Count Comp AQ | VQ: Count Loc VQ | AVQ: Exist Count Loc Comp Temp AVQ | Avg.
    assert values == ["50.0", "100.0", "66.7", "100.0", "50.0", "66.7", "100.0", "0.0", "-", "-", "50.0", "50.0",
                      "60.0"]
    both = format_avqa_table({"majority": {"accuracy": 0.5}, "MoLT tiny": metrics})
    assert len(both.splitlines()) == 5 and both.splitlines()[3].startswith("majority")
    assert len({len(line) for line in both.splitlines()}) == 1      # aligned columns


def test_overfit_tiny_batch_and_figures(tmp_path):
    task = make_task(hidden_dim=16)
    batch = make_batch(6)
    batch["answer"] = torch.tensor([0, 1, 2, 3, 4, 5])
    visual, audio = tokens(6, 9), tokens(6, 10)
    losses = fit_head(task, visual, audio, batch, lr=1e-2, steps=20)
    assert losses[-1] < losses[0] / 3, losses
    task.eval()
    with torch.no_grad():
        out = task(visual, audio, batch)
    assert (task.predict(out) == batch["answer"]).all()
    task.reset_metrics()
    task.update_metrics(out, batch)
    paths = task.save_figures([(out, batch)], tmp_path, {"question_vocab": VOCAB, "answers": ANSWERS})
    assert [p.name for p in paths] == ["avqa_accuracy_by_type.png", "avqa_temporal_attention.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000 for p in paths)
