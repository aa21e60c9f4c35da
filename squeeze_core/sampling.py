"""Headless staged sampling: euler with real CFG, step for step what ComfyUI's staged sampler does with "euler".

    sigmas = cosine_flux_sigmas(28, shift=1.15)
    positive = PhaseConditioning(first=mllm_with_refs, middle=mllm_with_refs_and_latents, late=prompt_only_and_latents)
    latent = staged_euler(transformer, flux_noise((1, 16, 128, 128), seed), sigmas, positive, negative, cfg=2.5,
                          thresholds=PhaseThresholds(0.8, 0.2))

Conditionings are `FluxConditioning`s (context, pooled, reference VAE latents, FLUX guidance). Reference latents are
given in raw VAE space, as ComfyUI's `reference_latents` hold them; the returned latent is in raw VAE space too
(ready for the VAE decoder), as ComfyUI's sampler returns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .flux import FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT, VAE_DOWNSCALE, flux_velocity
from .phases import PhaseConditioning, PhaseThresholds, cosine_times
from .positions import PATCH

DEFAULT_FLUX_SHIFT = 1.15  # ComfyUI's FLUX default; ModelSamplingFlux sets it from the resolution


@dataclass
class FluxConditioning:
    context: torch.Tensor  # (1, T, 4096)
    pooled: torch.Tensor  # (1, 768)
    references: list = field(default_factory=list)  # VAE latents (1, 16, h, w), raw VAE space
    guidance: float = 3.5  # FLUX.1-dev's distilled guidance input (ComfyUI's default when none is set)


def flux_resolution_shift(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """The shift ComfyUI's ModelSamplingFlux sets for an image size: linear in image tokens, base_shift at 256 tokens,
    max_shift at 4096."""
    slope = (max_shift - base_shift) / (4096 - 256)
    tokens = width * height / (VAE_DOWNSCALE * VAE_DOWNSCALE * PATCH * PATCH)
    return tokens * slope + (base_shift - slope * 256)


def flux_time_shift(t, shift: float):
    """FLUX's resolution shift of flow time t, a float or a tensor inside (0, 1) (ComfyUI's flux_time_shift with
    sigma = 1)."""
    if not isinstance(t, torch.Tensor):
        if t <= 0.0:
            return 0.0
        if t >= 1.0:
            return 1.0
    mu = math.exp(shift)
    return mu / (mu + (1.0 / t - 1.0))


def cosine_flux_sigmas(steps: int, shift: float = DEFAULT_FLUX_SHIFT) -> torch.Tensor:
    """The cosine schedule through FLUX's shift: ComfyUI's `squeeze_cosine` scheduler on a FLUX model."""
    return torch.tensor([flux_time_shift(float(t), shift) for t in cosine_times(steps)], dtype=torch.float32)


def flux_noise(shape, seed: int) -> torch.Tensor:
    """The initial noise ComfyUI draws for a seed (CPU generator, float32)."""
    return torch.randn(shape, generator=torch.manual_seed(seed), dtype=torch.float32, device="cpu")


def to_model_space(latent: torch.Tensor) -> torch.Tensor:
    return (latent - FLUX_LATENT_SHIFT) * FLUX_LATENT_SCALE


def to_vae_space(latent: torch.Tensor) -> torch.Tensor:
    return latent / FLUX_LATENT_SCALE + FLUX_LATENT_SHIFT


def denoised(transformer, x, sigma, cond: FluxConditioning) -> torch.Tensor:
    references = [to_model_space(r.to(x.device)) for r in cond.references]
    velocity = flux_velocity(transformer, x, sigma, cond.context.to(x.device), cond.pooled.to(x.device), cond.guidance, references)
    return x - velocity * sigma


@torch.no_grad()
def staged_euler(transformer, noise, sigmas, positive: PhaseConditioning[FluxConditioning], negative: FluxConditioning,
                 cfg: float = 2.5, thresholds: PhaseThresholds | None = None, progress: bool = True) -> torch.Tensor:
    """Euler steps from noise * sigmas[0] to sigmas[-1]; each step's positive is the one of its denoising phase."""
    thresholds = thresholds or PhaseThresholds()
    x = noise * sigmas[0]  # an empty latent noised to the first sigma
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="sampling"):
        sigma = float(sigmas[i])
        x0 = denoised(transformer, x, sigma, positive.at(thresholds.phase(sigma)))
        if not math.isclose(cfg, 1.0):
            uncond = denoised(transformer, x, sigma, negative)
            x0 = uncond + (x0 - uncond) * cfg
        x = x + (x - x0) / sigma * (float(sigmas[i + 1]) - sigma)
    return to_vae_space(x)
