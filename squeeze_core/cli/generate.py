"""`squeeze generate`: one image, headless, sampled in denoising phases exactly as the shipped ComfyUI workflow
samples it (squeeze_core.pipeline).

    squeeze generate                                   # embedded default: the mini world's trained models, a held-out
                                                       # identity's reference and prompt -> squeeze.png + squeeze_sheet.png
    squeeze generate --mllm models/mllm/InternVL3-8B-hf --dla squeeze_dla.safetensors --lora squeeze_flux_lora.safetensors \\
                     --transformer FLUX.1-dev/transformer --vae FLUX.1-dev/vae --prompt "a dog wearing a red hat" \\
                     --reference dog.jpg --device cuda --output dog_hat.png --sheet dog_hat_sheet.png

The sheet is reference | MLLM only | VAE only | staged, the same seed in each: what each conditioning branch draws.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import SqueezeInputError
from .models import (
    add_flux_options,
    add_mllm_options,
    check_model_options,
    embedded_flux,
    load_pipeline,
    prompt_and_reference,
    sampling_config,
)

SHEET_MODES = {"mllm_only": "MLLM only", "vae_only": "VAE only"}  # beside the reference and the staged image


def add_parsers(commands) -> None:
    generate = commands.add_parser("generate", help="generate an image headless, staged as the ComfyUI graph samples")
    add_mllm_options(generate)
    add_flux_options(generate)
    generate.add_argument("--output", default="squeeze.png", help="the PNG to write (default squeeze.png)")
    generate.add_argument("--sheet", help="also write reference | MLLM only | VAE only | staged side by side here (default: "
                                          "<output>_sheet.png with the embedded FLUX, none with a given one)")
    generate.set_defaults(func=run)


def sheet_path(args) -> Path | None:
    if args.sheet is not None:
        return Path(args.sheet)
    output = Path(args.output)
    return output.with_name(f"{output.stem}_sheet.png") if embedded_flux(args) else None


def run(args) -> None:
    from .. import checks
    from ..images import save_png
    from ..sheet import image_sheet, save_sheet

    config = sampling_config(args, prompt=args.prompt or "", seed=args.seed)  # validated before anything loads
    opened = check_model_options(args)
    checks.output_file(args.output, "--output", ".png")
    sheet = sheet_path(args)
    if sheet is not None:
        checks.output_file(sheet, "--sheet", ".png")
        if sheet.resolve() == Path(args.output).resolve():
            raise SqueezeInputError(f"--sheet '{sheet}' is the --output file: the sheet would overwrite the image; "
                                    "give the sheet another name.")
    pipe = load_pipeline(args, args.device)
    prompt, references = prompt_and_reference(args, opened)
    config = dataclasses.replace(config, prompt=prompt)
    _, image = pipe(config, references)
    output = Path(args.output)
    save_png(image, output)  # atomically: never a half-written image
    print(f"prompt        {prompt!r}")
    print(f"generated     {config.width}x{config.height}, {config.steps} steps, cfg {config.cfg}, tau {config.tau1}/{config.tau2}, "
          f"{len(references)} reference(s), seed {config.seed}")
    print(f"saved         {output}")
    if sheet is not None and references:
        columns = [references[0]] + [pipe(dataclasses.replace(config, mode=mode), references, progress=False)[1]
                                     for mode in SHEET_MODES] + [image]
        save_sheet(image_sheet([columns], ["reference", *SHEET_MODES.values(), "staged"]), sheet)
        print(f"sheet         {sheet}  (reference | {' | '.join(SHEET_MODES.values())} | staged, seed {config.seed})")
