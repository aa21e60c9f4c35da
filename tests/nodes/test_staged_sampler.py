import math

import pytest
import torch
from comfy_helpers import conditioning, run_node

from squeeze_core.phases import PhaseThresholds, cosine_times

LATENT = {"samples": torch.zeros(1, 16, 16, 16)}


def conds(seed=0):
    g = torch.Generator().manual_seed(seed)
    stage1 = conditioning(torch.randn(1, 20, 4096, generator=g), torch.randn(1, 768, generator=g))
    reference = [torch.randn(1, 16, 8, 8, generator=g)]
    stage2 = conditioning(torch.randn(1, 30, 4096, generator=g), torch.randn(1, 768, generator=g),
                          reference_latents=reference, reference_latents_method="uxo")
    stage3 = conditioning(torch.randn(1, 10, 4096, generator=g), torch.randn(1, 768, generator=g),
                          reference_latents=reference, reference_latents_method="uxo")
    negative = conditioning(torch.zeros(1, 7, 4096), torch.zeros(1, 768))
    return stage1, stage2, stage3, negative


@pytest.mark.parametrize(
    "sampler, scheduler, denoise",
    [("euler", "simple", 1.0), ("dpmpp_2m", "karras", 1.0), ("euler_ancestral", "normal", 0.6), ("uni_pc", "beta", 1.0)],
)
def test_unconnected_stages_are_bit_identical_to_ksampler(comfy, tiny_flux, sampler, scheduler, denoise):
    import nodes

    from squeeze_pack.nodes.staged import SqueezeStagedSampler

    positive, _, _, negative = conds()
    expected = run_node(nodes.KSampler, model=tiny_flux, seed=7, steps=5, cfg=2.5, sampler_name=sampler, scheduler=scheduler,
                        positive=positive, negative=negative, latent_image=LATENT, denoise=denoise)[0]["samples"]
    result = SqueezeStagedSampler.execute(tiny_flux, 7, 5, 2.5, sampler, scheduler, positive, negative, LATENT, denoise,
                                          0.8, 0.2).result[0]["samples"]
    assert torch.equal(result, expected)


def record_model_calls(model):
    """A ComfyUI model function wrapper (the supported hook) that records what the model saw at every call."""
    calls = []

    def wrapper(apply_model, args):
        c = args["c"]
        calls.append(dict(
            sigma=float(args["timestep"][0]),
            context_lengths=[c["c_crossattn"].shape[1]],  # a joined batch's contexts share one (padded) length
            kinds=list(args["cond_or_uncond"]),  # per batch item, as ComfyUI labels them: 0 positive, 1 negative
            references=c.get("ref_latents") is not None,
            batch=c["c_crossattn"].shape[0],
        ))
        return apply_model(args["input"], args["timestep"], **c)

    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched, calls


def test_each_step_uses_its_stage_conditioning(comfy, tiny_flux):
    from squeeze_pack.nodes.staged import staged_sample

    stage1, stage2, stage3, negative = conds()
    model, calls = record_model_calls(tiny_flux)
    thresholds = PhaseThresholds(0.85, 0.5)  # the model shift (1.15) keeps sigmas high
    _, guider = staged_sample(model, 3, 12, 1.0, "euler", "squeeze_cosine", stage1, negative, LATENT,
                              positive_middle=stage2, positive_late=stage3, tau1=0.85, tau2=0.5)
    expected = {1: ([20], False), 2: ([30], True), 3: ([10], True)}
    seen = set()
    for call in calls:  # cfg 1.0: only the positive is evaluated, one call per step
        stage = thresholds.phase(call["sigma"])
        seen.add(stage)
        assert (call["context_lengths"], call["references"]) == expected[stage], call
    assert seen == {1, 2, 3}
    assert [s for _, s in guider.phase_log] == [thresholds.phase(c["sigma"]) for c in calls]
    assert [s for _, s in guider.phase_log] == sorted(s for _, s in guider.phase_log)  # stages only move forward


def test_negative_is_used_in_every_stage(comfy, tiny_flux):
    from squeeze_pack.nodes.staged import staged_sample

    stage1, stage2, stage3, negative = conds()
    model, calls = record_model_calls(tiny_flux)
    _, guider = staged_sample(model, 3, 12, 2.5, "euler", "squeeze_cosine", stage1, negative, LATENT,
                              positive_middle=stage2, positive_late=stage3, tau1=0.85, tau2=0.5)
    steps = [sigma for sigma, _ in guider.phase_log]
    assert len(steps) == 12 and {stage for _, stage in guider.phase_log} == {1, 2, 3}  # every step, every stage
    for sigma in steps:  # each step evaluated the negative (cfg 1.0 would skip it, and this fails)
        assert any(1 in call["kinds"] for call in calls if call["sigma"] == sigma), sigma


def test_staging_changes_the_result_and_stays_deterministic(comfy, tiny_flux):
    from squeeze_pack.nodes.staged import staged_sample

    stage1, stage2, stage3, negative = conds()
    plain, _ = staged_sample(tiny_flux, 3, 6, 2.5, "euler", "squeeze_cosine", stage1, negative, LATENT)
    staged_a, _ = staged_sample(tiny_flux, 3, 6, 2.5, "euler", "squeeze_cosine", stage1, negative, LATENT,
                                positive_middle=stage2, positive_late=stage3)
    staged_b, _ = staged_sample(tiny_flux, 3, 6, 2.5, "euler", "squeeze_cosine", stage1, negative, LATENT,
                                positive_middle=stage2, positive_late=stage3)
    assert torch.equal(staged_a["samples"], staged_b["samples"])
    assert not torch.allclose(plain["samples"], staged_a["samples"])


