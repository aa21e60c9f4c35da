"""`squeeze encode`: the joint MLLM encoding and the DLA on one prompt with its references.

    squeeze encode                                     # embedded default: the mini InternVL3 + its trained DLA on a
                                                       # held-out identity's reference and prompt, no download
    squeeze encode --mllm models/mllm/InternVL3-8B-hf --dla models/squeeze/squeeze_dla.safetensors \\
                   --prompt "a dog wearing a red hat" --reference dog.jpg --plot layers.png --save cond.safetensors

Prints what came out (token counts by type, context / pooled shapes, per-layer weights for text and image tokens),
can draw the layer weights (--plot) and save the conditioning tensors (--save).
"""

from __future__ import annotations

from .models import add_mllm_options, check_model_options, load_encoder_and_dla, prompt_and_reference


def add_parsers(commands) -> None:
    encode = commands.add_parser("encode", help="encode a prompt + references with InternVL3 and the DLA")
    add_mllm_options(encode)
    encode.add_argument("--prompt-only", action="store_true", help="ignore references (the last denoising phase)")
    encode.add_argument("--plot", help="write a PNG of the per-layer weights here")
    encode.add_argument("--save", help="write the conditioning tensors to this .safetensors file")
    encode.set_defaults(func=run)


def run(args) -> None:
    import torch

    from .. import checks
    from ..conditioning import encode_conditioning
    from ..mllm import TokenType
    from ..plots import layer_weight_chart, mean_layer_weights
    from ..weights import atomic_save_safetensors

    opened = check_model_options(args)
    if args.plot:
        checks.output_file(args.plot, "--plot", ".png")
    if args.save:
        checks.output_file(args.save, "--save", ".safetensors")
    encoder, dla = load_encoder_and_dla(args, args.device)
    prompt, references = prompt_and_reference(args, opened)
    cond = encode_conditioning(encoder, dla, [prompt], [references] if not args.prompt_only else None).item(0)

    types = cond.token_types[0]
    counts = {t.name.lower(): int((types == t).sum()) for t in (TokenType.TEXT, TokenType.IMAGE, TokenType.TEMPLATE)}
    print(f"MLLM          {encoder.info.describe()}")
    print(f"prompt        {prompt!r} with {0 if args.prompt_only else len(references)} reference image(s)")
    print(f"tokens        {counts} ({encoder.tokens_per_image} per reference, tile {encoder.tile_size} px)")
    print(f"context       {tuple(cond.context.shape)}  mean |x| {cond.context.abs().mean():.4f}")
    print(f"pooled        {tuple(cond.pooled.shape)}  mean |x| {cond.pooled.abs().mean():.4f}")
    for name, weights in mean_layer_weights(cond.layer_weights[0], types).items():
        print(f"{name:<6} LAP    layer weights " + " ".join(f"{w:.3f}" for w in weights.tolist()))
    if args.plot:
        title = f"DLA layer weights: {encoder.info.name or encoder.info.model_type}, {encoder.info.num_layers} layers"
        layer_weight_chart(cond.layer_weights[0], types, title=title).save(args.plot)
        print(f"plot          {args.plot}")
    if args.save:
        tensors = {"context": cond.context[0], "pooled": cond.pooled[0], "layer_weights": cond.layer_weights[0],
                   "token_types": cond.token_types[0].to(torch.int32)}
        tensors = {k: (v.float() if v.is_floating_point() else v).cpu().contiguous() for k, v in tensors.items()}
        atomic_save_safetensors(tensors, args.save, {"squeeze.prompt": prompt})
        print(f"saved         {args.save}")
