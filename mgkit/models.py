"""The networks of the registry's models: every network mgkit trains is built by
`create_model(name, num_classes, ...)`.

The names, their families and each family's facts (supported and default attributions, whether IntGrad
is exact, training defaults) are `mgkit.registry`'s, light to import; this module attaches to each name
how to build the ImageNet-shaped network, and to each family ONE `Family` record of its torch-side
behaviour (timm keeps such facts in a PretrainedCfg per model): input transform, K-class head,
explanation mode, guidance layers, closed-form final-layer maps.
`family_of(name)` gives the record without building a network. `GuidedModel` wraps the network with its
record, so nothing outside this file branches on a family name.

ImageNet weights are read from the torch hub cache (`torch.hub.get_dir()/checkpoints/<file>`) and
downloaded there first when missing (`mgkit.weights`); anything else comes from a file passed as `weights=`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ContextManager

import torch
import torchvision
from bcos.modules import BcosConv2d, norms
from torch import Tensor, nn

from mgkit import registry, xdnn
from mgkit import weights as imagenet_weights
from mgkit.errors import FormatError, MgkitError, UsageError
from mgkit.registry import LAYERS, FamilyFacts

__all__ = [
    "LAYERS",
    "MODEL_NAMES",
    "FAMILIES",
    "Family",
    "GuidedModel",
    "create_model",
    "family_of",
    "load_weights",
    "read_state_dict",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000

# The reference's B-cos backbone is the B-cos v2 ImageNet config "bcos_final": b=2, max_out=1,
# NoBias(BatchNormUncentered2d), logit bias log(0.001/0.999) = -log(999) (paper spec §4).
BCOS_B = 2
BCOS_MAX_OUT = 1


# --------------------------------------------------------------------------------------------------
# B-cos layers whose explanation mode is decided when the backward pass runs
# --------------------------------------------------------------------------------------------------
class _DynamicScale(torch.autograd.Function):
    """out = scale * value, where `scale` is a B-cos dynamic weight (|cos| factor or 1/std of BN).

    The bcos package detaches dynamic weights in the forward pass, so one forward cannot give both
    trainable logits and B-cos explanations. Like the reference, this decides at backward time instead:
    while `owner` is in explanation mode the backward treats `scale` as a constant, giving the dynamic
    linear map W(x); the gradient it returns, g * scale, is still a differentiable function of `scale`, so
    a loss on the explanation trains the parameters through the dynamic weights too (double backprop),
    and a later loss.backward() outside explanation mode gets the ordinary full gradient.
    """

    @staticmethod
    def forward(ctx: Any, scale: Tensor, value: Tensor, owner: nn.Module) -> Tensor:
        ctx.save_for_backward(scale, value)
        ctx.owner = owner
        return scale * value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, None]:
        scale, value = ctx.saved_tensors
        grad_value = grad * scale
        if ctx.owner.detach or not ctx.needs_input_grad[0]:
            return None, grad_value, None
        return (grad * value).sum_to_size(scale.shape), grad_value, None


class _BcosConv2d(BcosConv2d):
    """The package's BcosConv2d (same parameters and state-dict keys) with backward-time explanation mode."""

    def forward(self, in_tensor: Tensor) -> Tensor:
        out = self.linear(in_tensor)
        if self.max_out > 1:
            out = out.unflatten(1, (self.out_channels, self.max_out)).amax(dim=2)
        if self.b == 1:
            return out
        norm = self.calc_patch_norms(in_tensor)
        if self.b == 2:
            scale = out.abs().div_(norm)
        else:
            scale = ((out / norm).abs() + 1e-6).pow(self.b - 1)
        if not torch.is_grad_enabled():  # no backward to decide about (closed-form maps, logits): in place
            return scale.mul_(out)
        return _DynamicScale.apply(scale, out, self)


