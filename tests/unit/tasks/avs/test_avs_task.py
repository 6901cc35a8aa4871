"""AVS head: shapes on hand-built stage lists, TPAVI against its THW x THW definition, guidance wiring, masked
loss, a quick overfit, pictures and configuration."""
import pytest
import torch
import torch.nn.functional as F

from helpers import fit_head
from molt.backbones import build_backbones
from molt.config import load_config
from molt.model import build_model
from molt.tasks import TaskHead, build_head
from molt.tasks.avs import TPAVI, AVSHead

DIM, B, T, M = 16, 2, 5, 32
TINY_STAGES = [(16, 24), (8, 48), (4, 96), (2, 192)]   # tiny Swin-V2 at 64 px: (grid, channels) per stage


def stages(batch: int = B, seed: int = 0, spec=TINY_STAGES):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch * T, grid * grid, channels, generator=generator) for grid, channels in spec]


def tokens(batch: int = B, seed: int = 1, k: int = 4) -> torch.Tensor:
    return torch.randn(batch * T, k, DIM, generator=torch.Generator().manual_seed(seed))


def make_task(**options) -> AVSHead:
    torch.manual_seed(0)
    settings = dict(dim=DIM, mask_size=M, stage_dims=[c for _, c in TINY_STAGES], channels=16,
                    projection_dilations=[1, 2])
    settings.update(options)
    return build_head("avs", **settings)


def batch_of(masks=None, valid=None, batch: int = B, spec=TINY_STAGES) -> dict:
    masks = torch.zeros(batch, T, M, M) if masks is None else masks
    return {"visual_stages": stages(batch, spec=spec), "frames": torch.zeros(batch, T, 3, 64, 64, dtype=torch.uint8),
            "masks": masks, "mask_valid": torch.ones(batch, T) if valid is None else valid,
            "video_id": [f"clip{i}" for i in range(batch)]}


def test_shapes_interface_and_errors():
    task = make_task()
    assert isinstance(task, TaskHead) and task.name == "avs" and task.needs_visual_stages
    out = task(tokens(seed=2), tokens(), batch_of())
    assert out["mask_logits"].shape == (B, T, M, M)
    predicted = task.predict(out)
    assert predicted.shape == (B, T, M, M) and predicted.dtype == torch.uint8 and predicted.max() <= 1
    # the paper's Swin-V2-L grids (48, 24, 12, 6) and a mask size that is not a multiple of them
    wide = make_task(stage_dims=[8, 8, 8, 8], mask_size=50, channels=8)
    big = {"visual_stages": stages(1, spec=[(48, 8), (24, 8), (12, 8), (6, 8)]), "frames": torch.zeros(1, T, 3, 8, 8)}
    assert wide(tokens(1, seed=2), tokens(1), big)["mask_logits"].shape == (1, T, 50, 50)
    with pytest.raises(ValueError, match="visual_stages"):
        task(tokens(seed=2), tokens(), {"frames": torch.zeros(B, T, 3, 8, 8)})
    wrong = batch_of()
    wrong["visual_stages"][2] = torch.randn(B * T, 16, 95)
    with pytest.raises(ValueError, match="stage 2.*stage_dims"):
        task(tokens(seed=2), tokens(), wrong)
    with pytest.raises(ValueError, match="audio tokens"):
        task(tokens(seed=2), None, batch_of())
    with pytest.raises(ValueError, match="B\\*T"):
        task(torch.randn(9, 4, DIM), torch.randn(9, 4, DIM), batch_of())
    with pytest.raises(ValueError, match="tpavi_stages"):
        make_task(tpavi_stages=[0, 4])
    with pytest.raises(ValueError, match="metric_variant"):
        make_task(metric_variant="best")


