"""One training sample, from flow time to loss: the pieces the trainer and the tests share.

Rectified flow (paper 3.1), in FLUX's normalised latent space:
    x_t = (1 - t) * x_0 + t * noise          t = 1 is pure noise, t = 0 the clean target
    v   = noise - x_0                       the velocity FLUX predicts (ComfyUI's denoised = x_t - t * v)
    loss = mean((FLUX(x_t, t, DLA(MLLM(prompt, refs)), ref_latents) - v)^2)   over the target tokens only

Timesteps (see docs/training.md, "Timestep sampling"): t = sigmoid(n), n ~ N(logit_mean, logit_std) (the logit-normal of SD3
and FLUX training, which spends most samples in the middle of the trajectory), then moved by FLUX's resolution
shift exactly as the sampler's schedule is at that resolution, so training sees times in the proportions sampling
visits them. `timestep_sampling="uniform"` draws t ~ U(0, 1) instead (still shifted if `resolution_shift`).

Conditioning drop (paper 3.4), drawn per sample:
    prompt_drop          everything dropped (empty prompt, no references anywhere): the sampler's CFG negative
    mllm_reference_drop  the MLLM reads the prompt alone ("prompt", or with latents "prompt+latents": denoising
                         phase 3's conditioning)
    vae_reference_drop   no reference latents, training stage 2 only (training stage 1 never has them):
                         "mllm_refs", denoising phase 1's conditioning
With both kept, the sample has the MLLM's prompt + references and the reference latents: "mllm_refs+latents",
denoising phase 2's. The names are settings.CONDITIONINGS'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..dla import DualLayerAggregator
from ..flux import flux_velocity
from ..mllm import MLLMOutput
from ..sampling import flux_resolution_shift, flux_time_shift


@dataclass(frozen=True)
class ConditionUse:
    prompt: bool  # False: the sample is unconditional (empty prompt, no references)
    mllm_references: bool  # the MLLM reads the references with the prompt
    vae_references: bool  # the reference latents join FLUX's sequence

    @property
    def name(self) -> str:
        """Its name in settings.CONDITIONINGS."""
        if not self.prompt:
            return "unconditional"
        return ("mllm_refs" if self.mllm_references else "prompt") + ("+latents" if self.vae_references else "")


def draw_condition_use(generator: torch.Generator, training_stage: int, mllm_reference_drop: float, vae_reference_drop: float,
                       prompt_drop: float) -> ConditionUse:
    draws = torch.rand(3, generator=generator).tolist()
    if draws[0] < prompt_drop:
        return ConditionUse(False, False, False)
    return ConditionUse(True, draws[1] >= mllm_reference_drop, training_stage == 2 and draws[2] >= vae_reference_drop)


def sample_timesteps(generator: torch.Generator, count: int, width: int, height: int, sampling: str = "logit_normal",
                     logit_mean: float = 0.0, logit_std: float = 1.0, resolution_shift: bool = True) -> torch.Tensor:
    """(count,) flow times in (0, 1) for targets of width x height px."""
    if sampling == "logit_normal":
        t = torch.sigmoid(torch.randn(count, generator=generator) * logit_std + logit_mean)
    else:
        t = torch.rand(count, generator=generator)
    t = t.clamp(1e-4, 1 - 1e-4)
    if resolution_shift:  # as the sampler's schedule is shifted at this size
        t = flux_time_shift(t, flux_resolution_shift(width, height))
    return t


def noisy_latent(clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (x_t, target velocity); t broadcasts over (B, C, h, w)."""
    t = t.reshape(-1, 1, 1, 1).to(clean.dtype)
    return (1.0 - t) * clean + t * noise, noise - clean


class SqueezeTrainable(nn.Module):
    """The trained parts in one module (what DDP / FSDP wrap): the DLA, and FLUX carrying its LoRA."""

    def __init__(self, dla: DualLayerAggregator, transformer):
        super().__init__()
        self.dla, self.transformer = dla, transformer

    def forward(self, hidden_states, attention_mask, token_types, noisy, t, references=(), guidance: float = 3.5):
        """hidden_states (L, B, T, H) of B samples -> predicted velocity (B, 16, h, w), float32."""
        cond = self.dla(MLLMOutput(hidden_states, attention_mask, token_types, input_ids=None))
        return flux_velocity(self.transformer, noisy, t, cond.context, cond.pooled, guidance, references, cond.attention_mask)


def group_samples(samples: list[dict]) -> list[dict]:
    """Merge samples that can share one FLUX forward: the same target size and the same reference-latent shapes
    (FLUX's position ids are shared by a batch). Prompts of different lengths are right-padded and masked."""
    groups: dict[tuple, list[dict]] = {}
    for sample in samples:
        signature = (tuple(sample["noisy"].shape[1:]),) + tuple(tuple(r.shape) for r in sample["references"])
        groups.setdefault(signature, []).append(sample)
    merged = []
    for members in groups.values():
        length = max(m["hidden_states"].shape[2] for m in members)

        def pad(tensor, dim):
            return torch.nn.functional.pad(tensor, [0, 0] * (tensor.dim() - dim - 1) + [0, length - tensor.shape[dim]])

        merged.append(dict(
            hidden_states=torch.cat([pad(m["hidden_states"], 2) for m in members], dim=1),  # (L, B, T, H)
            attention_mask=torch.cat([pad(m["attention_mask"], 1) for m in members]),  # (B, T), 0 = padding
            token_types=torch.cat([pad(m["token_types"], 1) for m in members]),  # padding is TokenType.PAD (0)
            noisy=torch.cat([m["noisy"] for m in members]), t=torch.cat([m["t"] for m in members]),
            references=[torch.cat(parts) for parts in zip(*[m["references"] for m in members])],
            velocity=torch.cat([m["velocity"] for m in members]), count=len(members),
        ))
    return merged


def velocity_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((prediction.float() - target.float()) ** 2)
