"""Adjusted Rand Index on hard label maps, OCLF ``ARIMetric`` semantics (docs/metrics.md#fg-ari-and-ari).

With ``n`` the contingency table of (GT cluster, predicted slot), ``a``/``b`` its row/column
sums and ``n`` its total, OCLF computes per image (float64)::

    I = sum n_ij (n_ij - 1),  A = sum a (a - 1),  B = sum b (b - 1),  E = A * B / max(n(n-1), 1)
    ARI = (I - E) / (0.5 * (A + B) - E),   and ARI = 1.0 where the denominator is 0.

Pixels outside the evaluated set (GT background for FG-ARI, ignored pixels always) add nothing
to the table, exactly as OCLF's all-zero one-hot rows.
"""
from __future__ import annotations

import torch

from metrics.masks import contingency_table

__all__ = ["adjusted_rand_index", "ari_from_contingency"]


def ari_from_contingency(cont: torch.Tensor, foreground: bool = True) -> torch.Tensor:
    """ARI per image from a [B, M, K] contingency table whose row 0 is GT background."""
    cont = cont.to(torch.float64)
    if foreground:
        cont = cont[:, 1:, :]
    n = cont.sum(dim=(1, 2))
    idx = (cont * (cont - 1)).sum(dim=(1, 2))
    a = cont.sum(dim=2)  # GT cluster sizes
    b = cont.sum(dim=1)  # predicted cluster sizes
    sa = (a * (a - 1)).sum(dim=1)
    sb = (b * (b - 1)).sum(dim=1)
    nn = (n * (n - 1)).clamp_min(1.0)

    # The OCLF formula multiplied through by 2 * nn: the denominator becomes a sum of two
    # non-negative terms, so there is no cancellation when it is small but non-zero.
    numer = 2.0 * (idx * nn - sa * sb)
    denom = sa * (nn - sb) + sb * (nn - sa)
    # The denominator is zero exactly when both clusterings are all-singletons (sa = sb = 0,
    # which includes n < 2) or both are one cluster (sa = sb = nn). Those integer identities are
    # exact in float64, whereas `denom == 0` would depend on rounding once sa * sb > 2**53
    # (e.g. one 320x320 object in one slot), so the 1.0 convention is applied on them.
    degenerate = ((sa == 0) & (sb == 0)) | ((sa == nn) & (sb == nn))
    ari = numer / torch.where(degenerate, torch.ones_like(denom), denom)
    return torch.where(degenerate, torch.ones_like(ari), ari)


def adjusted_rand_index(
    pred_labels: torch.Tensor,
    true_labels: torch.Tensor,
    ignore: torch.Tensor | None = None,
    foreground: bool = True,
) -> torch.Tensor:
    """Per-image (FG-)ARI, float64 [B], not multiplied by 100.

    ``pred_labels`` [B, H, W] slot ids, ``true_labels`` [B, H, W] with 0 = background,
    ``ignore`` [B, H, W] bool pixels dropped from both. ``foreground=True`` (FG-ARI) also drops
    GT-background pixels; ``foreground=False`` keeps background as its own GT cluster. Every
    image gets a value: an image with no evaluated pixel scores 1.0 (OCLF's convention).
    """
    return ari_from_contingency(contingency_table(pred_labels, true_labels, ignore), foreground)
