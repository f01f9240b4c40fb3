"""The training step on in-memory batches, over loss x attribution x layer: the localization term is
positive, its gradient reaches the parameters before the guided layer, and the loss falls over a few steps."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import perturb_
from mgkit.attribution import attribute
from mgkit.data.loader import Batch, images_to_float
from mgkit.engine import step as step_module
from mgkit.engine.distributed import DistEnv
from mgkit.engine.step import (StepSpec, contributing_pairs, localization_term, sample_targets, target_slots,
                               train_step)
from mgkit.losses import LOSSES
from mgkit.masks import box_masks
from mgkit.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")
K, SIZE = 3, 32
ENV = DistEnv()
# every attribution each family supports for guidance (intgrad: X-DNN only)
CASES = [("resnet18", "ixg"), ("resnet18", "gradcam"), ("bcos-resnet18", "bcos"), ("bcos-resnet18", "ixg"),
         ("bcos-resnet18", "gradcam"), ("xdnn-resnet18", "intgrad"), ("xdnn-resnet18", "ixg")]


def make_batch(b: int = 4, seed: int = 0, size: int = SIZE) -> Batch:
    """b images, each with 1-2 present classes and one box per present class; image 3 is unannotated."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, size, size, 3), generator=gen, dtype=torch.uint8)
    labels = torch.zeros(b, K)
    boxes = torch.full((b, 2, 5), -1.0)
    for i in range(b):
        for slot, c in enumerate([i % K, (i + 1) % K][: 1 + i % 2]):
            labels[i, c] = 1
            x0, y0 = size // 4 + 3 * slot + i, size // 4 + 2 * slot  # away from the corners
            boxes[i, slot] = torch.tensor([c, x0, y0, x0 + 12, y0 + 10])
    annotated = torch.tensor([True] * (b - 1) + [False])
    return Batch(images=images, labels=labels, boxes=boxes, annotated=annotated, index=torch.arange(b))


def spec(loss, attribution="ixg", layer="input", **kw) -> StepSpec:
    args = dict(loss=loss, attribution=attribution, layer=layer, lam=1.0, targets="random", dilate=0.0,
                reduction="sum", size_alpha=0.5, ig_steps=4, outside=False, amp=False, channels_last=False)
    return StepSpec(**{**args, **kw})


_MODELS: dict[str, torch.nn.Module] = {}


def model_of(name: str):
    """A fresh copy of a perturbed (nonzero everywhere, also Fixup's zero-initialised branches) model."""
    if name not in _MODELS:
        torch.manual_seed(0)
        m = create_model(name, K)
        perturb_(m.net)
        _MODELS[name] = m
    m = create_model(name, K)
    m.load_state_dict(_MODELS[name].state_dict())
    return m.train()


def _loc(model, batch, s, targets=None, valid=None):
    x = model.prepare_input(images_to_float(batch.images))
    if targets is None:
        targets, valid = target_slots(batch.labels)
    return localization_term(model, x, targets, contributing_pairs(batch, targets, valid), batch, s, ENV)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("layer", ["input", "final"])
@pytest.mark.parametrize("name,attribution", CASES)
def test_localization_term_is_positive_and_reaches_the_first_layer(name, attribution, layer, loss):
    model = model_of(name)
    # at 32 px the final layer is 1x1 (48 px: 2x2) and its upsampled map constant, which some losses score as 0
    loc, logits = _loc(model, make_batch(size=48 if layer == "final" else SIZE), spec(loss, attribution, layer))
    assert torch.isfinite(loc) and loc.item() > 0
    assert logits.shape == (4, K) and logits.requires_grad
    loc.backward()
    first = model.net.conv1.linear.weight if name.startswith("bcos") else model.net.conv1.weight
    assert first.grad is not None and first.grad.abs().sum() > 0, "no localization gradient reaches conv1"


@pytest.mark.parametrize("name,attribution,layer,loss", [
    ("resnet18", "ixg", "input", "energy"), ("resnet18", "gradcam", "mid2", "l1"),
    ("bcos-resnet18", "bcos", "input", "ppce"), ("xdnn-resnet18", "intgrad", "final", "rrr"),
    ("resnet18", "ixg", "mid1", "energy-size"),
])
def test_loss_falls_over_a_few_steps(name, attribution, layer, loss):
    model = model_of(name)
    batch = make_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    s = spec(loss, attribution, layer)
    # the same targets every step (fresh generator with one seed): one fixed objective
    losses = [train_step(model, batch, s, opt, torch.Generator().manual_seed(0), ENV)["loss"] for _ in range(5)]
    assert all(map(lambda v: v == v, losses)) and losses[-1] < losses[0], losses


def test_plain_step_has_no_localization_and_updates_weights():
    model = model_of("resnet18")
    before = model.net.fc.weight.detach().clone()
    out = train_step(model, make_batch(), spec(None), torch.optim.Adam(model.parameters(), lr=1e-3),
                     torch.Generator().manual_seed(0), ENV)
    assert out["finite"] and out["loc"] == 0.0 and out["loss"] == pytest.approx(out["bce"])
    assert not torch.equal(before, model.net.fc.weight)


