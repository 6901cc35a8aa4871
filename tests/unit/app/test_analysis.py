"""Analysis tools: per-block layer similarity (paper Fig. 4) and token diagnostics (Fig. 5)."""
import copy
import csv
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from molt.app.analysis import (
    LayerSimilarity,
    analyze_layers,
    analyze_tokens,
    block_modules,
    layer_similarity,
    suggest_split,
    token_diagnostics,
)
from molt.backbones import build_backbones
from molt.config import load_config
from molt.tasks.ave.prepared import ensure_prepared
from molt.tasks.ave.synthetic import generate_ave
from molt.app.train import train


@pytest.fixture(scope="module")
def tiny_backbones():
    return build_backbones("tiny")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_analysis")
    generate_ave(root, num_videos=6, seed=0, image_size=32, fps=4, workers=1, show_progress=False)
    return ensure_prepared(root, show_progress=False)


def _tiny_vit():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=0)


def test_block_modules_of_swin_v2_htsat_shared_and_vit(tiny_backbones):
    visual, audio = tiny_backbones
    swin_blocks = block_modules(visual)
    assert len(swin_blocks) == visual.num_blocks == 8
    assert swin_blocks[2] is visual.model.layers[1].blocks[0]
    htsat_blocks = block_modules(audio)
    assert len(htsat_blocks) == audio.num_blocks == 8
    assert htsat_blocks[-1] is audio.layers[-1].blocks[-1]
    shared_visual, shared_audio = build_backbones("tiny-shared")
    assert [id(b) for b in block_modules(shared_audio)] == [id(b) for b in block_modules(shared_visual)]
    vit = _tiny_vit()
    assert block_modules(vit) == list(vit.blocks)
    with pytest.raises(ValueError, match="per-block modules"):
        block_modules(nn.Linear(4, 4))


def test_one_value_per_block_in_range(tiny_backbones):
    _, audio = tiny_backbones
    torch.manual_seed(0)
    result = layer_similarity(audio, 0.1 * torch.randn(5, audio.config.segment_samples), batch_size=2)
    assert result.num_blocks == audio.num_blocks and result.num_samples == 5
    assert all(-1.0 <= value <= 1.0 for value in result.similarity)
    assert min(result.similarity) < 0.9999  # random HTS-AT blocks do change their input
    assert result.dims == audio.block_dims and result.tokens == audio.block_tokens
    assert result.stages == [0, 0, 1, 1, 2, 2, 3, 3]
    vit = layer_similarity(_tiny_vit(), torch.randn(3, 3, 32, 32))
    assert vit.num_blocks == 2 and vit.tokens == [17, 17] and all(-1.0 <= v <= 1.0 for v in vit.similarity)


def test_stage_opening_block_is_measured_after_patch_merging(tiny_backbones):
    _, audio = tiny_backbones
    torch.manual_seed(1)
    waveform = 0.1 * torch.randn(3, audio.config.segment_samples)
    result = layer_similarity(audio, waveform)
    with torch.no_grad():
        tokens = audio.run_block(1, audio.run_block(0, audio.embed(waveform)))
        merged = audio.layers[0].downsample(tokens)
        expected = F.cosine_similarity(merged.double(), audio.layers[1].blocks[0](merged).double(), dim=-1)
    assert result.similarity[2] == pytest.approx(float(expected.mean()), abs=1e-6)


def test_identity_block_gives_exactly_one(tiny_backbones):
    _, audio = tiny_backbones
    edited = copy.deepcopy(audio)
    block = edited.layers[1].blocks[1]  # block 3: zero both residual branches -> output == input
    for layer in (block.attn.proj, block.mlp.fc2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    torch.manual_seed(2)
    result = layer_similarity(edited, 0.1 * torch.randn(2, audio.config.segment_samples))
    assert result.similarity[3] == pytest.approx(1.0, abs=1e-12)
    assert all(value < 1.0 - 1e-6 for i, value in enumerate(result.similarity) if i != 3)

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return self.factor * x

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(Scale(1.0), Scale(-2.0), Scale(3.0))

        def forward(self, x):
            return self.blocks(x)

    toy = layer_similarity(Toy(), torch.randn(4, 5, 8))
    assert toy.similarity == pytest.approx([1.0, -1.0, 1.0], abs=1e-12)  # x, -2x (opposite), 3x (same direction)
    assert toy.std == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)


def test_block_changing_shape_is_rejected():
    class Grow(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 6)])

        def forward(self, x):
            return self.blocks[0](x)

    with pytest.raises(ValueError, match="same shape"):
        layer_similarity(Grow(), torch.randn(2, 3, 4))


def test_suggest_split_follows_the_curve():
    curve = [0.30, 0.40, 0.50, 0.90, 0.95, 0.95, 0.96, 0.97, 0.97, 0.98]
    split = suggest_split(curve)
    assert (split.early, split.mid, split.late) == ([0, 1, 2], [3, 4, 5, 6, 7], [8, 9])
    assert "data-driven" in split.reason and split.late_selection == "8,9"
    dip_later = suggest_split([0.9, 0.4, 0.3, 0.6, 0.92, 0.93, 0.93, 0.94, 0.95, 0.95, 0.96, 0.96])
    assert dip_later.early == [0, 1, 2, 3]
    flat = suggest_split([0.99] * 12)
    assert flat.early == [0, 1, 2, 3] and "flat" in flat.reason
    fixed = suggest_split(LayerSimilarity("x", curve, [0.0] * 10, [1] * 10, [1] * 10, [0] * 10, 1), early=4, late=2)
    assert (fixed.early, fixed.late) == ([0, 1, 2, 3], [8, 9])
    short = suggest_split([0.2, 0.9, 0.95], early=4)  # early is clamped so that a mid block remains
    assert (short.early, short.mid, short.late) == ([], [0], [1, 2])
    assert suggest_split([0.1, 0.2, 0.9, 0.95]).early == [0]
    with pytest.raises(ValueError):
        suggest_split([])


