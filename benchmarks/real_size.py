"""Real-size benchmark: FLUX.1-dev + InternVL3-8B + the FLUX VAE, built from their published configs with random
bf16 weights (speed and memory depend on shapes, not on values). Prints tables, asserts nothing.

    python benchmarks/real_size.py plan                 # no GPU: parameters, memory per phase, which GPUs fit what
    python benchmarks/real_size.py infer                # GPU: 1024 px, 28 steps, real CFG; ComfyUI nodes and headless
    python benchmarks/real_size.py train                # GPU: 512 px training steps, stage 2, LoRA rank 512
    python benchmarks/real_size.py all --json-dir DIR   # infer, then train, each in its own process (the GPU run)
    python benchmarks/real_size.py all --reduced        # same widths, one block of each kind, tiny sizes (CPU test)

infer (everything on one device, the MLLM handed to ComfyUI's memory manager for the node path):
- ComfyUI path, in-process, through the pack's own node functions (SqueezeDLAEncode's encode, SqueezeReferenceLatents'
  encode_references, the staged sampler) on ComfyUI's own Flux (loaded from the diffusers state dict by
  comfy.sd.load_diffusion_model_state_dict, as a user's UNETLoader would) and ComfyUI's VAE:
  stock KSampler vs the staged sampler on the same conditioning in every stage (the overhead; "simple" schedule),
  then staged (references in stages 2-3) vs references in every step (UNO-style), both on the cosine schedule,
  with the ratio a pure token count predicts. Rounds are interleaved (A B C D A B C D); medians and spreads.
  The workflow's two encodes (prompt + reference, the empty negative), repeated with a new prompt each round, with
  offload_after_encode (ComfyUI's own moves, then the loader's kept pinned host copy) and resident (the loader's
  default): time and bytes moved per round.
- Headless SqueezePipeline (diffusers FLUX, MLLM resident): staged vs references in every step, whole images.
- Peak GPU memory (torch's max allocated) while encoding, while sampling, and with the VAE decode (headless: a whole
  image; ComfyUI: VAEDecode of the staged latent), whether the MLLM is still on the GPU when sampling starts, and the
  DLA's share of one denoising step. Timings are medians and ranges over 5 interleaved rounds (Sizes.rounds).
train (stage 2: MLLM reads the references, reference latents in FLUX's sequence, LoRA rank 512 on FLUX attention,
bf16 autocast, the Trainer's own prepare_batch and train_step): batch 1 and 2, gradient checkpointing on and off:
peak memory, seconds per step (batch preparation included), the frozen MLLM forward's share, and what caching its
hidden states across epochs would save (time) and cost (disk).

The MLLM's tokenizer is byte-level (no real InternVL3 vocabulary can be downloaded), so a prompt costs about one token
per character where the real one costs about one per four: the 256 image tokens per reference dominate either way.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30

# Published configurations. FLUX.1-dev: black-forest-labs/FLUX.1-dev transformer/ and vae/ config.json.
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
FLUX_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                act_fn="silu", latent_channels=16, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611,
                shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
# InternVL3 1B-14B: InternViT-300M-448px-V2_5 + a Qwen2.5 language model (OpenGVLab/InternVL3-*-hf config.json).
INTERNVIT_300M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                      image_size=[448, 448], patch_size=[14, 14], layer_scale_init_value=0.1, norm_type="layer_norm",
                      use_qk_norm=False, hidden_act="gelu")
QWEN25 = {  # (hidden, layers, heads, kv heads, intermediate, tied embeddings)
    "InternVL3-1B": (896, 24, 14, 2, 4864, True),
    "InternVL3-2B": (1536, 28, 12, 2, 8960, True),
    "InternVL3-8B": (3584, 28, 28, 4, 18944, False),
    "InternVL3-14B": (5120, 48, 40, 8, 13824, False),
}
QWEN_VOCAB = 151674  # the -hf checkpoints' vocabulary (Qwen2.5's plus InternVL's special tokens)
PROMPT = "a toy robot with a red scarf sitting on a wooden bench in a sunny park"


@dataclass
class Sizes:
    flux_double: int = 19
    flux_single: int = 38
    mllm_layers: int | None = None  # None: the model's own depth
    vision_layers: int | None = None
    width: int = 1024
    height: int = 1024
    steps: int = 28
    reference_side: int = 512  # the reference's long side for the VAE branch (the pack's default)
    train_resolution: int = 512
    train_steps: int = 3  # timed steps per training setting, after one warm-up step
    rounds: int = 5  # interleaved rounds per sampling variant (medians and ranges over them)
    tau1: float = 0.8  # the shipped defaults; the reduced run moves them so its few steps visit all three stages
    tau2: float = 0.2
    mllm_tile: int = 448  # InternVL3's image tile in px (256 MLLM tokens per reference)
    vocab_size: int = QWEN_VOCAB  # the reduced run's smaller vocabulary only saves building 1B embedding weights

    @classmethod
    def reduced(cls) -> "Sizes":
        """Same widths, one block of each kind, small images: the CPU check that the GPU run cannot fail on a typo."""
        return cls(flux_double=1, flux_single=1, mllm_layers=1, vision_layers=1, width=64, height=64, steps=3,
                   reference_side=64, train_resolution=64, train_steps=1, rounds=1, tau1=0.95, tau2=0.6, mllm_tile=112,
                   vocab_size=4096)


# ------------------------------------------------------------------------------------------------- building models
@contextlib.contextmanager
def default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_flux(sizes: Sizes, device, dtype):
    """FLUX.1-dev's transformer, parameters created directly on `device` in `dtype` (no float32 copy on the way)."""
    from diffusers import FluxTransformer2DModel

    with torch.device(device), default_dtype(dtype):
        model = FluxTransformer2DModel(**dict(FLUX_DEV, num_layers=sizes.flux_double, num_single_layers=sizes.flux_single))
    return model.eval().requires_grad_(False)


