"""Localization losses L_loc (paper Eqs. 2-6 with the reference code's semantics), vectorised over a batch.

Every loss takes attribution maps ``[B, H, W]`` that the attribution module has already post-processed
as ``LOSS_POSTPROCESS[name]`` says, and binary masks ``[B, H, W]`` (1 = where the evidence should be).
Per image (one sampled class per image, paper §3.5):

* ``energy``       1 - EPG, EPG = sum(M·A+) / sum(A+) on raw maps (A+ = clamp(A, 0)); when
                   sum(A+) < 1e-7 the reference returns 1 - sum(M·A+) instead (value ~1). Its
                   gradient is that expression's: 0 for a map with no positive pixel, -1 on in-mask
                   pixels of a tiny positive map (kept, to match the reference exactly).
* ``l1``           mean over all H·W pixels of |M - Â+|                     (GRADIA / RES)
* ``ppce``         mean over in-mask pixels of BCE(Â+, 1) = -max(log Â+, -100) (HAICS)
* ``rrr``          sum over out-of-mask pixels of Â²                          (RRR*)
* ``energy-size``  1 - EPG / area**alpha, with the energy guard (1 - sum(M·A+) / area**alpha); the
                   reproducibility study's Energy* (paper.md §12), area = summed box area in pixels.

The batch total is summed over contributing images (reference) or averaged (``reduction="mean"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mgkit.errors import UsageError
from mgkit.registry import LOSSES  # the names live in the registry, the formulas here

__all__ = ["LOSSES", "LOSS_POSTPROCESS", "localization_loss", "per_image_loss"]

# name -> (positive_clamp, per-image max normalisation), applied by the attribution module BEFORE
# upsampling, as the reference attributor does (flags only_positive / binarize of its loss classes).
LOSS_POSTPROCESS: dict[str, tuple[bool, bool]] = {
    "energy": (False, False),
    "l1": (True, True),
    "ppce": (True, True),
    "rrr": (False, True),
    "energy-size": (False, False),
}

_EPS_DEN = 1e-7  # the reference's "no positive energy" threshold


def _energy_parts(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """(energy inside the mask, total energy) per image, on the positive part of raw maps."""
    pos = maps.clamp(min=0)
    return (pos * masks).sum(dim=(-2, -1)), pos.sum(dim=(-2, -1))


def _guarded_epg(num: Tensor, den: Tensor) -> Tensor:
    """num/den, or num itself when den < 1e-7 (the reference returns 1 - num there).

    The dead denominator is swapped for 1 before dividing so that neither branch of the where can
    produce inf/NaN in the backward pass.
    """
    dead = den < _EPS_DEN
    return torch.where(dead, num, num / torch.where(dead, torch.ones_like(den), den))


def per_image_loss(
    name: str,
    maps: Tensor,
    masks: Tensor,
    *,
    size_alpha: float = 0.5,
    areas: Tensor | None = None,
) -> Tensor:
    """Unreduced localization loss ``[B]`` for maps ``[B, H, W]`` and masks ``[B, H, W]``.

    An empty mask never gives NaN: ppce contributes 0 there (the reference's BCELoss on zero pixels
    would be NaN) and energy-size with area 0 gives the constant 1.
    """
    if name not in LOSSES:
        raise UsageError(f"unknown localization loss '{name}'; choose one of {', '.join(LOSSES)}.")
    if maps.dim() != 3 or masks.shape != maps.shape:
        raise UsageError(
            f"maps and masks must both have shape [B, H, W]; got {tuple(maps.shape)} and {tuple(masks.shape)}."
        )
    if not maps.is_floating_point():
        raise UsageError(f"attribution maps must be a float tensor, got {maps.dtype}.")
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()  # sums over 50k pixels overflow or lose most digits in half precision
    m = masks.to(device=maps.device, dtype=maps.dtype)

    if name == "energy":
        num, den = _energy_parts(maps, m)
        return 1.0 - _guarded_epg(num, den)

    if name == "energy-size":
        if areas is None:
            raise UsageError("the energy-size loss needs the summed box area of each image (areas=...).")
        if areas.shape != maps.shape[:1]:
            raise UsageError(f"areas must have shape [B] = [{maps.shape[0]}], got {tuple(areas.shape)}.")
        num, den = _energy_parts(maps, m)
        scale = areas.to(device=maps.device, dtype=maps.dtype).clamp(min=0) ** size_alpha
        empty = scale <= 0  # no box: EPG is 0/0, so the loss is the constant 1
        ratio = _guarded_epg(num, den) / torch.where(empty, torch.ones_like(scale), scale)
        return 1.0 - torch.where(empty, torch.zeros_like(ratio), ratio)

    if name == "l1":
        return (m - maps).abs().mean(dim=(-2, -1))

    if name == "ppce":
        # F.binary_cross_entropy has exactly torch.nn.BCELoss's semantics: log clamped at -100 and a
        # finite gradient at 0. Values are clamped into [0, 1] (an upsampled map can overshoot 1 by an
        # ulp, which BCE rejects) with a straight-through gradient, so valid maps keep the reference's
        # value and gradient bit for bit.
        x = maps + (maps.clamp(0.0, 1.0) - maps).detach()
        bce = F.binary_cross_entropy(x, torch.ones_like(maps), reduction="none")
        n_in = m.sum(dim=(-2, -1))
        return (bce * m).sum(dim=(-2, -1)) / n_in.clamp(min=1.0)

    # rrr: a sum (not a mean) over pixels, as the reference.
    return (maps.square() * (1.0 - m)).sum(dim=(-2, -1))


def localization_loss(
    name: str,
    maps: Tensor,
    masks: Tensor,
    weight: Tensor,
    *,
    reduction: str = "sum",
    size_alpha: float = 0.5,
    areas: Tensor | None = None,
) -> Tensor:
    """Batch localization loss (a scalar) from per-image losses weighted by ``weight [B]``.

    ``weight`` (bool or float) says which images contribute: the reference skips images without box
    annotations, so pass ``annotated & mgkit.masks.has_box(boxes, targets)``. Images with weight 0 add
    nothing (not even a NaN). Non-negative fractional weights act as weights.

    ``reduction="sum"`` is the reference (summed over contributing images, so λ scales with the batch);
    ``"mean"`` divides by the summed weight and gives 0 when no image contributes.
    """
    if reduction not in ("sum", "mean"):
        raise UsageError(f"reduction must be 'sum' or 'mean', got '{reduction}'.")
    per = per_image_loss(name, maps, masks, size_alpha=size_alpha, areas=areas)
    if weight.shape != per.shape:
        raise UsageError(f"weight must have shape [B] = [{per.shape[0]}], got {tuple(weight.shape)}.")
    w = weight.to(device=per.device, dtype=per.dtype)
    total = torch.where(w != 0, per * w, torch.zeros_like(per)).sum()
    if reduction == "sum":
        return total
    wsum = w.sum()
    # No host sync: when no image contributes, total is exactly 0 and so is 0 / 1.
    return total / torch.where(wsum > 0, wsum, torch.ones_like(wsum))
