"""MLLM + DLA in one call: prompts and reference images -> FLUX conditioning.

    cond = encode_conditioning(encoder, dla, ["a dog on the beach"], [[dog_image]])   # denoising phases 1-2
    cond = encode_conditioning(encoder, dla, ["a dog on the beach"])                  # denoising phase 3 (prompt only)
    staged = encode_for_phases(encoder, dla, "a dog on the beach", [dog_image])       # both, as a PhaseConditioning
"""

from __future__ import annotations

import collections
from typing import Hashable, Sequence

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
    encoder: InternVL3Encoder, dla: DualLayerAggregator, prompt: str, references: Sequence, prompt_only: DLAOutput | None = None
) -> PhaseConditioning[DLAOutput]:
    """One prompt -> the MLLM side of each denoising phase: prompt + references for the first and middle phases (the
    same encoding), the prompt alone for the late phase. Reference latents are added by the caller. `prompt_only`, when
    the caller kept it from an earlier call, saves that MLLM pass; with no references one pass serves every phase."""
    if prompt_only is None:
        prompt_only = encode_conditioning(encoder, dla, [prompt]).item(0)
    with_references = encode_conditioning(encoder, dla, [prompt], [list(references)]).item(0) if references else prompt_only
    return PhaseConditioning(with_references, with_references, prompt_only)


class KeptEncodings:
    """DLA outputs kept by key, the least recently used dropped first; capacity 0 keeps nothing. The key names
    everything an encoding depends on (prompt, references, which DLA ...); one cache belongs to one loaded MLLM."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: collections.OrderedDict[Hashable, DLAOutput] = collections.OrderedDict()

    def get(self, key: Hashable) -> DLAOutput | None:
        output = self._items.get(key)
        if output is not None:
            self._items.move_to_end(key)
        return output

    def put(self, key: Hashable, output: DLAOutput) -> None:
        self._items[key] = output
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
