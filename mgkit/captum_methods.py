"""Any captum attribution as an evaluation method: `--attribution captum:NAME` (issue 9).

`parse_method("captum:LayerGradCam")` checks a name against the attribution classes the installed captum
exports; `captum_maps(model, x, targets, method, layer, out_size)` runs ONE captum call for a batch with
one target class per image and returns channel-summed 2-D maps [B, H, W] at the image size, the shape
mgkit's own maps have, so EPG and IoU apply unchanged.

Which classes work is read from captum itself rather than from a fixed list:
- input-space classes (constructor `(forward_func)` or `(model)`: Saliency, InputXGradient,
  IntegratedGradients, GradientShap, DeepLift, GuidedBackprop, Deconvolution, FeatureAblation, Occlusion,
  ShapleyValueSampling, ...) explain the prepared network input and need layer "input";
- layer classes (constructor `(forward_func, layer)` or `(model, layer)`: LayerGradCam,
  LayerGradientXActivation, LayerConductance, LayerDeepLift, LayerIntegratedGradients, InternalInfluence,
  LayerGradientShap, and GuidedGradCam, whose map is input-sized) take `model.layer_module(layer)` and
  any layer but "input"; layer maps are upsampled bilinearly to the image, like mgkit's `post_process`;
- `NoiseTunnel:INNER` (e.g. `captum:NoiseTunnel:Saliency`) is SmoothGrad around an input-space method.
Refused, each with its reason: neuron methods (they explain one unit, not a class), class-independent or
batch-mixing ones (LayerActivation, FeaturePermutation), exhaustive or single-example ones (ShapleyValues,
Lime, KernelShap), the DeepLiftShap / LayerDeepLiftShap pair (they need a baseline distribution, and with
the one zero baseline used here they equal DeepLift), LRP (no rules for ResNet skip connections) and
LayerFeatureAblation (one forward per hidden unit).

Defaults (every argument a class's `attribute` takes is filled from its signature, so a class captum
adds later gets the same treatment):
- baselines are zero in prepared-input space (the zero of the network's input, as mgkit's intgrad);
- path methods use the `steps`-point midpoint rule (mgkit's intgrad: ig_steps 16, riemann_middle) with
  `internal_batch_size = chunk` rows;
- GradientShap-style methods draw `steps` random points on the path from zero (stdevs 0): torch's RNG;
- perturbation methods (Occlusion, FeatureAblation, ShapleyValueSampling) use square windows of side
  `max(1, round(min(H, W) / 8))`; Occlusion slides them with stride side // 2 (overlapping windows), the
  others use the disjoint grid of such patches shared across channels (ShapleyValueSampling with
  `samples` permutations); `chunk` perturbed copies go through the network per forward pass;
- LayerGradCam uses relu_attributions=True (the Grad-CAM definition, and mgkit's gradcam); Saliency keeps
  captum's abs=True.

B-cos models: captum methods run on the network as a plain network (explanation mode off), so the
gradients include the dynamic weights' dependence on the input; the B-cos explanation W(x) x is mgkit's
own `--attribution bcos`.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkit.errors import UsageError

__all__ = ["PREFIX", "CaptumMethod", "available_methods", "captum_maps", "captum_pairs", "check_layer", "is_captum",
           "parse_method"]

PREFIX = "captum:"

_MIXES_BATCH = "it permutes features across the images of a batch, so a map depends on the other images"
_NEEDS_DISTRIBUTION = "it needs a distribution of baselines; with mgkit's single zero baseline it is "
# Classes captum.attr exports that cannot serve as a per-class map of one image, with the reason.
_REFUSED: dict[str, str] = {
    "ShapleyValues": "it enumerates every permutation of the features; use captum:ShapleyValueSampling",
    "Lime": "captum's Lime explains one example per call (not batched); use captum:ShapleyValueSampling",
    "KernelShap": "captum's KernelShap explains one example per call (not batched); use captum:ShapleyValueSampling",
    "LimeBase": "it needs a user-built interpretable model and perturbation function",
    "FeaturePermutation": _MIXES_BATCH,
    "LayerFeaturePermutation": _MIXES_BATCH,
    "DeepLiftShap": _NEEDS_DISTRIBUTION + "captum:DeepLift",
    "LayerDeepLiftShap": _NEEDS_DISTRIBUTION + "captum:LayerDeepLift",
    "LRP": "captum's LRP has no rule for the skip connections of a ResNet",
    "LayerLRP": "captum's LRP has no rule for the skip connections of a ResNet",
    "LayerActivation": "it does not depend on the class (no target)",
    "LayerFeatureAblation": "it ablates every hidden unit separately (one forward pass each)",
    "NoiseTunnel": "it wraps another method: write captum:NoiseTunnel:INNER, e.g. captum:NoiseTunnel:Saliency",
}


@dataclass(frozen=True)
class CaptumMethod:
    """A parsed `captum:NAME` (or `captum:NoiseTunnel:NAME`): the captum class and how it is built."""

    name: str  # as written after "captum:"
    cls: type
    needs_layer: bool  # constructor takes (forward_func, layer)
    input_sized: bool  # the map has the input's spatial size even with a layer (GuidedGradCam)
    noise_tunnel: bool = False

    @property
    def spec(self) -> str:
        return PREFIX + self.name


def is_captum(method: str) -> bool:
    """Whether an --attribution value names a captum method."""
    return method.startswith(PREFIX)


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, tuple[type, bool, bool]]:
    """name -> (class, needs_layer, input_sized) for every usable attribution class of captum.attr."""
    import captum.attr as ca
    from captum.attr._utils.attribution import Attribution, NeuronAttribution

    out: dict[str, tuple[type, bool, bool]] = {}
    for name in getattr(ca, "__all__", dir(ca)):
        cls = getattr(ca, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Attribution)) or inspect.isabstract(cls):
            continue
        if name in _REFUSED or issubclass(cls, NeuronAttribution):
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        required = [p.name for p in params if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        attribute = getattr(cls, "attribute", None)  # absent on the abstract bases
        if not inspect.isfunction(attribute) or "target" not in inspect.signature(attribute).parameters:
            continue
        if required in (["forward_func"], ["model"]):
            out[name] = (cls, False, False)
        elif required in (["forward_func", "layer"], ["model", "layer"]):
            # a layer class returns the layer's activation shape, except GuidedGradCam (input-sized)
            out[name] = (cls, True, not _is_layer_output(cls))
    return out


def _is_deeplift(cls: type) -> bool:
    from captum.attr import DeepLift, LayerDeepLift

    return issubclass(cls, (DeepLift, LayerDeepLift))


def _is_layer_output(cls: type) -> bool:
    from captum.attr._utils.attribution import LayerAttribution

    return issubclass(cls, LayerAttribution)


def _noisy(cls: type) -> bool:
    """GradientShap-style methods add their own input noise (their `stdevs`): no NoiseTunnel around them."""
    return "stdevs" in inspect.signature(cls.attribute).parameters


def available_methods() -> list[str]:
    """Every accepted `captum:NAME`, sorted."""
    names = sorted(_catalogue())
    tunnel = [f"NoiseTunnel:{n}" for n, (cls, layer, _) in _catalogue().items() if not layer and not _noisy(cls)]
    return [PREFIX + n for n in names + sorted(tunnel)]


def parse_method(spec: str) -> CaptumMethod:
    """`captum:NAME` -> CaptumMethod; a UsageError (one line, valid names listed) for anything else."""
    if not is_captum(spec):
        raise UsageError(f"{spec!r} is not a captum method; write captum:NAME, e.g. captum:Saliency.")
    name = spec[len(PREFIX):]
    tunnel = name.startswith("NoiseTunnel:")
    inner = name[len("NoiseTunnel:"):] if tunnel else name
    valid = ", ".join(sorted(_catalogue()))
    if inner in _REFUSED:
        raise UsageError(f"--attribution {spec} is not supported: {_REFUSED[inner]}.")
    if inner not in _catalogue():
        raise UsageError(f"unknown captum attribution {inner!r} in --attribution {spec}; choose one of {valid} "
                         "(or NoiseTunnel:NAME with an input-space one).")
    cls, needs_layer, input_sized = _catalogue()[inner]
    if tunnel and (needs_layer or _noisy(cls)):
        why = "is a layer method" if needs_layer else "adds its own input noise"
        raise UsageError(f"--attribution {spec}: NoiseTunnel wraps noise-free input-space methods only, "
                         f"and {inner} {why}.")
    return CaptumMethod(name, cls, needs_layer, input_sized, tunnel)


def check_layer(method: CaptumMethod, layer: str) -> None:
    """Layer methods need a hidden layer, input-space methods layer "input"."""
    if method.needs_layer and layer == "input":
        raise UsageError(f"{method.spec} is a layer method: give it a hidden layer "
                         "(--layer mid1, mid2, mid3 or final), not input.")
    if not method.needs_layer and layer != "input":
        raise UsageError(f"{method.spec} explains the network input: use --layer input "
                         f"(got --layer {layer}); layer methods are captum:Layer*, GuidedGradCam, InternalInfluence.")


# --- the only places that touch mgkit's model interface (adapt here when it changes) -------------------
def _forward_module(model: nn.Module) -> nn.Module:
    """The module captum runs: prepared input -> logits (GuidedModel.forward)."""
    return model


def _layer(model: Any, layer: str) -> nn.Module:
    module = model.layer_module(layer)
    assert module is not None  # check_layer refused "input" for layer methods
    return module
# ------------------------------------------------------------------------------------------------------


class _UnsharedReLU(nn.Module):
    """Stands in for a ReLU module a network calls several times per forward pass (torchvision's
    residual blocks do): call i of a pass goes to its own nn.ReLU, because captum's DeepLift keeps each
    ReLU's input and output on the module and a second call would overwrite the first."""

    def __init__(self, calls: int):
        super().__init__()
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(calls))
        self.count = 0

    def forward(self, x: Tensor) -> Tensor:
        relu = self.relus[self.count % len(self.relus)]
        self.count += 1
        return relu(x)


