"""The optimizer: StableAdamW (mmBERT's) or AdamW, parameter groups, and the schedule applied to them.

Two groups: weights decay, norms and biases do not (mmBERT/ModernBERT exclude them). Weight decay is
*fully decoupled* from the learning rate, as in mmBERT's configs: per step a weight shrinks by
`weight_decay * lr / peak_lr`, so `weight_decay` is the decay at the peak LR and follows the schedule
down. optimi's StableAdamW implements that itself (`decouple_lr=True` with `max_lr`); torch's AdamW
multiplies its decay by the LR, so it is given `weight_decay / peak_lr` for the same decay per step.
"""

from __future__ import annotations

import optimi
import torch

from mmbert.recipe import TrainSpec


def parameter_groups(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(weights that decay, norms and biases that do not); a tied parameter is listed once."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if name.endswith("bias") or "norm" in name else decay).append(param)
    return decay, no_decay


def build_optimizer(
    model: torch.nn.Module, train: TrainSpec, peak_lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The recipe's optimizer over `model`, set for a phase of this peak LR and weight decay."""
    decay, no_decay = parameter_groups(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "apply_weight_decay": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_weight_decay": False},
    ]
    betas = tuple(train.betas)
    if train.optimizer == "stable_adamw":
        return optimi.StableAdamW(
            groups, lr=peak_lr, betas=betas, eps=train.eps, decouple_lr=True, max_lr=peak_lr
        )
    groups[0]["weight_decay"] = weight_decay / peak_lr
    return torch.optim.AdamW(groups, lr=peak_lr, betas=betas, eps=train.eps)


def set_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float, peak_lr: float) -> None:
    """This step's LR, and the weight decay of its phase, decoupled against the phase's peak LR."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group["apply_weight_decay"]:
            continue
        if "max_lr" in group:  # optimi: per-step decay = weight_decay * lr / max_lr
            group["weight_decay"] = weight_decay
            group["max_lr"] = peak_lr
        else:  # torch AdamW multiplies by lr: the same decay per step
            group["weight_decay"] = weight_decay / peak_lr
