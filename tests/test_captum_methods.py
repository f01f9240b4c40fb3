"""captum methods as evaluation attributions, checked against independent computations."""

import pytest
import torch
from torch import nn

from mgkit.attribution import attribute
from mgkit.captum_methods import (available_methods, captum_maps, captum_pairs, parse_method, patch_mask,
                                  window_side)
from mgkit.errors import UsageError
from mgkit.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_bn(net: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so the network is not bias-free."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = create_model("resnet18", 3)
    _randomize_bn(model.net, gen)
    model.eval()
    x = model.prepare_input(torch.rand(2, 3, 32, 32, generator=gen))
    return model, x, torch.tensor([0, 2])


def test_saliency_is_abs_input_gradient_summed_over_channels(tiny):
    model, x, t = tiny
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xr)
    expected = grad.abs().sum(1)
    got = captum_maps(model, x, t, "captum:Saliency", "input")
    assert got.shape == (2, 32, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_input_x_gradient_equals_mgkit_ixg(tiny):
    model, x, t = tiny
    ours, _ = attribute(model, x, t, method="ixg", layer="input", create_graph=False)
    torch.testing.assert_close(captum_maps(model, x, t, "captum:InputXGradient", "input"), ours,
                               rtol=1e-5, atol=1e-7)


def test_integrated_gradients_equals_mgkit_intgrad(tiny):
    model, x, t = tiny
    ours, _ = attribute(model, x, t, method="intgrad", layer="input", create_graph=False, ig_steps=8)
    got = captum_maps(model, x, t, "captum:IntegratedGradients", "input", steps=8, chunk=5)
    torch.testing.assert_close(got, ours, rtol=1e-4, atol=1e-6)


def test_layer_gradcam_at_final_equals_mgkit_gradcam(tiny):
    model, x, t = tiny
    ours, _ = attribute(model, x, t, method="gradcam", layer="final", create_graph=False, out_size=(32, 32))
    got = captum_maps(model, x, t, "captum:LayerGradCam", "final", out_size=(32, 32))
    assert ours.abs().sum() > 0  # a non-trivial comparison
    torch.testing.assert_close(got, ours, rtol=1e-5, atol=1e-6)


def test_layer_map_is_upsampled_bilinearly(tiny):
    model, x, t = tiny
    # LayerGradientXActivation at mid1 (8x8 on a 32 px input): channel sum of g * A at that layer
    acts = {}
    handle = model.layer_module("mid1").register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    logits = model(x)
    handle.remove()
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), acts["a"])
    coarse = (g * acts["a"]).sum(1)
    expected = nn.functional.interpolate(coarse[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    got = captum_maps(model, x, t, "captum:LayerGradientXActivation", "mid1")
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-6)


def test_occlusion_matches_brute_force_over_windows():
    torch.manual_seed(1)
    model = create_model("resnet18", 3).eval()
    x = model.prepare_input(torch.rand(1, 3, 16, 16))
    t = torch.tensor([1])
    side = window_side((16, 16))
    stride = max(1, side // 2)
    assert (side, stride) == (2, 1)
    starts = [(y, x0) for y in range(0, 16 - side + 1, stride) for x0 in range(0, 16 - side + 1, stride)]
    occluded = x.repeat(len(starts), 1, 1, 1)
    for k, (y, x0) in enumerate(starts):  # one copy per window position, zeroed inside the window
        occluded[k, :, y:y + side, x0:x0 + side] = 0.0
    with torch.no_grad():
        diffs = model(x)[0, 1] - model(occluded)[:, 1]
    total = torch.zeros(16, 16)
    count = torch.zeros(16, 16)
    for k, (y, x0) in enumerate(starts):
        total[y:y + side, x0:x0 + side] += diffs[k]
        count[y:y + side, x0:x0 + side] += 1
    # every channel of a pixel gets the window-averaged difference; the map sums the 3 channels
    expected = 3 * total / count
    got = captum_maps(model, x, t, "captum:Occlusion", "input", chunk=64)
    torch.testing.assert_close(got[0], expected, rtol=1e-4, atol=1e-5)


def test_deeplift_on_resnet_sums_to_logit_difference_and_leaves_model_untouched(tiny):
    model, x, t = tiny
    relus_before = [(n, m.inplace) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    maps = captum_maps(model, x, t, "captum:DeepLift", "input")
    # DeepLift's summation-to-delta: attributions add up to f(x) - f(baseline 0). A ReLU module reused
    # within a block (as torchvision's are) would break this if it were not given one module per call.
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(maps.sum(dim=(1, 2)), delta, rtol=1e-3, atol=1e-4)
    assert [(n, m.inplace) for n, m in model.named_modules() if isinstance(m, nn.ReLU)] == relus_before


def test_pairs_follow_their_image_and_class_across_chunks(tiny):
    model, x, _ = tiny
    img = torch.tensor([1, 0, 1, 0, 1])
    cls = torch.tensor([0, 1, 2, 2, 1])
    got = captum_pairs(model, x, img, cls, "captum:Saliency", "input", chunk=2)
    assert got.shape == (5, 32, 32)
    for p in range(5):  # pair p: |d logit_cls / d x| of its own image, summed over channels
        xr = x[img[p]:img[p] + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xr)[0, cls[p]], xr)
        torch.testing.assert_close(got[p], g.abs().sum(1)[0], rtol=1e-5, atol=1e-7)
    assert captum_pairs(model, x, img[:0], cls[:0], "captum:Saliency", "input").shape == (0, 32, 32)


def test_patch_mask_groups_pixels_by_window():
    mask = patch_mask(torch.zeros(1, 3, 5, 5), 2)
    assert mask.shape == (1, 3, 5, 5)
    assert mask[0, 0, 0, :].tolist() == [0, 0, 1, 1, 2]
    assert mask[0, 2, 4, :].tolist() == [6, 6, 7, 7, 8]


@pytest.mark.parametrize("spec", ["captum:GuidedGradCam", "captum:LayerConductance", "captum:ShapleyValueSampling",
                                  "captum:NoiseTunnel:Saliency", "captum:GradientShap"])
def test_other_methods_give_finite_maps_of_image_size(tiny, spec):
    model, x, t = tiny
    method = parse_method(spec)
    layer = "mid3" if method.needs_layer else "input"
    with torch.no_grad():  # evaluation callers hold no_grad; captum still needs gradients
        maps = captum_maps(model, x, t, spec, layer, steps=4, samples=1)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_bcos_model_runs_as_plain_network():
    torch.manual_seed(0)
    model = create_model("bcos-resnet18", 2).eval()
    x = model.prepare_input(torch.rand(2, 3, 32, 32))
    maps = captum_maps(model, x, torch.tensor([0, 1]), "captum:Saliency", "input")
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()


def test_catalogue_is_read_from_captum():
    names = available_methods()
    for expected in ("captum:Saliency", "captum:DeepLift", "captum:GuidedGradCam", "captum:Occlusion",
                     "captum:LayerGradCam", "captum:LayerIntegratedGradients", "captum:NoiseTunnel:Saliency"):
        assert expected in names
    assert not any("Neuron" in n or n.endswith(":Lime") for n in names)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UsageError, match=r"unknown captum attribution 'Salincy'.*Saliency") as info:
        parse_method("captum:Salincy")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec, reason", [("captum:Lime", "one example per call"),
                                          ("captum:NeuronGradient", "unknown"),
                                          ("captum:NoiseTunnel:LayerGradCam", "layer method"),
                                          ("ixg", "not a captum method")])
def test_refused_names_say_why(spec, reason):
    with pytest.raises(UsageError, match=reason):
        parse_method(spec)


def test_wrong_layer_errors(tiny):
    model, x, t = tiny
    with pytest.raises(UsageError, match="layer method.*not input"):
        captum_maps(model, x, t, "captum:LayerGradCam", "input")
    with pytest.raises(UsageError, match="use --layer input"):
        captum_maps(model, x, t, "captum:Saliency", "final")
    with pytest.raises(UsageError, match="shape \\[2\\]"):
        captum_maps(model, x, torch.tensor([0]), "captum:Saliency", "input")
