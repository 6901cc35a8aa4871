import pytest
import torch
from torch import nn

from molt.backbones.swin_v2 import build_swin_v2


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return build_swin_v2("swinv2_tiny_test")


def test_tap_shapes_every_block(swin):
    x = torch.rand(2, 3, 64, 64)
    taps = swin.forward_taps(x, "all")
    assert len(taps) == swin.num_blocks == 8
    for tap, dim, tokens in zip(taps, swin.block_dims, swin.block_tokens):
        assert tap.shape == (2, tokens, dim)
    # downsampling happens at the start of a stage: a stage's first block already has the stage's width
    assert [t.shape[-1] for t in taps] == [24, 24, 48, 48, 96, 96, 192, 192]


def test_last_tap_equals_timm_stages(swin):
    x = torch.rand(1, 3, 64, 64)
    reference = swin.model.layers(swin.model.patch_embed((x - swin.mean) / swin.std)).flatten(1, 2)
    assert torch.equal(swin.forward_taps(x, [-1])[0], reference)


def test_selected_taps_equal_full_run(swin):
    x = torch.rand(1, 3, 64, 64)
    full = swin.forward_taps(x, "all")
    late = swin.forward_taps(x, "late")
    assert torch.equal(late[0], full[-2]) and torch.equal(late[1], full[-1])


def test_early_stop_runs_fewer_blocks(swin):
    calls = []
    hooks = [block.register_forward_hook(lambda *_: calls.append(1))
             for stage in swin.model.layers for block in stage.blocks]
    try:
        swin.forward_taps(torch.rand(1, 3, 64, 64), [1])
        early = len(calls)
        calls.clear()
        swin.forward_taps(torch.rand(1, 3, 64, 64), [-1])
        full = len(calls)
    finally:
        for hook in hooks:
            hook.remove()
    assert early == 2 and full == 8


def test_frozen_and_stays_in_eval(swin):
    parent = nn.ModuleDict(dict(backbone=swin, adapter=nn.Linear(192, 4)))
    parent.train()
    assert parent["adapter"].training
    assert not any(m.training for m in swin.modules())
    assert not any(p.requires_grad for p in swin.parameters())
    taps = swin.forward_taps(torch.rand(2, 3, 64, 64), "late")
    assert all(t.grad_fn is None and not t.requires_grad for t in taps)
    loss = parent["adapter"](taps[-1]).pow(2).mean()
    loss.backward()
    assert parent["adapter"].weight.grad is not None
    assert all(p.grad is None for p in swin.parameters())


def test_wrong_image_size_is_a_clear_error(swin):
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        swin.forward_taps(torch.rand(1, 3, 96, 96), "late")
    with pytest.raises(ValueError, match="float"):
        swin.forward_taps(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "late")


def test_preprocess_resizes_uint8_frames(swin):
    frames = torch.randint(0, 256, (2, 3, 100, 80), dtype=torch.uint8)
    images = swin.preprocess(frames)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_local_weights_file_goes_through_timm_filter(tmp_path):
    torch.manual_seed(1)
    source = build_swin_v2("swinv2_tiny_test")
    path = tmp_path / "swin_tiny.pth"
    # original-format checkpoint: {'model': ...} with non-persistent buffers included, as Microsoft ships them
    torch.save({"model": source.model.state_dict()}, path)
    torch.manual_seed(2)
    loaded = build_swin_v2("swinv2_tiny_test", weights=path)
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert loaded.weights_hash() == loaded.weights_hash() and len(loaded.weights_hash()) == 64


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_swin_v2("swinv2_tiny_test", weights=tmp_path / "nope.pth")


def test_random_weight_blocks_are_not_identity(swin):
    # timm zero-inits the post-norm scales; a random frozen backbone must still transform its tokens
    x = torch.rand(1, 3, 64, 64)
    tokens = swin.embed(x)
    out = swin.run_block(0, tokens)
    assert not torch.allclose(out, tokens)
    assert all(float(block.norm1.weight.abs().sum()) > 0 for stage in swin.model.layers for block in stage.blocks)
