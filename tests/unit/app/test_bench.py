"""Efficiency benchmark: exact saved-tensor counting, per-method measurements on tiny backbones, output files."""
import json

import pytest
import torch

from molt.backbones import build_backbones
from molt.app.bench import (EfficiencyTable, SavedTensorCounter, bench_config, classifier_parameters,
                        measure_training_step, run_efficiency, write_efficiency)


def test_counter_counts_a_hand_computed_graph():
    x = torch.randn(64, 32, requires_grad=True)  # 64*32*4 = 8192 bytes
    weight = torch.nn.Parameter(torch.randn(32, 16))
    with SavedTensorCounter(exclude=[weight]) as counter:
        y = torch.sin(x)                     # saves x                                   -> 8192
        z = y.exp()                          # saves its result z                        -> 8192
        w = x * x                            # saves x twice: already counted
        t = torch.cos(w[:, :16])             # saves a view of w: w's whole storage      -> 8192
        s = torch.tanh(w[:, 16:] * 3.0)      # scalar multiply saves nothing; tanh saves
                                             # its (64, 16) result                      -> 4096
        u = z @ weight                       # saves z (counted) and weight (excluded)
    assert counter.bytes == 3 * 8192 + 4096
    assert counter.count == 4
    (u.sum() + t.sum() + s.sum()).backward()  # the hooks hand the tensors back unchanged
    assert x.grad.shape == x.shape


def test_counter_sees_nothing_without_grad():
    x = torch.randn(10, 10)
    with SavedTensorCounter() as counter:
        torch.sin(x).exp()
    assert counter.bytes == 0


METHODS = ("molt", "mettle", "lavish", "dgsct", "avmoe")


@pytest.fixture(scope="module")
def tiny_rows():
    return {method: measure_training_step("ave", "tiny", method, steps=3, warmup=1) for method in METHODS}


def test_each_method_trains_steps_and_saves_activations(tiny_rows):
    for method, row in tiny_rows.items():
        assert row["activation_bytes"] > 0, method
        assert 0 < row["trainable_params"] < row["total_params"]
        assert row["peak_bytes"] > 0 and row["step_s"] > 0
        times = row["step_times_s"]
        assert len(times) == 3 and row["warmup_steps"] == 1
        assert row["step_s"] == sorted(times)[1] and row["step_s_min"] <= row["step_s"] <= row["step_s_max"]
    for in_block in ("lavish", "dgsct", "avmoe"):
        assert tiny_rows[in_block]["activation_bytes"] > tiny_rows["mettle"]["activation_bytes"], in_block
    assert tiny_rows["mettle"]["activation_bytes"] > tiny_rows["molt"]["activation_bytes"]


def test_totals_are_counted_with_and_without_the_pretrained_classifier(tiny_rows):
    row = tiny_rows["molt"]
    assert row["total_params_with_classifier"] == row["total_params"] + row["classifier_params"]
    assert row["classifier_params"] == 192 * 1000 + 1000  # the tiny Swin's timm config: 1000 classes, width 192
    with torch.device("meta"):
        visual, _ = build_backbones("paper")
    assert classifier_parameters(visual) == 1536 * 21841 + 21841  # Swin-V2-L's ImageNet-22k head, 33.57 M


@pytest.mark.parametrize("task, setting, valid_frames", [("avs", "s4", 1), ("avs", "ms3", 5), ("avqa", None, None)])
def test_segmentation_and_question_answering_are_benchmarked(task, setting, valid_frames):
    row = measure_training_step(task, "tiny", "molt", steps=1, warmup=0, setting=setting)
    assert row["activation_bytes"] > 0 and row["setting"] == setting
    assert row["segments"] == (5 if task == "avs" else 10)
    if task == "avs":
        from molt.app.bench import random_batch
        from molt.model import build_model

        model = build_model(bench_config(task, "tiny", "molt", setting=setting), {"mask_size": 224})
        batch = random_batch(model, task, 2, setting=setting)
        assert batch["masks"].shape == (2, 5, 224, 224) and batch["mask_valid"].sum() == 2 * valid_frames


def test_output_files_and_ratios(tiny_rows, tmp_path):
    table = EfficiencyTable(task="ave", backbone="paper", rows=list(tiny_rows.values()))
    paths = write_efficiency(table, tmp_path)
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    data = json.loads(paths["json"].read_text())
    assert [row["method"] for row in data["rows"]] == list(METHODS)
    assert data["paper"]["dgsct"] == {"trainable_percent": 43.6, "total_params_m": 461.3, "memory_gb": 13.1}
    assert data["activation_ratio_vs_molt"]["lavish"] > 1
    markdown = paths["md"].read_text()
    assert "| LAVisH |" in markdown and "| DG-SCT |" in markdown and "1/" in markdown
    assert "43.6 / 461.3 / 13.1" in markdown
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_method_that_cannot_run_gets_a_row_saying_so(tmp_path):
    table = run_efficiency("ave", "tiny", ("molt",), out_dir=tmp_path, timeout=0.01)
    assert table.rows == [{"method": "molt", "error": "timed out after 0 s"}] and table.measured == []
    assert "| MoLT | did not run: timed out" in (tmp_path / "efficiency.md").read_text()


def test_bad_names_fail_before_running():
    with pytest.raises(ValueError, match="unknown method"):
        run_efficiency("ave", "tiny", ("molt", "nope"))
    with pytest.raises(ValueError, match="no efficiency benchmark"):
        bench_config("avvp", "tiny", "molt")
    mettle, molt = bench_config("ave", "paper", "mettle"), bench_config("ave", "paper")
    assert mettle.method_config.dim == molt.method_config.dim


def test_in_block_methods_are_measured_with_their_own_heads_too(tiny_rows, tmp_path):
    row = measure_training_step("ave", "tiny", "dgsct:official", steps=1, warmup=0)
    common = tiny_rows["dgsct"]
    assert row["method"] == "dgsct:official" and row["head"] == "DGSCTAVEHead" and common["head"] == "AVEHead"
    assert row["method_config"]["head"] == "official" and row["activation_bytes"] > 0
    assert sum(row["script_only_params"].values()) == 4_740_096       # DG-SCT's uncalled head parts (any width)
    assert row["script_frozen_params"] == {"classifier of the visual checkpoint": 192 * 1000 + 1000,
                                           "HTS-AT log-mel filter bank (a Parameter in torchlibrosa)": 257 * 32}
    assert common["script_only_params"] == {} and common["script_frozen_params"] == {}
    assert row["trainable_params"] != common["trainable_params"]
    table = EfficiencyTable(task="ave", backbone="paper", rows=[common, row])
    assert table.paper_for("dgsct:official") == table.paper_for("dgsct") == (43.6, 461.3, 13.1)
    markdown = write_efficiency(table, tmp_path)["md"].read_text()
    assert "| DG-SCT |" in markdown and "| DG-SCT (own head) |" in markdown
    counted = row["trainable_params"] + 4_740_096
    assert f"| DG-SCT (own head) | {row['trainable_params'] / 1e6:.2f} | 4.74 | {counted / 1e6:.2f} |" in markdown
    with pytest.raises(ValueError, match="molt has no head of its own"):
        bench_config("ave", "tiny", "molt:official")
