"""Tests for models.permutations (docs/methods/spot.md)."""
from __future__ import annotations

import pytest
import torch

from models.permutations import ORDERING_NAMES, inverse_ordering, patch_orderings

# Full 4x4 sequences, g[r, c] = 4r + c, following the traversals of SPOT's code.
EXPECTED_4x4 = {
    "left_top": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    "top_left": [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15],
    "top_right": [3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13, 0, 4, 8, 12],
    "right_top": [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12],
    "bottom_right": [15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0],
    "right_bottom": [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    "bottom_left": [12, 8, 4, 0, 13, 9, 5, 1, 14, 10, 6, 2, 15, 11, 7, 3],
    "left_bottom": [12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3],
    "spiral": [5, 9, 10, 6, 2, 1, 0, 4, 8, 12, 13, 14, 15, 11, 7, 3],
}
# The first entries of each 4x4 sequence in SPOT's code.
SPEC_STARTS = [
    [0, 1, 2, 3, 4],
    [0, 4, 8, 12, 1],
    [3, 7, 11, 15, 2],
    [3, 2, 1, 0, 7],
    [15, 11, 7, 3, 14],
    [15, 14, 13],
    [12, 8, 4, 0, 13],
    [12, 13, 14, 15, 8],
    [5, 9, 10, 6, 2, 1, 0, 4, 8, 12, 13, 14, 15, 11, 7, 3],
]


def test_names():
    assert ORDERING_NAMES == tuple(EXPECTED_4x4.keys())
    assert len(ORDERING_NAMES) == 9


def test_4x4_table():
    p = patch_orderings(4, 4)
    assert p.shape == (9, 16) and p.dtype == torch.long
    for i, name in enumerate(ORDERING_NAMES):
        assert p[i].tolist() == EXPECTED_4x4[name], name
        start = SPEC_STARTS[i]
        assert p[i, : len(start)].tolist() == start, name


def test_right_bottom_is_reverse_of_raster():
    p = patch_orderings(5, 3)
    assert torch.equal(p[5], p[0].flip(0))


def test_spiral_14x14():
    p = patch_orderings(14, 14)
    assert p.shape == (9, 196)
    assert p[8, 0].item() == 90 and p[8, -1].item() == 13
    # consecutive spiral cells are 4-neighbours
    r, c = p[8] // 14, p[8] % 14
    assert ((r.diff().abs() + c.diff().abs()) == 1).all()


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (5, 1), (2, 3), (3, 5), (4, 4), (6, 4), (7, 7), (14, 14)])
def test_rows_are_permutations(hw):
    h, w = hw
    p = patch_orderings(h, w)
    assert p.shape == (9, h * w)
    ref = torch.arange(h * w)
    for row in p:
        assert torch.equal(row.sort().values, ref)
    # spiral stays contiguous on any grid
    if h * w > 1:
        r, c = p[8] // w, p[8] % w
        assert ((r.diff().abs() + c.diff().abs()) == 1).all()
    # spiral ends at the top-right corner
    assert p[8, -1].item() == w - 1


def test_non_square_3x5():
    p = patch_orderings(3, 5)
    assert p[0].tolist() == list(range(15))
    assert p[1].tolist() == [0, 5, 10, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14]
    assert p[2, :4].tolist() == [4, 9, 14, 3]
    assert p[3, :6].tolist() == [4, 3, 2, 1, 0, 9]
    assert p[4, :4].tolist() == [14, 9, 4, 13]
    assert p[6, :4].tolist() == [10, 5, 0, 11]
    assert p[7, :6].tolist() == [10, 11, 12, 13, 14, 5]
    # forward clockwise spiral from the top-right going down: 4,9,14,13,12,11,10,5,0,1,2,3,8,7,6
    assert p[8].tolist() == [6, 7, 8, 3, 2, 1, 0, 5, 10, 11, 12, 13, 14, 9, 4]


def test_inverse_round_trip():
    p = patch_orderings(3, 5)
    x = torch.randn(15, 2)
    for perm in p:
        inv = inverse_ordering(perm)
        assert torch.equal(x[perm][inv], x)
        assert torch.equal(perm[inv], torch.arange(15))
    # batched over the last dim
    inv_all = inverse_ordering(p)
    assert inv_all.shape == p.shape
    assert torch.equal(torch.gather(p, 1, inv_all), torch.arange(15).expand(9, 15))
