"""One optimisation step: L = BCE + λ · L_loc, where λ = 0 (no --loss) is plain baseline training."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mgkit.attribution import PostProcess, attribute
from mgkit.data.loader import Batch, images_to_float
from mgkit.engine.distributed import DistEnv, all_reduce_sum
from mgkit.losses import LOSS_POSTPROCESS, localization_loss
from mgkit.masks import box_area, box_masks, dilate_boxes, has_box


@dataclass(frozen=True)
class StepSpec:
    """What a step needs besides the batch: the guidance settings of a run."""

    loss: str | None
    attribution: str
    layer: str
    lam: float
    targets: str  # random | all
    dilate: float
    reduction: str  # sum | mean
    size_alpha: float
    ig_steps: int
    outside: bool  # guidance region outside the boxes (Waterbirds place task)
    amp: bool
    channels_last: bool


def sample_targets(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One ground-truth class per image, uniform over the classes present (reference: multinomial of
    y / y.sum()). Images without a positive label get class 0 and must be weighted out."""
    probs = labels.float().cpu()
    empty = probs.sum(1) == 0
    probs[empty] = 1.0
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(labels.device)


def target_slots(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every present class per image as [B, S] slots (S = most labels in an image) and a validity mask."""
    counts = labels.sum(1).long()
    s = max(int(counts.max().item()), 1)
    # Sorting positives first gives each image's present classes in its first `count` slots.
    order = torch.argsort(labels, dim=1, descending=True, stable=True)[:, :s]
    valid = torch.arange(s, device=labels.device)[None, :] < counts[:, None]
    return order, valid


def contributing_pairs(batch: Batch, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B*S] bool over the (image, class slot) pairs of targets [B, S]: the pairs whose map enters the
    localization loss. Only annotated images whose target class has a box contribute (an empty mask
    would push the whole map to zero under L1)."""
    s = targets.shape[1]
    return (batch.annotated.repeat_interleave(s) & valid.flatten()
            & has_box(batch.boxes.repeat_interleave(s, dim=0), targets.flatten()))


def localization_term(model, x, targets, weight, batch: Batch, spec: StepSpec, env: DistEnv, forward_func=None):
    """Localization loss for targets [B, S] (S classes per image, from one forward pass; `weight` [B*S]
    = contributing_pairs); returns (loss summed over the contributing (image, class) pairs, logits)."""
    post = PostProcess(*LOSS_POSTPROCESS[spec.loss])
    size = tuple(x.shape[-2:])
    maps, logits = attribute(model, x, targets, method=spec.attribution, layer=spec.layer, create_graph=True,
                             post=post, out_size=size, ig_steps=spec.ig_steps, forward_func=forward_func)
    s = targets.shape[1]
    flat = targets.flatten()
    raw = batch.boxes.repeat_interleave(s, dim=0)  # pair p = (image p // S, slot p % S)
    boxes = dilate_boxes(raw, spec.dilate, size) if spec.dilate > 0 else raw
    masks = box_masks(boxes, flat, size, outside=spec.outside)
    areas = box_area(raw, flat) if spec.loss == "energy-size" else None
    loc = localization_loss(spec.loss, maps.flatten(0, 1).float(), masks, weight, reduction="sum",
                            size_alpha=spec.size_alpha, areas=areas)
    if spec.reduction == "mean":
        # The mean over the *global* batch: local sum divided by the count over every process.
        loc = loc / all_reduce_sum(weight.float().sum().detach(), env).clamp(min=1.0)
    return loc, logits


def train_step(model, batch: Batch, spec: StepSpec, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               env: DistEnv, forward_func=None) -> dict[str, float]:
    """Forward, attribution (when guided), loss, backward and update for one batch.

    `forward_func` is what runs the prepared input (a DistributedDataParallel wrapper around `model.net`
    under torchrun); default `model`."""
    forward = forward_func or model
    x01 = images_to_float(batch.images, spec.channels_last)
    x = model.prepare_input(x01)
    labels = batch.labels
    autocast = (torch.autocast(device_type=x.device.type, dtype=torch.bfloat16) if spec.amp
                else contextlib.nullcontext())
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        weight = None
        if spec.loss is not None:
            if spec.targets == "random":
                targets = sample_targets(labels, generator)[:, None]
                valid = (labels.sum(1) > 0)[:, None]
            else:
                targets, valid = target_slots(labels)
            weight = contributing_pairs(batch, targets, valid)
        # A batch in which no pair contributes has a localization term of exactly zero, and so does its
        # gradient: the attribution and its double backward are skipped (most batches with 1 % of
        # images annotated); the step's result is the same to float rounding. Training attributions
        # run no forward pass of their own (multi-step IntGrad is refused in train mode), so BatchNorm
        # statistics are the same either way. Under DDP every process computes the term: it may hold
        # a collective (the global mean's count).
        if weight is not None and (env.world > 1 or bool(weight.any())):
            loc, logits = localization_term(model, x, targets, weight, batch, spec, env, forward_func)
        else:
            logits = forward(x)
            loc = torch.zeros((), device=x.device)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        # DDP averages gradients over processes; scaling the summed term by the world size keeps
        # it a sum over the global batch, as in a single process.
        total = bce + spec.lam * loc * env.world
    if not torch.isfinite(total):
        return {"bce": float(bce.detach()), "loc": float(loc.detach()), "loss": float(total.detach()), "finite": False}
    total.backward()
    optimizer.step()
    return {"bce": float(bce.detach()), "loc": float(loc.detach()), "loss": float(total.detach()) if env.world == 1
            else float((bce + spec.lam * loc).detach()), "finite": True}