def _naive_tpavi(block: TPAVI, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """AVSBench's formulation: guidance broadcast over H*W, a (THW x THW) affinity divided by THW."""
    batch, _, frames, height, width = x.shape
    audio = block.align(guidance).transpose(1, 2)[..., None, None].expand(-1, -1, -1, height, width)
    phi = torch.einsum("oc,bcthw->bothw", block.phi.weight, audio) + block.phi.bias[None, :, None, None, None]
    theta = block.theta(x).flatten(2).transpose(1, 2)
    g = block.g(x).flatten(2).transpose(1, 2)
    affinity = theta @ phi.flatten(2) / (frames * height * width)
    y = (affinity @ g).transpose(1, 2).reshape(batch, -1, frames, height, width)
    z = x + block.out(y)
    return block.norm(z.movedim(1, -1)).movedim(-1, 1)


def test_tpavi_equals_the_full_affinity_product():
    torch.manual_seed(0)
    block = TPAVI(channels=8, guidance_dim=6).eval()
    with torch.no_grad():      # a trained block: non-zero output scale and running statistics
        block.out[1].weight.normal_()
        block.out[1].running_mean.normal_()
    x, guidance = torch.randn(2, 8, 5, 3, 3), torch.randn(2, 5, 6)
    torch.testing.assert_close(block(x, guidance), _naive_tpavi(block, x, guidance), rtol=1e-4, atol=1e-5)


def test_guidance_is_wired():
    task = make_task().eval()
    batch = batch_of()
    visual, audio = tokens(seed=2), tokens()
    # zero-initialised TPAVI output scale and visual injection: the tokens have no effect at initialisation
    before = task(visual, audio, batch)["mask_logits"]
    torch.testing.assert_close(task(visual, tokens(seed=9), batch)["mask_logits"], before)
    with torch.no_grad():
        for block in task.tpavi.values():
            block.out[1].weight.fill_(1.0)
    after = task(visual, audio, batch)["mask_logits"]
    assert not torch.allclose(task(visual, tokens(seed=9), batch)["mask_logits"], after)   # audio guides TPAVI
    torch.testing.assert_close(task(tokens(seed=9), audio, batch)["mask_logits"], after)
    with torch.no_grad():
        task.injection[1].weight.normal_()
    assert not torch.allclose(task(tokens(seed=9), audio, batch)["mask_logits"], task(visual, audio, batch)[
        "mask_logits"])                                                                      # visual injection
    # single-modality variants read only their own tokens
    audio_only = make_task(modalities="audio")
    assert audio_only(None, audio, batch)["mask_logits"].shape == (B, T, M, M)
    assert not hasattr(audio_only, "injection")
    visual_only = make_task(modalities="visual")
    assert visual_only(visual, None, batch)["mask_logits"].shape == (B, T, M, M)


def test_loss_uses_annotated_frames_only():
    task = make_task()
    generator = torch.Generator().manual_seed(3)
    masks = (torch.rand(B, T, M, M, generator=generator) > 0.8).float()
    valid = torch.tensor([[1.0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])       # S4 train clip + an MS3-like clip
    logits = torch.randn(B, T, M, M, generator=generator, requires_grad=True)
    batch = {"masks": masks, "mask_valid": valid}
    loss = task.loss({"mask_logits": logits}, batch)
    keep = valid.bool()
    expected = F.binary_cross_entropy_with_logits(logits[keep], masks[keep])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[0, 1:].abs().sum() == 0 and logits.grad[0, 0].abs().sum() > 0
    none = task.loss({"mask_logits": logits}, {"masks": masks, "mask_valid": torch.zeros(B, T)})
    assert none.item() == 0.0
    with pytest.raises(ValueError, match="mask_size"):
        task.loss({"mask_logits": logits}, {"masks": torch.zeros(B, T, 8, 8)})


def test_overfits_one_batch():
    task = make_task(channels=16)
    masks = torch.zeros(B, T, M, M)
    masks[0, :, 4:14, 6:16] = 1
    masks[1, :, 18:28, 10:26] = 1
    batch = batch_of(masks, spec=[(grid // 2, channels) for grid, channels in TINY_STAGES])   # 32 px input
    visual, audio = tokens(seed=2), tokens()
    first = fit_head(task, visual, audio, batch, lr=3e-3, steps=40)[0]
    task.eval()
    out = task(visual, audio, batch)
    assert task.loss(out, batch).item() < 0.3 * first
    task.update_metrics(out, batch)
    assert task.compute_metrics()["mIoU"] > 0.5


def test_figures_and_config(tmp_path):
    task = make_task()
    masks = torch.zeros(B, T, M, M)
    masks[:, :, 5:15, 5:15] = 1
    batch = batch_of(masks, valid=torch.tensor([[1.0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))
    out = task(tokens(seed=2), tokens(), batch)
    paths = task.save_figures([(out, batch)], tmp_path, {"mask_size": M})
    assert paths == [tmp_path / "masks.png"] and paths[0].stat().st_size > 1000
    # the preset's head section, the backbone's stage widths and the data's task options are exactly the head's
    # keyword arguments
    config = load_config("avs_molt_tiny")
    assert config.task == "avs" and config.method_config.num_tokens == 4
    data_options = {"mask_size": 64, "setting": "s4"}           # PreparedAVS.task_options()
    model = build_model(config, data_options)
    assert isinstance(model.task, AVSHead) and model.task.stage_dims == [24, 48, 96, 192]
    paper = load_config("avs_molt_paper")
    assert paper.head.channels == 256 and "stage_dims" not in paper.to_dict()["head"]
    with torch.device("meta"):
        visual, _ = build_backbones("paper")
    assert [visual.block_dims[i] for i in visual.stage_end_blocks] == [192, 384, 768, 1536]
    assert load_config("avs_molt_shared").head == paper.head


def test_single_scale_backbone_gets_the_simple_feature_pyramid():
    """A plain ViT gives one stage: the head builds 4x, 2x, 1x and 1/2x maps from it (ViTDet), trains through them,
    and keeps the four-stage path for multi-scale backbones."""
    from molt.tasks.avs.head import SimpleFeaturePyramid

    vit = [(8, 32)]                                                  # an 8x8 ViT grid, 32 channels
    task = make_task(stage_dims=[32])
    assert isinstance(task.pyramid, SimpleFeaturePyramid) and make_task().pyramid is None
    levels = task.pyramid(torch.randn(3, 32, 8, 8))
    assert [tuple(level.shape[1:]) for level in levels] == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (32, 4, 4)]
    batch = batch_of(spec=vit)
    out = task(tokens(seed=2), tokens(), batch)
    assert out["mask_logits"].shape == (B, T, M, M)
    out["mask_logits"].sum().backward()
    assert task.pyramid.up4[1].weight.grad.abs().sum() > 0 and task.pyramid.up2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="tpavi_stages"):
        make_task(stage_dims=[32], tpavi_stages=[4])
