"""The headless pipeline does each piece of work once: MLLM passes and VAE encodes counted on the real tiny models
(calls, not timings). Recomputing everything, every image would cost 4 MLLM passes and its reference's VAE encode,
for every seed."""

import pytest
import torch
from helpers import random_image

from squeeze_core.pipeline import GenerateConfig, SqueezePipeline
from squeeze_core.testing import tiny_flux_transformer, tiny_flux_vae

SMALL = dict(steps=6, width=64, height=48, long_side=64, tau1=0.9, tau2=0.6)  # every stage gets steps at this size


class Counted:
    """Wraps a bound method and records its calls."""

    def __init__(self, method):
        self.method, self.calls = method, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.method(*args, **kwargs)


@pytest.fixture
def pipe(encoder, dla):
    pipe = SqueezePipeline(encoder, dla, tiny_flux_transformer(), tiny_flux_vae())
    pipe.encoder = type(encoder).__new__(type(encoder))  # a shallow copy, so the session's encoder stays unwrapped
    pipe.encoder.__dict__.update(encoder.__dict__)
    pipe.encoder.encode = Counted(encoder.encode)
    pipe.vae.encode = Counted(pipe.vae.encode)
    return pipe


def passes(pipe) -> tuple[int, int]:
    return len(pipe.encoder.encode.calls), len(pipe.vae.encode.calls)


def test_staged_generation_encodes_once_per_prompt_and_references_for_every_seed(pipe):
    reference = random_image(80, 64, seed=1)
    latents = [pipe(GenerateConfig(prompt="a toy on the beach", seed=seed, **SMALL), [reference], progress=False)[0] for seed in range(4)]
    assert passes(pipe) == (3, 1)  # prompt + refs, prompt only, the negative; one reference latent
    assert not torch.equal(latents[0], latents[1])  # the seeds still differ
    pipe(GenerateConfig(prompt="a toy in the snow", **SMALL), [reference], progress=False)
    assert passes(pipe) == (5, 2)  # a new prompt: its two passes and its reference latent; the negative is kept
    pipe(GenerateConfig(prompt="a toy in the snow", **SMALL), [random_image(80, 64, seed=2)], progress=False)
    assert passes(pipe) == (7, 3)  # other references: encoded again


def test_a_stage_without_steps_costs_no_pass(pipe):
    reference = random_image(80, 64, seed=1)
    pipe(GenerateConfig(prompt="a toy", **dict(SMALL, tau2=0.0)), [reference], progress=False)  # stage 3 never runs
    assert passes(pipe) == (2, 1)
    pipe(GenerateConfig(prompt="a toy", mode="mllm_only", **SMALL), [reference], progress=False)
    assert passes(pipe) == (3, 1)  # MLLM only: no reference latents; with refs again (new mode), negative kept
    pipe(GenerateConfig(prompt="a toy", **SMALL), progress=False)
    assert passes(pipe) == (4, 1)  # no references: the prompt alone


def test_reusing_the_prepared_conditioning_gives_the_uncached_result(encoder, dla):
    reference = random_image(80, 64, seed=1)
    config = GenerateConfig(prompt="a toy on the beach", seed=3, **SMALL)
    warm = SqueezePipeline(encoder, dla, tiny_flux_transformer(), tiny_flux_vae())
    warm(GenerateConfig(prompt="a toy on the beach", seed=0, **SMALL), [reference], progress=False)
    fresh = SqueezePipeline(encoder, dla, tiny_flux_transformer(), tiny_flux_vae())
    torch.testing.assert_close(warm(config, [reference], progress=False)[0], fresh(config, [reference], progress=False)[0], atol=0, rtol=0)