def test_forward_func_is_what_runs():
    """train_step calls forward_func (a DDP wrapper under torchrun), not the model, on the prepared input."""
    model = model_of("resnet18")
    calls = []

    def forward(x):
        calls.append(x.shape)
        return model.net(x)

    for s in (spec(None), spec("energy")):
        train_step(model, make_batch(), s, torch.optim.SGD(model.parameters(), lr=0.0),
                   torch.Generator().manual_seed(0), ENV, forward_func=forward)
    assert calls == [(4, 3, SIZE, SIZE)] * 2


@pytest.mark.parametrize("name,attribution,layer", [("resnet18", "ixg", "input"), ("bcos-resnet18", "bcos", "input"),
                                                    ("resnet18", "gradcam", "final")])
def test_batch_without_contributing_pairs_skips_the_attribution(name, attribution, layer, monkeypatch):
    """No annotated image: the localization term and its gradient are zero, so the step skips the
    attribution and ends with the same weights and statistics, to float rounding, as a step that computes
    the term (forced here by a two-process DistEnv, under which every process computes it)."""
    batch = dataclasses.replace(make_batch(), annotated=torch.zeros(4, dtype=torch.bool))
    calls = []
    monkeypatch.setattr(step_module, "attribute", lambda *a, **k: calls.append(1) or attribute(*a, **k))
    ends = []
    for env in (DistEnv(), DistEnv(world=2)):
        model = model_of(name)
        out = train_step(model, batch, spec("energy", attribution, layer),
                         torch.optim.Adam(model.parameters(), lr=1e-3), torch.Generator().manual_seed(0), env)
        assert out["finite"] and out["loc"] == 0.0
        ends.append((out["bce"], model.state_dict()))
        assert len(calls) == (0 if env.world == 1 else 1)
    (bce_a, a), (bce_b, b) = ends
    assert bce_a == bce_b
    for k in a:  # vanilla is bit-identical, B-cos differs in the last bits
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)  # an Adam step moves weights ~1e-3
    first = next(iter(a))  # the first convolution's weight
    assert not torch.equal(a[first], model_of(name).state_dict()[first]), "the step did not update the model"


def test_non_finite_loss_is_reported_without_an_update():
    model = model_of("resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_step(model, make_batch(), spec("energy", lam=float("inf")),
                     torch.optim.Adam(model.parameters(), lr=1e-3), torch.Generator().manual_seed(0), ENV)
    assert not out["finite"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if not k.endswith("running_mean")
               and not k.endswith("running_var") and not k.endswith("num_batches_tracked"))


def test_mean_reduction_divides_by_contributing_pairs():
    """Unannotated image 3 and invalid slots are weighted out; mean = sum / number of contributing pairs."""
    model, batch = model_of("resnet18").eval(), make_batch()
    targets, valid = target_slots(batch.labels)
    loc_sum, _ = _loc(model, batch, spec("l1"), targets, valid)
    loc_mean, _ = _loc(model, batch, spec("l1", reduction="mean"), targets, valid)
    # pairs: image 0 one class, image 1 two, image 2 one, image 3 unannotated
    assert loc_mean.item() == pytest.approx(loc_sum.item() / 4, rel=1e-5)


def test_dilation_grows_the_guidance_region():
    """Energy with dilated boxes counts more of the map as inside, so its loss is lower."""
    model, batch = model_of("resnet18").eval(), make_batch()
    plain, _ = _loc(model, batch, spec("energy", targets="all"))
    dilated, _ = _loc(model, batch, spec("energy", targets="all", dilate=0.5))
    assert dilated.item() < plain.item()


def test_sample_targets_draws_present_classes_only():
    labels = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 1]], dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_targets(labels, gen) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1} and set(draws[:, 1].tolist()) == {0, 2}
    assert set(draws[:, 2].tolist()) == {0, 1, 2}  # no positive: any class, weighted out by the caller
    assert set(draws[:, 3].tolist()) == {2}
    assert 60 < int((draws[:, 1] == 0).sum()) < 140  # uniform over the two present classes
    again = torch.stack([sample_targets(labels, torch.Generator().manual_seed(0)) for _ in range(1)])
    assert torch.equal(again[0], draws[0])  # reproducible from the seed


def test_target_slots_by_hand():
    labels = torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    slots, valid = target_slots(labels)
    assert slots.tolist()[0] == [1, 2] and slots.tolist()[1][0] == 0
    assert valid.tolist() == [[True, True], [True, False], [False, False]]


def test_outside_masks_are_the_complement():
    b = make_batch()
    cls = b.labels.argmax(1)
    inside = box_masks(b.boxes, cls, (SIZE, SIZE))
    outside = box_masks(b.boxes, cls, (SIZE, SIZE), outside=True)
    assert torch.equal(inside + outside, torch.ones_like(inside))
