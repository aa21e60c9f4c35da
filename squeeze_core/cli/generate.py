"""`squeeze generate`: one image, headless, sampled in denoising stages exactly as the shipped ComfyUI workflow
samples it (squeeze_core.pipeline).

    squeeze generate                                   # embedded default: tiny InternVL3, DLA, FLUX and VAE
    squeeze generate --mllm models/mllm/InternVL3-8B-hf --dla squeeze_dla.safetensors --lora squeeze_flux_lora.safetensors \\
                     --transformer FLUX.1-dev/transformer --vae FLUX.1-dev/vae --prompt "a dog wearing a red hat" \\
                     --reference dog.jpg --device cuda --output dog_hat.png
"""

from __future__ import annotations

from pathlib import Path

from .models import add_flux_options, add_mllm_options, check_model_options, load_pipeline, references_or_demo, sampling_config


def add_parsers(commands) -> None:
    generate = commands.add_parser("generate", help="generate an image headless, staged as the ComfyUI graph samples")
    add_mllm_options(generate)
    add_flux_options(generate)
    generate.add_argument("--output", default="squeeze.png", help="the PNG to write (default squeeze.png)")
    generate.set_defaults(func=run)


def run(args) -> None:
    from .. import checks
    from ..images import save_png

    config = sampling_config(args, prompt=args.prompt, seed=args.seed)  # validated before anything loads
    opened = check_model_options(args)
    checks.output_file(args.output, "--output", ".png")
    pipe = load_pipeline(args, args.device)
    references = references_or_demo(args, opened)
    _, image = pipe(config, references)
    output = Path(args.output)
    save_png(image, output)  # atomically: never a half-written image
    print(f"generated     {config.width}x{config.height}, {config.steps} steps, cfg {config.cfg}, tau {config.tau1}/{config.tau2}, "
          f"{len(references)} reference(s), seed {config.seed}")
    print(f"saved         {output}")