def test_guider_with_sampler_custom_advanced_matches_the_staged_sampler(comfy, tiny_flux):
    from comfy_extras.nodes_custom_sampler import KSamplerSelect, RandomNoise, SamplerCustomAdvanced

    from squeeze_pack.nodes.staged import SqueezeCosineScheduler, SqueezeStagedGuider, staged_sample

    stage1, stage2, stage3, negative = conds()
    guider = SqueezeStagedGuider.execute(tiny_flux, stage1, negative, 2.5, 0.7, 0.3, stage2, stage3).result[0]
    sigmas = SqueezeCosineScheduler.execute(tiny_flux, 8, 1.0).result[0]
    noise = run_node(RandomNoise, noise_seed=11)[0]
    sampler = run_node(KSamplerSelect, sampler_name="euler")[0]
    custom = run_node(SamplerCustomAdvanced, noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent_image=LATENT)[0]["samples"]
    direct, _ = staged_sample(tiny_flux, 11, 8, 2.5, "euler", "squeeze_cosine", stage1, negative, LATENT,
                              positive_middle=stage2, positive_late=stage3, tau1=0.7, tau2=0.3)
    assert torch.equal(custom, direct["samples"])


def test_cosine_schedule_goes_through_the_model_shift(comfy, tiny_flux):
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    from squeeze_pack.nodes.staged import cosine_sigmas

    steps = 10
    times = cosine_times(steps)
    assert times[0] == 1.0 and times[-1] == 0.0 and torch.all(times[:-1] > times[1:])
    shifted_model = run_node(ModelSamplingFlux, model=tiny_flux, max_shift=1.15, base_shift=0.5,
                             width=256, height=256)[0]  # shift 0.55, not the default 1.15
    for model in (tiny_flux, shifted_model):
        shift = model.get_model_object("model_sampling").shift
        sigmas = cosine_sigmas(model, steps)
        expected = [math.exp(shift) / (math.exp(shift) + (1 / float(t) - 1)) for t in times[:-1]] + [0.0]
        torch.testing.assert_close(sigmas, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(cosine_sigmas(tiny_flux, steps), cosine_sigmas(shifted_model, steps))
    from squeeze_pack.nodes.staged import schedule_sigmas

    assert torch.equal(schedule_sigmas(tiny_flux, steps, "euler", "squeeze_cosine", 1.0), cosine_sigmas(tiny_flux, steps))
    uni_pc = schedule_sigmas(tiny_flux, steps, "uni_pc", "squeeze_cosine", 1.0)  # KSampler's rule for these samplers
    assert len(uni_pc) == steps + 1 and torch.equal(uni_pc, torch.cat([cosine_sigmas(tiny_flux, steps + 1)[:-2], torch.zeros(1)]))
    partial = cosine_sigmas(tiny_flux, 4, denoise=0.5)
    assert len(partial) == 5 and partial[-1] == 0.0 and partial[0] < 1.0


def test_bad_thresholds_are_node_errors(comfy, tiny_flux):
    from squeeze_pack.nodes.staged import SqueezeStagedGuider, SqueezeStagedSampler
    from squeeze_pack.squeeze_core.errors import SqueezeInputError

    for node in (SqueezeStagedSampler, SqueezeStagedGuider):
        assert node.validate_inputs(tau1=0.8, tau2=0.2) is True
        assert "tau1=0.3 must be greater than tau2=0.5" in node.validate_inputs(tau1=0.3, tau2=0.5)
        assert "tau1=0.5 must be greater than tau2=0.5" in node.validate_inputs(tau1=0.5, tau2=0.5)
        assert "tau1=1.5 is outside [0, 1]" in node.validate_inputs(tau1=1.5, tau2=0.2)
        assert "tau2=-0.1 is outside [0, 1]" in node.validate_inputs(tau1=0.5, tau2=-0.1)
    stage1, stage2, stage3, negative = conds()
    with pytest.raises(SqueezeInputError, match="tau1=0.2 must be greater than tau2=0.6"):
        SqueezeStagedSampler.execute(tiny_flux, 1, 2, 2.5, "euler", "simple", stage1, negative, LATENT, 1.0, 0.2, 0.6, stage2, stage3)


def test_half_connected_stages_are_node_errors(comfy, tiny_flux):
    from squeeze_pack.nodes.staged import SqueezeStagedGuider, SqueezeStagedSampler
    from squeeze_pack.squeeze_core.errors import SqueezeInputError

    stage1, stage2, stage3, negative = conds()
    with pytest.raises(SqueezeInputError, match="positive_late is not connected"):
        SqueezeStagedSampler.execute(tiny_flux, 1, 2, 2.5, "euler", "simple", stage1, negative, LATENT, 1.0, 0.8, 0.2,
                                     positive_middle=stage2)
    with pytest.raises(SqueezeInputError, match="positive_middle is not connected"):
        SqueezeStagedGuider.execute(tiny_flux, stage1, negative, 2.5, 0.8, 0.2, positive_late=stage3)