class _BatchNormUncentered2d(norms.BatchNormUncentered2d):
    """The package's uncentered BN with 1/std applied as a dynamic weight (see `_DynamicScale`)."""

    def forward(self, input: Tensor) -> Tensor:
        use_batch_stats = self.training or self.running_var is None
        if use_batch_stats:
            var = input.var(dim=(0, 2, 3), unbiased=False)
            if self.training and self.track_running_stats and self.running_var is not None:
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                with torch.no_grad():
                    self.running_var.copy_((1 - factor) * self.running_var + factor * var.detach())
        else:
            var = self.running_var
        scale = 1.0 / (var + self.eps).sqrt()[None, :, None, None]
        grad = torch.is_grad_enabled()  # without a backward to come, the affine part runs in place
        out = _DynamicScale.apply(scale, input, self) if grad else input * scale
        if self.weight is not None:
            out = self.weight[None, :, None, None] * out if grad else out.mul_(self.weight[None, :, None, None])
        if self.bias is not None:
            out = out + self.bias[None, :, None, None] if grad else out.add_(self.bias[None, :, None, None])
        return out


def _bcos_head(in_channels: int, num_classes: int) -> nn.Module:
    # the reference's head: a 1x1 B-cos conv with the package defaults (no bias, unit-norm weights)
    return _BcosConv2d(in_channels, num_classes, kernel_size=1, b=BCOS_B, max_out=BCOS_MAX_OUT)


@contextlib.contextmanager
def _bcos_explanation_mode(net: nn.Module) -> Iterator[None]:
    # Walk the modules on every entry (the package caches them on first use, which would miss a head
    # replaced later) and restore each module's previous state, so contexts nest.
    modules = [m for m in net.modules() if hasattr(m, "set_explanation_mode")]
    before = [bool(getattr(m, "detach", False)) for m in modules]
    for m in modules:
        m.set_explanation_mode(True)
    try:
        yield
    finally:
        for m, state in zip(modules, before):
            m.set_explanation_mode(state)


# --------------------------------------------------------------------------------------------------
# Families: everything that differs between vanilla, B-cos and X-DNN networks, as data
# --------------------------------------------------------------------------------------------------
def _imagenet_normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def _bcos_channels(images: Tensor) -> Tensor:
    # [r,g,b,1-r,1-g,1-b], no mean/std: B-cos alignment needs the inverse channels to encode colour
    # without a bias
    return torch.cat([images, 1.0 - images], dim=1)


def _linear_head(net: nn.Module, num_classes: int) -> None:
    # vanilla and X-DNN both get a biased Linear; a last-layer bias does not change input gradients
    net.fc = nn.Linear(net.fc.in_features, num_classes)


def _bcos_head_on(net: nn.Module, num_classes: int) -> None:
    net.fc = _bcos_head(net.fc.in_channels, num_classes)
    net.num_classes = num_classes


def _no_explanation_mode(net: nn.Module) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Family:
    """The torch side of one model family (vanilla / bcos / xdnn); one record each in `FAMILIES`.

    Its names, defaults and supported attributions are the registry's `FamilyFacts` (`facts`), read
    through the attributes below, so that `--help` and option checks need no torch import.
    """

    facts: FamilyFacts
    prepare: Callable[[Tensor], Tensor]  # images float [B,3,H,W] in [0,1] -> network input
    input_channels: int  # channels of the network input
    put_head: Callable[[nn.Module, int], None]  # replace the ImageNet head by a fresh K-class one (§4)
    explanation_mode: Callable[[nn.Module], ContextManager[None]]  # dynamic weights constant inside
    stage_modules: tuple[str, ...]  # attribute of the network behind mid1..final (LAYERS[1:])
    remap_state: Callable[[nn.Module, dict[str, Tensor]], dict[str, Tensor]]  # foreign file layouts -> ours
    # method -> fn(net, act) giving every class's map [B, K, h, w] at the "final" layer from the forward
    # activation `act` alone (no backward); methods missing here take the autograd path
    final_layer_maps: Mapping[str, Callable[[nn.Module, Tensor], Tensor]] = field(
        default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def attributions(self) -> tuple[str, ...]:
        return self.facts.attributions

    @property
    def default_attribution(self) -> str:
        return self.facts.default_attribution

    @property
    def exact_intgrad(self) -> bool:
        return self.facts.exact_intgrad

    def training_defaults(self) -> dict[str, Any]:
        """The defaults `config.resolve` fills in (the registry's facts)."""
        return self.facts.training_defaults()

    def layer_module(self, net: nn.Module, layer: str) -> nn.Module | None:
        """The module of `net` whose output is guidance layer `layer` (None for "input")."""
        if layer not in LAYERS:
            raise UsageError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}.")
        if layer == "input":
            return None
        return getattr(net, self.stage_modules[LAYERS.index(layer) - 1])

    def __str__(self) -> str:
        return self.name


