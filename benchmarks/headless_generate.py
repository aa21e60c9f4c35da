"""Headless generation: the work each image costs and images per second, recomputing everything for every image
against `SqueezePipeline`, which does each piece of work once. Prints
figures, asserts nothing.

    python benchmarks/headless_generate.py              # --rounds 3, --prompts 2
    python benchmarks/headless_generate.py --flops-only # the real-size LoRA FLOP count alone (no timing)

1. The embedded default of `squeeze generate` (tiny InternVL3 + an untrained DLA + tiny FLUX and VAE, 256 px,
   8 steps, one reference), two variants measured in interleaved rounds in one process (recompute, shipped,
   recompute, shipped, ...). The median and the range are printed. Each variant generates --prompts prompts with 1 seed each,
   then with 4 seeds each, and every image includes encode, sampling and decode. The variants are:
   - recompute: nothing reused between images (RecomputeEveryImage below). Every image encodes prompt +
     references and the prompt alone, then the negative through the same two-conditioning path (4 MLLM passes),
     and VAE-encodes its reference, whatever the seeds.
   - shipped: `SqueezePipeline` as shipped. The first image of a prompt costs 3 passes (2 once the negative is
     cached); its other seeds reuse them.
   MLLM passes and VAE encodes are counted, not estimated.
2. Real CFG as one batched FLUX forward instead of two: positive and negative (no reference latents, as in stage 1,
   where they can share a forward) with the negative's context padded to the positive's length and masked out, against
   two separate forwards, interleaved, on the embedded tiny FLUX and on a width-384 FLUX (2 + 4 blocks), 256 px.
3. FLOPs of one FLUX.1-dev step at 1024x1024 (4096 image + 300 context tokens), counted by torch.utils.flop_counter
   on the meta device: with the rank-512 Squeeze LoRA as peft adapters (unmerged), and merged into the weights
   (which costs what the base model costs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from squeeze_core.conditioning import encode_conditioning, encode_for_phases  # noqa: E402
from squeeze_core.phases import PhaseConditioning  # noqa: E402
from squeeze_core.pipeline import GenerateConfig, PreparedConditioning, SqueezePipeline, reference_pixels, to_flux  # noqa: E402
from squeeze_core.references import resize_reference  # noqa: E402
from squeeze_core.vae import vae_encode  # noqa: E402

PROMPTS = ["a red toy on a sandy beach", "a red toy in the snow at night", "a red toy on a wooden table", "a red toy in tall grass"]


class RecomputeEveryImage(SqueezePipeline):
    """The 'recompute' column: every image prepares everything itself, nothing reused between images."""

    def prepare(self, config: GenerateConfig, references=()) -> PreparedConditioning:
        pixels = [reference_pixels(r) for r in references]
        mllm = encode_for_phases(self.encoder, self.dla, config.prompt, [p[0] for p in pixels])
        # the negative through the two-conditioning path: an MLLM pass with an empty reference list, then a prompt-only one
        negative = encode_conditioning(self.encoder, self.dla, [config.negative_prompt], [[]]).item(0)
        negative = encode_conditioning(self.encoder, self.dla, [config.negative_prompt]).item(0)
        latents = [vae_encode(self.vae, resize_reference(p, config.long_side)) for p in pixels]
        g = config.guidance
        positive = PhaseConditioning(to_flux(mllm.first, g), to_flux(mllm.middle, g, latents), to_flux(mllm.late, g, latents))
        return PreparedConditioning(positive, to_flux(negative, g))


class Counter:
    def __init__(self, method):
        self.method, self.calls = method, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.method(*args, **kwargs)


def embedded_models():
    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.mllm import InternVL3Encoder
    from squeeze_core.testing import save_tiny_internvl3, tiny_flux_transformer, tiny_flux_vae

    with tempfile.TemporaryDirectory() as scratch:
        encoder = InternVL3Encoder.from_pretrained(save_tiny_internvl3(Path(scratch) / "tiny"), dtype=torch.float32)
    torch.manual_seed(0)
    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info)).eval()
    return encoder, dla, tiny_flux_transformer(0), tiny_flux_vae(0)


def run(pipe, prompts, seeds, reference) -> tuple[float, int, int, int]:
    """-> (seconds, images, MLLM passes, VAE encodes) for every seed of every prompt."""
    pipe.forget()  # each run starts cold, as a fresh `squeeze eval` process would
    mllm, vae = pipe.encoder.encode, pipe.vae.encode
    mllm.calls = vae.calls = 0
    start = time.perf_counter()
    for prompt in prompts:
        for seed in range(seeds):
            pipe(GenerateConfig(prompt=prompt, seed=seed, steps=8, width=256, height=256), [reference], progress=False)
    return time.perf_counter() - start, len(prompts) * seeds, mllm.calls, vae.calls


def timing(rounds: int, prompt_count: int) -> None:
    from squeeze_core.testing import demo_reference_image

    encoder, dla, transformer, vae = embedded_models()
    encoder.encode = Counter(encoder.encode)
    vae.encode = Counter(vae.encode)
    pipes = {"recompute": RecomputeEveryImage(encoder, dla, transformer, vae), "shipped": SqueezePipeline(encoder, dla, transformer, vae)}
    reference, prompts = demo_reference_image(), PROMPTS[:prompt_count]
    run(pipes["shipped"], prompts[:1], 1, reference)  # warm-up
    results = {(name, seeds): [] for seeds in (1, 4) for name in pipes}
    counts = {}
    for _ in range(rounds):
        for seeds in (1, 4):
            for name, pipe in pipes.items():
                seconds, images, passes, encodes = run(pipe, prompts, seeds, reference)
                results[(name, seeds)].append(images / seconds)
                counts[(name, seeds)] = (images, passes, encodes)
    print(f"embedded default ({encoder.info.describe()}, untrained DLA, tiny FLUX + VAE), 256 px, 8 steps, 1 reference, "
          f"{len(prompts)} prompts; CPU, {torch.get_num_threads()} threads; {rounds} interleaved rounds")
    print(f"  {'variant':<9} {'seeds':>5} {'images/s (median)':>18} {'range':>14} {'MLLM passes/image':>18} {'VAE encodes/image':>18}")
    for (name, seeds), values in results.items():
        images, passes, encodes = counts[(name, seeds)]
        print(f"  {name:<9} {seeds:>5} {statistics.median(values):>18.2f} {min(values):>6.2f}-{max(values):<7.2f} "
              f"{passes / images:>18.3f} {encodes / images:>18.3f}")
    for seeds in (1, 4):
        shipped, recompute = statistics.median(results[("shipped", seeds)]), statistics.median(results[("recompute", seeds)])
        print(f"  {seeds} seed(s) per prompt: shipped / recompute = {shipped / recompute:.2f}x images per second")


def cfg_batching(rounds: int) -> None:
    from diffusers import FluxTransformer2DModel

    from squeeze_core.flux import flux_velocity
    from squeeze_core.testing import tiny_flux_transformer

    torch.manual_seed(0)
    wider = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=64,
                                   num_attention_heads=6, joint_attention_dim=4096, pooled_projection_dim=768,
                                   guidance_embeds=True, axes_dims_rope=(8, 28, 28)).eval()
    print(f"real CFG: two FLUX forwards vs one batched forward (negative context padded 20 -> 120 tokens and masked), "
          f"256 px, {rounds} interleaved rounds")
    for label, model in (("embedded tiny FLUX (width 64, 1 + 1 blocks)", tiny_flux_transformer().eval()),
                         ("FLUX width 384, 2 + 4 blocks", wider)):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 16, 32, 32, generator=g)
        positive, negative = torch.randn(1, 120, 4096, generator=g), torch.randn(1, 20, 4096, generator=g)
        pooled = torch.randn(2, 768, generator=g)
        context = torch.zeros(2, 120, 4096)
        context[0], context[1, :20] = positive[0], negative[0]
        mask = torch.zeros(2, 120, dtype=torch.long)
        mask[0], mask[1, :20] = 1, 1

        def separate():
            return torch.cat([flux_velocity(model, x, 0.5, positive, pooled[:1]), flux_velocity(model, x, 0.5, negative, pooled[1:])])

        def batched():
            return flux_velocity(model, torch.cat([x, x]), 0.5, context, pooled, context_mask=mask)

        with torch.no_grad():
            difference = float((separate() - batched()).abs().max())
            times = {"separate": [], "batched": []}
            for _ in range(rounds):
                for name, function in (("separate", separate), ("batched", batched)):
                    start = time.perf_counter()
                    function()
                    times[name].append(time.perf_counter() - start)
        one, two = statistics.median(times["batched"]), statistics.median(times["separate"])
        print(f"  {label:<44} two forwards {two * 1e3:7.1f} ms, one batched {one * 1e3:7.1f} ms: ratio {one / two:.3f}; "
              f"max difference {difference:.1e}")


def lora_flops() -> None:
    from diffusers import FluxTransformer2DModel
    from real_size import FLUX_DEV

    from squeeze_core.flux import flux_velocity
    from squeeze_core.lora import flux_lora_config

    def step_flops(flux) -> int:
        latent, context, pooled = torch.zeros(1, 16, 128, 128), torch.zeros(1, 300, 4096), torch.zeros(1, 768)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            flux_velocity(flux, latent.to("meta"), 0.5, context.to("meta"), pooled.to("meta"))
        return counter.get_total_flops()

    with torch.device("meta"):
        flux = FluxTransformer2DModel(**FLUX_DEV)
        merged = step_flops(flux)  # a merged LoRA leaves the base model's shapes, so its cost
        flux.add_adapter(flux_lora_config(512))
        unmerged = step_flops(flux)
    print("FLUX.1-dev step at 1024x1024 (4096 image + 300 context tokens), FLOPs counted on the meta device")
    print(f"  LoRA rank 512 as peft adapters (unmerged)   {unmerged / 1e12:8.1f} TFLOP")
    print(f"  LoRA merged into the weights                {merged / 1e12:8.1f} TFLOP   unmerged costs {unmerged / merged - 1:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2, choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--flops-only", action="store_true")
    args = parser.parse_args()
    if not args.flops_only:
        timing(args.rounds, args.prompts)
        cfg_batching(max(args.rounds, 5))
    lora_flops()


if __name__ == "__main__":
    main()