def test_analyze_layers_writes_csv_png_and_split(prepared, tmp_path):
    analysis = analyze_layers(prepared, out_dir=tmp_path, backbone="tiny", clips=3, segments_per_clip=2)
    with open(tmp_path / "layer_similarity.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and {row["position"] for row in rows} == {"early", "mid", "late"}
    assert all(-1.0 <= float(row["similarity"]) <= 1.0 and row["num_samples"] == "6" for row in rows)
    png = (tmp_path / "layer_similarity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    saved = json.loads((tmp_path / "layer_similarity.json").read_text())
    assert saved["backbones"]["audio"]["split"]["late"] == [6, 7] == analysis.splits["audio"].late
    assert set(analysis.results) == {"visual", "audio"} and "late blocks 6,7" in analysis.summary()

    other = analyze_layers(prepared, out_dir=tmp_path / "vit", visual="vit_tiny_patch16_224", audio="none",
                           visual_weights="random", clips=1, segments_per_clip=2)
    assert list(other.results) == ["visual"] and other.results["visual"].num_blocks == 12
    shared_audio = analyze_layers(prepared, out_dir=tmp_path / "shared", backbone="tiny-shared", visual="none",
                                  clips=1, segments_per_clip=2)
    assert list(shared_audio.results) == ["audio"] and shared_audio.results["audio"].num_blocks == 8
    with pytest.raises(ValueError, match="unknown backbone 'huge'"):
        analyze_layers(prepared, out_dir=tmp_path, backbone="huge")


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1}})
    return train(config, data=prepared, out_dir=tmp_path_factory.mktemp("runs"), enable_progress_bar=False)


def test_analyze_tokens_writes_maps_and_weights(trained, prepared, tmp_path):
    payload = analyze_tokens(trained["adapters"], prepared, out_dir=tmp_path, split="train", clips=2)
    pngs = sorted(tmp_path.glob("tokens_*.png"))
    assert sorted(payload["files"]) == sorted(str(p) for p in [*pngs, tmp_path / "tokens.json"])
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 10_000 for p in pngs)
    saved = json.loads((tmp_path / "tokens.json").read_text())
    assert len(saved["clips"]) == 2 and set(saved["summary"]) == {"visual", "audio"}
    for clip in saved["clips"]:
        for entry in clip["modalities"].values():
            size = entry["num_layers"] * entry["num_tokens"]
            similarity = torch.tensor(entry["similarity"])
            assert similarity.shape == (size, size) == (8, 8)  # 2 late layers x 4 tokens
            assert torch.allclose(similarity.diagonal(), torch.ones(size), atol=1e-5)
            assert torch.allclose(similarity, similarity.T, atol=1e-6)
            assert sum(entry["fusion_weights"]) == pytest.approx(1.0, abs=1e-5)
            assert 0.0 <= entry["weights_entropy"] <= 1.0 + 1e-6
    single = analyze_tokens(trained["adapters"], prepared, out_dir=tmp_path / "one", split="test", clips=1,
                            segment=0)
    assert single["segment"] == 0 and sum(single["clips"][0]["modalities"]["audio"]["fusion_weights"]) == \
        pytest.approx(1.0, abs=1e-5)


def test_token_diagnostics_rejects_non_molt_outputs():
    with pytest.raises(ValueError, match="layer_tokens"):
        token_diagnostics({"router_weights": torch.ones(1, 2, 4)})
    tokens = torch.randn(3, 2, 4, 8)
    extras = {"layer_tokens": {"audio": tokens}, "fusion_weights": {"audio": torch.tensor([[0.5, 0.5]] * 3)}}
    assert token_diagnostics(extras)["audio"]["weights_entropy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="segment 5"):
        token_diagnostics(extras, segment=5)


def test_data_driven_late_stage():
    """late=None (blocks_visual: auto) reads the late stage off the tail of the curve, within its bounds."""
    from molt.app.analysis.layers import suggest_split

    body = [0.5, 0.7, 0.9, 0.95, 0.95, 0.96, 0.95, 0.94, 0.95, 0.96, 0.95, 0.95, 0.94, 0.95, 0.96, 0.95]
    assert suggest_split(body[:-3] + [0.85, 0.7, 0.6], late=None).late == [13, 14, 15]
    assert suggest_split(body[:-1] + [0.6], late=None).late == [15]
    assert suggest_split(body, late=None).late == [14, 15]                          # flat tail: the paper's 2
    assert suggest_split(body[:8] + [0.5] * 8, late=None).late == [12, 13, 14, 15]   # at most a quarter
    assert "fall more than 0.05 below the plateau" in suggest_split(body[:-1] + [0.6], late=None).reason
