"""Paper-scale checks: the full-size backbones (Swin-V2-L, HTS-AT), built for real or counted on the meta device, and
the methods' adapters at the sizes their papers and repositories give."""
import pytest
import torch

from molt.app.cli import main
from molt.app.params import count_preset, parameter_table
from molt.backbones import build_backbones
from molt.backbones.swin_v2 import build_swin_v2
from molt.config import load_config, switch_method
from molt.methods import DGSCTConfig, LavishConfig, Mettle, build_method
from molt.model import build_model


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

    assert main(["params"]) == 0
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


def _adapter_parameters(method) -> float:
    return sum(p.numel() for p in method.adapters.parameters()) / 1e6


def test_paper_scale_sizes_match_the_repositories():
    with torch.device("meta"):
        visual, audio = build_backbones("paper")
        lavish = build_method("lavish", LavishConfig(num_latents=32), visual, audio)[0]
        dgsct = build_method("dgsct", DGSCTConfig(), visual, audio)[0]
        shared_visual, shared_audio = build_backbones("shared")
        shared = build_method("lavish", LavishConfig(), shared_visual, shared_audio)[0]
    bridges = sum(p.numel() for name, p in lavish.named_parameters() if ".bridge." in name) / 1e6
    # DG-SCT's LAVisH baseline: 98.4 M of bridges + 3.7 M adapter core at 12 positions (PEERS.md)
    assert len(lavish.positions) == 12 and bridges == pytest.approx(98.4, abs=0.1)
    assert _adapter_parameters(lavish) == pytest.approx(98.4 + 3.7, abs=0.15)
    # DG-SCT: 188.5 M of adapters (bridges 98.5, dual-guided linears 86.4, bottleneck 2.7, tokens 0.9)
    assert _adapter_parameters(dgsct) == pytest.approx(188.5, abs=0.2)
    # the shared setting has an adapter pair at each of the 24 blocks and no bridge
    assert len(shared.positions) == 24 and not any(".bridge." in name for name, _ in shared.named_parameters())


def test_layer_width_meta_tokens_match_the_published_size():
    """MoLT Tab. 3: Mettle (Swin-V2-L + HTS-AT) 23.0 % of 338.0 M; the paper's total counts Swin-V2-L with its
    ImageNet-22k classifier (1536 x 21841 + 21841 parameters)."""
    import dataclasses


    counts = {}
    for width in ("layer", "common"):
        config = switch_method(load_config("ave_molt_paper"), "mettle")
        config = dataclasses.replace(config, method_config=config.method_config.replace(lcd_width=width))
        with torch.device("meta"):
            model = build_model(config, {"num_classes": 28}, backbones_on_meta=True)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) + 1536 * 21841 + 21841
        counts[width] = (trainable / 1e6, total / 1e6)
    trainable, total = counts["layer"]
    assert total == pytest.approx(338.0, rel=0.01) and 100 * trainable / total == pytest.approx(23.0, abs=0.3)
    assert counts["common"][0] < trainable / 3  # the common-width reading is a third of the published size
    assert isinstance(model.method, Mettle) and model.method.lcds["visual"][0].to_common is None
