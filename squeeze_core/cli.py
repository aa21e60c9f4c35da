"""The `squeeze` command.

    squeeze encode                                     # embedded default: tiny built-in InternVL3 + DLA, no download
    squeeze encode --mllm models/mllm/InternVL3-8B-hf --dla models/squeeze/squeeze_dla.safetensors \\
                   --prompt "a dog wearing a red hat" --reference dog.jpg --plot layers.png --save cond.safetensors

`encode` runs the joint MLLM encoding and the DLA on one prompt with its references, prints what came out (token
counts by type, context / pooled shapes, per-layer weights for text and image tokens) and can draw the layer
weights (`--plot`) and save the conditioning tensors (`--save`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

from .errors import SqueezeError

logger = logging.getLogger("squeeze.cli")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_PROMPT = "a photo of the red toy on a sandy beach at sunset"


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError) as error:
        raise SqueezeError(f"--reference '{path}' could not be read as an image ({error}).") from error


def _cmd_encode(args) -> None:
    from .conditioning import encode_conditioning
    from .dla import DLAConfig, DualLayerAggregator
    from .mllm import EncoderConfig, InternVL3Encoder, TokenType
    from .plots import layer_weight_chart, mean_layer_weights
    from .tiny import demo_reference_image, save_tiny_internvl3
    from .weights import atomic_save_safetensors, load_dla

    dtype = DTYPES[args.dtype]
    config = EncoderConfig(max_references=args.max_references, aspect_mode=args.aspect_mode)
    with tempfile.TemporaryDirectory(prefix="squeeze-tiny-") as scratch:
        if args.mllm is None:
            print("No --mllm given: using the embedded tiny InternVL3 (random weights) and an untrained DLA.")
            mllm_dir = save_tiny_internvl3(Path(scratch) / "tiny-internvl3")
        else:
            mllm_dir = Path(args.mllm)
        encoder = InternVL3Encoder.from_pretrained(mllm_dir, dtype=dtype, device=args.device, config=config)
    if args.dla:
        dla = load_dla(args.dla, mllm=encoder.info, device=args.device)
    else:
        if args.mllm is not None:
            print("No --dla given: using an untrained DLA (a near-uniform mix of all layers).")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info)).to(args.device).eval()

    references = [_open_image(p) for p in args.reference] if args.reference else []
    if args.mllm is None and not args.reference:
        references = [demo_reference_image()]
    cond = encode_conditioning(encoder, dla, [args.prompt], [references] if not args.prompt_only else None).item(0)

    types = cond.token_types[0]
    counts = {t.name.lower(): int((types == t).sum()) for t in (TokenType.TEXT, TokenType.IMAGE, TokenType.TEMPLATE)}
    print(f"MLLM          {encoder.info.describe()}")
    print(f"prompt        {args.prompt!r} with {0 if args.prompt_only else len(references)} reference image(s)")
    print(f"tokens        {counts} ({encoder.tokens_per_image} per reference, tile {encoder.tile_size} px)")
    print(f"context       {tuple(cond.context.shape)}  mean |x| {cond.context.abs().mean():.4f}")
    print(f"pooled        {tuple(cond.pooled.shape)}  mean |x| {cond.pooled.abs().mean():.4f}")
    for name, weights in mean_layer_weights(cond.layer_weights[0], types).items():
        print(f"{name:<6} LAP    layer weights " + " ".join(f"{w:.3f}" for w in weights.tolist()))
    if args.plot:
        layer_weight_chart(cond.layer_weights[0], types, title=f"DLA layer weights: {encoder.info.describe()}").save(args.plot)
        print(f"plot          {args.plot}")
    if args.save:
        tensors = {
            "context": cond.context[0], "pooled": cond.pooled[0],
            "layer_weights": cond.layer_weights[0], "token_types": cond.token_types[0].to(torch.int32),
        }
        atomic_save_safetensors({k: v.float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous() for k, v in tensors.items()},
                                args.save, {"squeeze.prompt": args.prompt})
        print(f"saved         {args.save}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeeze", description="Squeeze: MLLM-conditioned subject-driven generation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and conversions")
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode", help="encode a prompt + references with InternVL3 and the DLA")
    encode.add_argument("--mllm", help="InternVL3 '-hf' checkpoint directory (default: the embedded tiny model)")
    encode.add_argument("--dla", help="DLA weights .safetensors (default: an untrained DLA)")
    encode.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt (may be empty)")
    encode.add_argument("--reference", action="append", help="a reference image; repeat for several")
    encode.add_argument("--prompt-only", action="store_true", help="ignore references (the last denoising stage)")
    encode.add_argument("--max-references", type=int, default=4, help="limit on references per prompt (default 4)")
    encode.add_argument("--aspect-mode", default="pad", choices=["pad", "crop", "stretch"], help="fit non-square references")
    encode.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="MLLM dtype")
    encode.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    encode.add_argument("--seed", type=int, default=0, help="seed of an untrained DLA")
    encode.add_argument("--plot", help="write a PNG of the per-layer weights here")
    encode.add_argument("--save", help="write the conditioning tensors to this .safetensors file")
    encode.set_defaults(func=_cmd_encode)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        args.func(args)
    except SqueezeError as error:
        print(f"squeeze {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
