from molt.config import load_config
from molt.methods import count_parameters
from molt.model import build_model
from molt.app.params import count_preset


def test_meta_device_count_equals_a_real_build():
    count = count_preset("ave_molt_tiny")
    model = build_model(load_config("ave_molt_tiny"), {"num_classes": 28})
    trainable, total = count_parameters(model)
    assert (count.trainable, count.total) == (trainable, total)
    assert count.method_params == count_parameters(model.method)[0]


def test_the_published_in_block_counts_are_reproduced_row_by_row():
    """DG-SCT's script prints 201.2 M trainable = 43.6 % of 461.3 M for AVE (the MoLT paper's row); with its own
    head, the parts its head registers but never calls and the frozen tensors its script counts, ours gives the
    same. AVMoE's released AVE setting gives 28.3 % of 362.7 M (not the paper's 34.9 % of 404.0 M); LAVisH with
    DG-SCT's head and 32 latent tokens gives the paper's 30.6 % of 374.9 M."""
    from molt.app.params import count_heads, head_count_table

    rows = {(row.method, row.head): row for row in count_heads("ave", "paper")}
    dgsct = rows["dgsct", "official"]
    assert dgsct.head_class == "DGSCTAVEHead" and dgsct.head_params == 7_881_687
    assert dgsct.counted_trainable == 201_160_599
    assert round(dgsct.counted_total / 1e6, 1) == 461.3
    assert round(100 * dgsct.counted_trainable / dgsct.counted_total, 1) == 43.6 == dgsct.paper[0]
    assert dgsct.frozen_extras == {"classifier of the visual checkpoint": 33_569_617,
                                   "HTS-AT log-mel filter bank (a Parameter in torchlibrosa)": 513 * 64}
    common = rows["dgsct", "common"]
    assert common.head_class == "AVEHead" and common.script_only == {} and common.frozen_extras == {}
    assert common.method_params - dgsct.method_params == 2_382_848        # our read-out, not built with their head
    avmoe = rows["avmoe", "official"]
    assert (round(avmoe.counted_trainable / 1e6, 1), round(avmoe.counted_total / 1e6, 1)) == (102.6, 362.7)
    lavish = {row.head: row for row in count_heads("ave", "paper", methods=("lavish",), num_latents=32)}["official"]
    assert lavish.head_class == "DGSCTAVEHead"
    assert (round(lavish.counted_total / 1e6, 1), round(100 * lavish.counted_trainable / lavish.counted_total, 1)) \
        == (374.9, 30.6)
    shared = {row.method: row for row in count_heads("ave", "shared", methods=("lavish",)) if row.head == "official"}
    assert shared["lavish"].head_class == "LAVisHAVEHead" and shared["lavish"].head_params == 1_588_253
    table = head_count_table("ave", "paper")
    assert "| dgsct | official (DGSCTAVEHead) |" in table and "| 201.16 | 461.3 | 43.6 | 43.6 / 461.3 |" in table
    assert "DG-SCT/AVE/main_trans.py" in table


def test_head_flag_picks_the_methods_own_head(caplog):
    from molt.app.cli import _experiment, build_parser, main

    args = build_parser().parse_args(["train", "ave", "--data", "d", "--method", "dgsct", "--head", "official"])
    assert _experiment(args, "ave").method_config.head == "official"
    args = build_parser().parse_args(["train", "ave", "--data", "d", "--method", "dgsct"])
    assert _experiment(args, "ave").method_config.head == "common"
    assert main(["train", "ave", "--data", "d", "--head", "official"]) == 2
    assert "molt has no head of its own" in caplog.text


def test_avqa_counts_add_what_the_avqa_scripts_count():
    """The AVQA scripts count their head's uncalled layers and print every Swin ``norm`` weight as trainable."""
    from molt.app.params import count_heads

    row = {(r.method, r.head): r for r in count_heads("avqa", "paper", methods=("dgsct",))}["dgsct", "official"]
    assert row.head_class == "AVSTAVQAHead" and row.head_params == 66_870_444
    assert sum(row.script_only.values()) == 3_545_088
    assert row.frozen_as_trainable == {"Swin norm weights counted as trainable (frozen)": 81_024}
    assert row.counted_total - row.counted_trainable == row.frozen + sum(row.frozen_extras.values()) - 81_024


def test_avs_rows_say_what_the_avs_scripts_count_but_never_call():
    from molt.app.params import head_count_table

    table = head_count_table("avs", "paper")
    for method, head_class in (("lavish", "LAVisHAVSHead"), ("dgsct", "DGSCTAVSHead"), ("avmoe", "AVMoEAVSHead")):
        assert f"| {method} | common (AVSHead) |" in table and f"| {method} | official ({head_class}) |" in table
    assert "PVT-v2-b5 encoder (encoder_backbone, never called) 81,443,008" in table
    assert "HTS-AT, trained by the S4 script 31,292,311" in table
    official = next(line for line in table.splitlines() if line.startswith("| dgsct | official"))
    assert official.endswith("| 365.96 | 594.8 | 61.5 | 61.5 / 594.8 |")


def test_lavish_avqa_rows_count_as_its_script():
    """LAVisH's main_avst.py (one Swin, l.250-286) counts 16,825,276 trainable of 245,516,801 with its own head
    (tests/unit/tasks/avqa/test_avqa_official_heads.py); the shared preset here also holds HTS-AT's STFT as two frozen
    Conv1d of 513 x 1024. With two backbones the same head gives 30.1 % of 372.0 M (the paper: 28.7 % of 367.4 M)."""
    from molt.app.params import _COUNT_SOURCES, count_heads

    shared = {row.head: row for row in count_heads("avqa", "shared", methods=("lavish",))}["official"]
    assert shared.head_class == "LAVisHAVQAHead" and shared.method_params == 4_562_064
    assert shared.counted_trainable == 16_825_276
    assert shared.counted_total - 2 * 513 * 1024 == 245_516_801
    paper = {row.head: row for row in count_heads("avqa", "paper", methods=("lavish",))}["official"]
    assert paper.head_class == "LAVisHAVQAHead" and paper.paper == (28.7, 367.4)
    assert (round(paper.counted_total / 1e6, 1), round(100 * paper.counted_trainable / paper.counted_total, 1)) \
        == (372.0, 30.1)
    assert "AVQA/net_grd_avst/main_avst.py" in _COUNT_SOURCES["avqa", "lavish"]
