"""Localization losses against hand-worked numbers and a literal per-image loop of the reference code."""

from __future__ import annotations

import math

import pytest
import torch

from mgkit.errors import UsageError
from mgkit.losses import LOSS_POSTPROCESS, LOSSES, localization_loss, per_image_loss
from mgkit.masks import box_area, box_masks, dilate_boxes, has_box

H = W = 4
TL = torch.zeros(H, W)
TL[:2, :2] = 1  # 2x2 box in the top-left corner


def _postprocess(raw: torch.Tensor, name: str) -> torch.Tensor:
    """What the attribution module does before the loss (reference apply_post_processing)."""
    clamp, norm = LOSS_POSTPROCESS[name]
    x = raw.clamp(min=0) if clamp else raw
    if norm:
        mx = x.abs().amax(dim=(-2, -1), keepdim=True)
        x = torch.where(mx == 0, x, x / torch.where(mx == 0, torch.ones_like(mx), mx))
    return x


def _reference_loss(name: str, attr: torch.Tensor, bbs: list, area: float, alpha: float) -> torch.Tensor:
    """One image, written like the reference losses.py (paint boxes, index with torch.where)."""
    mask = torch.zeros_like(attr, dtype=torch.long)
    for xmin, ymin, xmax, ymax in bbs:
        mask[ymin:ymax, xmin:xmax] = 1
    if name in ("energy", "energy-size"):
        pos = attr.clamp(min=0)
        num = pos[torch.where(mask == 1)].sum()
        den = pos.sum()
        if name == "energy":
            return 1 - num if den < 1e-7 else 1 - num / den
        if area == 0:
            return torch.ones((), dtype=attr.dtype)  # documented guard: the study would divide by 0
        return 1 - num / area**alpha if den < 1e-7 else 1 - (num / den) / area**alpha
    if name == "l1":
        return torch.nn.L1Loss(reduction="mean")(attr, mask.to(attr.dtype))
    if name == "ppce":
        inside = attr[torch.where(mask == 1)]
        if inside.numel() == 0:
            return torch.zeros((), dtype=attr.dtype)  # documented: the reference would give NaN
        return torch.nn.BCELoss(reduction="mean")(inside, torch.ones_like(inside))
    assert name == "rrr"
    return torch.square(attr[torch.where(mask == 0)]).sum()


def _rand_boxes(gen: torch.Generator, b: int, m: int, h: int, w: int, k: int) -> torch.Tensor:
    x = torch.randint(0, w, (b, m, 2), generator=gen).sort(-1).values
    y = torch.randint(0, h, (b, m, 2), generator=gen).sort(-1).values
    x[..., 1] += 1
    y[..., 1] += 1
    cls = torch.randint(0, k, (b, m), generator=gen)
    boxes = torch.stack([cls, x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1).float()
    boxes[torch.rand(b, m, generator=gen) < 0.25, 0] = -1
    return boxes


# ------------------------------------------------------------------ hand-worked 4x4 examples


def _hand_map() -> torch.Tensor:
    return torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, -3, 0], [0, 0, 0, 1]])


def test_energy_hand():
    # positive energy: 1 + 2 + 1 = 4, inside the 2x2 box: 1 + 2 = 3 -> EPG 0.75, loss 0.25
    got = per_image_loss("energy", _hand_map()[None], TL[None])
    assert got.tolist() == pytest.approx([0.25])


def test_energy_guard_hand():
    # no positive energy (den 0 < 1e-7): reference returns 1 - num = 1 - 0
    got = per_image_loss("energy", -_hand_map().abs()[None], TL[None])
    assert got.tolist() == [1.0]


def test_energy_size_hand():
    # EPG 0.75 as above, box area 4, alpha 0.5 -> 1 - 0.75 / 2 = 0.625
    got = per_image_loss("energy-size", _hand_map()[None], TL[None], areas=torch.tensor([4.0]), size_alpha=0.5)
    assert got.tolist() == pytest.approx([0.625])
    # alpha 1 -> 1 - 0.75 / 4 = 0.8125
    got = per_image_loss("energy-size", _hand_map()[None], TL[None], areas=torch.tensor([4.0]), size_alpha=1.0)
    assert got.tolist() == pytest.approx([0.8125])


def test_l1_hand():
    # normalised positive map (clamp, divide by max 2):
    # [[.5, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, .5]]
    # |M - A|: in box |1-.5| + |1-0| + |1-0| + |1-1| = 2.5, outside |0-.5| = .5 -> 3 / 16 = 0.1875
    a = _postprocess(_hand_map()[None], "l1")
    assert a[0, 1, 1] == 1.0 and a[0, 0, 0] == 0.5
    assert per_image_loss("l1", a, TL[None]).tolist() == pytest.approx([0.1875])


