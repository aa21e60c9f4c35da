"""The FLUX LoRA that goes with the DLA: which layers it adapts, and the file ComfyUI's stock loader reads.

Targets: the attention projections of every FLUX block (diffusers `FluxTransformer2DModel` names):
    double blocks  attn.to_q / to_k / to_v / to_out.0 (image stream), attn.add_q_proj / add_k_proj / add_v_proj /
                   to_add_out (text stream)
    single blocks  attn.to_q / to_k / to_v (their output projection is fused with the MLP in proj_out: left frozen)

Export format ("diffusers + peft" keys, as `LoraLoaderModelOnly` reads them):
    transformer.<module>.lora_A.weight   (rank, in)
    transformer.<module>.lora_B.weight   (out, rank)
    transformer.<module>.alpha           scalar; ComfyUI scales B @ A by alpha / rank
"""

from __future__ import annotations

import json

import torch

from .errors import SqueezeWeightsError
from .weights import atomic_save_safetensors

FLUX_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
DEFAULT_RANK = 512  # the paper's LoRA rank


def flux_lora_config(rank: int = DEFAULT_RANK, alpha: float | None = None, init_lora_weights=True):
    """A peft LoraConfig on FLUX attention in double and single blocks (alpha defaults to rank: scale 1)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=list(FLUX_ATTENTION_TARGETS),
                      init_lora_weights=init_lora_weights)


def comfyui_lora_state_dict(transformer, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """A peft-wrapped diffusers FLUX transformer -> the LoRA tensors in ComfyUI-loadable diffusers key format."""
    from peft.utils import get_peft_model_state_dict

    config = transformer.peft_config[adapter_name]
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    if not state:
        raise SqueezeWeightsError(f"the transformer has no LoRA weights for adapter {adapter_name!r}.")
    out = {}
    for name, tensor in state.items():
        out[f"transformer.{name}"] = tensor.detach().to("cpu", torch.float32).contiguous()
        if name.endswith(".lora_A.weight"):
            module = name[: -len(".lora_A.weight")]
            rank = config.rank_pattern.get(module, config.r) if config.rank_pattern else config.r
            alpha = config.alpha_pattern.get(module, config.lora_alpha) if config.alpha_pattern else config.lora_alpha
            if tensor.shape[0] != rank:
                raise SqueezeWeightsError(f"LoRA module {module} has rank {tensor.shape[0]}, config says {rank}.")
            out[f"transformer.{module}.alpha"] = torch.tensor(float(alpha))
    return out


def save_comfyui_lora(transformer, path, metadata: dict | None = None, adapter_name: str = "default") -> None:
    """Write the LoRA of a peft-wrapped FLUX transformer for ComfyUI's LoraLoaderModelOnly (atomic)."""
    info = {"squeeze.format": "flux-lora", "squeeze.targets": json.dumps(list(FLUX_ATTENTION_TARGETS))}
    atomic_save_safetensors(comfyui_lora_state_dict(transformer, adapter_name), path, {**info, **(metadata or {})})
