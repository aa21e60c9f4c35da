"""Staged sampler benchmark: figures side by side in one run, asserts nothing.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/staged_sampler.py [--repeats 5] [--steps 12] [--size 512]

Runs ComfyUI in-process on the CPU (or its default device) with a small random FLUX (ComfyUI's own Flux class):
1. Overhead: the staged sampler with the same conditioning in every stage against stock KSampler: time ratio
   (median of interleaved repeats) and whether the outputs are identical.
2. Staged sampling (reference latents only in stages 2 and 3) against reference latents in every step (UNO/Kontext
   style): time ratio; below 1 because the early steps carry no reference tokens.
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
    comfy_dir = os.environ.get("COMFYUI_PATH")
    if not comfy_dir:
        sys.path.insert(0, str(ROOT / "tests"))
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
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher

    heads = hidden // 64
    config = dict(image_model="flux", in_channels=16, patch_size=2, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                  hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=double, depth_single_blocks=single,
                  axes_dim=[8, 28, 28], theta=10000, qkv_bias=True, guidance_embed=True)
    model_config = comfy.model_detection.model_config_from_unet_config(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, "", device="cpu")
    with torch.no_grad():
        for parameter in model.diffusion_model.parameters():
            parameter.normal_(0, 0.02)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def timed(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=512, help="image side in px (latent side = size / 8)")
    parser.add_argument("--hidden", type=int, default=384, help="FLUX width of the benchmark model")
    args = parser.parse_args()
    setup_comfy()
    import nodes

    from squeeze_pack.nodes.staged import staged_sample

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
    common = dict(seed=1, steps=args.steps, cfg=2.5, sampler_name="euler", scheduler="simple", negative=negative, latent=latent)

    def ksampler():
        return nodes.common_ksampler(model, 1, args.steps, 2.5, "euler", "simple", plain, negative, latent)[0]["samples"]

    def staged_same():
        return staged_sample(model, positive=plain, positive_middle=plain, positive_late=plain, **common)[0]["samples"]

    def staged():
        return staged_sample(model, positive=plain, positive_middle=with_refs, positive_late=prompt_only, **common)[0]["samples"]

    def refs_every_step():
        return staged_sample(model, positive=with_refs, **common)[0]["samples"]

    ksampler(), staged_same()  # warm-up
    results = {name: [] for name in ("ksampler", "staged_same", "staged", "refs_every_step")}
    outputs = {}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits all variants alike
        for name, function in (("ksampler", ksampler), ("staged_same", staged_same), ("staged", staged), ("refs_every_step", refs_every_step)):
            seconds, outputs[name] = timed(function, 1)
            results[name].append(seconds)
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"FLUX-shaped model: width {args.hidden}, 2 double + 4 single blocks; {args.size}x{args.size} px "
          f"({side * side // 4} image tokens, + {side * side // 4} per reference); {args.steps} steps, real CFG; "
          f"{comfy_device()}; median of {args.repeats}")
    print(f"  KSampler                                   {median['ksampler']:8.3f} s")
    print(f"  staged, same conditioning in every stage   {median['staged_same']:8.3f} s   ratio {median['staged_same'] / median['ksampler']:.3f} (target <= 1.02)   identical output: {torch.equal(outputs['ksampler'], outputs['staged_same'])}")
    print(f"  references in every step (UNO-style)       {median['refs_every_step']:8.3f} s")
    print(f"  staged (tau 0.8 / 0.2)                     {median['staged']:8.3f} s   ratio vs every-step {median['staged'] / median['refs_every_step']:.3f} (target < 1)")
    memory_figures()


def comfy_device():
    import comfy.model_management

    return str(comfy.model_management.get_torch_device())


def memory_figures() -> None:
    import comfy.model_management

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.mllm import MLLMInfo
    from squeeze_core.tiny import save_tiny_internvl3
    from squeeze_core.weights import save_dla
    from squeeze_pack.nodes.dla_encode import encode
    from squeeze_pack.nodes.mllm import load_mllm

    with tempfile.TemporaryDirectory() as scratch:
        mllm_dir = save_tiny_internvl3(Path(scratch) / "mllm", num_layers=8, hidden_size=256)
        save_dla(DualLayerAggregator(DLAConfig(num_layers=8, hidden_size=256)), Path(scratch) / "dla.safetensors", MLLMInfo("internvl", 8, 256))
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
