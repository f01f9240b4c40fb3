"""Attribution maps for guidance and evaluation: one call shape for IxG, B-cos, GradCAM and IntGrad.

`attribute` runs ONE forward pass and ONE `torch.autograd.grad` call for a batch with one target class
per image, and returns the maps together with the logits of that same forward pass, so a training step
computes its classification loss without a second forward. With `create_graph=True` the maps are
differentiable with respect to every parameter (double backprop), as guidance needs.

Post-processing follows the reference exactly (paper spec §3.2): channel sum -> optional clamp >= 0
-> optional division by the per-image max |A| -> bilinear upsampling. Normalising BEFORE upsampling
matches the reference, which normalises the coarse layer map; bilinear interpolation is a convex
combination, so the upsampled map stays within [-1, 1], though its peak may drop below 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mgkit.errors import UsageError
from mgkit.models import LAYERS, GuidedModel
from mgkit.registry import ATTRIBUTIONS

__all__ = ["METHODS", "PostProcess", "attribute", "attribute_pairs", "evaluation_maps", "post_process"]

METHODS = ATTRIBUTIONS  # the registry's names; the methods are implemented here


@dataclass(frozen=True)
class PostProcess:
    """positive: keep only A >= 0. normalize: divide each map by its max |A| (an all-zero map stays zero)."""

    positive: bool = False
    normalize: bool = False


def post_process(maps: Tensor, post: PostProcess, out_size: tuple[int, int]) -> Tensor:
    """Channel-summed maps [B,h,w] -> clamp -> normalise -> bilinear resize to `out_size` [B,H,W]."""
    if post.positive:
        maps = maps.clamp(min=0)
    if post.normalize:
        peak = maps.abs().amax(dim=(1, 2), keepdim=True)
        # dividing by 1 where the peak is 0 (instead of torch.where on maps / 0) keeps NaN out of the
        # forward pass and out of the double-backward gradients
        maps = maps / torch.where(peak == 0, torch.ones_like(peak), peak)
    if tuple(maps.shape[-2:]) != tuple(out_size):
        maps = F.interpolate(maps[:, None], size=tuple(out_size), mode="bilinear", align_corners=False)[:, 0]
    return maps


def _check(model: GuidedModel, x: Tensor, targets: Tensor, method: str, layer: str) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    if method not in model.supported_attributions:
        raise UsageError(
            f"attribution {method!r} is not available for {model.name}; "
            f"it supports {', '.join(model.supported_attributions)}."
        )
    if layer not in LAYERS:
        raise UsageError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}.")
    if x.dim() != 4:
        raise UsageError(f"expected a prepared input of shape [B, C, H, W], got {list(x.shape)}.")
    if targets.dim() not in (1, 2) or targets.shape[0] != x.shape[0] or targets.dtype not in (torch.int64, torch.int32):
        raise UsageError(f"targets must be an integer tensor of shape [{x.shape[0]}] (one class per image) "
                         f"or [{x.shape[0]}, S] (S classes per image).")


def _along_path(t: Tensor, alphas: Tensor) -> Tensor:
    """[B,...] -> [S*B,...]: the batch scaled by each alpha, alpha-major."""
    return (alphas.view(-1, *([1] * t.dim())) * t.unsqueeze(0)).flatten(0, 1)


ForwardFunc = Callable[[Tensor], Tensor]


def _forward_tapped(model: GuidedModel, forward: ForwardFunc, x: Tensor, layer: str,
                    alphas: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass through `forward`. Returns (activation of `layer`, tensor to differentiate at, logits).

    With `alphas`, the activation is replaced by its scaled copies (the batch grows len(alphas)-fold
    from that layer on), so an integration path costs one pass and the layers before it run once.
    """
    module = model.layer_module(layer)
    if module is None:
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)  # a leaf of our own; the caller's tensor is untouched
        tap = x if alphas is None else _along_path(x, alphas)
        return x, tap, forward(tap)

    taps: dict[str, Tensor] = {}

    def hook(_module: torch.nn.Module, _inputs: object, out: Tensor) -> Tensor:
        if not out.requires_grad:  # frozen layers and a constant input: differentiate at the activation
            out = out.detach().requires_grad_(True)
        taps["act"] = out
        taps["tap"] = out if alphas is None else _along_path(out, alphas)
        return taps["tap"]

    handle = module.register_forward_hook(hook)
    try:
        logits = forward(x)
    finally:
        handle.remove()
    return taps["act"], taps["tap"], logits


def _path_alphas(model: GuidedModel, method: str, ig_steps: int, x: Tensor) -> Tensor | None:
    """The scales of a multi-step Integrated Gradients path (None for every other method).

    alpha = 1 comes first: those rows give the logits of x itself; the `ig_steps` midpoints give the
    Riemann sum. Their BatchNorm would mix path points in train mode, so these need model.eval().
    """
    if method != "intgrad" or model.family.exact_intgrad:
        return None
    if model.training:
        raise UsageError(
            f"multi-step intgrad on {model.name} needs model.eval() (BatchNorm would mix path points); "
            "guide with xdnn-resnet50, where intgrad is a single pass."
        )
    if ig_steps < 1:
        raise UsageError(f"ig_steps must be at least 1, got {ig_steps}.")
    midpoints = (torch.arange(ig_steps, dtype=x.dtype, device=x.device) + 0.5) / ig_steps
    return torch.cat([torch.ones(1, dtype=x.dtype, device=x.device), midpoints])


