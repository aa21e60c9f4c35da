"""The headless FLUX call (diffusers) and ComfyUI's own FLUX agree on the same weights: the base of the parity that
the headless pipeline builds on. Both are independent implementations."""

import torch

from squeeze_core.flux import flux_velocity
from squeeze_core.testing import tiny_flux_transformer


def shared_weights(comfy):
    """A diffusers FLUX with random weights, and ComfyUI's tiny FLUX loaded with the same weights (ComfyUI's own
    diffusers -> ComfyUI key conversion and model detection)."""
    from comfy_helpers import comfy_flux_from_diffusers

    transformer = tiny_flux_transformer(seed=0).eval()
    return transformer, comfy_flux_from_diffusers(transformer)


def test_one_flux_call_matches_comfyui_with_references(comfy):
    transformer, patcher = shared_weights(comfy)
    comfy_flux = patcher.model.diffusion_model
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 16, 12, 10, generator=g)
    context, pooled = torch.randn(1, 9, 4096, generator=g), torch.randn(1, 768, generator=g)
    references = [torch.randn(1, 16, 8, 6, generator=g), torch.randn(1, 16, 6, 10, generator=g)]
    for sigma, refs in ((0.9, []), (0.45, references)):
        with torch.no_grad():
            expected = comfy_flux(latent, torch.tensor([sigma]), context, y=pooled, guidance=torch.tensor([3.5]),
                                  ref_latents=refs or None, ref_latents_method="uxo")
            headless = flux_velocity(transformer, latent, sigma, context, pooled, guidance=3.5, references=refs)
        assert headless.shape == expected.shape == latent.shape
        torch.testing.assert_close(headless, expected, atol=1e-4, rtol=1e-4)


def test_headless_staged_sampling_matches_the_comfyui_staged_sampler(comfy):
    from squeeze_core.phases import PhaseConditioning, PhaseThresholds
    from squeeze_core.sampling import FluxConditioning, cosine_flux_sigmas, flux_noise, staged_euler
    from squeeze_pack.nodes.staged import cosine_sigmas, staged_sample

    transformer, patcher = shared_weights(comfy)
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(1, 16, 8, 6, generator=g)
    stage1 = FluxConditioning(torch.randn(1, 12, 4096, generator=g), torch.randn(1, 768, generator=g))
    stage2 = FluxConditioning(torch.randn(1, 12, 4096, generator=g), stage1.pooled, [ref])
    stage3 = FluxConditioning(torch.randn(1, 7, 4096, generator=g), stage1.pooled, [ref])
    negative = FluxConditioning(torch.zeros(1, 5, 4096), torch.zeros(1, 768))

    def comfy_cond(c):
        extra = {"reference_latents": c.references, "reference_latents_method": "uxo"} if c.references else {}
        return [[c.context, {"pooled_output": c.pooled, **extra}]]

    steps, seed, latent = 6, 11, {"samples": torch.zeros(1, 16, 12, 10)}
    out, guider = staged_sample(patcher, seed, steps, 2.5, "euler", "squeeze_cosine", comfy_cond(stage1), comfy_cond(negative), latent,
                                positive_middle=comfy_cond(stage2), positive_late=comfy_cond(stage3), tau1=0.9, tau2=0.55)
    assert {s for _, s in guider.phase_log} == {1, 2, 3}

    sigmas = cosine_flux_sigmas(steps)
    torch.testing.assert_close(sigmas, cosine_sigmas(patcher, steps), atol=1e-6, rtol=0)
    headless = staged_euler(transformer, flux_noise((1, 16, 12, 10), seed), sigmas, PhaseConditioning(stage1, stage2, stage3),
                            negative, cfg=2.5, thresholds=PhaseThresholds(0.9, 0.55), progress=False)
    torch.testing.assert_close(headless, out["samples"], atol=1e-4, rtol=0)
