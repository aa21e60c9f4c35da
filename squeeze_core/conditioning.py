"""MLLM + DLA in one call: prompts and reference images -> FLUX conditioning.

    cond = encode_conditioning(encoder, dla, ["a dog on the beach"], [[dog_image]])   # denoising phases 1-2
    cond = encode_conditioning(encoder, dla, ["a dog on the beach"])                  # denoising phase 3 (prompt only)
    staged = encode_for_phases(encoder, dla, "a dog on the beach", [dog_image])       # both, as a PhaseConditioning
"""

from __future__ import annotations

from typing import Sequence

import torch

from .dla import DLAOutput, DualLayerAggregator
from .mllm import InternVL3Encoder
from .phases import PhaseConditioning


@torch.no_grad()
def encode_conditioning(
    encoder: InternVL3Encoder, dla: DualLayerAggregator, prompts: Sequence[str], references=None
) -> DLAOutput:
    dla.check_mllm(encoder.info)  # fail before the expensive MLLM forward
    hidden = encoder.encode(prompts, references)
    device = next(dla.parameters()).device
    hidden.hidden_states = hidden.hidden_states.to(device)
    hidden.attention_mask = hidden.attention_mask.to(device)
    hidden.token_types = hidden.token_types.to(device)
    return dla(hidden)


@torch.no_grad()
def encode_for_phases(
    encoder: InternVL3Encoder, dla: DualLayerAggregator, prompt: str, references: Sequence
) -> PhaseConditioning[DLAOutput]:
    """One prompt -> the MLLM side of each denoising phase: prompt + references for the first and middle phases (the
    same encoding), the prompt alone for the late phase. Reference latents are added by the caller."""
    with_references = encode_conditioning(encoder, dla, [prompt], [list(references)]).item(0)
    prompt_only = encode_conditioning(encoder, dla, [prompt]).item(0)
    return PhaseConditioning(with_references, with_references, prompt_only)
