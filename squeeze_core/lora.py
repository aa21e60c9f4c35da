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


def load_comfyui_lora(transformer, path, adapter_name: str = "default"):
    """Load a LoRA file in the export format above into a diffusers FLUX transformer (through peft), in place."""
    from collections import Counter
    from pathlib import Path

    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SqueezeWeightsError(f"LoRA file '{path}' does not exist (in ComfyUI it goes in models/loras/).")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise SqueezeWeightsError(f"'{path}' is not a readable safetensors file ({error}).") from error
    prefix = "transformer."
    if not state or not all(k.startswith(prefix) for k in state):
        raise SqueezeWeightsError(f"'{path}' is not a Squeeze FLUX LoRA: its keys do not all start with '{prefix}'.")
    tensors = {k[len(prefix):]: v for k, v in state.items() if not k.endswith(".alpha")}
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in tensors})
    ranks = {m: tensors[f"{m}.lora_A.weight"].shape[0] for m in modules}
    alphas = {m: float(state.get(f"{prefix}{m}.alpha", torch.tensor(float(ranks[m])))) for m in modules}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=modules,
        rank_pattern={m: r for m, r in ranks.items() if r != rank}, alpha_pattern={m: a for m, a in alphas.items() if a != alpha},
    )
    transformer.add_adapter(config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(transformer, tensors, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise SqueezeWeightsError(f"LoRA '{path.name}' has tensors for modules this FLUX does not have: {unexpected[:5]}")
    return transformer


def merge_lora(transformer) -> int:
    """Fold every peft LoRA layer of a diffusers FLUX into its base weights and remove the adapter layers, as ComfyUI
    does when it loads a LoRA; returns how many layers were merged (0: nothing to do). Inference only: the merged
    model has no LoRA left to train."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = sum(isinstance(module, BaseTunerLayer) for module in transformer.modules())
    if layers:
        transformer.fuse_lora(safe_fusing=True)  # safe: a NaN in a merged weight is an error, not a black image
        transformer.unload_lora()
    return layers
