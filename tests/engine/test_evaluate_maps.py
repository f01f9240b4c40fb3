"""Evaluation maps: one forward per batch, closed forms at the final layer, checked against autograd."""

from __future__ import annotations

import pytest
import torch

from helpers import perturb_
from mgkit.attribution import PostProcess, attribute, evaluation_maps
from mgkit.models import create_model

F64 = torch.float64
K = 5
pytestmark = pytest.mark.usefixtures("one_thread")
# 3 images; image 1 has three pairs, image 2 none, the pairs in scrambled order
IMG = torch.tensor([1, 0, 1, 1, 0])
CLS = torch.tensor([4, 2, 0, 2, 3])


@pytest.fixture(scope="module")
def models():
    out = {}
    for name in ("resnet18", "xdnn-resnet18", "bcos-resnet18"):
        torch.manual_seed(0)
        m = create_model(name, K).to(F64)
        perturb_(m.net)  # non-trivial BN statistics and an xdnn that is not the identity at init
        out[name] = m.eval()
    return out


def _x(model, n=3, size=32):
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=F64)
    return model.prepare_input(images)


def _autograd(model, x, method, layer, post):
    """The general path, one pair at a time."""
    return torch.cat([attribute(model, x[IMG[p:p + 1]], CLS[p:p + 1], method=method, layer=layer,
                                create_graph=False, post=post)[0] for p in range(len(IMG))])


CASES = [("resnet18", m) for m in ("ixg", "gradcam", "intgrad")] + \
        [("xdnn-resnet18", m) for m in ("ixg", "gradcam", "intgrad")] + \
        [("bcos-resnet18", m) for m in ("bcos", "ixg", "gradcam")]


@pytest.mark.parametrize("name,method", CASES)
def test_final_layer_closed_form_equals_autograd(models, name, method):
    model = models[name]
    assert method in model.family.final_layer_maps  # the closed form is what is tested here
    x = _x(model, size=64)  # a 2x2 final layer: spatial structure to get right
    for post in (PostProcess(), PostProcess(positive=True, normalize=True)):
        maps, logits = evaluation_maps(model, x, IMG, CLS, method=method, layer="final", post=post)
        ref = _autograd(model, x, method, "final", post)
        assert maps.abs().amax() > 0
        torch.testing.assert_close(maps, ref, rtol=1e-7, atol=1e-10 * float(ref.abs().amax()))
        with torch.no_grad():
            torch.testing.assert_close(logits, model(x))


@pytest.mark.parametrize("name,method,layer", [("resnet18", "ixg", "input"), ("resnet18", "intgrad", "mid2"),
                                               ("bcos-resnet18", "bcos", "mid3"), ("bcos-resnet18", "intgrad", "final"),
                                               ("xdnn-resnet18", "gradcam", "mid1")])
def test_slot_path_equals_per_pair_autograd(models, name, method, layer):
    model = models[name]
    x = _x(model)
    post = PostProcess(positive=True, normalize=True)
    maps, logits = evaluation_maps(model, x, IMG, CLS, method=method, layer=layer, post=post, ig_steps=4)
    ref = torch.cat([attribute(model, x[IMG[p:p + 1]], CLS[p:p + 1], method=method, layer=layer, ig_steps=4,
                               create_graph=False, post=post)[0] for p in range(len(IMG))])
    torch.testing.assert_close(maps, ref)
    assert not maps.requires_grad and not logits.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))


def test_no_pairs_gives_logits_only(models):
    model = models["resnet18"]
    x = _x(model)
    maps, logits = evaluation_maps(model, x, IMG[:0], CLS[:0], method="ixg", layer="input")
    assert maps.shape == (0, 32, 32) and logits.shape == (3, K)
