"""The options of the verbs that load Squeeze's models (encode, generate, eval, ablate), their checks and loaders.

Defaults come from the config dataclasses: GenerateConfig for sampling, EncoderConfig for the MLLM's references.
An option left out is not passed on, so the dataclass default applies; the embedded default (no --transformer/--vae)
samples smaller and shorter (EMBEDDED_SAMPLING), because its tiny random FLUX draws noise at any size.
Checks run before anything heavy loads; nothing here changes `args`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ..dtypes import DTYPES
from ..errors import SqueezeError
from ..mllm import EncoderConfig
from ..pipeline import GenerateConfig

DEFAULT_PROMPT = "a photo of the red toy on a sandy beach at sunset"
EMBEDDED_MLLM = ("internvl", 6, 64)  # what squeeze_core.tiny.save_tiny_internvl3 writes: family, layers, width
EMBEDDED_SAMPLING = {"steps": 8, "width": 256, "height": 256}  # GenerateConfig overrides for the tiny FLUX
SAMPLING_OPTIONS = ("steps", "cfg", "tau1", "tau2", "width", "height", "guidance", "long_side", "negative_prompt")


def add_mllm_options(command: argparse.ArgumentParser, prompt: bool = True) -> None:
    command.add_argument("--mllm", help="InternVL3 '-hf' checkpoint directory (default: the embedded tiny model)")
    command.add_argument("--dla", help="DLA weights .safetensors (default: an untrained DLA)")
    if prompt:
        command.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt (may be empty)")
        command.add_argument("--reference", action="append", help="a reference image; repeat for several")
    command.add_argument("--max-references", type=int, default=EncoderConfig.max_references,
                         help=f"limit on references per prompt (default {EncoderConfig.max_references})")
    command.add_argument("--aspect-mode", default=EncoderConfig.aspect_mode, choices=["pad", "crop", "stretch"],
                         help=f"fit non-square references (default {EncoderConfig.aspect_mode})")
    command.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="MLLM dtype")
    command.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    command.add_argument("--seed", type=int, default=0, help="noise seed (and the seed of an untrained DLA)")


def add_flux_options(command: argparse.ArgumentParser) -> None:
    g = GenerateConfig
    embedded = EMBEDDED_SAMPLING
    command.add_argument("--transformer", help="FLUX.1-dev transformer directory, diffusers layout (default: embedded tiny)")
    command.add_argument("--vae", help="FLUX VAE directory, diffusers layout (default: embedded tiny)")
    command.add_argument("--lora", help="the Squeeze FLUX LoRA .safetensors (the file ComfyUI loads)")
    command.add_argument("--flux-dtype", default="bfloat16", choices=sorted(DTYPES), help="FLUX transformer dtype")
    command.add_argument("--negative-prompt", help="negative prompt for real CFG (default: empty)")
    command.add_argument("--steps", type=int, help=f"denoising steps (default {g.steps}; {embedded['steps']} embedded)")
    command.add_argument("--cfg", type=float, help=f"real CFG scale in every denoising stage (default {g.cfg})")
    command.add_argument("--guidance", type=float, help=f"FLUX distilled guidance input (default {g.guidance})")
    command.add_argument("--tau1", type=float, help=f"flow time where denoising stage 2 starts (default {g.tau1})")
    command.add_argument("--tau2", type=float, help=f"flow time where denoising stage 3 starts (default {g.tau2})")
    command.add_argument("--width", type=int, help=f"output width, a multiple of 16 (default {g.width}; {embedded['width']} embedded)")
    command.add_argument("--height", type=int, help=f"output height, a multiple of 16 (default {g.height}; {embedded['height']} embedded)")
    command.add_argument("--long-side", type=int, help=f"reference size for the VAE branch (default {g.long_side})")


def embedded_flux(args) -> bool:
    return args.transformer is None  # check_model_options ensures --vae is given exactly when --transformer is


def check_sampling_options(args) -> None:
    """The given sampling options, each named in its message (GenerateConfig checks them again, by field name)."""
    from .. import checks

    for name in ("cfg", "guidance"):
        if getattr(args, name) is not None:
            checks.finite(getattr(args, name), f"--{name}", low=0.0)
    for name, multiple in (("steps", 1), ("width", 16), ("height", 16), ("long_side", 16)):
        if getattr(args, name) is not None:
            checks.positive_int(getattr(args, name), "--" + name.replace("_", "-"), multiple_of=multiple)


def sampling_config(args, **settings) -> GenerateConfig:
    """GenerateConfig from the sampling options that were given, over the embedded defaults when no FLUX is given."""
    check_sampling_options(args)
    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS if getattr(args, name) is not None}
    defaults = EMBEDDED_SAMPLING if embedded_flux(args) else {}
    return GenerateConfig(**{**defaults, **given, **settings})


def check_model_options(args) -> list:
    """Everything about the model options that can be checked without loading a model: the device, the MLLM folder
    and its config.json, the DLA file's header and recorded MLLM against that config, the FLUX folders, the LoRA
    file's header. Returns the --reference images, opened and checked."""
    from .. import checks
    from ..images import open_image
    from ..mllm import MLLMInfo, check_mllm_dir
    from ..weights import check_dla_made_for, read_dla_metadata

    checks.device(args.device)
    checks.positive_int(args.max_references, "--max-references")
    if args.mllm is not None:
        mllm = MLLMInfo.from_config(check_mllm_dir(args.mllm), Path(args.mllm).name)
    else:
        from ..tiny import build_tiny_tokenizer

        mllm = MLLMInfo(*EMBEDDED_MLLM, name="the embedded tiny InternVL3", text_model_type="qwen2",
                        vocab_size=len(build_tiny_tokenizer()))
    if args.dla is not None:
        if Path(args.dla).is_file():  # a missing file gets read_dla_metadata's message, which says where it goes
            checks.safetensors_file(args.dla, "--dla", "DLA weights")
        _, made_for = read_dla_metadata(args.dla)
        check_dla_made_for(args.dla, made_for, mllm, mllm_label="--mllm" if args.mllm else "the MLLM (no --mllm: the embedded tiny one)")
    if hasattr(args, "transformer") and (args.transformer is None) != (args.vae is None):
        raise SqueezeError("give --transformer and --vae together (both from the same FLUX.1-dev copy), "
                           "or neither for the embedded default.")
    for option, what in (("transformer", "FLUX.1-dev's transformer/ folder"), ("vae", "FLUX.1-dev's vae/ folder")):
        folder = getattr(args, option, None)
        if folder is not None:
            checks.existing(folder, f"--{option}", what, directory=True)
            if not (Path(folder) / "config.json").is_file():
                raise SqueezeError(f"--{option} '{folder}' has no config.json; it should be {what} (diffusers layout).")
    if getattr(args, "lora", None) is not None:
        header = checks.safetensors_file(args.lora, "--lora", "the Squeeze FLUX LoRA")
        names = [k for k in header if k != "__metadata__"]
        if not names or not all(k.startswith("transformer.") for k in names):
            raise SqueezeError(f"--lora '{args.lora}' is not a Squeeze FLUX LoRA: its tensor names do not all start with 'transformer.'.")
    references = getattr(args, "reference", None) or []
    if len(references) > args.max_references:
        raise SqueezeError(f"--reference is given {len(references)} times, but --max-references is {args.max_references}; "
                           "pass fewer references or raise --max-references.")
    return [open_image(path, name="--reference") for path in references]