def _map_formula(method: str, grad: Tensor, act: Tensor) -> Tensor:
    """The coarse map [N,h,w] of a method from the gradient (path-averaged for intgrad) and the activation."""
    if method == "gradcam":
        return F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1))
    # ixg, bcos and intgrad all end as gradient (or path-averaged gradient) times activation
    return (grad * act).sum(dim=1)


# One gradient call: the images it covers (None: all of them) and the class explained for each.
Slot = tuple[Tensor | None, Tensor]


def _slot_maps(model: GuidedModel, forward: ForwardFunc, x: Tensor, *, method: str, layer: str,
               slots: list[Slot], alphas: Tensor | None, create_graph: bool) -> tuple[list[Tensor], Tensor]:
    """The one code path of every gradient-based map: ONE forward pass, then one gradient call per slot.

    Returns the coarse maps of each slot ([rows of the slot, h, w], before post-processing) and the
    logits [B,K] of x. The graph of the forward is reused by every slot; with create_graph=False no
    graph is kept and everything returned is detached. Call under torch.enable_grad().
    """
    batch = x.shape[0]
    act, tap, all_logits = _forward_tapped(model, forward, x, layer, alphas)
    logits = all_logits if alphas is None else all_logits[:batch]
    a = act if create_graph else act.detach()
    steps = 0 if alphas is None else alphas.shape[0] - 1
    coarse = []
    for j, (rows, cls) in enumerate(slots):
        if alphas is None:
            chosen = all_logits if rows is None else all_logits[rows]
            objective = chosen.gather(1, cls[:, None]).sum()
        else:
            path = all_logits[batch:].unflatten(0, (steps, batch))
            chosen = path if rows is None else path[:, rows]
            objective = chosen.gather(2, cls[None, :, None].expand(steps, -1, 1)).sum()
        with model.explanation_mode() if method == "bcos" else contextlib.nullcontext():
            (grad,) = torch.autograd.grad(objective, tap, create_graph=create_graph,
                                          retain_graph=create_graph or j + 1 < len(slots))
        if alphas is not None:
            grad = grad[batch:].unflatten(0, (steps, batch)).mean(dim=0)
        if not create_graph:
            grad = grad.detach()
        coarse.append(_map_formula(method, grad, a) if rows is None else _map_formula(method, grad[rows], a[rows]))
    return coarse, (logits if create_graph else logits.detach())


def attribute(
    model: GuidedModel,
    x: Tensor,
    targets: Tensor,
    *,
    method: str,
    layer: str,
    create_graph: bool,
    post: PostProcess = PostProcess(),
    out_size: tuple[int, int] | None = None,
    ig_steps: int = 16,
    forward_func: ForwardFunc | None = None,
) -> tuple[Tensor, Tensor]:
    """Attribution maps of `targets` at `layer`.

    `model` owns the layers (hooks, family, explanation mode); `forward_func` is what is called on the
    prepared input, default `model` itself. As in captum, the two are separate so that training can pass
    a DistributedDataParallel wrapper around `model.net` (gradients synchronise) while the hooks stay
    on the modules of `model`.

    x: prepared network input [B,C,H,W] (`model.prepare_input(images)`); targets: long [B], one class
    per row. Returns (maps [B,H_out,W_out], logits [B,K]); the logits come from the same forward pass.
    Targets of shape [B, S] give maps [B, S, H_out, W_out] from the same single forward pass.
    With create_graph=False no graph is kept and both tensors are detached.

    Methods (A = activation at `layer`, or x at "input"; g = d logit_target / dA):
      ixg      (g * A) summed over channels.
      gradcam  relu(sum_c mean_hw(g)_c * A_c).
      bcos     B-cos models only: (g * A) with g taken in explanation mode (dynamic weights constant);
               at "input" that is the contribution map W(x) * x, summed over all 6 channels. Only the
               gradient call runs in explanation mode, so the logits keep their full gradient, and the
               map stays differentiable through the dynamic weights (as in the reference).
      intgrad  X-DNN: exactly ixg (the network is positively homogeneous, one backward pass).
               Other families: `ig_steps`-point midpoint Riemann sum of Integrated Gradients with a zero
               baseline, in prepared-input space at "input" and in activation space at a hidden layer
               (the activation is scaled along the path). Their BatchNorm would mix path points in
               train mode, so these need model.eval().
    """
    _check(model, x, targets, method, layer)
    alphas = _path_alphas(model, method, ig_steps, x)
    one_per_image = targets.dim() == 1
    targets = targets.long()[:, None] if one_per_image else targets.long()
    # Several classes per image share the forward pass: one gradient call per class slot.
    slots: list[Slot] = [(None, targets[:, j]) for j in range(targets.shape[1])]
    size = out_size if out_size is not None else tuple(x.shape[-2:])
    with torch.enable_grad():  # evaluation code may call this under no_grad
        coarse, logits = _slot_maps(model, forward_func or model, x, method=method, layer=layer, slots=slots,
                                    alphas=alphas, create_graph=create_graph)
        out = post_process(torch.stack(coarse, 1).flatten(0, 1), post, size).unflatten(0, tuple(targets.shape))
    return (out[:, 0] if one_per_image else out), logits