def _deeplift_ready(model: nn.Module, layer_module: nn.Module | None, x: Tensor) -> tuple[nn.Module, nn.Module | None]:
    """A copy of `model` whose ReLUs are each called at most once per forward pass, and its copy of
    `layer_module`. Calls are counted by one forward pass on x[:1]."""
    import copy

    calls: dict[nn.Module, int] = {}
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    handles = [m.register_forward_hook(lambda mod, _i, _o: calls.__setitem__(mod, calls.get(mod, 0) + 1))
               for m in relus]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    names = {m: n for n, m in model.named_modules()}
    clone = copy.deepcopy(model)
    swapped: list[_UnsharedReLU] = []
    for relu, n in calls.items():
        if n > 1:
            parent_name, _, child = names[relu].rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            swapped.append(_UnsharedReLU(n))
            setattr(parent, child, swapped[-1])
    for m in clone.modules():  # plain ReLUs called once: just not in place (DeepLift needs the input)
        if isinstance(m, nn.ReLU):
            m.inplace = False

    def reset(_module: nn.Module, _inputs: object) -> None:
        for u in swapped:
            u.count = 0

    clone.register_forward_pre_hook(reset)
    layer_clone = None if layer_module is None else clone.get_submodule(names[layer_module])
    return clone, layer_clone
