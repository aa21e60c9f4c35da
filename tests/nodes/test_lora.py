"""The Squeeze FLUX LoRA, exported from a peft-wrapped diffusers FLUX, loads through ComfyUI's stock loader."""

import logging

import torch
from comfy_helpers import run_node

from squeeze_core.lora import flux_lora_config, save_comfyui_lora

RANK, ALPHA = 4, 2.0
# every ComfyUI Flux weight that holds a targeted attention projection
TARGETED = {
    "diffusion_model.double_blocks.0.img_attn.qkv.weight": 3,  # to_q, to_k, to_v
    "diffusion_model.double_blocks.0.img_attn.proj.weight": 1,  # to_out.0
    "diffusion_model.double_blocks.0.txt_attn.qkv.weight": 3,  # add_q_proj, add_k_proj, add_v_proj
    "diffusion_model.double_blocks.0.txt_attn.proj.weight": 1,  # to_add_out
    "diffusion_model.single_blocks.0.linear1.weight": 3,  # to_q, to_k, to_v (slices of the fused qkv + mlp)
}


def tiny_diffusers_flux_with_lora():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(4, 14, 14),
    )
    transformer.add_adapter(flux_lora_config(rank=RANK, alpha=ALPHA, init_lora_weights=False))  # random A and B
    return transformer


def test_every_targeted_flux_weight_is_patched_by_lora_loader_model_only(comfy, tiny_flux, tmp_path, caplog):
    import comfy.lora
    import folder_paths
    import nodes

    transformer = tiny_diffusers_flux_with_lora()
    (tmp_path / "loras").mkdir()
    save_comfyui_lora(transformer, tmp_path / "loras" / "squeeze_flux_lora.safetensors")
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))

    with caplog.at_level(logging.WARNING):
        patched = run_node(nodes.LoraLoaderModelOnly, model=tiny_flux, lora_name="squeeze_flux_lora.safetensors", strength_model=1.0)[0]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert {key: len(value) for key, value in patched.patches.items()} == TARGETED

    # the patched image-stream query rows are W + alpha/rank * B @ A of the diffusers to_q LoRA
    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    base = tiny_flux.model.state_dict()[key].clone()
    merged = comfy.lora.calculate_weight(patched.patches[key], base.clone(), key)
    to_q = transformer.transformer_blocks[0].attn.to_q
    delta = (ALPHA / RANK) * (to_q.lora_B["default"].weight @ to_q.lora_A["default"].weight)
    torch.testing.assert_close(merged[:64] - base[:64], delta, atol=1e-5, rtol=1e-5)
    assert (merged[64:128] != base[64:128]).all()  # the key rows are patched too
