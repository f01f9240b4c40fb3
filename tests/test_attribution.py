"""Attributions: agreement with captum and the bcos package, post-processing order, double backprop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    LayerGradientXActivation,
)
from torch import Tensor, nn

from mgkit.attribution import METHODS, PostProcess, attribute, attribute_pairs, post_process
from mgkit.errors import UsageError
from helpers import perturb_
from mgkit.models import LAYERS, GuidedModel, create_model

K = 4
TARGETS = torch.tensor([1, 3])
F64 = torch.float64




def _model(name: str, dtype: torch.dtype = F64) -> GuidedModel:
    torch.manual_seed(0)
    model = create_model(name, K).to(dtype)
    if model.family.name == "xdnn":
        perturb_(model.net)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models() -> dict[str, GuidedModel]:
    """float64, eval-mode ResNet-18 of every family (exact comparisons)."""
    return {name: _model(name) for name in ("resnet18", "bcos-resnet18", "xdnn-resnet18")}


def _x(model: GuidedModel, n: int = 2, size: int = 32, seed: int = 0) -> Tensor:
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return model.prepare_input(images.to(next(model.parameters()).dtype))


def _native(maps_fn: Callable[..., tuple[Tensor, Tensor]], model: GuidedModel, x: Tensor, layer: str,
            **kwargs: object) -> Tensor:
    """Maps at the layer's own resolution (no upsampling), for comparisons with captum."""
    module = model.layer_module(layer)
    size = tuple(x.shape[-2:])
    if module is not None:
        shapes = []
        handle = module.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
        with torch.no_grad():
            model(x)
        handle.remove()
        size = tuple(shapes[0][-2:])
    return maps_fn(model, x, TARGETS, layer=layer, out_size=size, create_graph=False, **kwargs)[0]


# ------------------------------------------------------------------------------------ captum agreement
@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("name", ["resnet18", "bcos-resnet18", "xdnn-resnet18"])
def test_ixg_matches_captum(models: dict[str, GuidedModel], name: str) -> None:
    model = models[name]
    x = _x(model)
    expected = InputXGradient(model).attribute(x, target=TARGETS).sum(1)
    torch.testing.assert_close(_native(attribute, model, x, "input", method="ixg"), expected)
    for layer in LAYERS[1:]:
        expected = LayerGradientXActivation(model, model.layer_module(layer)).attribute(x, target=TARGETS).sum(1)
        torch.testing.assert_close(_native(attribute, model, x, layer, method="ixg"), expected, msg=layer)


@pytest.mark.parametrize("name", ["resnet18", "bcos-resnet18", "xdnn-resnet18"])
def test_gradcam_matches_captum(models: dict[str, GuidedModel], name: str) -> None:
    model = models[name]
    x = _x(model)
    for layer in LAYERS[1:]:
        cam = LayerGradCam(model, model.layer_module(layer))
        expected = cam.attribute(x, target=TARGETS, relu_attributions=True)[:, 0]
        torch.testing.assert_close(_native(attribute, model, x, layer, method="gradcam"), expected, msg=layer)


def test_bcos_matches_package_explanation(models: dict[str, GuidedModel]) -> None:
    import bcos.models.pretrained as bcos_pretrained
    from bcos.modules import BcosConv2d

    model = models["bcos-resnet18"]
    # the same weights in the package's own layers, explained by the package's own `explain`
    plain = bcos_pretrained.resnet18(pretrained=False)
    plain.fc = BcosConv2d(plain.fc.in_channels, K)
    plain.load_state_dict(model.net.state_dict())
    plain = plain.to(F64).eval()
    x = _x(model)
    maps = _native(attribute, model, x, "input", method="bcos")
    for i, target in enumerate(TARGETS.tolist()):
        package = plain.explain(x[i:i + 1].clone().requires_grad_(True), idx=target)["contribution_map"]
        torch.testing.assert_close(maps[i:i + 1], package.detach())
    # B-cos maps are contributions: over the 6 channels they sum to the logit minus the logit bias
    logits = model(x).detach()
    torch.testing.assert_close(maps.sum((1, 2)), logits[[0, 1], TARGETS] - model.net.logit_layer.logit_bias)
    # and differ from plain IxG, whose gradient also runs through the dynamic weights
    assert not torch.allclose(maps, _native(attribute, model, x, "input", method="ixg"))