# ------------------------------------------------------------------------------------------------------


def window_side(size: tuple[int, int]) -> int:
    """Side of the perturbation windows and patches: an eighth of the shorter image side (at least 1)."""
    return max(1, round(min(size) / 8))


def patch_mask(x: Tensor, side: int) -> Tensor:
    """Feature mask [1, C, H, W]: pixel (y, x) belongs to patch (y // side, x // side), in all channels."""
    h, w = x.shape[-2:]
    cols = -(-w // side)
    ys = torch.arange(h, device=x.device) // side
    xs = torch.arange(w, device=x.device) // side
    ids = ys[:, None] * cols + xs[None, :]
    return ids.expand(1, x.shape[1], h, w).contiguous()  # captum views the mask


def _attribute_kwargs(cls: type, x: Tensor, *, steps: int, chunk: int, samples: int) -> dict[str, Any]:
    """Arguments of `cls.attribute` beyond inputs and target, from the parameters it declares."""
    params = inspect.signature(cls.attribute).parameters
    kw: dict[str, Any] = {}
    side = window_side(tuple(x.shape[-2:]))
    if "baselines" in params:
        gradient_shap = "n_samples" in params and "stdevs" in params
        # GradientShap-style methods need an explicit baseline distribution: one zero image
        kw["baselines"] = torch.zeros_like(x[:1]) if gradient_shap else 0.0
    if "n_steps" in params:
        kw["n_steps"] = steps
        if "method" in params:  # the midpoint rule of mgkit's own intgrad, so the two are comparable
            kw["method"] = "riemann_middle"
    if "internal_batch_size" in params:
        kw["internal_batch_size"] = chunk
    if "perturbations_per_eval" in params:
        kw["perturbations_per_eval"] = max(1, chunk // x.shape[0])
    if "n_samples" in params:
        kw["n_samples"] = steps if "stdevs" in params else samples
    if "stdevs" in params:
        kw["stdevs"] = 0.0
    if "sliding_window_shapes" in params:
        kw["sliding_window_shapes"] = (x.shape[1], side, side)
        kw["strides"] = (x.shape[1], max(1, side // 2), max(1, side // 2))
    elif "feature_mask" in params:
        kw["feature_mask"] = patch_mask(x, side)
    if "relu_attributions" in params:
        kw["relu_attributions"] = True
    if "show_progress" in params:
        kw["show_progress"] = False
    return kw


def captum_maps(model: Any, x: Tensor, targets: Tensor, method: CaptumMethod | str, layer: str,
                out_size: tuple[int, int] | None = None, *, steps: int = 16, chunk: int = 64,
                samples: int = 4, noise: float = 0.15) -> Tensor:
    """Maps [B, H, W] of `method` for class targets[b] of image b; no graph is kept.

    x: prepared network input [B, C, H, W] (`model.prepare_input(images)`); targets: long [B].
    The map is the attribution summed over channels, upsampled bilinearly to `out_size` (default: the
    input's size) when it is a coarser layer map. The model should be in eval mode (as in evaluation).
    steps: path points (integrated gradients, conductance) and GradientShap samples; chunk: rows per
    forward pass of path and perturbation methods; samples: ShapleyValueSampling permutations;
    noise: NoiseTunnel's standard deviation as a fraction of the batch's input range.
    """
    m = parse_method(method) if isinstance(method, str) else method
    check_layer(m, layer)
    if x.dim() != 4:
        raise UsageError(f"expected a prepared input of shape [B, C, H, W], got {list(x.shape)}.")
    if targets.shape != (x.shape[0],) or targets.dtype not in (torch.int64, torch.int32):
        raise UsageError(f"targets must be an integer tensor of shape [{x.shape[0]}] (one class per image).")
    size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
    if x.shape[0] == 0:
        return x.new_zeros((0, *size))
    net = _forward_module(model)
    layer_module = _layer(model, layer) if m.needs_layer else None
    if _is_deeplift(m.cls):
        net, layer_module = _deeplift_ready(net, layer_module, x)
    explainer = m.cls(net, layer_module) if m.needs_layer else m.cls(net)
    kw = _attribute_kwargs(m.cls, x, steps=steps, chunk=chunk, samples=samples)
    inputs = x.detach().requires_grad_(True)  # captum would set it and warn
    # no_grad callers are common in evaluation; captum's notes on the hooks it sets are not for users
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        if m.noise_tunnel:
            from captum.attr import NoiseTunnel

            spread = float(x.detach().max() - x.detach().min())
            attr = NoiseTunnel(explainer).attribute(
                inputs, nt_type="smoothgrad", nt_samples=steps, nt_samples_batch_size=max(1, chunk // x.shape[0]),
                stdevs=noise * spread, target=targets.long(), **kw)
        else:
            attr = explainer.attribute(inputs, target=targets.long(), **kw)
    if isinstance(attr, tuple):  # return_convergence_delta and multi-input forms
        attr = attr[0]
    maps = attr.detach().float().sum(dim=1)  # [B, h, w]
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps.to(x.dtype)


def captum_pairs(model: Any, x: Tensor, image_index: Tensor, classes: Tensor, method: CaptumMethod | str,
                 layer: str, out_size: tuple[int, int] | None = None, *, chunk: int = 64, steps: int = 16,
                 samples: int = 4) -> Tensor:
    """Evaluation maps [P, H, W] for P (image, class) pairs, as `mgkit.attribution.attribute_pairs`:
    pair p explains classes[p] of x[image_index[p]]; one captum call per `chunk` pairs."""
    m = parse_method(method) if isinstance(method, str) else method
    check_layer(m, layer)
    if image_index.shape != classes.shape or image_index.dim() != 1:
        raise UsageError("image_index and classes must be 1-D tensors of equal length.")
    if chunk < 1:
        raise UsageError(f"chunk must be at least 1, got {chunk}.")
    size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
    maps = [captum_maps(model, x[image_index[i:i + chunk]], classes[i:i + chunk], m, layer, size, steps=steps,
                        chunk=chunk, samples=samples)
            for i in range(0, image_index.shape[0], chunk)]
    return torch.cat(maps) if maps else x.new_zeros((0, *size))
