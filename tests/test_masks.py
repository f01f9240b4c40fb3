"""Box masks, dilation and areas against hand-worked examples and brute-force per-box loops."""

from __future__ import annotations

import pytest
import torch

from mgkit.errors import UsageError
from mgkit.masks import box_area, box_masks, dilate_boxes, has_box

PAD = [-1.0, 0.0, 0.0, 0.0, 0.0]


def _paint(boxes_b: list[list[float]], target: int, h: int, w: int) -> torch.Tensor:
    """Reference: mask[y0:y1, x0:x1] = 1 for every box of the target class, one box at a time."""
    mask = torch.zeros(h, w)
    for cls, x0, y0, x1, y1 in boxes_b:
        if int(cls) == target:
            mask[int(y0):int(y1), int(x0):int(x1)] = 1
    return mask


def _enlarge(box: list[float], p: float, h: int, w: int) -> list[float]:
    """Reference utils.enlarge_bb on one box (Python ints), plus the documented never-shrink rule."""
    cls, x0, y0, x1, y1 = (int(v) for v in box)
    if cls < 0:
        return [float(v) for v in box]
    wm, hm = int(p * (x1 - x0)), int(p * (y1 - y0))
    nx0, ny0 = max(0, x0 - wm), max(0, y0 - hm)
    nx1, ny1 = min(w - 1, x1 + wm), min(h - 1, y1 + hm)
    # never-shrink: only differs from the reference when a coordinate lies outside [0, W-1]
    nx0, ny0, nx1, ny1 = min(nx0, x0), min(ny0, y0), max(nx1, x1), max(ny1, y1)
    return [float(cls), float(nx0), float(ny0), float(nx1), float(ny1)]


def _random_boxes(gen: torch.Generator, b: int, m: int, h: int, w: int, k: int) -> torch.Tensor:
    x = torch.randint(0, w + 1, (b, m, 2), generator=gen).sort(-1).values
    y = torch.randint(0, h + 1, (b, m, 2), generator=gen).sort(-1).values
    cls = torch.randint(0, k, (b, m), generator=gen)
    boxes = torch.stack([cls, x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1).float()
    pad = torch.rand(b, m, generator=gen) < 0.3
    boxes[pad] = torch.tensor(PAD)
    return boxes


def test_box_masks_hand_example():
    # 4x4 grid, image 0 target class 2: box A (x 0..2, y 0..2) and box B (x 1..3, y 1..4) overlap;
    # class-5 box and padding must be ignored.
    boxes = torch.tensor([[[2, 0, 0, 2, 2], [2, 1, 1, 3, 4], [5, 3, 0, 4, 4], PAD]], dtype=torch.float32)
    got = box_masks(boxes, torch.tensor([2]), (4, 4))
    expected = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
        ],
        dtype=torch.float32,
    )
    assert got.dtype == torch.float32 and got.shape == (1, 4, 4)
    assert torch.equal(got[0], expected)
    assert torch.equal(box_masks(boxes, torch.tensor([2]), (4, 4), outside=True)[0], 1 - expected)
    # summed area: 2*2 + 2*3 = 10 (overlap counted twice); union is 8 pixels
    assert box_area(boxes, torch.tensor([2])).tolist() == [10.0]
    assert box_area(boxes, torch.tensor([5])).tolist() == [4.0]
    assert box_area(boxes, torch.tensor([7])).tolist() == [0.0]


def test_box_masks_matches_painting_loop():
    gen = torch.Generator().manual_seed(0)
    h, w, b, m = 13, 17, 6, 7
    boxes = _random_boxes(gen, b, m, h, w, k=3)
    targets = torch.randint(0, 3, (b,), generator=gen)
    for p in (0.0, 0.1, 0.25, 0.5):
        dil = dilate_boxes(boxes, p, (h, w))
        got = box_masks(dil, targets, (h, w))
        out = box_masks(dil, targets, (h, w), outside=True)
        for i in range(b):
            ref = _paint(dil[i].tolist(), int(targets[i]), h, w)
            assert torch.equal(got[i], ref), (p, i)
            assert torch.equal(out[i], 1 - ref)


def test_dilate_hand_example():
    # 224 grid: box x 10..50 (w 40), y 100..130 (h 30); p=0.25 -> margins int(10.0)=10, int(7.5)=7
    boxes = torch.tensor([[[3, 10, 100, 50, 130], [1, 0, 210, 20, 223], PAD]], dtype=torch.float32)
    got = dilate_boxes(boxes, 0.25, (224, 224))
    assert got[0, 0].tolist() == [3, 0, 93, 60, 137]
    # second box: x margin 5 -> x0 clipped at 0; y margin int(3.25)=3 -> y1 clipped at 223
    assert got[0, 1].tolist() == [1, 0, 207, 25, 223]
    assert got[0, 2].tolist() == PAD  # padding untouched
    assert got.dtype == boxes.dtype


def test_dilate_matches_reference_loop():
    gen = torch.Generator().manual_seed(1)
    h, w = 30, 40
    boxes = _random_boxes(gen, 5, 6, h, w, k=4)
    for p in (0.0, 0.1, 0.25, 0.29, 0.5, 1.0):
        got = dilate_boxes(boxes, p, (h, w))
        for i in range(5):
            for j in range(6):
                assert got[i, j].tolist() == _enlarge(boxes[i, j].tolist(), p, h, w), (p, i, j)


def test_dilate_never_shrinks_border_box():
    # a full-width half-open box (x1 == W) keeps its last column; the reference would clip it to W-1
    boxes = torch.tensor([[[0, 0, 0, 8, 8]]], dtype=torch.float32)
    got = dilate_boxes(boxes, 0.1, (8, 8))
    assert got[0, 0].tolist() == [0, 0, 0, 8, 8]
    assert torch.equal(dilate_boxes(boxes, 0.0, (8, 8)), boxes)


def test_box_area_and_has_box_match_loop():
    gen = torch.Generator().manual_seed(2)
    boxes = _random_boxes(gen, 8, 5, 20, 20, k=3)
    targets = torch.randint(0, 3, (8,), generator=gen)
    areas = box_area(boxes, targets)
    present = has_box(boxes, targets)
    for i in range(8):
        rows = [r for r in boxes[i].tolist() if int(r[0]) == int(targets[i])]
        assert areas[i].item() == sum((r[3] - r[1]) * (r[4] - r[2]) for r in rows)
        assert present[i].item() == any(r[3] > r[1] and r[4] > r[2] for r in rows)


def test_empty_and_no_boxes():
    boxes = torch.tensor([[PAD, [1, 2, 2, 2, 4]]], dtype=torch.float32)  # only a zero-width box of class 1
    assert box_masks(boxes, torch.tensor([1]), (4, 4)).sum() == 0
    assert not has_box(boxes, torch.tensor([1])).item()
    none = torch.zeros(2, 0, 5)
    assert box_masks(none, torch.tensor([0, 1]), (3, 3)).shape == (2, 3, 3)
    assert box_area(none, torch.tensor([0, 1])).tolist() == [0.0, 0.0]


def test_errors_are_usage_errors():
    with pytest.raises(UsageError):
        box_masks(torch.zeros(2, 3, 4), torch.tensor([0, 1]), (4, 4))
    with pytest.raises(UsageError):
        box_masks(torch.zeros(2, 3, 5), torch.tensor([0]), (4, 4))
    with pytest.raises(UsageError):
        dilate_boxes(torch.zeros(1, 1, 5), -0.1, (4, 4))