def build_vae(device, dtype):
    from diffusers import AutoencoderKL

    with torch.device(device), default_dtype(dtype):
        vae = AutoencoderKL(**FLUX_VAE)
    return vae.eval().requires_grad_(False)


def internvl3_config(name: str, image_token_id: int, sizes: Sizes | None = None):
    from transformers import InternVLConfig

    hidden, layers, heads, kv_heads, intermediate, tied = QWEN25[name]
    vision = dict(INTERNVIT_300M)
    tile = sizes.mllm_tile if sizes is not None else 448
    vision["image_size"] = [tile, tile]
    if sizes is not None and sizes.mllm_layers:
        layers = sizes.mllm_layers
    if sizes is not None and sizes.vision_layers:
        vision["num_hidden_layers"] = sizes.vision_layers
    text = dict(model_type="qwen2", vocab_size=sizes.vocab_size if sizes is not None else QWEN_VOCAB, hidden_size=hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=tied)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=image_token_id, image_seq_length=(tile // 28) ** 2,
                            downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                            vision_feature_select_strategy="default", tie_word_embeddings=tied)
    config._attn_implementation = "sdpa"
    config.text_config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    return config


def build_internvl3(name: str, sizes: Sizes, device, dtype):
    """An InternVL3Encoder around a random InternVL3 of `name`'s shape, with the byte-level tokenizer of the tests."""
    from transformers import GotOcr2ImageProcessor, InternVLForConditionalGeneration

    from squeeze_core.mllm import EncoderConfig, InternVL3Encoder
    from squeeze_core.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = internvl3_config(name, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), sizes)
    with torch.device(device), default_dtype(dtype):
        model = InternVLForConditionalGeneration(config)
    model = model.to(dtype).eval().requires_grad_(False)
    processor = GotOcr2ImageProcessor(size={"height": sizes.mllm_tile, "width": sizes.mllm_tile}, crop_to_patches=False)
    return InternVL3Encoder(model, tokenizer, processor, EncoderConfig(), name=f"{name} (random weights)")


def build_dla(info, device):
    from squeeze_core.dla import DLAConfig, DualLayerAggregator

    with torch.device(device):
        dla = DualLayerAggregator(DLAConfig.for_mllm(info))
    return dla.eval().requires_grad_(False)


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_parameter_count(transformer, rank: int) -> int:
    """rank * (in + out) for every layer the Squeeze LoRA adapts (squeeze_core.lora's targets)."""
    from squeeze_core.lora import FLUX_ATTENTION_TARGETS

    total = 0
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith("." + t) for t in FLUX_ATTENTION_TARGETS):
            total += rank * (module.in_features + module.out_features)
    return total


# ----------------------------------------------------------------------------------------------------- measuring
def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None  # the CPU has no allocator peak worth reporting
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


def allocated_gib(device) -> float | None:
    return torch.cuda.memory_allocated() / GIB if torch.device(device).type == "cuda" else None