_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _same_state(net: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return state


def _bcos_state(net: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return _from_reference_bcos(net, state)  # defined with the weight readers below

def _gap_linear_maps(method: str) -> Callable[[nn.Module, Tensor], Tensor]:
    """Final-layer maps of a network ending in global average pooling and a Linear head (torchvision and
    X-DNN ResNets): d logit_k / dA = W_k / (h*w) at every position, so IxG = sum_c W_kc A_c / (h*w); GradCAM
    (mean gradient W_k / (h*w)) is its ReLU; IntGrad along alpha*A integrates a constant gradient, so it
    equals IxG. All classes come from one matmul."""

    def maps(net: nn.Module, act: Tensor) -> Tensor:
        h, w = act.shape[-2:]
        out = torch.einsum("kc,bchw->bkhw", net.fc.weight.to(act.dtype), act) / (h * w)
        return out.relu() if method == "gradcam" else out

    return maps


def _bcos_head_maps(method: str) -> Callable[[nn.Module, Tensor], Tensor]:
    """Final-layer maps of the B-cos ResNet, whose head is a 1x1 B-cos conv (b=2) BEFORE pooling:
    f_k = o_k |o_k| / n with o = W A (unit-norm rows), n = sqrt(|A|^2 + 1e-6) per position, and
    logit_k = mean_hw f_k + bias. With the dynamic scale |o_k|/n constant (explanation mode) the map is
    f_k / (h*w). The full gradient is (2|o_k|/n W_k - f_k A / n^2) / (h*w), so IxG = f_k (2 - |A|^2/n^2) / (h*w)
    and GradCAM uses its spatial mean. Checked against autograd in tests/test_attribution.py."""

    def maps(net: nn.Module, act: Tensor) -> Tensor:
        head = net.fc
        h, w = act.shape[-2:]
        hw = h * w
        o = head.linear(act)  # [B, K, h, w]
        n2 = head.calc_patch_norms(act) ** 2  # [B, 1, h, w], |A|^2 + 1e-6
        n = n2.sqrt()
        f = o * o.abs() / n
        if method == "bcos":
            return f / hw
        if method == "ixg":
            return f * (2 - (act * act).sum(1, keepdim=True) / n2) / hw
        weight = head.linear.weight.flatten(1)
        weight = weight / weight.norm(dim=1, keepdim=True)  # [K, C], as NormedConv2d uses it
        # spatial mean of the gradient: [B, K, C]
        g = (torch.einsum("bk,kc->bkc", (2 * o.abs() / n).sum((2, 3)), weight.to(act.dtype))
             - torch.einsum("bkhw,bchw->bkc", f / n2, act)) / (hw * hw)
        return torch.einsum("bkc,bchw->bkhw", g, act).relu()

    return maps


_COMMON = dict(stage_modules=_RESNET_STAGES)
_FACTS = registry.FAMILIES
FAMILIES: dict[str, Family] = {
    "vanilla": Family(facts=_FACTS["vanilla"], prepare=_imagenet_normalise, input_channels=3, put_head=_linear_head,
                      explanation_mode=_no_explanation_mode, remap_state=_same_state,
                      final_layer_maps={m: _gap_linear_maps(m) for m in ("ixg", "gradcam", "intgrad")}, **_COMMON),
    "xdnn": Family(facts=_FACTS["xdnn"], prepare=_imagenet_normalise, input_channels=3, put_head=_linear_head,
                   explanation_mode=_no_explanation_mode, remap_state=_same_state,
                   final_layer_maps={m: _gap_linear_maps(m) for m in ("ixg", "gradcam", "intgrad")}, **_COMMON),
    "bcos": Family(facts=_FACTS["bcos"], prepare=_bcos_channels, input_channels=6, put_head=_bcos_head_on,
                   explanation_mode=_bcos_explanation_mode, remap_state=_bcos_state,
                   final_layer_maps={m: _bcos_head_maps(m) for m in ("bcos", "ixg", "gradcam")}, **_COMMON),
}
assert list(FAMILIES) == list(_FACTS), "every registry family needs its Family record here"


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    name: str
    family: str
    build: Callable[[], nn.Module]  # the ImageNet-shaped network (1000 classes)
    head_key: str  # state-dict key of the classifier weight: tells ImageNet files from K-class files


_REGISTRY: dict[str, _Spec] = {}


_Builder = Callable[[], nn.Module]


def _register(name: str, head_key: str) -> Callable[[_Builder], _Builder]:
    """Attach the constructor of the ImageNet-shaped network to the registry's model `name` (timm-style);
    its ImageNet weights file, if any, is `mgkit.weights.WEIGHTS[name]`."""

    def decorator(build: _Builder) -> _Builder:
        _REGISTRY[name] = _Spec(name, registry.MODELS[name], build, head_key)
        return build

    return decorator


@_register("resnet18", "fc.weight")
def _resnet18() -> nn.Module:
    return torchvision.models.resnet18(weights=None)


@_register("resnet50", "fc.weight")
def _resnet50() -> nn.Module:
    return torchvision.models.resnet50(weights=None)


def _bcos_resnet(entry: str) -> nn.Module:
    import bcos.models.pretrained as bcos_pretrained

    # the package's ImageNet entry point builds the bcos_final config (logit bias -log(999) included);
    # only the layer classes are swapped for the backward-time-explanation subclasses above
    return getattr(bcos_pretrained, entry)(
        pretrained=False,
        conv_layer=partial(_BcosConv2d, b=BCOS_B, max_out=BCOS_MAX_OUT),
        norm_layer=norms.NoBias(_BatchNormUncentered2d),
    )


@_register("bcos-resnet18", "fc.linear.weight")
def _bcos_resnet18() -> nn.Module:
    return _bcos_resnet("resnet18")


@_register("bcos-resnet50", "fc.linear.weight")
def _bcos_resnet50() -> nn.Module:
    return _bcos_resnet("resnet50")


@_register("xdnn-resnet18", "fc.weight")  # a small test model: no ImageNet weights exist
def _xdnn_resnet18() -> nn.Module:
    return xdnn.xdnn_resnet18()


@_register("xdnn-resnet50", "fc.weight")
def _xdnn_resnet50() -> nn.Module:
    return xdnn.xdnn_resnet50()


MODEL_NAMES: tuple[str, ...] = registry.MODEL_NAMES
assert set(_REGISTRY) == set(MODEL_NAMES), "every registry model needs a builder here"


def family_of(model_name: str) -> Family:
    """The family record of a registered model name (builds no network)."""
    spec = _REGISTRY.get(model_name)
    if spec is None:
        raise UsageError(f"unknown model {model_name!r}; choose one of {', '.join(sorted(_REGISTRY))}.")
    return FAMILIES[spec.family]


# --------------------------------------------------------------------------------------------------
# The wrapper every other module uses
# --------------------------------------------------------------------------------------------------
class GuidedModel(nn.Module):
    """A classifier plus what guidance needs: its family record (input transform, guidance layers,
    attributions, explanation mode).

    Its state dict is the network's, under the prefix ``net.`` (`model.net.state_dict()` is the plain
    torchvision / bcos one).
    """

    def __init__(self, name: str, family: Family, net: nn.Module, num_classes: int):
        super().__init__()
        self.name = name
        self.family = family
        self.num_classes = num_classes
        self.net = net

    @property
    def supported_attributions(self) -> tuple[str, ...]:
        return self.family.attributions

    def prepare_input(self, images: Tensor) -> Tensor:
        """Images float [B,3,H,W] in [0,1] -> network input (the family's transform: ImageNet mean/std
        normalised RGB, or for B-cos [r,g,b,1-r,1-g,1-b])."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise UsageError(f"expected images of shape [B, 3, H, W], got {list(images.shape)}.")
        return self.family.prepare(images)

    def forward(self, x: Tensor) -> Tensor:
        """Prepared input -> logits [B, K]."""
        return self.net(x)

    def layer_module(self, layer: str) -> nn.Module | None:
        """The module whose output is guidance layer `layer` (None for "input")."""
        return self.family.layer_module(self.net, layer)

    def explanation_mode(self) -> ContextManager[None]:
        """The family's explanation mode (B-cos: dynamic weights act as constants in a backward pass run
        inside it); a no-op for the other families."""
        return self.family.explanation_mode(self.net)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family.name!r}, num_classes={self.num_classes}"


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")


def _strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a network state dict from a checkpoint file, unwrapping the usual containers.

    Accepts a plain state dict, one under "model" / "state_dict" / "model_state_dict" (training
    checkpoints, the reference's result files), DataParallel's ``module.`` prefix and GuidedModel's
    ``net.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise MgkitError(f"weights file {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or pickled objects beyond tensors and plain containers
        raise FormatError(
            f"{path} is not a readable PyTorch weights file: it is corrupt, or it holds objects other than "
            f"tensors and plain containers ({type(exc).__name__})."
        ) from exc
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise FormatError(f"{path} holds no model state dict (expected tensors by parameter name).")
    state = {str(k): v for k, v in obj.items()}
    for prefix in ("module.", "net.", "module."):
        state = _strip_prefix(state, prefix)
    return state


def _from_reference_bcos(net: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map the reference's ``Sequential(resnet, LogitBias)`` layout (keys ``0.*``) to BcosResNet keys.

    The reference's LogitBias holds a plain float (no state-dict entry) equal to the package's default;
    should a file carry one (``1.logit_bias``), its value is used.
    """
    if not state or not all(k.startswith(("0.", "1.")) for k in state):
        return state
    remapped = {}
    for key, value in state.items():
        if key.startswith("0."):
            remapped[key[2:]] = value
        elif key.endswith("logit_bias") and value.numel() == 1:
            net.logit_layer.logit_bias = float(value)
        else:
            remapped[key] = value  # reported as unexpected below
    return remapped


def _check_fits(net: nn.Module, state: dict[str, Tensor], path: Path, model_name: str) -> None:
    expected = net.state_dict()
    # BN counters are absent from old files; load_state_dict fills them in
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}" + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}" + (" ..." if len(unexpected) > 3 else ""))
        raise FormatError(f"{path} does not fit {model_name}: {'; '.join(parts)}.")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise FormatError(
                f"{path} does not fit {model_name}: {key} has shape {list(value.shape)}, "
                f"the model expects {list(expected[key].shape)}."
            )


