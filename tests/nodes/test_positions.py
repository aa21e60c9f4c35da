"""squeeze_core's reference position ids equal the ones ComfyUI's FLUX builds for `reference_latents_method="uxo"`."""

import torch

from squeeze_core.positions import uxo_position_ids


def comfyui_image_ids(flux_model, latent, references):
    """Run ComfyUI's FLUX forward and catch the image ids it hands to its transformer blocks."""
    seen = {}
    original = flux_model.forward_orig

    def capture(img, img_ids, *args, **kwargs):
        seen["img_ids"] = img_ids
        return original(img, img_ids, *args, **kwargs)

    flux_model.forward_orig = capture  # on this test's own instance, only to observe
    try:
        with torch.no_grad():
            flux_model(latent, torch.ones(1), torch.zeros(1, 5, 4096), y=torch.zeros(1, 768), guidance=torch.ones(1),
                       ref_latents=references, ref_latents_method="uxo")
    finally:
        del flux_model.forward_orig
    return seen["img_ids"][0]


def test_uxo_positions_match_comfyui(comfy):
    from comfy_helpers import build_tiny_flux

    flux = build_tiny_flux(comfy).model.diffusion_model
    cases = [
        ((16, 16), []),
        ((16, 12), [(8, 8)]),
        ((10, 14), [(8, 12), (6, 4)]),  # three references of different sizes, odd patch counts
        ((16, 16), [(9, 7), (16, 16), (4, 6)]),  # odd latent sizes pad up to whole patches
    ]
    for target, refs in cases:
        latent = torch.randn(1, 16, *target)
        references = [torch.randn(1, 16, h, w) for h, w in refs]
        expected = comfyui_image_ids(flux, latent, references or None)
        torch.testing.assert_close(uxo_position_ids(target, refs), expected, atol=0, rtol=0)