def test_bcos_maps_train_the_parameters_through_the_dynamic_weights() -> None:
    """As in the reference, explanation mode fixes the dynamic weights only in the first backward pass.

    A B-cos network is dynamic linear, f(x) = W(x) x + b, so the input map sums to f(x) - b for every
    parameter value; its parameter gradient must therefore equal that of the logit, in train mode too
    (batch statistics are dynamic weights as well). Detaching the dynamic weights would break this.
    """
    model = _model("bcos-resnet18").train()
    x = _x(model, n=3, seed=2)
    targets = torch.tensor([0, 3, 1])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        maps, logits = attribute(model, x, targets, method="bcos", layer="input", create_graph=True)
        params = list(model.parameters())
        from_maps = torch.autograd.grad(maps.sum(), params, retain_graph=True)
        from_logits = torch.autograd.grad(logits[[0, 1, 2], targets].sum(), params, retain_graph=True)
        for a, b in zip(from_maps, from_logits):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
        # the returned logits carry the ordinary full gradient for the classification loss
        bce = nn.functional.binary_cross_entropy_with_logits
        from_attribute = torch.autograd.grad(bce(logits, torch.ones_like(logits)), params)
        model.load_state_dict(state)
        plain = torch.autograd.grad(bce(model(x), torch.ones_like(logits)), params)
        for a, b in zip(from_attribute, plain):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    finally:
        model.eval()


def test_bcos_hidden_layers_are_explanation_mode_gradient_times_activation(models: dict[str, GuidedModel]) -> None:
    model = models["bcos-resnet18"]
    x = _x(model)
    for layer in LAYERS[1:]:
        with model.explanation_mode():
            expected = LayerGradientXActivation(model, model.layer_module(layer)).attribute(x, target=TARGETS).sum(1)
        torch.testing.assert_close(_native(attribute, model, x, layer, method="bcos"), expected, msg=layer)


