"""The optimizer: StableAdamW (mmBERT's) or AdamW, parameter groups, and the schedule applied to them.

Two groups: weights decay, norms and biases do not (mmBERT/ModernBERT exclude them). Weight decay is
*fully decoupled* from the learning rate, as in mmBERT's configs: per step a weight shrinks by
`weight_decay * lr / peak_lr`, so `weight_decay` is the decay at the peak LR and follows the schedule
down. optimi's StableAdamW implements that itself (`decouple_lr=True` with `max_lr`); torch's AdamW
multiplies its decay by the LR, so it is given `weight_decay / peak_lr` for the same decay per step.

On CPU optimi's StableAdamW step makes about a dozen passes over every tensor (a loop of lerp, mul,
addcmul, maximum, pow, div, mean, sqrt, ...); `StableAdamW` here runs the same update as one compiled
kernel per tensor when the model's layers compile (`mmbert.model.compiles`). On CUDA optimi's own fused
Triton kernels run.
"""

from __future__ import annotations

import functools

import optimi
import torch
from optimi.utils import debias_beta

from mmbert.distributed import unwrap
from mmbert.model import compiles
from mmbert.recipe import TrainSpec


class StableAdamW(optimi.StableAdamW):
    """optimi's StableAdamW (same state, same state dict) with a fused CPU step when `fused`.

    The fused step is optimi's for-loop update, per tensor, in fp32: moments, the RMS of grad / sqrt(v)
    that scales the LR down, the fully decoupled weight decay and the Adam step. It equals optimi's up to
    float rounding (the order of the operations). Parameters in fp16/bf16 (Kahan summation) or on CUDA
    are never fused here.
    """

    def __init__(self, *args, fused: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fused = fused

    @torch.no_grad()
    def step(self, closure=None, param=None):
        if not self.fused or closure is not None or param is not None:
            return super().step(closure, param)
        update = _compiled_update()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, eps_sqs, kahan, scratch = [], [], [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, eps_sqs, kahan, scratch)
            group["step"].add_(1)
            step = int(group["step"])
            beta2_hat = debias_beta(group["beta2"], step)
            decay = group["weight_decay"] / group["max_lr"] if group["decouple_lr"] else group["weight_decay"]
            # One tensor of hyper-parameters: a new LR is a new value, not a recompile.
            hyper = torch.tensor(
                [group["lr"], 1 - debias_beta(group["beta1"], step), beta2_hat, decay, group["eps"]]
            )
            for p, g, m, v, e in zip(params, grads, exp_avgs, exp_avg_sqs, eps_sqs, strict=True):
                update(p.view(-1), g.view(-1), m.view(-1), v.view(-1), e, hyper)
        return None


def _stable_adamw_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    eps_sq: torch.Tensor,
    hyper: torch.Tensor,
) -> None:
    lr, beta1_comp, beta2_hat, decay, eps = hyper.unbind()
    exp_avg.lerp_(grad, beta1_comp)
    exp_avg_sq.mul_(beta2_hat).add_((1 - beta2_hat) * grad * grad)
    rms = (grad * grad / torch.maximum(exp_avg_sq, eps_sq)).mean().sqrt()
    step_lr = lr / rms.clamp(min=1.0)
    param.mul_(1 - step_lr * decay).sub_(step_lr * exp_avg / (exp_avg_sq.sqrt() + eps))


@functools.cache
def _compiled_update():
    return torch.compile(_stable_adamw_update, dynamic=True)


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
        return StableAdamW(
            groups, lr=peak_lr, betas=betas, eps=train.eps, decouple_lr=True, max_lr=peak_lr,
            fused=_fuses(model, decay + no_decay),
        )  # fmt: skip
    groups[0]["weight_decay"] = weight_decay / peak_lr
    return torch.optim.AdamW(groups, lr=peak_lr, betas=betas, eps=train.eps)


def _fuses(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> bool:
    """The fused CPU step: fp32 parameters on CPU, of a model whose layers compile there."""
    config = getattr(unwrap(model), "config", None)
    return (
        config is not None
        and all(
            type(p) is torch.nn.Parameter and p.device.type == "cpu" and p.dtype == torch.float32
            for p in params
        )
        and compiles(config.compile, config.hidden_size, torch.device("cpu"))
    )


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
