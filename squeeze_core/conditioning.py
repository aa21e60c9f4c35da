"""MLLM + DLA in one call: prompts and reference images -> FLUX conditioning.

    cond = encode_conditioning(encoder, dla, ["a dog on the beach"], [[dog_image]])   # stages 1-2
    cond = encode_conditioning(encoder, dla, ["a dog on the beach"])                  # stage 3 (prompt only)
"""

from __future__ import annotations

from typing import Sequence

import torch

from .dla import DLAOutput, DualLayerAggregator
from .mllm import InternVL3Encoder


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
def encode_for_stages(
    encoder: InternVL3Encoder, dla: DualLayerAggregator, prompt: str, references: Sequence
) -> tuple[DLAOutput, DLAOutput]:
    """One prompt -> (conditioning with its references for stages 1-2, prompt-only conditioning for stage 3)."""
    with_references = encode_conditioning(encoder, dla, [prompt], [list(references)]).item(0)
    prompt_only = encode_conditioning(encoder, dla, [prompt]).item(0)
    return with_references, prompt_only