def timed(function, device):
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_gib(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def say(*parts):
    print(*parts, flush=True)


def reference_image(side: int):
    from squeeze_core.testing import demo_reference_image

    return demo_reference_image(side, int(side * 0.75))


def device_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"


def setup_comfy(device):
    """ComfyUI in-process (COMFYUI_PATH, else the tests' provisioned 0.3.75) and the pack imported as ComfyUI does."""
    comfy_dir = os.environ.get("COMFYUI_PATH")
    if not comfy_dir:
        sys.path.insert(0, str(ROOT / "tests"))
        from comfy_server import provision_comfyui

        comfy_dir = str(provision_comfyui(ROOT / ".cache"))
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = torch.device(device).type == "cpu"
    spec = importlib.util.spec_from_file_location("squeeze_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["squeeze_pack"] = module
    spec.loader.exec_module(module)


# --------------------------------------------------------------------------------------------------------- infer
def stage_token_counts(stage_log, tokens: dict) -> tuple[float, dict]:
    """Per model call, tokens through FLUX for (positive + negative); -> (total, calls per stage)."""
    total, calls = 0.0, {1: 0, 2: 0, 3: 0}
    for _, stage in stage_log:
        calls[stage] += 1
        total += tokens[stage] + tokens["negative"]
    return total, calls


def repeated_encodes(mllm, encode, dla_path: str, pixels, rounds: int, device, host_copy_patcher) -> dict:
    """The shipped workflow's two encodes (prompt + reference, then the empty negative) repeated, as a user re-queues
    with another seed after changing the prompt: with offload_after_encode and ComfyUI's own moves (the MLLM copied
    off the GPU after each encode and back for the next; the negative is kept from the first time), the same with
    the loader's kept host copy (`host_copy_patcher()` makes it: evictions copy nothing, reloads come from pinned
    memory; on a CPU there is nothing to copy and it is left out), then resident (the loader's default; the first
    resident round loads it, the rounds timed after it move nothing). The settings cannot interleave, since each
    leaves the MLLM where the next does not. Ends offloaded, as the rest of `infer` expects. `copied`: the bytes the
    host copy copied per round, onto and off the device."""
    out = {}
    settings = [("offload after encode", True, False), ("offload after encode, host copy", True, True), ("resident", False, False)]
    for name, offload, host_copy in settings:
        if host_copy:
            patcher = host_copy_patcher()
            if patcher.host_copy is None:
                continue
            mllm.patcher = patcher  # the MLLM is offloaded here: the new patcher takes it over
        mllm.offload_after_encode = offload
        if not offload:
            encode(mllm, dla_path, PROMPT + " ", [pixels])  # loads it
        seconds, moved, copied = [], [], []
        for index in range(rounds):
            before = mllm.bytes_moved
            copies = mllm.patcher.host_copy
            copied_before = (copies.bytes_to_device, copies.bytes_to_host) if copies is not None else None
            prompt = f"{PROMPT} (take {index})"  # a new prompt each round: the prompt-only encodings cannot be reused
            seconds.append(timed(lambda: (encode(mllm, dla_path, prompt, [pixels]), encode(mllm, dla_path, "", [])), device)[0])
            moved.append(mllm.bytes_moved - before)
            if copied_before is not None:
                copied.append((copies.bytes_to_device - copied_before[0], copies.bytes_to_host - copied_before[1]))
        out[name] = {"s": summary(seconds), "bytes_moved": statistics.median(moved)}
        if copied:
            out[name]["copied_to_device"], out[name]["copied_to_host"] = (statistics.median(c[i] for c in copied) for i in (0, 1))
    mllm.offload_after_encode = True
    mllm.offload()
    return out


def copied_note(entry: dict) -> str:
    if "copied_to_device" not in entry:
        return ""
    return f" ({entry['copied_to_device'] / GIB:.2f} GiB copied on, {entry['copied_to_host'] / GIB:.2f} GiB off)"


def infer(sizes: Sizes, device: str, dtype) -> dict:
    setup_comfy(device)
    import comfy.model_management
    import comfy.sd
    import nodes

    from squeeze_core.pipeline import GenerateConfig, SqueezePipeline, reference_pixels
    from squeeze_core.vae import vae_decode
    from squeeze_core.weights import save_dla
    from squeeze_pack.nodes.dla_encode import encode
    from squeeze_pack.nodes.mllm import SqueezeMLLM, mllm_patcher
    from squeeze_pack.nodes.reference_latents import attach_references, encode_references
    from squeeze_pack.nodes.staged import COSINE_SCHEDULER, staged_sample

    results: dict = {"device": device_name(device), "sizes": asdict(sizes), "dtype": str(dtype)}
    say(f"== inference on {results['device']}: {sizes.width}x{sizes.height} px, {sizes.steps} steps, real CFG 2.5, "
        f"one reference at {sizes.reference_side} px long side; FLUX {sizes.flux_double}+{sizes.flux_single} blocks, {dtype}")
    start = time.perf_counter()
    transformer = build_flux(sizes, device, dtype)
    vae = build_vae(device, torch.float32)  # the headless pipeline's VAE dtype (load_flux_vae's default)
    encoder = build_internvl3("InternVL3-8B", sizes, device, dtype)
    dla = build_dla(encoder.info, device)
    results["build_s"] = time.perf_counter() - start
    results["parameters"] = {"flux": parameter_count(transformer), "mllm": parameter_count(encoder.model),
                             "vae": parameter_count(vae), "dla": parameter_count(dla)}
    say(f"built in {results['build_s']:.0f} s: FLUX {results['parameters']['flux'] / 1e9:.2f} B, "
        f"MLLM {results['parameters']['mllm'] / 1e9:.2f} B parameters; resident {fmt_gib(allocated_gib(device))} GiB")

    reference = reference_image(max(sizes.reference_side, 64))
    pipe = SqueezePipeline(encoder, dla, transformer, vae)
    config = dict(prompt=PROMPT, steps=sizes.steps, width=sizes.width, height=sizes.height, long_side=sizes.reference_side,
                  tau1=sizes.tau1, tau2=sizes.tau2)
    modes = {"staged": GenerateConfig(**config, mode="staged"), "every_step": GenerateConfig(**config, mode="refs_every_step")}

    # ---- headless: encode (peak), then whole images, interleaved
    reset_peak(device)
    seconds, prepared = timed(lambda: pipe.prepare(modes["staged"], [reference]), device)
    headless = {"encode_s": seconds, "encode_peak_gib": peak_gib(device), "mllm_on_gpu_when_sampling": str(encoder.device)}
    tokens = {stage: prepared.positive.at(stage).context.shape[1] for stage in (1, 2, 3)}
    tokens["negative"] = prepared.negative.context.shape[1]
    image_tokens = (sizes.width // 16) * (sizes.height // 16)
    reference_tokens = sum(r.shape[-1] * r.shape[-2] // 4 for r in prepared.positive.middle.references)
    results["tokens"] = {"text_stage1": tokens[1], "text_stage3": tokens[3], "text_negative": tokens["negative"],
                         "image": image_tokens, "reference": reference_tokens}
    say(f"tokens: MLLM context {tokens[1]} (with the reference), {tokens[3]} (prompt only), {tokens['negative']} (negative); "
        f"image {image_tokens}; reference latents {reference_tokens}")
    reset_peak(device)  # a 2-step run has the shapes (so the peak) of a 28-step one, and warms the kernels up
    latent = pipe.sample(GenerateConfig(**dict(config, steps=2)), prepared, progress=False)
    headless["sample_peak_gib"] = peak_gib(device)
    vae_decode(vae, latent)
    headless["sample_and_decode_peak_gib"] = peak_gib(device)  # the peak of a whole image, the VAE decode included
    times = {name: [] for name in modes}
    for _ in range(sizes.rounds):
        for name, mode in modes.items():
            times[name].append(timed(lambda: pipe(mode, [reference], progress=False), device)[0])
            say(f"  headless {name}: {times[name][-1]:.2f} s")
    headless["image_s"] = {name: summary(values) for name, values in times.items()}
    headless["ratio_staged_vs_every_step"] = headless["image_s"]["staged"]["median"] / headless["image_s"]["every_step"]["median"]
    results["headless"] = headless
    say(f"headless: encode {headless['encode_s']:.2f} s (peak {fmt_gib(headless['encode_peak_gib'])} GiB), sampling peak "
        f"{fmt_gib(headless['sample_peak_gib'])} GiB; image staged {headless['image_s']['staged']['median']:.2f} s, "
        f"every step {headless['image_s']['every_step']['median']:.2f} s, ratio {headless['ratio_staged_vs_every_step']:.3f}")

    # ---- the DLA's share of a denoising step
    hidden = encoder.encode([PROMPT], [[reference]])
    dla_times = [timed(lambda: dla(hidden), device)[0] for _ in range(5)]
    results["dla_s"] = statistics.median(dla_times)
    hidden = None

    # ---- ComfyUI path: FLUX through ComfyUI's own loader, the MLLM under its memory manager (offload after encode)
    scratch = Path(tempfile.mkdtemp(prefix="squeeze-real-size-"))
    dla_path = scratch / "squeeze_dla.safetensors"
    save_dla(dla, dla_path, encoder.info)
    comfy_vae = comfy.sd.VAE(sd={k: v.detach().clone() for k, v in vae.state_dict().items()})  # converts in place
    state = {k: v.detach().to("cpu") for k, v in transformer.state_dict().items()}
    pipe = transformer = vae = prepared = latent = None  # free the GPU for ComfyUI's copy
    encoder.model.to("cpu")  # where SqueezeMLLMLoader leaves it: on the offload device
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    results["allocated_before_comfy_gib"] = allocated_gib(device)
    start = time.perf_counter()
    model = comfy.sd.load_diffusion_model_state_dict(state)
    del state
    results["comfy_load_s"] = time.perf_counter() - start
    offload = comfy.model_management.text_encoder_offload_device()
    load = comfy.model_management.text_encoder_device()
    # ComfyUI's own moves first (keep_host_copy off); repeated_encodes then also measures the loader's host copy
    mllm = SqueezeMLLM(encoder, mllm_patcher(encoder.model, load, offload, keep_host_copy=False), offload_after_encode=True)
    pixels = reference_pixels(reference)
    comfy_results: dict = {"flux_dtype": str(model.model.get_dtype()), "load_s": results["comfy_load_s"]}
    reset_peak(device)
    seconds, (conditioning, prompt_only, _) = timed(lambda: encode(mllm, str(dla_path), PROMPT, [pixels]), device)
    comfy_results["encode_s"], comfy_results["encode_peak_gib"] = seconds, peak_gib(device)
    _, negative, _ = encode(mllm, str(dla_path), "", [])
    comfy_results["mllm_loaded_bytes_after_encode"] = int(mllm.patcher.loaded_size())
    comfy_results["workflow_encodes"] = repeated_encodes(
        mllm, encode, str(dla_path), pixels, sizes.rounds, device,
        lambda: mllm_patcher(encoder.model, load, offload, keep_host_copy=True, offload_after_encode=True))
    for name, entry in comfy_results["workflow_encodes"].items():
        say(f"  ComfyUI workflow encodes, {name}: {entry['s']['median']:.2f} s [{entry['s']['min']:.2f}, {entry['s']['max']:.2f}], "
            f"{entry['bytes_moved'] / GIB:.2f} GiB moved per round{copied_note(entry)}")
    comfy_results["mllm_on_gpu_when_sampling"] = str(encoder.device)
    latents = encode_references(comfy_vae, [pixels], sizes.reference_side)
    with_refs, late = attach_references(conditioning, latents), attach_references(prompt_only, latents)
    latent = {"samples": torch.zeros(1, 16, sizes.height // 8, sizes.width // 8)}
    common = dict(seed=1, steps=sizes.steps, cfg=2.5, sampler_name="euler", negative=negative, latent=latent,
                  tau1=sizes.tau1, tau2=sizes.tau2)
    variants = {
        "ksampler": lambda: (nodes.common_ksampler(model, 1, sizes.steps, 2.5, "euler", "simple", conditioning, negative, latent)[0], None),
        "staged_same": lambda: staged_sample(model, scheduler="simple", positive=conditioning, positive_middle=conditioning,
                                             positive_late=conditioning, **common),
        "staged": lambda: staged_sample(model, scheduler=COSINE_SCHEDULER, positive=conditioning, positive_middle=with_refs,
                                        positive_late=late, **common),
        "every_step": lambda: staged_sample(model, scheduler=COSINE_SCHEDULER, positive=with_refs, **common),
    }
    nodes.common_ksampler(model, 1, 2, 2.5, "euler", "simple", conditioning, negative, latent)  # loads FLUX, warms kernels
    staged_sample(model, scheduler=COSINE_SCHEDULER, positive=conditioning, positive_middle=with_refs, positive_late=late,
                  **dict(common, steps=2))
    times = {name: [] for name in variants}
    outputs = {}
    reset_peak(device)
    for _ in range(sizes.rounds):
        for name, function in variants.items():
            seconds, outputs[name] = timed(function, device)
            times[name].append(seconds)
            say(f"  ComfyUI {name}: {seconds:.2f} s")
    comfy_results["sample_peak_gib"] = peak_gib(device)
    reset_peak(device)
    for name in ("staged",):  # ComfyUI's VAE decode of the staged latent, as VAEDecode runs it
        comfy_vae.decode(outputs[name][0]["samples"])
    comfy_results["decode_peak_gib"] = peak_gib(device)
    comfy_results["sample_s"] = {name: summary(values) for name, values in times.items()}
    median = {name: value["median"] for name, value in comfy_results["sample_s"].items()}
    comfy_results["ratio_staged_same_vs_ksampler"] = median["staged_same"] / median["ksampler"]
    comfy_results["identical_to_ksampler"] = bool(torch.equal(outputs["ksampler"][0]["samples"], outputs["staged_same"][0]["samples"]))
    comfy_results["ratio_staged_vs_every_step"] = median["staged"] / median["every_step"]
    staged_log = outputs["staged"][1].phase_log
    staged_tokens = {stage: count + image_tokens + (reference_tokens if stage > 1 else 0) for stage, count in
                     ((1, tokens[1]), (2, tokens[1]), (3, tokens[3]))}
    staged_tokens["negative"] = tokens["negative"] + image_tokens
    every_tokens = {stage: tokens[1] + image_tokens + reference_tokens for stage in (1, 2, 3)}
    every_tokens["negative"] = staged_tokens["negative"]
    staged_total, calls = stage_token_counts(staged_log, staged_tokens)
    every_total, _ = stage_token_counts(staged_log, every_tokens)
    comfy_results["stage_calls"] = calls
    comfy_results["token_ideal_ratio"] = staged_total / every_total
    step_s = median["staged"] / max(1, len(staged_log))
    comfy_results["dla_share_of_step"] = results["dla_s"] / step_s
    results["comfy"] = comfy_results
    say(f"ComfyUI: encode {comfy_results['encode_s']:.2f} s (peak {fmt_gib(comfy_results['encode_peak_gib'])} GiB); MLLM "
        f"after encode: {comfy_results['mllm_on_gpu_when_sampling']}, {comfy_results['mllm_loaded_bytes_after_encode']} bytes "
        f"loaded; sampling peak {fmt_gib(comfy_results['sample_peak_gib'])} GiB")
    print_infer_table(results)
    return results


def print_infer_table(results: dict) -> None:
    comfy_results, headless = results["comfy"], results["headless"]
    sample = comfy_results["sample_s"]

    def row(label, entry, note=""):
        say(f"  {label:<46} {entry['median']:8.2f} s  [{entry['min']:.2f}-{entry['max']:.2f}, n={entry['n']}]  {note}")

    say(f"\nInference, {results['device']} ({results['dtype']}), "
        f"{results['sizes']['width']}x{results['sizes']['height']} px, {results['sizes']['steps']} steps, real CFG:")
    row("ComfyUI KSampler (simple)", sample["ksampler"])
    row("ComfyUI staged, same cond. every stage (simple)", sample["staged_same"],
        f"ratio {comfy_results['ratio_staged_same_vs_ksampler']:.3f}, identical: {comfy_results['identical_to_ksampler']}")
    row("ComfyUI references in every step (cosine)", sample["every_step"])
    row("ComfyUI staged (cosine)", sample["staged"],
        f"ratio {comfy_results['ratio_staged_vs_every_step']:.3f} (token-count ideal {comfy_results['token_ideal_ratio']:.3f}; "
        f"calls per stage {comfy_results['stage_calls']})")
    for name, entry in comfy_results["workflow_encodes"].items():
        row(f"ComfyUI workflow encodes x2, {name}", entry["s"], f"{entry['bytes_moved'] / GIB:.2f} GiB moved{copied_note(entry)}")
    row("headless references in every step (image)", headless["image_s"]["every_step"])
    row("headless staged (image: encode+sample+decode)", headless["image_s"]["staged"],
        f"ratio {headless['ratio_staged_vs_every_step']:.3f}")
    say(f"  DLA forward {results['dla_s'] * 1000:.1f} ms = {100 * comfy_results['dla_share_of_step']:.2f}% of one denoising step")
    say(f"  peak GPU memory: ComfyUI encode {fmt_gib(comfy_results['encode_peak_gib'])} GiB, sample "
        f"{fmt_gib(comfy_results['sample_peak_gib'])} GiB; headless encode {fmt_gib(headless['encode_peak_gib'])} GiB, "
        f"sample {fmt_gib(headless['sample_peak_gib'])} GiB")
    say(f"  MLLM when sampling starts: ComfyUI {comfy_results['mllm_on_gpu_when_sampling']} "
        f"({comfy_results['mllm_loaded_bytes_after_encode']} bytes loaded); headless {headless['mllm_on_gpu_when_sampling']} (resident)")


# --------------------------------------------------------------------------------------------------------- train
def train(sizes: Sizes, device: str, dtype, settings=((1, True), (1, False), (2, True), (2, False))) -> dict:
    from accelerate.state import AcceleratorState

    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.models import assemble_training_models
    from squeeze_core.train.trainer import Trainer

    results: dict = {"device": device_name(device), "sizes": asdict(sizes), "dtype": str(dtype), "settings": []}
    say(f"== training on {results['device']}: stage 2 at {sizes.train_resolution} px, one reference, LoRA rank 512, bf16 autocast")
    transformer = build_flux(sizes, device, dtype)
    vae = build_vae(device, dtype)
    encoder = build_internvl3("InternVL3-8B", sizes, device, dtype)
    side = sizes.train_resolution
    target = torch.rand(1, side, side, 3, generator=torch.Generator().manual_seed(0))
    reference = torch.from_numpy(np.asarray(reference_image(side), dtype=np.float32) / 255.0)
    results["lora_parameters"] = lora_parameter_count(transformer, 512)
    for batch_size, checkpointing in settings:
        setting = {"batch_size": batch_size, "gradient_checkpointing": checkpointing}
        config = TrainConfig(training_stage=2, init_from="(real-size benchmark: a fresh DLA and LoRA)", lora_rank=512,
                             batch_size=batch_size, gradient_checkpointing=checkpointing, resolution=side,
                             reference_long_side=side, base_dtype="bfloat16", mixed_precision="bf16" if device != "cpu" else "no",
                             mllm_reference_drop=0.0, vae_reference_drop=0.0, prompt_drop=0.0, num_workers=0,
                             output_dir=tempfile.mkdtemp(prefix="squeeze-real-size-train-"))
        trainer = None
        try:
            AcceleratorState._reset_state(reset_partial_state=True)
            trainer = Trainer(config)
            trainer.attach_models(assemble_training_models(config, encoder, transformer, vae, trainer.accelerator.device))
            batch = {"prompt": [PROMPT] * batch_size, "target": target.expand(batch_size, -1, -1, -1).clone(),
                     "references": [[reference]] * batch_size}
            reset_peak(device)
            trainer.train_step(trainer.prepare_batch(batch))  # warm-up
            prepare_s, step_s, mllm_s = [], [], []
            for _ in range(sizes.train_steps):
                seconds, samples = timed(lambda: trainer.prepare_batch(batch), device)
                prepare_s.append(seconds)
                step_s.append(timed(lambda: trainer.train_step(samples), device)[0])
                mllm_s.append(timed(lambda: encoder.encode(batch["prompt"], batch["references"]), device)[0])
            hidden = encoder.encode(batch["prompt"][:1], batch["references"][:1]).hidden_states
            setting.update(peak_gib=peak_gib(device), prepare_s=statistics.median(prepare_s),
                           train_step_s=statistics.median(step_s), mllm_s=statistics.median(mllm_s),
                           hidden_bytes_per_sample=hidden.numel() * 2)  # cached in bf16
            setting["step_s"] = setting["prepare_s"] + setting["train_step_s"]
            setting["mllm_share"] = setting["mllm_s"] / setting["step_s"]
        except torch.OutOfMemoryError as error:
            setting.update(error=f"out of memory ({str(error).split('. ')[0]})")
        finally:
            trainer = None
            if getattr(transformer, "peft_config", None):  # the next setting adds its own LoRA
                transformer.delete_adapters(["default"])
            transformer.disable_gradient_checkpointing()
            transformer.requires_grad_(False).eval()
            gc.collect()
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            setting["allocated_after_gib"] = allocated_gib(device)  # back to the frozen models' weights: no leak
        results["settings"].append(setting)
        say(f"  {json.dumps(setting)}")
    print_train_table(results)
    return results


def print_train_table(results: dict) -> None:
    say(f"\nTraining, {results['device']}: stage 2, {results['sizes']['train_resolution']} px, one reference, LoRA rank 512 "
        f"({results['lora_parameters'] / 1e6:.0f} M parameters), MLLM frozen and resident:")
    say(f"  {'batch':>5} {'grad. ckpt':>10} {'peak GiB':>9} {'s/step':>7} {'prepare':>8} {'MLLM share':>10} {'hidden MB/sample':>16}")
    for s in results["settings"]:
        if "error" in s:
            say(f"  {s['batch_size']:>5} {str(s['gradient_checkpointing']):>10}   {s['error']}")
            continue
        say(f"  {s['batch_size']:>5} {str(s['gradient_checkpointing']):>10} {fmt_gib(s['peak_gib']):>9} {s['step_s']:>7.2f} "
            f"{s['prepare_s']:>8.2f} {100 * s['mllm_share']:>9.1f}% {s['hidden_bytes_per_sample'] / 1e6:>16.1f}")
    done = [s for s in results["settings"] if "error" not in s]
    if done:
        s = done[0]
        say(f"  caching the MLLM's hidden states: saves {s['mllm_s']:.2f} s of {s['step_s']:.2f} s per step at batch "
            f"{s['batch_size']}; costs {s['hidden_bytes_per_sample'] / 1e6:.0f} MB per sample "
            f"({s['hidden_bytes_per_sample'] * 1e6 / 1e12:.0f} TB for 1M pairs, prompt-only twins not counted)")


# ---------------------------------------------------------------------------------------------------------- plan
def plan(args) -> dict:
    """Parameter counts from the meta device, and memory per phase from them (activations estimated, labelled)."""
    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.mllm import MLLMInfo

    sizes = Sizes()
    flux = build_flux(sizes, "meta", torch.bfloat16)
    vae = build_vae("meta", torch.float32)
    counts = {"FLUX.1-dev": parameter_count(flux), "FLUX VAE": parameter_count(vae),
              "LoRA rank 512": lora_parameter_count(flux, 512)}
    mllms = {}
    for name in QWEN25:
        from transformers import InternVLForConditionalGeneration

        with torch.device("meta"):
            model = InternVLForConditionalGeneration(internvl3_config(name, 151667))
            hidden, layers = QWEN25[name][0], QWEN25[name][1]
            dla = DualLayerAggregator(DLAConfig.for_mllm(MLLMInfo("internvl", layers, hidden)))
        head = 0 if QWEN25[name][5] else parameter_count(model.lm_head)  # untied: the encoder never loads it
        mllms[name] = {"parameters": parameter_count(model), "encoder_parameters": parameter_count(model) - head,
                       "llm_parameters": parameter_count(model.model.language_model), "layers": layers, "hidden": hidden,
                       "dla": parameter_count(dla)}
    # Activations (GiB). FLUX inference: measured where docs/benchmarks/real_size_h100/infer.json holds a GPU run (the
    # ComfyUI path's sampling peak above FLUX's weights and what was allocated before: 1024 px, one reference); the
    # estimate from the widest live tensors of one block (tokens x 3072 x ~12 values in bf16) was 5x too low. The VAE
    # decode at full resolution (~ 8 x 128 ch x H x W in bf16 at its peak) is an estimate: no run has measured it.
    tokens_1024 = 4096 + 1024 + 300
    flux_act, flux_act_source = tokens_1024 * 3072 * 12 * 2 / GIB, "estimated"
    measured = ROOT / "docs" / "benchmarks" / "real_size_h100" / "infer.json"
    if measured.is_file():
        run = json.loads(measured.read_text(encoding="utf-8"))
        weights = run["parameters"]["flux"] * 2 / GIB
        flux_act = run["comfy"]["sample_peak_gib"] - weights - run.get("allocated_before_comfy_gib", 0.0)
        flux_act_source = f"measured ({run['device']})"
    vae_decode = 8 * 128 * 1024 * 1024 * 2 / GIB
    # Training at 512 px with a reference: 1024 + 1024 + 300 tokens. Without checkpointing each of the 57 blocks keeps
    # ~20 values per token per width for backward (norm outputs, q k v, attention out, MLP hidden before and after the
    # GELU); with checkpointing only block inputs stay (~2 per token per width) plus one block's worth in backward.
    tokens_512 = 1024 + 1024 + 300
    per_block = tokens_512 * 3072 * 2 / GIB
    train_act = {True: 57 * 2 * per_block + 20 * per_block, False: 57 * 20 * per_block}
    # Measured where docs/benchmarks/real_size_h100/train.json holds a GPU run of InternVL3-8B (batch 1 and 2 with
    # checkpointing, batch 1 without): the cost of one more sample is the difference between batch 2 and batch 1;
    # what stays is the rest (weights, LoRA and Adam, the MLLM). The estimate above was 10x too high with checkpointing.
    train_measured = None
    measured_train = ROOT / "docs" / "benchmarks" / "real_size_h100" / "train.json"
    if measured_train.is_file():
        peaks = {(t["batch_size"], t["gradient_checkpointing"]): t["peak_gib"]
                 for t in json.loads(measured_train.read_text(encoding="utf-8"))["settings"] if t.get("peak_gib")}
        if {(1, True), (2, True), (1, False)} <= set(peaks):
            per_sample = peaks[(2, True)] - peaks[(1, True)]
            fixed = peaks[(1, True)] - per_sample
            train_measured = {"fixed_gib (InternVL3-8B resident)": fixed,
                              "per_sample_gib": {True: per_sample, False: peaks[(1, False)] - fixed}}
            train_act = train_measured["per_sample_gib"]
    phases = {}
    flux_gib = {"bf16": counts["FLUX.1-dev"] * 2 / GIB, "fp8": counts["FLUX.1-dev"] / GIB}
    lora_gib = counts["LoRA rank 512"] * 16 / GIB  # fp32 weight + grad + two Adam moments
    for name, m in mllms.items():
        mllm_gib = m["encoder_parameters"] * 2 / GIB  # what the encoder loads: no language-model head
        llm_gib = m["llm_parameters"] * 2 / GIB  # the part --mllm-quantization quantizes
        dla_gib = m["dla"] * 4 / GIB
        hidden = m["layers"] * 600 * m["hidden"] * 2 / GIB  # all layers' hidden states kept
        encode = mllm_gib + dla_gib + hidden
        sample = {q: flux_gib[q] + 0.16 + flux_act + vae_decode for q in ("bf16", "fp8")}  # 0.16: the VAE
        mllm_int8 = mllm_gib - llm_gib / 2
        phases[name] = {
            "encode": encode,
            "sample_bf16": sample["bf16"],
            "sample_fp8": sample["fp8"],
            "resident_bf16": encode + sample["bf16"],
            # squeeze generate's combinations (docs/cli.md): peak GiB of the whole run, decode included
            "headless": {
                "everything resident (bf16)": encode + sample["bf16"],
                "--offload-mllm": max(encode, sample["bf16"] + dla_gib),
                "--offload-mllm --flux-quantization fp8 (or int8)": max(encode, sample["fp8"] + dla_gib),
                "--mllm-quantization int8 --flux-quantization fp8 (or int8), resident": mllm_int8 + dla_gib + hidden + sample["fp8"],
            },
            "train": {(batch, ckpt, cached): (train_measured["fixed_gib (InternVL3-8B resident)"] - 14.8 + mllm_gib if train_measured
                                              else flux_gib["bf16"] + mllm_gib + 0.16 + lora_gib + 4 * m["dla"] * 4 / GIB)
                      - (mllm_gib if cached else 0) + batch * train_act[ckpt]
                      for batch in (1, 2, 4, 8, 16) for ckpt in (True, False) for cached in (False, True)
                      if ckpt or batch == 1 or not train_measured},  # without checkpointing batch 2 ran out of 80 GB
        }
    print_plan(counts, mllms, phases, flux_gib, lora_gib, flux_act, vae_decode, train_act, flux_act_source)
    return {"parameters": counts, "mllms": mllms, "flux_activation_gib": flux_act, "flux_activation_source": flux_act_source,
            "vae_decode_gib_estimated": vae_decode, "train_calibration": train_measured and {
                "fixed_gib": train_measured["fixed_gib (InternVL3-8B resident)"],
                "per_sample_gib": {str(k): v for k, v in train_measured["per_sample_gib"].items()}},
            "phases": {n: {k: (v if not isinstance(v, dict) else {str(kk): vv for kk, vv in v.items()}) for k, v in p.items()}
                       for n, p in phases.items()}}


def print_plan(counts, mllms, phases, flux_gib, lora_gib, flux_act, vae_decode, train_act, flux_act_source) -> None:
    say("Parameters (built on the meta device from the published configs):")
    say(f"  FLUX.1-dev transformer   {counts['FLUX.1-dev'] / 1e9:6.2f} B   "
        f"bf16 {flux_gib['bf16']:.1f} GiB, fp8 weights {flux_gib['fp8']:.1f} GiB")
    say(f"  FLUX VAE                 {counts['FLUX VAE'] / 1e6:6.1f} M")
    say(f"  Squeeze LoRA, rank 512   {counts['LoRA rank 512'] / 1e6:6.0f} M   fp32 + grad + Adam {lora_gib:.1f} GiB")
    for name, m in mllms.items():
        say(f"  {name:<14} {m['parameters'] / 1e9:6.2f} B ({m['layers']} x {m['hidden']}), bf16 {m['parameters'] * 2 / GIB:5.1f} GiB;"
            f" its DLA {m['dla'] / 1e6:.0f} M")
    say(f"\nActivations: FLUX sampling at 1024 px {flux_act:.2f} GiB ({flux_act_source}), VAE decode at 1024 px "
        f"{vae_decode:.1f} GiB (estimated); "
        f"training at 512 px per sample {train_act[True]:.1f} GiB (checkpointing) / {train_act[False]:.1f} GiB (none)")
    gpus = (24, 48, 80)

    def fits(gib):
        return " ".join(f"{'yes' if gib <= g * 0.95 else 'no':>4}" for g in gpus)  # 5% for CUDA context and fragmentation

    say("\nTraining rows are calibrated on the H100 run where docs/benchmarks/real_size_h100/train.json exists (batch 1 "
        "and 2 with checkpointing, batch 1 without; batch 2 without checkpointing ran out of its 80 GB); batches 4-16 "
        "are extrapolated from the batch 1 -> 2 difference, not measured.")
    say(f"\nMemory per phase, GiB (inference 1024 px; training stage 2 at 512 px) and whether it fits "
        f"{', '.join(f'{g} GB' for g in gpus)}:")
    for name, p in phases.items():
        say(f"  {name}")
        say(f"    encode (MLLM + DLA)                          {p['encode']:6.1f}   {fits(p['encode'])}")
        say(f"    sample, FLUX bf16 (MLLM offloaded)           {p['sample_bf16']:6.1f}   {fits(p['sample_bf16'])}")
        say(f"    sample, FLUX fp8 weights (MLLM offloaded)    {p['sample_fp8']:6.1f}   {fits(p['sample_fp8'])}")
        say(f"    everything resident, bf16 (headless)         {p['resident_bf16']:6.1f}   {fits(p['resident_bf16'])}")
        say("    squeeze generate, the whole run (decode included):")
        for label, gib in p["headless"].items():
            say(f"      {label:<70} {gib:6.1f}   {fits(gib)}")
        for (batch, ckpt, cached), gib in p["train"].items():
            label = f"train batch {batch}, ckpt {'on' if ckpt else 'off'}, MLLM {'cached' if cached else 'resident'}"
            say(f"    {label:<44} {gib:6.1f}   {fits(gib)}")


# ---------------------------------------------------------------------------------------------------------- main
def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this machine has no CUDA GPU; use --device cpu (with --reduced) or run on a GPU.")
    return name


def write_json(path, data) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["plan", "infer", "train", "all"])
    parser.add_argument("--reduced", action="store_true", help="same widths, one block of each kind, tiny images (CPU check)")
    parser.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cuda, cpu")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="weights of FLUX, the MLLM and (training) the VAE; auto: bfloat16 on a GPU, float32 on the "
                             "CPU (whose bf16 matrix products are several times slower)")
    parser.add_argument("--json", help="write this command's figures to this JSON file")
    parser.add_argument("--train-settings", default="1:on,1:off,2:on,2:off",
                        help="train: batch size and gradient checkpointing per setting, e.g. 1:on,2:off")
    parser.add_argument("--no-cudnn-attention", action="store_true",
                        help="keep scaled_dot_product_attention off its cuDNN backend everywhere (training always "
                             "does: squeeze_core.train.trainer.attention_for_training)")
    parser.add_argument("--json-dir", help="all: write plan.json, infer.json, train.json here")
    args = parser.parse_args()
    logging_level = os.environ.get("SQUEEZE_BENCH_LOG", "WARNING")
    import logging

    logging.basicConfig(level=logging_level)
    if args.command == "plan":
        write_json(args.json, plan(args))
        return
    if args.command == "all":  # each phase in its own process: its own peak memory, and a failure loses one phase
        status = 0
        for command in ("plan", "train", "infer"):  # train first: the shorter, so a time limit cuts infer's end only
            extra = ["--reduced"] if args.reduced and command != "plan" else []
            json_path = ["--json", str(Path(args.json_dir) / f"{command}.json")] if args.json_dir else []
            done = subprocess.run([sys.executable, __file__, command, "--device", args.device, "--dtype", args.dtype, *extra, *json_path])
            status = status or done.returncode
        raise SystemExit(status)
    device = resolve_device(args.device)
    sizes = Sizes.reduced() if args.reduced else Sizes()
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(args.dtype) or (
        torch.bfloat16 if device != "cpu" else torch.float32)
    torch.manual_seed(0)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    settings = [(int(b), c == "on") for b, c in (item.split(":") for item in args.train_settings.split(","))]
    result = infer(sizes, device, dtype) if args.command == "infer" else train(sizes, device, dtype, settings)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
