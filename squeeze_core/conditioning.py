"""MLLM + DLA in one call: prompts and reference images -> FLUX conditioning.

    cond = encode_conditioning(encoder, dla, ["a dog on the beach"], [[dog_image]])   # denoising phases 1-2
    cond = encode_conditioning(encoder, dla, ["a dog on the beach"])                  # denoising phase 3 (prompt only)
    staged = encode_for_phases(encoder, dla, "a dog on the beach", [dog_image])       # both, as a PhaseConditioning
"""

from __future__ import annotations

import collections
import dataclasses
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


class PromptOnlyEncodings:
    """Prompt-only encodings kept on the CPU, the least recently used dropped first. The key names everything the
    encoding depends on besides the prompt (which DLA file, the system prompt); the cache belongs to one loaded MLLM.
    It makes the constant parts of a workflow free after their first encode: the empty negative, and the late
    phase's prompt-only side while only the references change."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._items: collections.OrderedDict[tuple, DLAOutput] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, prompt: str) -> DLAOutput | None:
        output = self._items.get((key, prompt))
        if output is not None:
            self._items.move_to_end((key, prompt))
        return output

    def put(self, key: Hashable, prompt: str, output: DLAOutput) -> None:
        cpu = {f.name: getattr(output, f.name).detach().to("cpu", copy=True) for f in dataclasses.fields(output)}
        self._items[(key, prompt)] = DLAOutput(**cpu)
        self._items.move_to_end((key, prompt))
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
