"""The staged denoising schedule (section 3.4 of the paper), shared by the ComfyUI sampler and the headless pipeline.

Flow time t runs from 1 (pure noise) to 0 (clean). For FLUX, t is the sigma the model sees, after any resolution
shift. With thresholds 0 <= tau2 < tau1 <= 1:

    stage 1  t >  tau1          MLLM(prompt + references), no reference latents        global layout and semantics
    stage 2  tau2 < t <= tau1   MLLM(prompt + references) + reference latents          both, balanced
    stage 3  t <= tau2          MLLM(prompt only) + reference latents                   identity detail, VAE-led

tau1 = 1 skips stage 1; tau2 = 0 skips stage 3. The paper's values were lost from our copy of the text; the defaults
below are a starting point for the evaluation's threshold sweep to replace.

`cosine_times(steps)` is the paper's "cosine" schedule, t_i = cos(pi/2 * i/N) for i = 0..N: small steps near
t = 0 where identity detail forms. Samplers map these times through the model's own shift to sigmas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import SqueezeInputError

DEFAULT_TAU1 = 0.8
DEFAULT_TAU2 = 0.2


def check_thresholds(tau1: float, tau2: float) -> None:
    for name, value in (("tau1", tau1), ("tau2", tau2)):
        if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
            raise SqueezeInputError(f"{name}={value!r} is outside [0, 1]; thresholds are flow times (1 = pure noise).")
    if not tau1 > tau2:
        raise SqueezeInputError(
            f"tau1={tau1} must be greater than tau2={tau2}: stage 1 runs for t > tau1, stage 3 for t <= tau2 "
            f"(e.g. tau1={DEFAULT_TAU1}, tau2={DEFAULT_TAU2})."
        )


@dataclass(frozen=True)
class StageThresholds:
    tau1: float = DEFAULT_TAU1  # above: MLLM only (no reference latents)
    tau2: float = DEFAULT_TAU2  # at or below: prompt-only MLLM + reference latents

    def __post_init__(self):
        check_thresholds(self.tau1, self.tau2)

    def stage(self, t: float) -> int:
        """1, 2 or 3 for flow time t."""
        if t > self.tau1:
            return 1
        return 2 if t > self.tau2 else 3


def cosine_times(steps: int) -> torch.Tensor:
    """(steps + 1,) flow times from 1 to 0: t_i = cos(pi/2 * i / steps)."""
    if not isinstance(steps, int) or steps < 1:
        raise SqueezeInputError(f"steps={steps!r} must be a positive integer.")
    times = torch.cos(torch.arange(steps + 1, dtype=torch.float64) * (math.pi / 2 / steps))
    times[-1] = 0.0  # cos(pi/2) is 6e-17, not 0
    return times.float()