def test_ppce_hand():
    # in-box values .5, 0, 0, 1 -> BCE to 1: -log(.5), 100 (log clamped at -100), 100, 0
    # mean = (0.693147 + 200) / 4 = 50.173287
    a = _postprocess(_hand_map()[None], "ppce")
    got = per_image_loss("ppce", a, TL[None]).item()
    assert got == pytest.approx((math.log(2) + 200) / 4, rel=1e-6)


def test_rrr_hand():
    # normalised by max|A| = 3: outside the box the values are -1 and 1/3 -> 1 + 1/9 = 1.111...
    a = _postprocess(_hand_map()[None], "rrr")
    assert per_image_loss("rrr", a, TL[None]).item() == pytest.approx(1 + 1 / 9, rel=1e-6)


# ------------------------------------------------------------------ vs literal loop


@pytest.mark.parametrize("name", LOSSES)
def test_matches_reference_loop(name):
    gen = torch.Generator().manual_seed(hash(name) % 1000)
    b, m, h, w, k = 7, 5, 12, 10, 3
    boxes = _rand_boxes(gen, b, m, h, w, k)
    targets = torch.randint(0, k, (b,), generator=gen)
    raw = torch.randn(b, h, w, generator=gen, dtype=torch.float64)
    raw[0] = -raw[0].abs()  # a dead map: exercises the den < 1e-7 guard
    annotated = torch.rand(b, generator=gen) < 0.7
    annotated[:2] = True
    alpha = 0.5
    for p in (0.0, 0.25):
        dil = dilate_boxes(boxes, p, (h, w))
        masks = box_masks(dil, targets, (h, w))
        areas = box_area(boxes, targets)  # Energy*: area of the undilated boxes
        weight = annotated & has_box(boxes, targets)

        x = raw.clone().requires_grad_(True)
        maps = _postprocess(x, name)
        got = localization_loss(name, maps, masks, weight, size_alpha=alpha, areas=areas)
        (g_got,) = torch.autograd.grad(got, x)

        x2 = raw.clone().requires_grad_(True)
        maps2 = _postprocess(x2, name)
        ref = torch.zeros((), dtype=torch.float64)
        for i in range(b):
            if not weight[i]:
                continue  # reference: images without annotation are skipped
            bbs = [[int(v) for v in r[1:]] for r in dil[i].tolist() if int(r[0]) == int(targets[i])]
            ref = ref + _reference_loss(name, maps2[i], bbs, float(areas[i]), alpha)
        (g_ref,) = torch.autograd.grad(ref, x2)

        assert got.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
        assert torch.allclose(g_got, g_ref, rtol=1e-9, atol=1e-12)
        per = per_image_loss(name, maps.detach(), masks, size_alpha=alpha, areas=areas)
        mean = localization_loss(name, maps.detach(), masks, weight, reduction="mean", size_alpha=alpha, areas=areas)
        assert mean.item() == pytest.approx(per[weight].mean().item(), rel=1e-12)


# ------------------------------------------------------------------ no NaN / inf


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("case", ["zero_map", "empty_mask", "full_mask"])
def test_no_nan_or_inf(name, case):
    gen = torch.Generator().manual_seed(3)
    b = 3
    raw = torch.zeros(b, H, W) if case == "zero_map" else torch.randn(b, H, W, generator=gen)
    mask = {"zero_map": TL, "empty_mask": torch.zeros(H, W), "full_mask": torch.ones(H, W)}[case]
    masks = mask.expand(b, H, W)
    areas = masks.sum(dim=(-2, -1))
    x = raw.clone().requires_grad_(True)
    maps = _postprocess(x, name)
    for reduction in ("sum", "mean"):
        for weight in (torch.ones(b, dtype=torch.bool), torch.zeros(b)):
            loss = localization_loss(name, maps, masks, weight, reduction=reduction, areas=areas)
            (g,) = torch.autograd.grad(loss, x, retain_graph=True)
            assert torch.isfinite(loss), (name, case, reduction)
            assert torch.isfinite(g).all(), (name, case, reduction)
            if not weight.any():
                assert loss.item() == 0.0 and not g.any()


def test_edge_values():
    zero = torch.zeros(1, H, W)
    # empty mask: energy has no inside energy (loss 1), ppce contributes 0, energy-size is the constant 1
    empty = torch.zeros(1, H, W)
    assert per_image_loss("ppce", torch.rand(1, H, W), empty).tolist() == [0.0]
    assert per_image_loss("energy", torch.rand(1, H, W), empty).tolist() == [1.0]
    assert per_image_loss("energy-size", torch.rand(1, H, W), empty, areas=torch.zeros(1)).tolist() == [1.0]
    # full mask: EPG 1 -> energy 0; rrr has no outside pixel
    full = torch.ones(1, H, W)
    assert per_image_loss("energy", torch.rand(1, H, W) + 0.1, full).item() == pytest.approx(0.0, abs=1e-6)
    assert per_image_loss("rrr", torch.randn(1, H, W), full).tolist() == [0.0]
    # all-zero map: l1 = fraction of in-mask pixels, energy guard = 1
    assert per_image_loss("l1", zero, TL[None]).tolist() == [0.25]
    assert per_image_loss("energy", zero, TL[None]).tolist() == [1.0]


