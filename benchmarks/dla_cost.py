"""DLA cost benchmark: prints figures side by side, asserts nothing (timings on shared machines are noisy).

    python benchmarks/dla_cost.py                 # default: 20 timing repeats, 300 tokens at InternVL3-8B size
    python benchmarks/dla_cost.py --repeats 5 --tokens 600

1. Encode time on the tiny built-in model: the MLLM forward, the DLA forward and both together, in --repeats
   interleaved rounds in one process (median and range), and the DLA's share of the total.
2. FLOPs, counted by torch.utils.flop_counter on the real modules (not a formula): the DLA at InternVL3-8B size
   (28 layers x 3584, --tokens tokens, half text half image) against one FLUX.1-dev transformer forward at
   1024x1024 (4096 image tokens + the same number of context tokens the DLA produces). FLUX is built on the meta
   device, so no memory and no weights are needed. Target: the DLA under 1% of one FLUX step.
   Also the DLA's share of a real-size encode (InternVL3-8B on the meta device, one 448 px reference).
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

from squeeze_core.conditioning import encode_conditioning
from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.mllm import InternVL3Encoder, MLLMOutput, TokenType
from squeeze_core.testing import demo_reference_image, save_tiny_internvl3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_size import FLUX_DEV  # noqa: E402  (the published configs, written once)


def interleaved_seconds(functions: dict, repeats: int) -> dict[str, list[float]]:
    """Each function once per round, rounds interleaved (A B C A B C ...), after one warm-up call each."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def count_flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def tiny_timing(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        encoder = InternVL3Encoder.from_pretrained(save_tiny_internvl3(Path(scratch) / "tiny"), dtype=torch.float32)
    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info)).eval()
    prompts, refs = ["a photo of the red toy on a sandy beach at sunset"], [[demo_reference_image()]]
    hidden = encoder.encode(prompts, refs)
    with torch.no_grad():
        times = interleaved_seconds({"mllm": lambda: encoder.encode(prompts, refs), "dla": lambda: dla(hidden),
                                     "both": lambda: encode_conditioning(encoder, dla, prompts, refs)}, repeats)
    mllm_s, dla_s, total_s = (statistics.median(times[name]) for name in ("mllm", "dla", "both"))

    def spread(name):
        return f"[{min(times[name]) * 1e3:.2f}-{max(times[name]) * 1e3:.2f}]"

    tokens = int(hidden.attention_mask.sum())
    print(f"tiny model ({encoder.info.describe()}, {tokens} tokens, 1 reference, CPU, {torch.get_num_threads()} threads), "
          f"median [range] of {repeats} interleaved rounds")
    print(f"  MLLM encode            {mllm_s * 1e3:8.2f} ms {spread('mllm')}")
    print(f"  DLA                    {dla_s * 1e3:8.2f} ms {spread('dla')}")
    print(f"  encode_conditioning    {total_s * 1e3:8.2f} ms {spread('both')}   DLA share {dla_s / (mllm_s + dla_s):.1%}")


def internvl3_8b_on_meta():
    """InternVL3-8B's architecture (InternViT-300M + Qwen2.5-7B) on the meta device: shapes only, no weights."""
    from real_size import internvl3_config
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration(internvl3_config("InternVL3-8B", image_token_id=151667))


def run_decoder_layers(language_model, embeds):
    """The decoder stack by hand (the model's own forward builds its causal mask from values, impossible on meta)."""
    positions = torch.arange(embeds.shape[1])[None]
    rotary = language_model.rotary_emb(embeds, positions)
    hidden = embeds
    for layer in language_model.layers:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return language_model.norm(hidden)


def real_size_flops(tokens: int) -> None:
    from diffusers import FluxTransformer2DModel

    config = DLAConfig(num_layers=28, hidden_size=3584)  # InternVL3-8B
    dla = DualLayerAggregator(config).eval()
    types = torch.full((1, tokens), int(TokenType.TEXT))
    types[0, tokens // 2 :] = int(TokenType.IMAGE)
    hidden = MLLMOutput(
        hidden_states=torch.randn(config.num_layers, 1, tokens, config.hidden_size),
        attention_mask=torch.ones(1, tokens, dtype=torch.long),
        token_types=types,
        input_ids=torch.zeros(1, tokens, dtype=torch.long),
    )
    with torch.no_grad():
        dla_flops = count_flops(lambda: dla(hidden))

    with torch.device("meta"):
        flux = FluxTransformer2DModel(**FLUX_DEV)
        image_tokens = (1024 // 16) ** 2  # 1024 px / 8 (VAE) / 2 (patch) = 64 x 64 tokens
        inputs = dict(
            hidden_states=torch.randn(1, image_tokens, 64),
            encoder_hidden_states=torch.randn(1, tokens, 4096),
            pooled_projections=torch.randn(1, 768),
            timestep=torch.ones(1),
            guidance=torch.ones(1),
            img_ids=torch.zeros(image_tokens, 3),
            txt_ids=torch.zeros(tokens, 3),
        )
        with torch.no_grad():
            flux_flops = count_flops(lambda: flux(**inputs))
        mllm = internvl3_8b_on_meta()
        # vision tower and language model counted apart: the placeholder check in between needs real values
        embeds = torch.randn(1, tokens, 3584)
        with torch.no_grad():
            mllm_flops = count_flops(lambda: mllm.model.get_image_features(pixel_values=torch.randn(1, 3, 448, 448)))
            mllm_flops += count_flops(lambda: run_decoder_layers(mllm.model.language_model, embeds))
    dla_params = sum(p.numel() for p in dla.parameters())
    flux_params = sum(p.numel() for p in flux.parameters())
    print(f"real size, FLOPs counted by torch.utils.flop_counter ({tokens} context tokens)")
    print(f"  DLA  InternVL3-8B (28 x 3584)     {dla_flops / 1e9:10.1f} GFLOP   {dla_params / 1e6:8.1f} M params")
    print(f"  FLUX.1-dev step, 1024x1024        {flux_flops / 1e12:10.1f} TFLOP   {flux_params / 1e9:8.2f} B params")
    print(f"  InternVL3-8B encode, 1 reference  {mllm_flops / 1e12:10.2f} TFLOP   "
          f"DLA share of the encode {dla_flops / (dla_flops + mllm_flops):.2%}")
    print(f"  DLA / one FLUX step               {dla_flops / flux_flops:10.3%}   (target < 1%)")
    steps = 28
    print(f"  DLA / {steps}-step sampling, real CFG {dla_flops / (flux_flops * steps * 2):10.4%}   "
          "(the DLA runs once per prompt, not per step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats (median is reported)")
    parser.add_argument("--tokens", type=int, default=300, help="MLLM tokens at real size")
    args = parser.parse_args()
    tiny_timing(args.repeats)
    real_size_flops(args.tokens)


if __name__ == "__main__":
    main()
