"""Helpers for the in-process ComfyUI tests: tiny models in ComfyUI's own classes, conditioning builders."""

import torch


def build_tiny_flux(comfy, seed=0):
    """ComfyUI's own Flux class at a tiny width, random weights."""
    import comfy.model_detection
    import comfy.model_patcher

    unet_config = dict(
        image_model="flux", in_channels=16, patch_size=2, out_channels=16, vec_in_dim=768, context_in_dim=4096,
        hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 14, 14], theta=10000,
        qkv_bias=True, guidance_embed=True,
    )
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, "", device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.diffusion_model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def conditioning(context, pooled, **extra):
    return [[context, {"pooled_output": pooled, **extra}]]


def run_node(node_cls, **inputs):
    """Run a stock ComfyUI node by its input names, whether it is a V1 (FUNCTION) or a V3 (execute) node, so the
    tests hold on 0.3.75 and on current releases alike. Returns the outputs as a tuple."""
    if hasattr(node_cls, "define_schema"):
        return tuple(node_cls.execute(**inputs).result)
    return tuple(getattr(node_cls(), node_cls.FUNCTION)(**inputs))