def test_energy_guard_gradient_follows_reference():
    # den < 1e-7 returns 1 - num, with the gradient of that expression: zero for maps with no positive
    # pixel (torch's clamp passes no gradient at exactly 0), but -1 on in-mask pixels of a tiny positive
    # map (total 1.6e-8 here), exactly as the reference.
    for raw in (torch.zeros(1, H, W), -torch.rand(1, H, W), torch.full((1, H, W), 1e-9)):
        x = raw.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(per_image_loss("energy", x, TL[None]).sum(), x)
        x2 = raw[0].clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(1 - x2.clamp(min=0)[TL == 1].sum(), x2)
        assert torch.equal(g[0], g_ref)
        assert torch.equal(g[0], -TL if raw.max() > 0 else torch.zeros(H, W))


def test_ppce_out_of_range_and_gradient():
    # an upsampled map may overshoot 1 by an ulp: no error, value clamped, gradient passes straight
    a = torch.full((1, H, W), 1.0 + 1e-6, requires_grad=True)
    loss = per_image_loss("ppce", a, TL[None])
    assert loss.item() == 0.0
    # in range the gradient is BCELoss's: d/dx mean(-log x) over the 4 in-mask pixels = -1 / (4x)
    b = torch.full((1, H, W), 0.5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(per_image_loss("ppce", b, TL[None]).sum(), b)
    assert torch.allclose(g[0], -TL.double() / (4 * 0.5))


def test_energy_gradcheck():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    masks = torch.zeros(3, 5, 6, dtype=torch.float64)
    masks[0, 1:4, 2:5] = 1
    masks[1, :, :3] = 1
    masks[2] = 1
    assert torch.autograd.gradcheck(lambda a: per_image_loss("energy", a, masks), (x,))
    areas = masks.sum(dim=(-2, -1))
    assert torch.autograd.gradcheck(lambda a: per_image_loss("energy-size", a, masks, areas=areas), (x,))


def test_reductions_and_weights():
    per = torch.tensor([0.25, 1.0, 0.5])
    maps = torch.zeros(3, H, W)
    masks = TL.expand(3, H, W)
    # build maps whose energy losses are exactly `per`: EPG = 0.75, 0 (dead -> 1 - 0), 0.5
    maps[0] = _hand_map()
    maps[1] = -1.0
    maps[2, 0, 0], maps[2, 3, 3] = 1.0, 1.0
    got = per_image_loss("energy", maps, masks)
    assert got.tolist() == pytest.approx(per.tolist())
    w = torch.tensor([1.0, 0.0, 1.0])
    assert localization_loss("energy", maps, masks, w).item() == pytest.approx(0.75)
    assert localization_loss("energy", maps, masks, w, reduction="mean").item() == pytest.approx(0.375)
    assert localization_loss("energy", maps, masks, torch.zeros(3), reduction="mean").item() == 0.0


def test_postprocess_table_and_errors():
    assert set(LOSS_POSTPROCESS) == set(LOSSES)
    assert LOSS_POSTPROCESS["energy"] == (False, False)
    assert LOSS_POSTPROCESS["l1"] == LOSS_POSTPROCESS["ppce"] == (True, True)
    assert LOSS_POSTPROCESS["rrr"] == (False, True)
    maps, masks, w = torch.zeros(2, H, W), torch.zeros(2, H, W), torch.ones(2)
    with pytest.raises(UsageError):
        localization_loss("gradia", maps, masks, w)
    with pytest.raises(UsageError):
        localization_loss("energy-size", maps, masks, w)  # areas missing
    with pytest.raises(UsageError):
        localization_loss("energy", maps, masks, w, reduction="avg")
    with pytest.raises(UsageError):
        localization_loss("energy", maps, masks[:1], w)
    with pytest.raises(UsageError):
        localization_loss("energy", maps, masks, torch.ones(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(5)
    boxes = _rand_boxes(gen, 6, 4, 32, 32, 3)
    targets = torch.randint(0, 3, (6,), generator=gen)
    raw = torch.randn(6, 32, 32, generator=gen)
    dil = dilate_boxes(boxes, 0.25, (32, 32))
    masks = box_masks(dil, targets, (32, 32))
    masks_gpu = box_masks(dilate_boxes(boxes.cuda(), 0.25, (32, 32)), targets.cuda(), (32, 32))
    assert masks_gpu.device.type == "cuda" and torch.equal(masks_gpu.cpu(), masks)
    weight, areas = has_box(boxes, targets), box_area(boxes, targets)
    for name in LOSSES:
        cpu = localization_loss(name, _postprocess(raw, name), masks, weight, areas=areas)
        gpu = localization_loss(name, _postprocess(raw.cuda(), name), masks_gpu, weight.cuda(), areas=areas.cuda())
        assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5), name
