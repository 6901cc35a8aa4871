"""Paper-scale checks: the full-size backbones (Swin-V2-L, HTS-AT), built for real or counted on the meta device."""
import pytest
import torch

from molt.app.cli import main
from molt.app.params import count_preset, parameter_table
from molt.backbones.swin_v2 import build_swin_v2


def test_paper_presets_are_counted_without_allocating(capsys):
    # Swin-V2-L + HTS-AT: ~226 M frozen parameters, counted on the meta device in seconds
    count = count_preset("ave_molt_paper")
    assert 220e6 < count.backbone_params < 232e6
    assert 0 < count.trainable < count.backbone_params
    shared = count_preset("ave_molt_shared")
    assert shared.backbone_params < count.backbone_params  # the shared Swin is counted once
    table = parameter_table(["ave_molt_paper", "avs_molt_paper"])
    assert "6.2 / 290.3" in table and "6.3 / 339.5" in table  # the paper's figures beside ours
    avs = count_preset("avs_molt_paper")   # the AVS decoder reads the four Swin-V2-L stage widths
    assert avs.head_params is not None and avs.head_params > 1e6 and f"{avs.head_params / 1e6:.2f}" in table
    assert main(["params", "ave_molt_tiny"]) == 0
    assert "ave_molt_tiny" in capsys.readouterr().out


def test_params_all_has_every_task_at_paper_scale(capsys):
    from molt.tasks import task_names

    assert main(["params", "--all"]) == 0
    out = capsys.readouterr().out
    for task in task_names():
        for backbone in ("paper", "shared"):
            assert f"| {task}_molt_{backbone} | {task} | {backbone} |" in out, (task, backbone)


@pytest.mark.slow
def test_paper_scale_swin_v2_large_late_taps():
    swin = build_swin_v2("swinv2_large_window12_192")
    assert swin.num_blocks == 24
    assert 190e6 < sum(p.numel() for p in swin.parameters()) < 200e6
    taps = swin.forward_taps(torch.rand(1, 3, 192, 192), "late")
    assert [tuple(t.shape) for t in taps] == [(1, 36, 1536), (1, 36, 1536)]
