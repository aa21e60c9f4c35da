"""Headless VAE encode/decode (diffusers) agree with ComfyUI's VAE on the same FLUX VAE weights."""

import torch

from squeeze_core.vae import vae_decode, vae_encode


def test_vae_round_trip_matches_comfyui(comfy):
    import comfy.sd
    from comfy_server import flux_vae

    vae = flux_vae(seed=3).eval()
    comfy_vae = comfy.sd.VAE(sd={k: v.clone() for k, v in vae.state_dict().items()})  # clones: conversion is in place
    pixels = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_latent = comfy_vae.encode(pixels)
        latent = vae_encode(vae, pixels)
        assert latent.shape == expected_latent.shape == (1, 16, 6, 8)
        torch.testing.assert_close(latent, expected_latent.float(), atol=1e-4, rtol=1e-4)
        expected_pixels = comfy_vae.decode(latent)
        decoded = vae_decode(vae, latent)
    assert decoded.shape == expected_pixels.shape == (1, 48, 64, 3)
    torch.testing.assert_close(decoded, expected_pixels.float(), atol=1e-4, rtol=1e-4)
