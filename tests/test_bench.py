"""Efficiency benchmark: exact saved-tensor counting, per-method measurements on tiny backbones, output files."""
import json

import pytest
import torch

from molt.bench import (EfficiencyTable, SavedTensorCounter, bench_config, measure_training_step, run_efficiency,
                        write_efficiency)


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


@pytest.fixture(scope="module")
def tiny_rows():
    return {method: measure_training_step("ave", "tiny", method) for method in ("molt", "mettle", "lavish")}


def test_each_method_trains_a_step_and_saves_activations(tiny_rows):
    for method, row in tiny_rows.items():
        assert row["activation_bytes"] > 0, method
        assert 0 < row["trainable_params"] < row["total_params"]
        assert row["peak_bytes"] > 0 and row["step_s"] > 0
    assert tiny_rows["lavish"]["activation_bytes"] > tiny_rows["mettle"]["activation_bytes"]
    assert tiny_rows["lavish"]["activation_bytes"] > tiny_rows["molt"]["activation_bytes"]
    assert tiny_rows["mettle"]["activation_bytes"] > tiny_rows["molt"]["activation_bytes"]


def test_output_files_and_ratios(tiny_rows, tmp_path):
    table = EfficiencyTable(task="ave", backbone="tiny", rows=list(tiny_rows.values()))
    paths = write_efficiency(table, tmp_path)
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    data = json.loads(paths["json"].read_text())
    assert [row["method"] for row in data["rows"]] == ["molt", "mettle", "lavish"]
    assert data["activation_ratio_vs_molt"]["lavish"] > 1
    markdown = paths["md"].read_text()
    assert "| LAVisH |" in markdown and "1/" in markdown
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_efficiency_spawns_one_process_per_method(tmp_path):
    table = run_efficiency("ave", "tiny", ("molt",), out_dir=tmp_path)
    assert [row["method"] for row in table.rows] == ["molt"]
    assert (tmp_path / "efficiency.md").is_file()


def test_bad_names_fail_before_running():
    with pytest.raises(ValueError, match="unknown method"):
        run_efficiency("ave", "tiny", ("molt", "dgsct"))
    with pytest.raises(ValueError, match="no efficiency benchmark"):
        bench_config("avqa", "tiny", "molt")
    mettle, molt = bench_config("ave", "paper", "mettle"), bench_config("ave", "paper")
    assert mettle.method_config["dim"] == molt.method_config["dim"]
