"""Backbone names: parsing, pairs, the config's backbone mapping, labels, and what is refused."""
import pytest
import torch

from molt.backbones import BACKBONE_PAIRS, SpectrogramSwin, SwinV2Backbone, build_backbones
from molt.backbones.htsat import HTSATBackbone
from molt.backbones.registry import (BackboneName, backbone_label, backbone_sides, parse_backbone_name,
                                     with_backbone_sides)
from molt.config import ExperimentConfig, load_config


def test_names_parse_with_their_defaults():
    assert parse_backbone_name("swinv2", "visual") == BackboneName("swinv2", "swinv2_large_window12_192")
    assert parse_backbone_name("htsat", "audio") == BackboneName("htsat", "htsat_audioset")
    assert parse_backbone_name("timm:vit_small_patch14_dinov2.lvd142m", "visual").model == \
        "vit_small_patch14_dinov2.lvd142m"
    assert str(parse_backbone_name("hf:/data/models/ast", "audio")) == "hf:/data/models/ast"
    assert str(parse_backbone_name("shared", "audio")) == "shared"
    assert parse_backbone_name("swinv2:swinv2_tiny_test", "audio").kind == "swinv2"


@pytest.mark.parametrize("text, side, message", [
    ("vit_base", "visual", "unknown visual backbone 'vit_base'"),
    ("timm", "visual", "names no model: write timm:MODEL"),
    ("hf:MIT/ast", "visual", "hf backbones are audio encoders"),
    ("timm:vit_small_patch16_224", "audio", "timm backbones are visual encoders"),
    ("htsat", "visual", "htsat backbones are audio encoders"),
    ("shared:x", "audio", "takes no model"),
    ("", "audio", "expected a name"),
])
def test_bad_names_are_refused_in_one_line(text, side, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_backbone_name(text, side)
    assert "\n" not in str(error.value)


def test_pairs_and_mappings_resolve_to_both_sides():
    for pair, (visual, audio) in BACKBONE_PAIRS.items():
        assert tuple(map(str, backbone_sides(pair))) == (str(parse_backbone_name(visual, "visual")),
                                                        str(parse_backbone_name(audio, "audio")))
    names = backbone_sides({"visual": "timm:vit_small_patch16_224", "audio": "htsat:htsat_tiny"})
    assert [n.kind for n in names] == ["timm", "htsat"]
    with pytest.raises(ValueError, match="name the audio backbone too"):
        backbone_sides({"visual": "swinv2"})
    with pytest.raises(ValueError, match="unknown key.*vision"):
        backbone_sides({"visual": "swinv2", "audio": "htsat", "vision": 1})
    with pytest.raises(ValueError, match="unknown backbone 'large'"):
        backbone_sides("large")
    with pytest.raises(ValueError, match="'shared' reads the spectrogram with the visual Swin-V2"):
        backbone_sides({"visual": "timm:vit_small_patch16_224", "audio": "shared"})


def test_one_side_replaced_keeps_the_other_and_its_options():
    assert with_backbone_sides("tiny") == "tiny"
    assert with_backbone_sides("tiny", visual="timm:test_vit") == {"visual": "timm:test_vit",
                                                                  "audio": "htsat:htsat_tiny"}
    mapping = {"visual": "timm:test_vit", "audio": "htsat:htsat_tiny", "visual_options": {"img_size": 32}}
    assert with_backbone_sides(mapping, audio="hf:/x")["visual_options"] == {"img_size": 32}
    assert "visual_options" not in with_backbone_sides(mapping, visual="swinv2")
    with pytest.raises(ValueError, match="'shared'"):
        with_backbone_sides("shared", visual="timm:test_vit")


def test_labels_are_file_name_safe():
    assert backbone_label("paper") == "paper"
    assert backbone_label({"visual": "timm:vit_large_patch14_dinov2.lvd142m",
                           "audio": "hf:/models/my ast/"}) == "vit_large_patch14_dinov2.lvd142m+my-ast"


def test_the_named_pairs_build_the_same_backbones_as_before():
    visual, audio = build_backbones("tiny")
    assert isinstance(visual, SwinV2Backbone) and visual.name == "swinv2_tiny_test"
    assert isinstance(audio, HTSATBackbone) and audio.name == "htsat_tiny"
    again, _ = build_backbones({"visual": "swinv2:swinv2_tiny_test", "audio": "htsat:htsat_tiny"})
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(visual.forward_taps(x, "late")[0], again.forward_taps(x, "late")[0])
    shared_visual, shared = build_backbones("tiny-shared")
    assert isinstance(shared, SpectrogramSwin) and shared.swin is shared_visual
    own_visual, own = build_backbones({"visual": "swinv2:swinv2_tiny_test", "audio": "swinv2:swinv2_tiny_test"})
    assert isinstance(own, SpectrogramSwin) and own.swin is not own_visual
    with pytest.raises(ValueError, match="a 2-s clip gives 201 frames"):   # the tiling length reaches HTS-AT
        build_backbones("tiny", audio_clip_seconds=2)
    with pytest.raises(FileNotFoundError, match="--audio-weights: weights file not found: /nowhere.ckpt"):
        build_backbones("tiny", audio_weights="/nowhere.ckpt")
    with pytest.raises(ValueError, match="drop --audio-weights"):
        build_backbones("tiny-shared", audio_weights="random")


def test_the_config_takes_a_mapping_and_names_the_file_in_errors(tmp_path):
    config = ExperimentConfig(backbone={"visual": "swinv2:swinv2_tiny_test", "audio": "htsat:htsat_tiny"})
    assert config.backbone_label == "swinv2_tiny_test+htsat_tiny"
    assert config.to_dict()["backbone"] == {"visual": "swinv2:swinv2_tiny_test", "audio": "htsat:htsat_tiny"}
    path = tmp_path / "bad.yaml"
    path.write_text("base: ave_molt_tiny\nbackbone:\n  visual: timm:test_vit\n")
    with pytest.raises(ValueError, match="name the audio backbone too"):
        load_config(str(path))
    path.write_text("base: ave_molt_tiny\nbackbone: 3\n")
    with pytest.raises(ValueError, match=f"{path}.*backbone"):
        load_config(str(path))
    with pytest.raises(ValueError, match="shared_audio_frontend kaldi_fbank applies to a Swin-V2"):
        ExperimentConfig(backbone="tiny", shared_audio_frontend="kaldi_fbank")
    assert ExperimentConfig(backbone={"visual": "swinv2:swinv2_tiny_test", "audio": "swinv2:swinv2_tiny_test"},
                            shared_audio_frontend="kaldi_fbank").shared_audio_frontend == "kaldi_fbank"


def test_the_core_builds_and_runs_without_transformers(monkeypatch):
    """transformers is optional: with it unimportable, the named pairs and timm backbones still build and run, and
    an hf: backbone says how to install it."""
    import sys

    from molt.config import load_config
    from molt.model import build_model

    monkeypatch.setitem(sys.modules, "transformers", None)
    model = build_model(load_config("ave_molt_tiny"), {"num_classes": 3})
    batch = {"frames": torch.randint(0, 255, (1, 2, 3, 64, 64), dtype=torch.uint8), "audio": torch.zeros(1, 2, 32000)}
    assert model(batch).predictions["event_logits"].shape[:2] == (1, 2)
    with pytest.raises(ImportError, match=r"pip install 'molt-av\[hf\]'"):
        build_backbones({"visual": "swinv2:swinv2_tiny_test", "audio": "hf:/models/ast"})


def test_cli_names_one_side_and_real_encoders_get_the_paper_preset():
    from molt.app.cli import _experiment, build_parser

    def experiment(*argv):
        return _experiment(build_parser().parse_args(["train", "ave", "--data", "x", *argv]), "ave")

    config = experiment("--visual-backbone", "timm:vit_small_patch14_dinov2.lvd142m")
    assert config.backbone == {"visual": "timm:vit_small_patch14_dinov2.lvd142m", "audio": "htsat:htsat_audioset"}
    assert config.method_config.dim == 256                        # the paper preset's width, not the tiny one
    tiny = experiment("--backbone", "tiny", "--audio-backbone", "hf:/models/ast", "--audio-weights", "random")
    assert tiny.backbone == {"visual": "swinv2:swinv2_tiny_test", "audio": "hf:/models/ast"}
    assert tiny.method_config.dim == 64 and tiny.audio_weights == "random"
    assert experiment("--audio-backbone", "htsat:htsat_tiny").method_config.dim == 64


def test_hf_weights_come_with_the_source(tmp_path):
    with pytest.raises(ValueError, match="--audio-weights: an hf: backbone reads its weights from its source"):
        build_backbones({"visual": "swinv2:swinv2_tiny_test", "audio": "hf:/models/ast"}, audio_weights=tmp_path)
