import pytest

from molt.backbones.taps import resolve_blocks


@pytest.mark.parametrize("selection, expected", [
    ("late", [22, 23]),
    ("early", [0, 1, 2, 3]),
    ("mid", list(range(4, 22))),
    ("all", list(range(24))),
    (2, [22, 23]),
    (1, [23]),
    ([-1, -2], [22, 23]),
    ([0, 23, 0], [0, 23]),
    ("-2,-1", [22, 23]),
    ("20, 21", [20, 21]),
])
def test_resolve_blocks_swin_large(selection, expected):
    assert resolve_blocks(selection, 24) == expected


def test_htsat_layout_late_blocks():
    assert resolve_blocks("late", 12) == [10, 11]
    assert resolve_blocks("mid", 12) == [4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("selection", [0, 25, [24], [-25], "middle", [], "a,b", True])
def test_resolve_blocks_rejects_bad_selection(selection):
    with pytest.raises(ValueError):
        resolve_blocks(selection, 24)


def test_mid_empty_for_short_backbone_is_an_error():
    with pytest.raises(ValueError, match="no 'mid' blocks"):
        resolve_blocks("mid", 6)


def test_stage_names_joined_with_plus_give_their_union():
    assert resolve_blocks("early+late", 24) == [0, 1, 2, 3, 22, 23]
    assert resolve_blocks("early+mid+late", 8) == list(range(8))
    assert resolve_blocks("mid + late", 12) == list(range(4, 12))
    with pytest.raises(ValueError, match="'middle'"):
        resolve_blocks("early+middle", 24)
