"""Models in ComfyUI's own types that ComfyUI's loaders cannot build: a FLUX of any head layout, and a diffusers
`AutoencoderKL` of any width as a `VAE`. Used by `Squeeze Mini Models` for the embedded miniature; no ComfyUI code is
patched, only its public classes are subclassed or called.

    patcher = flux_model_patcher(state_dict, num_heads=4, axes_dim=[8, 12, 12])   # MODEL, ComfyUI's Flux
    vae = DiffusersVAE(autoencoder)                                                 # VAE, for VAE Encode / Decode
"""

from __future__ import annotations

import logging

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import torch

logger = logging.getLogger("squeeze.nodes")


def flux_model_patcher(state_dict: dict, num_heads: int, axes_dim: list[int], dtype: torch.dtype = torch.float32):
    """ComfyUI's own Flux from a diffusers-layout FLUX state dict, under the memory manager.

    ComfyUI's detection reads every size from the weights except the head layout, which it takes to be FLUX.1's
    (24 heads of 128, rope axes 16/56/56); a FLUX of another layout gets its own heads and axes, then the model is
    built and loaded as `Load Diffusion Model` builds one. `state_dict` is consumed (the conversion pops its keys)."""
    state = comfy.model_detection.convert_diffusers_mmdit(state_dict, "")
    if state is None:
        raise ValueError("the state dict is not a diffusers FLUX transformer (no 'transformer_blocks.*' keys)")
    unet_config = comfy.model_detection.detect_unet_config(state, "")
    unet_config.update(num_heads=num_heads, axes_dim=list(axes_dim))
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config, state)
    if model_config is None:
        raise ValueError(f"ComfyUI does not recognise this FLUX (detected {unet_config})")
    model_config.set_inference_dtype(dtype, None)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    model = model_config.get_model(state, "", device=offload_device)
    model.load_model_weights(state, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


class _AutoencoderStage(torch.nn.Module):
    """The interface ComfyUI's VAE drives (`encode(pixels) -> latents`, `decode(latents) -> pixels`, both in [-1, 1]
    pixel space and raw latent space) over a diffusers `AutoencoderKL`; encoding gives the distribution's mode, as
    ComfyUI's own KL autoencoders and the headless `squeeze_core.vae.vae_encode` do."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(pixels).latent_dist.mode()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents).sample


class DiffusersVAE(comfy.sd.VAE):
    """A diffusers `AutoencoderKL` as ComfyUI's `VAE`: the stock VAE nodes, tiling and the memory manager work on it.

    ComfyUI picks a VAE's architecture from its state dict's keys and builds it with 32 normalisation groups, which
    a narrow VAE (the miniature's 16-channel blocks use 8) cannot satisfy. So the base class is set up with its
    parameter-free pixel-space model, which gives every setting this ComfyUI version's VAE methods read, and the
    diffusers model then takes its place, with its own scale, channels and memory estimates."""

    def __init__(self, autoencoder, dtype: torch.dtype = torch.float32):
        super().__init__(sd={"pixel_space_vae": torch.tensor(1.0)}, dtype=dtype)
        config = autoencoder.config
        ratio = 2 ** (len(config.block_out_channels) - 1)
        self.downscale_ratio = self.upscale_ratio = ratio
        self.latent_channels = config.latent_channels
        self.output_channels = config.out_channels
        self.working_dtypes = [dtype]
        widest = max(config.block_out_channels)
        # activations of the widest block at full resolution, a few at a time: ComfyUI's KL estimate scaled by width
        self.memory_used_encode = lambda shape, dtype_: 14 * widest * shape[2] * shape[3] * comfy.model_management.dtype_size(dtype_)
        self.memory_used_decode = lambda shape, dtype_: (
            14 * widest * shape[2] * shape[3] * ratio * ratio * comfy.model_management.dtype_size(dtype_))
        self.first_stage_model = _AutoencoderStage(autoencoder.requires_grad_(False)).eval().to(dtype)
        self.vae_dtype = dtype
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=comfy.model_management.vae_offload_device())
        self.size = None
        self.model_size()
