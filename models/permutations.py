"""Patch-order permutations used by SPOT's autoregressive decoder (docs/methods/spot.md).

A grid of ``h x w`` patch tokens is indexed row-major: token ``r * w + c`` sits at row ``r``
and column ``c``. An *ordering* is a permutation ``pi`` of ``range(h * w)``: position ``j`` of
the decoded sequence is token ``pi[j]``. The nine orderings (index -> name) are

====  ==============  =========================================================
idx   name            traversal
====  ==============  =========================================================
0     left_top        rows top->bottom, columns left->right (standard raster)
1     top_left        columns left->right, rows top->bottom (column-major)
2     top_right       columns right->left, rows top->bottom
3     right_top       rows top->bottom, columns right->left
4     bottom_right    columns right->left, rows bottom->top
5     right_bottom    rows bottom->top, columns right->left (reverse of 0)
6     bottom_left     columns left->right, rows bottom->top
7     left_bottom     rows bottom->top, columns left->right
8     spiral          clockwise spiral from the top-right corner, going down the
                      right edge first, then *reversed*: it starts at the centre
                      and ends at the top-right corner
====  ==============  =========================================================

On a 4x4 grid the spiral is ``5,9,10,6,2,1,0,4,8,12,13,14,15,11,7,3``; on 14x14 it starts at
token 90 (row 6, column 6) and ends at token 13.
"""
from __future__ import annotations

import torch

__all__ = ["ORDERING_NAMES", "NUM_ORDERINGS", "patch_orderings", "spiral_order", "inverse_ordering"]

ORDERING_NAMES: tuple[str, ...] = (
    "left_top",
    "top_left",
    "top_right",
    "right_top",
    "bottom_right",
    "right_bottom",
    "bottom_left",
    "left_bottom",
    "spiral",
)
NUM_ORDERINGS: int = len(ORDERING_NAMES)


def spiral_order(h: int, w: int) -> list[int]:
    """Reversed clockwise spiral over an ``h x w`` grid, as a list of row-major token indices.

    The forward spiral starts at the top-right corner, runs down the right edge, left along the
    bottom, up the left edge, right along the top, and so on inwards. The returned list is that
    sequence reversed, so it starts at the innermost cell and ends at the top-right corner.
    """
    top, bottom, left, right = 0, h - 1, 0, w - 1
    seq: list[int] = []
    while top <= bottom and left <= right:
        # Down the right column.
        for r in range(top, bottom + 1):
            seq.append(r * w + right)
        right -= 1
        if left > right:
            break
        # Left along the bottom row.
        for c in range(right, left - 1, -1):
            seq.append(bottom * w + c)
        bottom -= 1
        if top > bottom:
            break
        # Up the left column.
        for r in range(bottom, top - 1, -1):
            seq.append(r * w + left)
        left += 1
        if left > right:
            break
        # Right along the top row.
        for c in range(left, right + 1):
            seq.append(top * w + c)
        top += 1
    seq.reverse()
    return seq


def patch_orderings(h: int, w: int) -> torch.Tensor:
    """All nine token orderings of an ``h x w`` grid.

    Args:
        h: number of patch rows (>= 1).
        w: number of patch columns (>= 1).

    Returns:
        LongTensor ``[9, h * w]``; row ``i`` lists the row-major token indices in the order the
        decoder visits them under ordering ``i`` (names in :data:`ORDERING_NAMES`).
    """
    if h < 1 or w < 1:
        raise ValueError(f"grid must be at least 1x1, got {h}x{w}")
    g = torch.arange(h * w, dtype=torch.long).view(h, w)  # g[r, c] = r * w + c
    rows_flipped = g.flip(0)  # rows bottom -> top
    cols_flipped = g.flip(1)  # columns right -> left
    both_flipped = g.flip(0).flip(1)
    orders = [
        g.reshape(-1),  # 0 left_top: row-major
        g.t().reshape(-1),  # 1 top_left: column-major
        cols_flipped.t().reshape(-1),  # 2 top_right: columns R->L, rows T->B
        cols_flipped.reshape(-1),  # 3 right_top: rows T->B, columns R->L
        both_flipped.t().reshape(-1),  # 4 bottom_right: columns R->L, rows B->T
        both_flipped.reshape(-1),  # 5 right_bottom: rows B->T, columns R->L
        rows_flipped.t().reshape(-1),  # 6 bottom_left: columns L->R, rows B->T
        rows_flipped.reshape(-1),  # 7 left_bottom: rows B->T, columns L->R
        torch.tensor(spiral_order(h, w), dtype=torch.long),  # 8 spiral (reversed)
    ]
    return torch.stack(orders, dim=0)


def inverse_ordering(ordering: torch.Tensor) -> torch.Tensor:
    """Inverse permutation(s): ``argsort`` over the last dimension.

    If ``y = x[..., ordering]`` (sequence position ``j`` holds token ``ordering[j]``), then
    ``y[..., inverse_ordering(ordering)] == x``. Works for ``[N]`` or batched ``[..., N]`` input.
    """
    return torch.argsort(ordering, dim=-1)
