"""Helpers for the in-process ComfyUI tests: tiny models in ComfyUI's own classes, conditioning builders."""

import torch


def comfy_flux_from_diffusers(transformer, device=None):
    """ComfyUI's own Flux holding a diffusers FLUX's weights, built the way ComfyUI loads a checkpoint: its key
    conversion, then its model detection from the state dict, so the config carries whatever fields this ComfyUI
    version's Flux takes (0.3.75 and current releases differ). Only the head layout is set here: detection assumes
    FLUX.1's 24 heads x 128 with rope axes (16, 56, 56)."""
    import comfy.model_detection
    import comfy.model_patcher

    # clones: the converter pops keys and swaps norm_out's halves in place, which would alter `transformer` itself
    state = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in transformer.state_dict().items()}, "")
    unet_config = comfy.model_detection.detect_unet_config(state, "")
    unet_config.update(num_heads=transformer.config.num_attention_heads, axes_dim=list(transformer.config.axes_dims_rope))
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config, state)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(state, "", device="cpu")
    model.load_model_weights(state, "")
    device = device or torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def build_tiny_flux(comfy, seed=0):
    """ComfyUI's own Flux at the tiny width, random weights (see `comfy_flux_from_diffusers`)."""
    from squeeze_core.testing import tiny_flux_transformer

    return comfy_flux_from_diffusers(tiny_flux_transformer(seed))


def conditioning(context, pooled, **extra):
    return [[context, {"pooled_output": pooled, **extra}]]


def run_node(node_cls, **inputs):
    """Run a stock ComfyUI node by its input names, whether it is a V1 (FUNCTION) or a V3 (execute) node, so the
    tests hold on 0.3.75 and on current releases alike. Returns the outputs as a tuple."""
    if hasattr(node_cls, "define_schema"):
        return tuple(node_cls.execute(**inputs).result)
    return tuple(getattr(node_cls(), node_cls.FUNCTION)(**inputs))