def _pair_slots(image_index: Tensor, classes: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """Slot of each pair within its image (0, 1, ... in pair order) and S = most pairs of one image."""
    p = image_index.shape[0]
    order = torch.argsort(image_index, stable=True)
    sorted_img = image_index[order]
    counts = torch.bincount(image_index, minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(image_index)
    slot[order] = torch.arange(p, device=image_index.device) - starts[sorted_img]
    return slot, counts


def _closed_form_maps(model: GuidedModel, x: Tensor, image_index: Tensor, classes: Tensor,
                      closed: Callable[[torch.nn.Module, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Final-layer coarse maps [P,h,w] of the pairs from the forward activation alone (no backward), and
    the logits [B,K]."""
    taps: dict[str, Tensor] = {}
    if x.device.type == "cpu":
        # Without a backward to follow, the forward is all the work, and oneDNN's convolutions run 10-30 %
        # faster on NHWC input (measured, ResNet-50 and B-cos ResNet-50 at 224 px, 2 threads); the layout
        # follows the input through the network, so the model's own weights are left as they are.
        x = x.contiguous(memory_format=torch.channels_last)
    handle = model.layer_module("final").register_forward_hook(lambda _m, _i, out: taps.__setitem__("a", out))
    try:
        with torch.no_grad():
            logits = model(x)
            return closed(model.net, taps["a"])[image_index, classes], logits
    finally:
        handle.remove()


def evaluation_maps(
    model: GuidedModel,
    x: Tensor,
    image_index: Tensor,
    classes: Tensor,
    *,
    method: str,
    layer: str,
    post: PostProcess = PostProcess(),
    out_size: tuple[int, int] | None = None,
    ig_steps: int = 16,
) -> tuple[Tensor, Tensor]:
    """Maps [P,H,W] of P (image, class) pairs (pair p explains classes[p] of x[image_index[p]]) and the
    logits [B,K] of all of x, from ONE forward pass over x. No graph is kept.

    Where the family has a closed form at the final layer (`Family.final_layer_maps`: GAP + Linear
    heads, the B-cos 1x1 head) every class's map follows from the forward activation, without any
    backward pass. Otherwise the pairs of each image are put in slots (slot j = the j-th pair of an
    image) and one gradient call per slot covers all images having a j-th pair, so the graph of the
    single forward is reused S times (S = most pairs of one image) and only [B, activation] gradients are
    alive at once. The model must be in eval mode (train-mode BatchNorm would mix images).
    """
    if model.training:
        raise UsageError("evaluation maps need the model in eval mode; call model.eval() first.")
    if image_index.shape != classes.shape or image_index.dim() != 1:
        raise UsageError("image_index and classes must be 1-D tensors of equal length.")
    batch = x.shape[0]
    _check(model, x, torch.zeros(batch, dtype=torch.long, device=x.device), method, layer)
    size = out_size if out_size is not None else tuple(x.shape[-2:])
    image_index, classes = image_index.long(), classes.long()
    p = image_index.shape[0]
    if p == 0:
        with torch.no_grad():
            return x.new_zeros((0, *size)), model(x)
    closed = model.family.final_layer_maps.get(method) if layer == "final" else None
    if closed is not None:
        coarse, logits = _closed_form_maps(model, x, image_index, classes, closed)
        return post_process(coarse, post, size), logits

    alphas = _path_alphas(model, method, ig_steps, x)
    slot, counts = _pair_slots(image_index, classes, batch)
    members = [torch.nonzero(slot == j, as_tuple=True)[0] for j in range(int(counts.max()))]
    with torch.enable_grad():
        coarse, logits = _slot_maps(model, model, x, method=method, layer=layer, alphas=alphas, create_graph=False,
                                    slots=[(image_index[m], classes[m]) for m in members])
    out = None
    for pairs, maps in zip(members, coarse):
        maps = post_process(maps, post, size)
        if out is None:
            out = maps.new_empty((p, *size))
        out[pairs] = maps
    return out, logits


def attribute_pairs(
    model: GuidedModel,
    x: Tensor,
    image_index: Tensor,
    classes: Tensor,
    *,
    method: str,
    layer: str,
    post: PostProcess = PostProcess(),
    out_size: tuple[int, int] | None = None,
    ig_steps: int = 16,
) -> Tensor:
    """Evaluation maps [P,H,W] for P (image, class) pairs (see `evaluation_maps`, which also gives the
    logits). No graph is kept; the model must be in eval mode."""
    return evaluation_maps(model, x, image_index, classes, method=method, layer=layer, post=post,
                           out_size=out_size, ig_steps=ig_steps)[0]
