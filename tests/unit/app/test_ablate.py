"""`molt ablate`: the paper's ablation variants, trained and tabulated on generated data."""
import json

import pytest

from molt.app.ablate import ABLATION_TABLES, ablation_variants
from molt.app.cli import main
from molt.config import load_config
from molt.model import build_model


def test_every_table_changes_only_the_method_config():
    base = load_config("ave_molt_tiny")
    for table in ABLATION_TABLES:
        variants = ablation_variants(table, base)
        assert len(variants) == len(ABLATION_TABLES[table][1])
        for _, config in variants:
            assert (config.head, config.optim, config.trainer, config.backbone) == \
                   (base.head, base.optim, base.trainer, base.backbone)


def test_position_variants_tap_the_named_blocks():
    variants = dict(ablation_variants(4, load_config("ave_molt_tiny")))
    # tiny backbones have 8 blocks: early = 0-3, mid = 4-5, late = 6-7
    expected = {"early": [0, 1, 2, 3], "mid": [4, 5], "late": [6, 7], "early+late": [0, 1, 2, 3, 6, 7],
                "early+mid+late": list(range(8))}
    for name, blocks in expected.items():
        model = build_model(variants[name], {"num_classes": 3})
        assert model.features.visual_blocks == blocks and model.features.audio_blocks == blocks


def test_ablation_rejects_unknown_tables_and_other_methods():
    base = load_config("ave_molt_tiny")
    with pytest.raises(ValueError, match="no ablation table 3"):
        ablation_variants(3, base)
    from molt.config import switch_method

    with pytest.raises(ValueError, match="method 'mettle'"):
        ablation_variants(8, switch_method(base, "mettle"))


def test_ablate_tor_table_end_to_end(ave_data, tmp_path, capsys):
    data = ave_data
    out = tmp_path / "ablations"
    code = main(["ablate", "ave", "--table", "8", "--data", str(data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "8"])
    assert code == 0
    table = (out / "tab8_ave.md").read_text()
    assert "| w/o TOR |" in table and "| w TOR |" in table and "AVE Acc." in table
    rows = json.loads((out / "tab8_ave.json").read_text())["rows"]
    assert [row["method_config"]["tor_weight"] for row in rows] == [0.0, 0.1]
    assert all(0.0 <= row["test"]["accuracy"] <= 1.0 and row["activation_bytes"] > 0 for row in rows)
    assert "w/o TOR" in capsys.readouterr().out
