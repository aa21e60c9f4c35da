"""The FLUX VAE on the headless side (diffusers `AutoencoderKL`), with ComfyUI's conventions so both paths agree:
pixels are (B, H, W, 3) in [0, 1]; latents are raw VAE latents (B, 16, H/8, W/8) (H/4, W/4 for a VAE that halves
the image twice; `squeeze_core.flux.vae_downscale`), the distribution's mode on encode."""

from __future__ import annotations

import torch

from .flux import load_diffusers_folder


def load_flux_vae(path, dtype=torch.float32, device="cpu"):
    """The FLUX VAE in the diffusers layout (the `vae/` folder of the FLUX.1-dev repository)."""
    from diffusers import AutoencoderKL

    return load_diffusers_folder(AutoencoderKL, path, "FLUX VAE", "Point --vae at the 'vae/' folder of a local FLUX.1-dev copy.",
                                 dtype, device)


@torch.no_grad()
def vae_encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    dtype = next(vae.parameters()).dtype
    images = pixels.movedim(-1, 1).to(next(vae.parameters()).device, dtype) * 2.0 - 1.0
    return vae.encode(images).latent_dist.mode().float()


@torch.no_grad()
def vae_decode(vae, latent: torch.Tensor) -> torch.Tensor:
    dtype = next(vae.parameters()).dtype
    images = vae.decode(latent.to(next(vae.parameters()).device, dtype)).sample.float()
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)