def references_or_demo(args, opened: list) -> list:
    """The opened --reference images; with the embedded MLLM and none given, its built-in demo reference."""
    from ..tiny import demo_reference_image

    if opened:
        return opened
    return [demo_reference_image()] if args.mllm is None else []


def load_encoder_and_dla(args, device, mllm_dir: Path | None = None):
    """The MLLM (args.mllm, else `mllm_dir`, else the embedded tiny one written to a scratch folder) and the DLA
    (--dla, else an untrained one seeded by --seed)."""
    from ..dla import DLAConfig, DualLayerAggregator
    from ..mllm import InternVL3Encoder
    from ..tiny import save_tiny_internvl3
    from ..weights import load_dla

    config = EncoderConfig(max_references=args.max_references, aspect_mode=args.aspect_mode)
    with tempfile.TemporaryDirectory(prefix="squeeze-tiny-") as scratch:
        if args.mllm is not None:
            mllm_dir = Path(args.mllm)
        elif mllm_dir is None:
            print("No --mllm given: using the embedded tiny InternVL3 (random weights)"
                  + (f" with the DLA in {args.dla}." if args.dla else " and an untrained DLA."))
            mllm_dir = save_tiny_internvl3(Path(scratch) / "tiny-internvl3")
        encoder = InternVL3Encoder.from_pretrained(mllm_dir, dtype=DTYPES[args.dtype], device=device, config=config)
    if args.dla:
        return encoder, load_dla(args.dla, mllm=encoder.info, device=device)
    if args.mllm is not None:
        print("No --dla given: using an untrained DLA (a near-uniform mix of all layers).")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return encoder, DualLayerAggregator(DLAConfig.for_mllm(encoder.info)).to(device).eval()


def load_pipeline(args, device, mllm_dir: Path | None = None):
    """InternVL3 + DLA + FLUX (+ LoRA) + VAE from the options; embedded tiny models where none are given."""
    from ..flux import load_flux_transformer
    from ..lora import load_comfyui_lora
    from ..pipeline import SqueezePipeline
    from ..tiny import tiny_flux_transformer, tiny_flux_vae
    from ..vae import load_flux_vae

    encoder, dla = load_encoder_and_dla(args, device, mllm_dir)
    if embedded_flux(args):
        print("No --transformer/--vae given: using an embedded tiny FLUX and VAE with random weights (the image is noise).")
        transformer, vae = tiny_flux_transformer(args.seed).to(device), tiny_flux_vae(args.seed).to(device)
    else:
        transformer = load_flux_transformer(args.transformer, DTYPES[args.flux_dtype], device)
        vae = load_flux_vae(args.vae, torch.float32, device)
    if args.lora:
        load_comfyui_lora(transformer, args.lora)
    return SqueezePipeline(encoder, dla, transformer, vae)
