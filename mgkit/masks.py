"""Box masks on the pixel grid: dilation, union-of-boxes masks and box areas, vectorised over a batch.

Conventions (shared with the data and loss modules):

* ``boxes`` is a float tensor ``[B, M, 5]`` of rows ``(cls, x0, y0, x1, y1)`` on the H×W grid, integer
  valued, with half-open ranges: a box covers ``mask[y0:y1, x0:x1]`` as in the reference code.
* Rows with ``cls == -1`` (any negative class) are padding and never match a target.
* ``targets`` is a long tensor ``[B]``: the one class per image whose boxes form the mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mgkit.errors import UsageError

__all__ = ["dilate_boxes", "box_masks", "box_area", "has_box"]


def _check_boxes(boxes: Tensor, targets: Tensor | None = None) -> None:
    if boxes.dim() != 3 or boxes.shape[-1] != 5:
        raise UsageError(f"boxes must have shape [B, M, 5] (cls, x0, y0, x1, y1), got {tuple(boxes.shape)}.")
    if targets is not None and (targets.dim() != 1 or targets.shape[0] != boxes.shape[0]):
        raise UsageError(
            f"targets must have shape [B] = [{boxes.shape[0]}] to match boxes, got {tuple(targets.shape)}."
        )


def _as_float(boxes: Tensor) -> Tensor:
    # Half precision cannot hold every pixel coordinate of a 224 grid exactly; fp32 holds up to 2**24.
    return boxes if boxes.dtype == torch.float64 else boxes.float()


def _target_rows(boxes: Tensor, targets: Tensor) -> Tensor:
    """Bool [B, M]: rows that are real boxes of image b's target class."""
    cls = boxes[..., 0]
    return (cls >= 0) & (cls == targets.to(boxes.device, cls.dtype)[:, None])


def dilate_boxes(boxes: Tensor, p: float, size: tuple[int, int]) -> Tensor:
    """Move every side of every box outward, as the reference ``utils.enlarge_bb``.

    ``p`` is a fraction (0.1 for the paper's "10 %"). Each side moves by ``int(p * width)`` in x and
    ``int(p * height)`` in y, so width and height each grow by about 2p, then coordinates are clipped to
    ``[0, W-1]`` / ``[0, H-1]`` (the reference's ``[0, 223]``). Padding rows are returned unchanged.

    One deliberate extension: dilation never shrinks a box. The reference only sees coordinates in
    ``[0, W-1]``, where this is a no-op; a half-open box reaching the border (``x1 == W``) would otherwise
    lose its last column to the ``W-1`` clip.
    """
    _check_boxes(boxes)
    if p < 0:
        raise UsageError(f"box dilation must be a non-negative fraction (0.1 = 10 %), got {p}.")
    h, w = size
    # float64 so that int(p * width) is the same number Python computes in the reference.
    b = boxes.to(torch.float64)
    x0, y0, x1, y1 = b[..., 1], b[..., 2], b[..., 3], b[..., 4]
    mw = torch.trunc(p * (x1 - x0))
    mh = torch.trunc(p * (y1 - y0))
    nx0 = torch.minimum(x0, (x0 - mw).clamp(min=0))
    ny0 = torch.minimum(y0, (y0 - mh).clamp(min=0))
    nx1 = torch.maximum(x1, (x1 + mw).clamp(max=w - 1))
    ny1 = torch.maximum(y1, (y1 + mh).clamp(max=h - 1))
    out = torch.stack([b[..., 0], nx0, ny0, nx1, ny1], dim=-1)
    pad = (b[..., 0] < 0)[..., None]
    return torch.where(pad, b, out).to(boxes.dtype)


def box_masks(boxes: Tensor, targets: Tensor, size: tuple[int, int], *, outside: bool = False) -> Tensor:
    """Float mask ``[B, H, W]``: the union of image b's boxes of class ``targets[b]`` (1 inside).

    ``outside=True`` returns ``1 - union`` (Waterbirds 'place' task: the evidence lies outside the bird).
    An image with no box of its target class gets an all-zero mask (all-one with ``outside``).
    """
    _check_boxes(boxes, targets)
    h, w = size
    boxes = _as_float(boxes)
    dev = boxes.device
    sel = _target_rows(boxes, targets)  # [B, M]
    ys = torch.arange(h, device=dev, dtype=boxes.dtype)
    xs = torch.arange(w, device=dev, dtype=boxes.dtype)
    # Separable indicator: pixel (y, x) is in box m iff its row and its column are. Summing the outer
    # products over m with one bmm gives the union count without an [B, M, H, W] tensor.
    in_y = (ys >= boxes[..., 2:3]) & (ys < boxes[..., 4:5]) & sel[..., None]  # [B, M, H]
    in_x = (xs >= boxes[..., 1:2]) & (xs < boxes[..., 3:4])  # [B, M, W]
    count = torch.bmm(in_y.transpose(1, 2).float(), in_x.float())  # [B, H, W]; small ints, exact in fp32
    mask = (count > 0).float()
    return 1.0 - mask if outside else mask


def box_area(boxes: Tensor, targets: Tensor) -> Tensor:
    """Summed pixel area ``[B]`` of image b's boxes of class ``targets[b]``.

    This is the "sum of box areas" of the reproducibility study's Energy* loss (overlaps count twice);
    like the study, compute it on the undilated boxes.
    """
    _check_boxes(boxes, targets)
    boxes = _as_float(boxes)
    wid = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    hei = (boxes[..., 4] - boxes[..., 2]).clamp(min=0)
    return (wid * hei * _target_rows(boxes, targets)).sum(dim=1)


def has_box(boxes: Tensor, targets: Tensor) -> Tensor:
    """Bool ``[B]``: image b has at least one box of class ``targets[b]`` with positive area.

    Use ``annotated & has_box(...)`` as the ``weight`` of ``mgkit.losses.localization_loss``: it decides
    participation from boxes, not from the mask, so it also works for ``outside=True`` masks.
    """
    _check_boxes(boxes, targets)
    pos = (boxes[..., 3] > boxes[..., 1]) & (boxes[..., 4] > boxes[..., 2])
    return (pos & _target_rows(boxes, targets)).any(dim=1)
