"""Staged sampler benchmark: figures side by side in one run, asserts nothing.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/staged_sampler.py [--repeats 3] [--steps 28] [--size 256]

Runs ComfyUI in-process on the CPU (or its default device) with a small random FLUX: a diffusers FLUX of the given
width converted and detected by ComfyUI's own model detection (not a hand-written config), so it runs on any ComfyUI.
Every variant runs once per round, rounds interleaved (A B C D A B C D ...); medians and ranges are printed.
1. Overhead: the staged sampler with the same conditioning in every stage against stock KSampler, both on the
   "simple" schedule (KSampler cannot take the cosine one): time ratio, and whether the outputs are identical.
2. Staged sampling (reference latents only in stages 2 and 3) against reference latents in every step (UNO/Kontext
   style), both on the shipped cosine schedule and thresholds (0.8 / 0.2), so every stage that gets steps runs:
   time ratio, and the ratio the token counts alone predict.
3. Memory: MLLM weights held on the compute device during encoding and when sampling starts (offload_after_encode).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def setup_comfy():
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "nodes")]
    comfy_dir = os.environ.get("COMFYUI_PATH")
    if not comfy_dir:
        from comfy_server import provision_comfyui

        comfy_dir = str(provision_comfyui(ROOT / ".cache"))
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    spec = importlib.util.spec_from_file_location("squeeze_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["squeeze_pack"] = module
    spec.loader.exec_module(module)


def small_flux(hidden: int, double: int, single: int):
    """A random diffusers FLUX of this width as ComfyUI's Flux, through ComfyUI's own conversion and model detection
    (tests/nodes/comfy_helpers.py), so it works on 0.3.75 and current ComfyUI alike."""
    import comfy.model_management
    from comfy_helpers import comfy_flux_from_diffusers
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
                                         attention_head_dim=64, num_attention_heads=hidden // 64, joint_attention_dim=4096,
                                         pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(8, 28, 28))
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0, 0.02)
    return comfy_flux_from_diffusers(transformer, device=comfy.model_management.get_torch_device())


def spread(values) -> str:
    return f"{statistics.median(values):8.3f} s [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=256, help="image side in px (latent side = size / 8)")
    parser.add_argument("--hidden", type=int, default=384, help="FLUX width of the benchmark model (a multiple of 64)")
    args = parser.parse_args()
    setup_comfy()
    import nodes

    from squeeze_pack.nodes.staged import COSINE_SCHEDULER, staged_sample

    model = small_flux(args.hidden, 2, 4)
    side = args.size // 8
    latent = {"samples": torch.zeros(1, 16, side, side)}
    g = torch.Generator().manual_seed(0)
    context, pooled = torch.randn(1, 300, 4096, generator=g), torch.randn(1, 768, generator=g)
    refs = [torch.randn(1, 16, side, side, generator=g)]  # one reference at the output resolution
    plain = [[context, {"pooled_output": pooled}]]
    with_refs = [[context, {"pooled_output": pooled, "reference_latents": refs, "reference_latents_method": "uxo"}]]
    prompt_only = [[context[:, :40], {"pooled_output": pooled, "reference_latents": refs, "reference_latents_method": "uxo"}]]
    negative = [[torch.zeros(1, 40, 4096), {"pooled_output": torch.zeros(1, 768)}]]
    common = dict(seed=1, steps=args.steps, cfg=2.5, sampler_name="euler", negative=negative, latent=latent)

    variants = {  # -> (samples, guider or None)
        "ksampler": lambda: (nodes.common_ksampler(model, 1, args.steps, 2.5, "euler", "simple", plain, negative, latent)[0], None),
        "staged_same": lambda: staged_sample(model, scheduler="simple", positive=plain, positive_middle=plain,
                                             positive_late=plain, **common),
        "staged": lambda: staged_sample(model, scheduler=COSINE_SCHEDULER, positive=plain, positive_middle=with_refs,
                                        positive_late=prompt_only, **common),
        "refs_every_step": lambda: staged_sample(model, scheduler=COSINE_SCHEDULER, positive=with_refs, **common),
    }
    for function in variants.values():  # warm-up
        function()
    results = {name: [] for name in variants}
    outputs = {}
    for _ in range(args.repeats):
        for name, function in variants.items():
            start = time.perf_counter()
            outputs[name] = function()
            results[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in results.items()}
    calls = {stage: sum(1 for _, s in outputs["staged"][1].phase_log if s == stage) for stage in (1, 2, 3)}
    image, ref_tokens = side * side // 4, side * side // 4
    tokens = {1: 300 + image, 2: 300 + image + ref_tokens, 3: 40 + image + ref_tokens}
    negative_tokens = 40 + image
    ideal = sum(calls[s] * (tokens[s] + negative_tokens) for s in calls) / (sum(calls.values()) * (tokens[2] + negative_tokens))
    print(f"FLUX-shaped model: width {args.hidden}, 2 double + 4 single blocks; {args.size}x{args.size} px "
          f"({image} image tokens, + {ref_tokens} per reference); {args.steps} steps, real CFG; "
          f"{comfy_device()}; {args.repeats} interleaved rounds, median [range]")
    print(f"  KSampler (simple)                               {spread(results['ksampler'])}")
    print(f"  staged, same conditioning every stage (simple)  {spread(results['staged_same'])}   ratio "
          f"{median['staged_same'] / median['ksampler']:.3f} (target <= 1.02)   identical output: "
          f"{torch.equal(outputs['ksampler'][0]['samples'], outputs['staged_same'][0]['samples'])}")
    print(f"  references in every step (cosine)               {spread(results['refs_every_step'])}")
    print(f"  staged (cosine, tau 0.8 / 0.2)                  {spread(results['staged'])}   ratio vs every-step "
          f"{median['staged'] / median['refs_every_step']:.3f} (token-count ideal {ideal:.3f}); model calls per stage {calls}")
    memory_figures()


def comfy_device():
    import comfy.model_management

    return str(comfy.model_management.get_torch_device())


def memory_figures() -> None:
    import comfy.model_management

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.mllm import MLLMInfo
    from squeeze_core.testing import save_tiny_internvl3
    from squeeze_core.weights import save_dla
    from squeeze_pack.nodes.dla_encode import encode
    from squeeze_pack.nodes.mllm import load_mllm

    with tempfile.TemporaryDirectory() as scratch:
        mllm_dir = save_tiny_internvl3(Path(scratch) / "mllm", num_layers=8, hidden_size=256)
        save_dla(DualLayerAggregator(DLAConfig(num_layers=8, hidden_size=256)), Path(scratch) / "dla.safetensors",
                 MLLMInfo("internvl", 8, 256))
        mllm = load_mllm(str(mllm_dir), "float32", offload_after_encode=True)
        resident = []
        original_load = mllm.load

        def load_and_measure():
            original_load()
            resident.append(mllm.patcher.loaded_size())

        mllm.load = load_and_measure
        encode(mllm, str(Path(scratch) / "dla.safetensors"), "a toy", [torch.rand(1, 64, 64, 3)])
        after = mllm.patcher.loaded_size()
        still_loaded = mllm.patcher in comfy.model_management.loaded_models()
    print("memory (tiny InternVL3, 8 x 256, through ComfyUI's memory manager)")
    print(f"  MLLM weights on the compute device while encoding   {resident[0] / 2**20:8.1f} MiB")
    print(f"  ... when sampling starts (offload_after_encode)     {after / 2**20:8.1f} MiB   still in loaded models: {still_loaded}")


if __name__ == "__main__":
    main()
