"""What every mini pretraining loop shares: the learning-rate schedule (linear warm-up, cosine to a floor) and the step."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, steps: int, warmup_steps: int, floor: float = 0.05) -> float:
    """The learning-rate factor of step `step` (from 0): linear warm-up over warmup_steps, then cosine down to floor.
    diffusers' cosine schedule ends at 0; the miniature's models were trained with this floor, so it stays."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(optimiser: torch.optim.Optimizer, steps: int, warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = max(1, int(steps * warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: warmup_cosine_factor(step, steps, warmup_steps))


def optimise(optimiser: torch.optim.Optimizer, schedule, loss: torch.Tensor, clip_parameters=None) -> float:
    """One optimiser step on `loss` (gradients clipped to norm 1 over `clip_parameters` if given); -> the loss."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if clip_parameters is not None:
        torch.nn.utils.clip_grad_norm_(clip_parameters, 1.0)
    optimiser.step()
    schedule.step()
    return loss.item()
