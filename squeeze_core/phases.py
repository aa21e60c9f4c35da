"""The phases of staged denoising (section 3.4 of the paper), shared by the ComfyUI sampler, the headless pipeline
and training's condition drops.

Flow time t runs from 1 (pure noise) to 0 (clean). For FLUX, t is the sigma the model sees, after any resolution
shift. With thresholds 0 <= tau2 < tau1 <= 1 there are three denoising phases (the paper's "stages"; here "stage"
always means one of the two training stages):

    phase       flow time          conditioning (settings.CONDITIONINGS)                      role
    1 first     t >  tau1          mllm_refs: MLLM(prompt + references), no reference latents global layout and semantics
    2 middle    tau2 < t <= tau1   mllm_refs+latents: MLLM(prompt + references) + latents      both, balanced
    3 late      t <= tau2          prompt+latents: MLLM(prompt only) + reference latents       identity detail, VAE-led

`PhaseConditioning(first, middle, late)` is that triple, whatever a conditioning is in the caller's terms (a ComfyUI
CONDITIONING, a headless FluxConditioning, the DLA's output); the staged sampler's inputs `positive`,
`positive_middle` and `positive_late` are its three fields.

tau1 = 1 skips phase 1; tau2 = 0 skips phase 3. The paper's text does not give its values; the defaults
below are a starting point for the evaluation's threshold sweep to replace.

`cosine_times(steps)` is the paper's "cosine" schedule, t_i = cos(pi/2 * i/N) for i = 0..N: small steps near
t = 0 where identity detail forms. Samplers map these times through the model's own shift to sigmas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import torch

from .errors import SqueezeInputError
from .settings import DEFAULT_TAU1, DEFAULT_TAU2, check_thresholds  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class PhaseThresholds:
    tau1: float = DEFAULT_TAU1  # above: MLLM only (no reference latents)
    tau2: float = DEFAULT_TAU2  # at or below: prompt-only MLLM + reference latents

    def __post_init__(self):
        check_thresholds(self.tau1, self.tau2)

    def phase(self, t: float) -> int:
        """The denoising phase (1, 2 or 3) of flow time t."""
        if t > self.tau1:
            return 1
        return 2 if t > self.tau2 else 3


Conditioning = TypeVar("Conditioning")
Mapped = TypeVar("Mapped")


@dataclass(frozen=True)
class PhaseConditioning(Generic[Conditioning]):
    """One conditioning per denoising phase."""

    first: Conditioning  # phase 1, t > tau1: mllm_refs
    middle: Conditioning  # phase 2: mllm_refs+latents
    late: Conditioning  # phase 3, t <= tau2: prompt+latents

    @classmethod
    def every_step(cls, conditioning: Conditioning) -> PhaseConditioning[Conditioning]:
        """The same conditioning in every phase: what an unstaged sampler does."""
        return cls(conditioning, conditioning, conditioning)

    def at(self, phase: int) -> Conditioning:
        """The conditioning of denoising phase 1, 2 or 3 (see `PhaseThresholds.phase`)."""
        if phase not in (1, 2, 3):
            raise ValueError(f"denoising phase {phase!r} is not 1, 2 or 3")
        return (self.first, self.middle, self.late)[phase - 1]

    def map(self, function: Callable[[Conditioning], Mapped]) -> PhaseConditioning[Mapped]:
        return PhaseConditioning(function(self.first), function(self.middle), function(self.late))


def cosine_times(steps: int) -> torch.Tensor:
    """(steps + 1,) flow times from 1 to 0: t_i = cos(pi/2 * i / steps)."""
    if not isinstance(steps, int) or steps < 1:
        raise SqueezeInputError(f"steps={steps!r} must be a positive integer.")
    times = torch.cos(torch.arange(steps + 1, dtype=torch.float64) * (math.pi / 2 / steps))
    times[-1] = 0.0  # cos(pi/2) is 6e-17, not 0
    return times.float()