def _load_into(net: nn.Module, state: dict[str, Tensor], path: Path, model_name: str) -> None:
    _check_fits(net, state, path, model_name)
    net.load_state_dict(state, strict=False)  # strictness checked above, with readable messages


def load_weights(model: GuidedModel, path: str | Path) -> None:
    """Load a checkpoint of this exact model (its K-class head included) into `model`, e.g. to resume."""
    path = Path(path)
    state = model.family.remap_state(model.net, read_state_dict(path))
    _load_into(model.net, state, path, model.name)


def _head_rows(state: dict[str, Tensor], spec: _Spec) -> int | None:
    head = state.get(spec.head_key)
    return None if head is None else int(head.shape[0])


def create_model(name: str, num_classes: int, *, pretrained: bool = False,
                 weights: str | Path | None = None) -> GuidedModel:
    """Build model `name` with a `num_classes`-way head.

    pretrained: start from the ImageNet weights in the torch hub cache, downloaded there first when
        missing (`mgkit.weights.ensure`; offline, MgkitError naming the URL and the cache path).
    weights: a checkpoint file (see `read_state_dict`). A file with an ImageNet (1000-class) head is
        loaded before the head is replaced, a K-class file after. It defines every parameter, so
        `pretrained` is not used when `weights` is given.
    """
    spec = _REGISTRY.get(name)
    if spec is None:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}.")

    # read files first: a missing file fails fast, before a ResNet-50 is built
    state, source = None, None
    if weights is not None:
        source = Path(weights)
        state = read_state_dict(source)
    elif pretrained:
        source = imagenet_weights.ensure(name)
        state = read_state_dict(source)

    family = FAMILIES[spec.family]
    net = spec.build()
    if state is not None:
        state = family.remap_state(net, state)
    rows = None if state is None else _head_rows(state, spec)
    # an ImageNet file goes in before the head is replaced; a K-class file (also when K = 1000) after
    imagenet_file = state is not None and (
        weights is None or (rows == IMAGENET_CLASSES and num_classes != IMAGENET_CLASSES))
    if imagenet_file:
        _load_into(net, state, source, name)
    elif state is not None and rows is not None and rows != num_classes:
        raise FormatError(f"{source} has a {rows}-class head, but the model was asked for {num_classes} classes.")
    family.put_head(net, num_classes)
    if state is not None and not imagenet_file:
        _load_into(net, state, source, name)
    return GuidedModel(name, family, net, num_classes)