def _suffix_ig(model: GuidedModel, x: Tensor, layer: str, steps: int) -> Tensor:
    """captum IntegratedGradients of the network from `layer` on, zero baseline in activation space."""
    module = model.layer_module(layer)
    acts = []
    handle = module.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()

    def suffix(a: Tensor) -> Tensor:
        handle = module.register_forward_hook(lambda m, i, o: a)
        try:
            return model(x.repeat(a.shape[0] // x.shape[0], 1, 1, 1))
        finally:
            handle.remove()

    ig = IntegratedGradients(suffix).attribute(acts[0], target=TARGETS, n_steps=steps, method="riemann_middle")
    return ig.sum(1)


@pytest.mark.parametrize("name", ["resnet18", "bcos-resnet18"])
def test_multistep_intgrad_matches_captum(models: dict[str, GuidedModel], name: str) -> None:
    model = models[name]
    x = _x(model)
    steps = 8
    expected = IntegratedGradients(model).attribute(x, target=TARGETS, n_steps=steps, method="riemann_middle")
    maps = _native(attribute, model, x, "input", method="intgrad", ig_steps=steps)
    torch.testing.assert_close(maps, expected.sum(1))
    for layer in ("mid2", "final"):
        maps = _native(attribute, model, x, layer, method="intgrad", ig_steps=steps)
        torch.testing.assert_close(maps, _suffix_ig(model, x, layer, steps), msg=layer)
    # the logits are those of x itself, not of a path point
    _, logits = attribute(model, x, TARGETS, method="intgrad", layer="input", create_graph=False, ig_steps=steps)
    torch.testing.assert_close(logits, model(x).detach())


@pytest.mark.parametrize("name", ["xdnn-resnet18", "xdnn-resnet50"])
def test_xdnn_input_x_gradient_is_integrated_gradients(name: str) -> None:
    """X-DNNs are positively homogeneous, so IxG equals IntGrad with a zero baseline exactly."""
    model = _model(name)
    x = _x(model)
    steps = 128 if name.endswith("18") else 16
    expected = IntegratedGradients(model).attribute(x, target=TARGETS, n_steps=steps, method="gausslegendre")
    for method in ("ixg", "intgrad"):
        maps = _native(attribute, model, x, "input", method=method)
        torch.testing.assert_close(maps, expected.sum(1), rtol=1e-3, atol=1e-9)
    # completeness: the map sums to f(x) - f(0) = logit - fc bias
    logits = model(x).detach()
    torch.testing.assert_close(maps.sum((1, 2)), logits[[0, 1], TARGETS] - model.net.fc.bias[TARGETS].detach())
    # the identity holds at hidden layers too: the rest of the network is homogeneous as well
    maps = _native(attribute, model, x, "mid2", method="intgrad")
    torch.testing.assert_close(maps, _suffix_ig(model, x, "mid2", 8), rtol=1e-3, atol=1e-9)


# ------------------------------------------------------------------------------------ post-processing
def test_normalisation_comes_before_upsampling() -> None:
    """Hand-worked: a 3x3 peak upsampled to 4x4 (bilinear, align_corners=False).

    Output pixel i samples input coordinate (i + 0.5) * 3/4 - 0.5 = -0.125, 0.625, 1.375, 2.125, clamped to
    0, 0.625, 1.375, 2; the centre cell (index 1) gets weights 0, 0.625, 0.625, 0 along each axis.
    Normalised first (peak 2 -> 1), the upsampled centre block is 0.625^2 = 0.390625; normalising after
    upsampling would give 1.
    """
    coarse = torch.zeros(1, 3, 3, dtype=F64)
    coarse[0, 1, 1] = 2.0
    out = post_process(coarse, PostProcess(normalize=True), (4, 4))
    weights = torch.tensor([0.0, 0.625, 0.625, 0.0], dtype=F64)
    torch.testing.assert_close(out[0], torch.outer(weights, weights))
    assert float(out.max()) == pytest.approx(0.390625)


def test_clamp_comes_before_normalisation_and_zero_maps_stay_finite() -> None:
    maps = torch.tensor([[[-4.0, 1.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    out = post_process(maps, PostProcess(positive=True, normalize=True), (2, 2))
    # clamp first: max of the positive part is 2 (normalising by max|A| = 4 first would give 0.25, 0.5)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    torch.testing.assert_close(out[1], torch.zeros(2, 2))
    (grad,) = torch.autograd.grad(out.sum(), maps)
    assert torch.isfinite(grad).all()
    signed = post_process(maps.detach(), PostProcess(normalize=True), (2, 2))
    torch.testing.assert_close(signed[0], torch.tensor([[-1.0, 0.25], [0.5, 0.0]]))


def test_default_output_size_is_the_input_size(models: dict[str, GuidedModel]) -> None:
    model = models["resnet18"]
    x = _x(model)
    maps, logits = attribute(model, x, TARGETS, method="gradcam", layer="final", create_graph=False)
    assert maps.shape == (2, 32, 32) and logits.shape == (2, K)
    maps, _ = attribute(model, x, TARGETS, method="ixg", layer="mid1", create_graph=False, out_size=(20, 24))
    assert maps.shape == (2, 20, 24)


# ------------------------------------------------------------------------------------ call contract
def test_one_forward_logits_and_graph_handling(models: dict[str, GuidedModel]) -> None:
    model = models["resnet18"]
    x = _x(model)
    maps, logits = attribute(model, x, TARGETS, method="ixg", layer="input", create_graph=False)
    assert not maps.requires_grad and not logits.requires_grad and not x.requires_grad
    torch.testing.assert_close(logits, model(x).detach())
    with torch.no_grad():  # evaluation code may hold no_grad; attribution still works
        again, _ = attribute(model, x, TARGETS, method="ixg", layer="input", create_graph=False)
    torch.testing.assert_close(again, maps)
    maps, logits = attribute(model, x, TARGETS, method="ixg", layer="mid2", create_graph=True)
    assert maps.requires_grad and logits.requires_grad
    # the same logits serve the classification loss and the localisation loss in one backward
    (nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)) + maps.abs().mean()).backward()
    assert model.net.conv1.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_bad_requests_fail_with_usage_errors(models: dict[str, GuidedModel]) -> None:
    vanilla = models["resnet18"]
    x = _x(vanilla)
    for name in ("resnet18", "xdnn-resnet18"):
        with pytest.raises(UsageError, match=f"'bcos' is not available for {name}"):
            attribute(models[name], _x(models[name]), TARGETS, method="bcos", layer="input", create_graph=False)
    with pytest.raises(UsageError, match="unknown attribution method 'lrp'"):
        attribute(vanilla, x, TARGETS, method="lrp", layer="input", create_graph=False)
    with pytest.raises(UsageError, match="unknown layer 'mid4'"):
        attribute(vanilla, x, TARGETS, method="ixg", layer="mid4", create_graph=False)
    with pytest.raises(UsageError, match="one class per image"):
        attribute(vanilla, x, torch.tensor([[[1], [0]], [[0], [1]]]), method="ixg", layer="input", create_graph=False)
    with pytest.raises(UsageError, match="one class per image"):
        attribute(vanilla, x, torch.tensor([1, 0, 2]), method="ixg", layer="input", create_graph=False)
    vanilla.train()
    try:
        with pytest.raises(UsageError, match="needs model.eval"):
            attribute(vanilla, x, TARGETS, method="intgrad", layer="input", create_graph=True)
        with pytest.raises(UsageError, match="eval mode"):
            attribute_pairs(vanilla, x, torch.tensor([0]), torch.tensor([1]), method="ixg", layer="input")
    finally:
        vanilla.eval()


def test_attribute_pairs_equals_per_pair_attribute(models: dict[str, GuidedModel]) -> None:
    image_index = torch.tensor([0, 0, 2, 1, 2])
    classes = torch.tensor([1, 2, 0, 3, 3])
    post = PostProcess(positive=True, normalize=True)
    for name, method, layer in (("resnet18", "ixg", "mid3"), ("bcos-resnet18", "bcos", "input"),
                                ("xdnn-resnet18", "gradcam", "final")):
        model = models[name]
        x = _x(model, n=3)
        maps = attribute_pairs(model, x, image_index, classes, method=method, layer=layer, post=post)
        assert maps.shape == (5, 32, 32) and not maps.requires_grad
        for p in range(5):
            single, _ = attribute(model, x[image_index[p:p + 1]], classes[p:p + 1], method=method, layer=layer,
                                  create_graph=False, post=post)
            torch.testing.assert_close(maps[p], single[0], msg=f"{name} pair {p}")


# ------------------------------------------------------------------------------------ double backprop
@pytest.fixture(scope="module")
def train_models() -> dict[str, GuidedModel]:
    """float32 models for the double-backward checks (train mode set per case)."""
    return {name: _model(name, torch.float32) for name in ("resnet18", "bcos-resnet18", "xdnn-resnet18")}


CASES = [(name, method, layer)
         for name, methods in (("resnet18", ("ixg", "gradcam", "intgrad")),
                               ("bcos-resnet18", METHODS),
                               ("xdnn-resnet18", ("ixg", "gradcam", "intgrad")))
         for method in methods for layer in LAYERS]


@pytest.mark.parametrize("name, method, layer", CASES)
def test_maps_are_differentiable_in_every_parameter(train_models: dict[str, GuidedModel], name: str,
                                                    method: str, layer: str) -> None:
    model = train_models[name]
    # guidance trains in train mode; multi-step IntGrad needs eval mode (BatchNorm would mix path points)
    model.train(not (method == "intgrad" and model.family.name != "xdnn"))
    # 64x64 at "final" gives a 2x2 map there: a 1x1 map normalised by its own magnitude would be constant
    x = _x(model, size=64 if layer == "final" else 32, seed=1).float()
    post = PostProcess(normalize=True)
    with torch.no_grad():  # the predicted classes: their GradCAM maps are not all cut away by the ReLU
        targets = model(x).argmax(1)
    try:
        maps, _ = attribute(model, x, targets, method=method, layer=layer, create_graph=True, post=post,
                            ig_steps=2)
        named = [(n, p) for n, p in model.named_parameters() if n != "net.fc.bias"]  # bias: no effect on gradients
        grads = torch.autograd.grad(maps.sum(), [p for _, p in named], allow_unused=True)
    finally:
        model.eval()
    unreached = [n for (n, _), g in zip(named, grads) if g is None]
    assert not unreached, f"no gradient for {unreached[:5]}"
    # Additive terms may legitimately get exactly zero: in a piecewise-linear network the gradient does
    # not depend on biases (eval-mode BN is affine), so only maps that see them through activations do.
    weights = [(n, g) for (n, _), g in zip(named, grads) if not n.endswith(".bias")]
    zero = [n for n, g in weights if not torch.any(g != 0)]
    assert len(zero) <= 0.1 * len(weights), f"zero gradient for {zero[:5]}"


@pytest.mark.parametrize("name,method,layer", [("resnet18", "ixg", "input"), ("bcos-resnet18", "bcos", "mid2"),
                                               ("resnet18", "gradcam", "final"), ("resnet18", "intgrad", "mid1")])
def test_several_classes_per_image_equal_separate_calls(models, name, method, layer):
    """Targets [B, S] share one forward pass and equal S separate one-class calls, slot by slot."""
    model = models[name]
    x = _x(model)
    slots = torch.tensor([[1, 3, 0], [2, 2, 1]])
    post = PostProcess(positive=True, normalize=True)
    maps, logits = attribute(model, x, slots, method=method, layer=layer, create_graph=False, post=post, ig_steps=4)
    assert maps.shape == (2, 3, *x.shape[-2:])
    for j in range(slots.shape[1]):
        one, one_logits = attribute(model, x, slots[:, j], method=method, layer=layer, create_graph=False, post=post,
                                    ig_steps=4)
        torch.testing.assert_close(maps[:, j], one)
        torch.testing.assert_close(logits, one_logits)


def test_forward_func_runs_while_the_model_owns_the_layers(models: dict[str, GuidedModel]) -> None:
    """captum style: the callable (e.g. a DDP wrapper around model.net) is what runs; hooks and the
    explanation mode stay with the model, so the maps equal those of calling the model itself."""
    model = models["bcos-resnet18"]
    x = _x(model)
    calls = []

    def forward(inp: Tensor) -> Tensor:
        calls.append(inp.shape[0])
        return model.net(inp)

    for layer in ("input", "mid2"):
        direct, logits = attribute(model, x, TARGETS, method="bcos", layer=layer, create_graph=False)
        wrapped, logits2 = attribute(model, x, TARGETS, method="bcos", layer=layer, create_graph=False,
                                     forward_func=forward)
        assert torch.equal(direct, wrapped) and torch.equal(logits, logits2)
    assert calls == [2, 2]
