"""What every mini pretraining loop shares: the learning-rate schedule (linear warm-up, cosine to 5%) and the step."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimiser: torch.optim.Optimizer, steps: int, warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def optimise(optimiser: torch.optim.Optimizer, schedule, loss: torch.Tensor, clip_parameters=None) -> float:
    """One optimiser step on `loss` (gradients clipped to norm 1 over `clip_parameters` if given); -> the loss."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if clip_parameters is not None:
        torch.nn.utils.clip_grad_norm_(clip_parameters, 1.0)
    optimiser.step()
    schedule.step()
    return loss.item()
