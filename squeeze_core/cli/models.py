"""The options of the verbs that load Squeeze's models (encode, generate, eval, ablate), their checks and loaders.

Defaults come from the config dataclasses: GenerateConfig for sampling, EncoderConfig for the MLLM's references.
An option left out is not passed on, so the dataclass default applies. Models left out come from the embedded default
(squeeze_core/mini/embedded.py): the mini world's InternVL3, FLUX and VAE, with Squeeze's DLA and LoRA trained on them;
the shipped DLA and LoRA are one pair, used together when neither --dla nor --lora is given. The embedded FLUX samples
at its own size and steps (EMBEDDED_SAMPLING), and the embedded MLLM reads the mini world's words, so the prompt and
reference default to a held-out identity of the mini benchmark. Checks run before anything heavy loads; nothing here
changes `args`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dtypes import DTYPE_NAMES
from ..embedded import SAMPLING as EMBEDDED_SAMPLING  # GenerateConfig overrides for the embedded mini FLUX
from ..embedded import EmbeddedModels
from ..errors import SqueezeError
from ..settings import EncoderConfig, GenerateConfig, check_generate_settings
from . import arguments

HELDOUT_IDENTITIES = 30  # in the shipped mini benchmark (squeeze_core/embedded/weights/benchmark/world.json)
DEFAULT_PROMPT = "a photo of the red toy on a sandy beach at sunset"  # with a real MLLM and no --prompt
SAMPLING_OPTIONS = ("steps", "cfg", "tau1", "tau2", "width", "height", "guidance", "long_side", "negative_prompt")


def add_mllm_options(command: argparse.ArgumentParser, prompt: bool = True) -> None:
    command.add_argument("--mllm", help="InternVL3 '-hf' checkpoint directory (default: the embedded mini InternVL3)")
    command.add_argument("--dla", help="DLA weights .safetensors (default: the embedded mini DLA with the embedded MLLM, "
                                       "else an untrained DLA)")
    if prompt:
        command.add_argument("--prompt", help="the prompt, may be empty (default: a held-out mini benchmark prompt with the "
                                              f"embedded MLLM, else {DEFAULT_PROMPT!r})")
        command.add_argument("--reference", action="append",
                             help="a reference image; repeat for several (default: that held-out identity's reference "
                                  "with the embedded MLLM, else none)")
        command.add_argument("--identity", type=arguments.bounded_int(0, HELDOUT_IDENTITIES - 1, "(the mini benchmark's held-out "
                                                                     f"identities are 0 to {HELDOUT_IDENTITIES - 1})"),
                             default=0, help="with the embedded MLLM: which held-out identity of the mini benchmark gives "
                                             f"the default reference and prompt, 0 to {HELDOUT_IDENTITIES - 1} (default 0)")
    command.add_argument("--max-references", type=int, default=EncoderConfig.max_references,
                         help=f"limit on references per prompt (default {EncoderConfig.max_references})")
    command.add_argument("--aspect-mode", default=EncoderConfig.aspect_mode, choices=["pad", "crop", "stretch"],
                         help=f"fit non-square references (default {EncoderConfig.aspect_mode})")
    command.add_argument("--dtype", default="auto", choices=["auto", *sorted(DTYPE_NAMES)],
                         help="MLLM dtype; auto (default): bfloat16 on a GPU that supports it, else float32")
    command.add_argument("--mllm-quantization", default="none", choices=["none", "int8", "fp8"],
                         help="weight-only quantization of the MLLM's language model through torchao (the [quant] extra): "
                              "int8 halves InternVL3-8B's LLM anywhere; fp8 on GPUs with fp8 support (default none)")
    command.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    command.add_argument("--seed", type=arguments.seed, default=0, help="noise seed, 0 to 2**63 - 1 (and the seed of an untrained DLA)")


def add_flux_options(command: argparse.ArgumentParser) -> None:
    g = GenerateConfig
    embedded = EMBEDDED_SAMPLING
    command.add_argument("--transformer", help="FLUX.1-dev transformer directory, diffusers layout (default: the embedded mini FLUX)")
    command.add_argument("--vae", help="FLUX VAE directory, diffusers layout (default: the embedded mini VAE)")
    command.add_argument("--lora", help="the Squeeze FLUX LoRA .safetensors, the file ComfyUI loads (default: the embedded "
                                        "mini LoRA with the embedded FLUX and DLA)")
    command.add_argument("--flux-dtype", default="bfloat16", choices=sorted(DTYPE_NAMES), help="FLUX transformer dtype")
    command.add_argument("--negative-prompt", help="negative prompt for real CFG (default: empty)")
    command.add_argument("--steps", type=int, help=f"denoising steps (default {g.steps}; {embedded['steps']} embedded)")
    command.add_argument("--cfg", type=float, help=f"real CFG scale in every denoising phase (default {g.cfg})")
    command.add_argument("--guidance", type=float, help=f"FLUX distilled guidance input (default {g.guidance})")
    command.add_argument("--tau1", type=float, help=f"flow time where denoising phase 2 starts (default {g.tau1})")
    command.add_argument("--tau2", type=float, help=f"flow time where denoising phase 3 starts (default {g.tau2})")
    command.add_argument("--width", type=int, help=f"output width, a multiple of 16 (default {g.width}; {embedded['width']} embedded)")
    command.add_argument("--height", type=int, help=f"output height, a multiple of 16 (default {g.height}; {embedded['height']} embedded)")
    command.add_argument("--long-side", type=int,
                         help=f"reference size for the VAE branch (default {g.long_side}; {embedded['long_side']} embedded)")
    command.add_argument("--flux-quantization", default="none", choices=["none", "int8", "fp8"],
                         help="weight-only quantization of FLUX's linear layers (after the LoRA is merged) through torchao: "
                              "FLUX.1-dev's 22 GiB of bf16 weights become about 11 GiB (default none)")
    command.add_argument("--compile", action="store_true",
                         help="torch.compile the FLUX transformer (inductor: Triton on a GPU, a C++ compiler on the CPU); the "
                              "first step of each new shape compiles, so it pays off over many images, seeds or steps")
    command.add_argument("--offload-mllm", action="store_true",
                         help="the MLLM and FLUX take turns on the device (each in host memory while the other runs): the peak "
                              "is the larger of encoding and sampling, not their sum; costs two copies each per new prompt")


def embedded_flux(args) -> bool:
    return getattr(args, "transformer", None) is None  # check_model_options: --vae is given exactly when --transformer is


def embedded_squeeze(args) -> bool:
    """The shipped DLA and LoRA apply: the embedded MLLM and FLUX, and neither --dla nor --lora given."""
    return args.mllm is None and embedded_flux(args) and args.dla is None and getattr(args, "lora", None) is None


def dla_path(args) -> Path | None:
    """--dla; else the shipped DLA with the embedded MLLM unless a --lora (trained with another DLA) is given;
    else None: an untrained DLA."""
    if args.dla is not None:
        return Path(args.dla)
    return EmbeddedModels.packaged().dla if args.mllm is None and getattr(args, "lora", None) is None else None


def prompt_and_reference(args, opened: list) -> tuple[str, list]:
    """--prompt and the opened --reference images, or their defaults: with the embedded MLLM, the first held-out
    identity of the mini benchmark (its first prompt and its reference render); else DEFAULT_PROMPT and none."""
    prompt = getattr(args, "prompt", None)
    if args.mllm is not None:
        return (DEFAULT_PROMPT if prompt is None else prompt), opened
    if prompt is not None and opened:
        return prompt, opened
    from ..images import open_image

    index = getattr(args, "identity", 0)
    subject = EmbeddedModels.packaged().subject(index)
    if not opened:
        print(f"No --reference given: using held-out identity {index} of the mini benchmark ({subject.words}).")
    reference = opened or [open_image(subject.reference(0), name="the mini benchmark reference")]
    return (subject.prompt(0) if prompt is None else prompt), reference


def flag(name: str) -> str:
    """A GenerateConfig field's command-line option: long_side -> --long-side."""
    return "--" + name.replace("_", "-")


def sampling_config(args, mini_size: bool | None = None, **settings) -> GenerateConfig:
    """GenerateConfig from the sampling options that were given, over the embedded mini FLUX's size and steps when no
    FLUX is given or `mini_size` asks for them (the mini benchmark, whose judge reads 64 px images)."""
    import dataclasses

    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS if getattr(args, name) is not None}
    defaults = EMBEDDED_SAMPLING if (embedded_flux(args) if mini_size is None else mini_size) else {}
    values = {f.name: f.default for f in dataclasses.fields(GenerateConfig) if f.default is not dataclasses.MISSING}
    values.update({"prompt": "", **defaults, **given, **settings})
    check_generate_settings(values, label=lambda name: flag(name) if name in given or name == "prompt" else name)
    return GenerateConfig(**values)


def check_model_options(args) -> list:
    """Everything about the model options that can be checked without loading a model: the device, the MLLM folder
    and its config.json, the DLA file's header and recorded MLLM against that config, the FLUX folders, the LoRA
    file's header. Returns the --reference images, opened and checked."""
    from .. import checks
    from ..images import check_size, open_image, to_rgb
    from ..mllm import MLLMInfo, check_mllm_dir
    from ..quantization import check_scheme
    from ..weights import check_dla_made_for, read_dla_metadata

    checks.device(args.device)
    checks.positive_int(args.max_references, "--max-references")
    check_scheme(args.mllm_quantization, args.device, "--mllm-quantization")
    if hasattr(args, "flux_quantization"):
        check_scheme(args.flux_quantization, args.device, "--flux-quantization")
    if getattr(args, "compile", False):
        from ..compiling import check_compile

        check_compile(args.device)
    if args.mllm is not None:
        mllm = MLLMInfo.from_config(check_mllm_dir(args.mllm), Path(args.mllm).name)
    else:
        embedded = EmbeddedModels.packaged().check()
        mllm = MLLMInfo.from_config(check_mllm_dir(embedded.mllm), "the embedded mini InternVL3")
    if args.dla is not None:
        if Path(args.dla).is_file():  # a missing file gets read_dla_metadata's message, which says where it goes
            checks.safetensors_file(args.dla, "--dla", "DLA weights")
        _, made_for = read_dla_metadata(args.dla)
        check_dla_made_for(args.dla, made_for, mllm, mllm_label="--mllm" if args.mllm else "the MLLM (no --mllm: the embedded mini one)")
    if hasattr(args, "transformer") and (args.transformer is None) != (args.vae is None):
        raise SqueezeError("give --transformer and --vae together (both from the same FLUX.1-dev copy), "
                           "or neither for the embedded default.")
    for option, what in (("transformer", "FLUX.1-dev's transformer/ folder"), ("vae", "FLUX.1-dev's vae/ folder")):
        folder = getattr(args, option, None)
        if folder is not None:
            checks.existing(folder, f"--{option}", what, directory=True)
            if not (Path(folder) / "config.json").is_file():
                raise SqueezeError(f"--{option} '{folder}' has no config.json; it should be {what} (diffusers layout).")
            weights = sorted(Path(folder).glob("*.safetensors"))
            if not weights:
                raise SqueezeError(f"--{option} '{folder}' has no .safetensors weights; it should be {what} (diffusers "
                                   "layout, safetensors: Squeeze never loads .bin pickles).")
            for file in weights:  # headers only: a truncated copy is named now, not after the MLLM has loaded
                checks.safetensors_file(file, f"--{option}", what)
    if hasattr(args, "transformer"):
        check_widths(args)
    if getattr(args, "lora", None) is not None:
        header = checks.safetensors_file(args.lora, "--lora", "the Squeeze FLUX LoRA")
        names = [k for k in header if k != "__metadata__"]
        if not names or not all(k.startswith("transformer.") for k in names):
            raise SqueezeError(f"--lora '{args.lora}' is not a Squeeze FLUX LoRA: its tensor names do not all start with 'transformer.'.")
    references = getattr(args, "reference", None) or []
    if len(references) > args.max_references:
        raise SqueezeError(f"--reference is given {len(references)} times, but --max-references is {args.max_references}; "
                           "pass fewer references or raise --max-references.")
    opened = []
    for path in references:  # size and mode too, so a bad reference never waits for the models to load
        image = open_image(path, name="--reference")
        check_size(image, name=f"--reference '{path}'")
        to_rgb(image, name=f"--reference '{path}'")
        opened.append(image)
    return opened


def mllm_dtype(name: str, device):
    """--dtype as a torch dtype; auto: bfloat16 where the device computes it natively (a CUDA GPU that supports it:
    InternVL3-8B then needs about 16 GB, not 32), float32 elsewhere (a CPU computes bfloat16 slowly)."""
    import torch

    from ..dtypes import DTYPES

    if name != "auto":
        return DTYPES[name]
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def flux_widths(args) -> tuple[int, int]:
    """(context, pooled) widths the FLUX transformer (--transformer, else the embedded one) reads, from its config.json."""
    import json

    folder = Path(args.transformer) if args.transformer is not None else EmbeddedModels.packaged().transformer
    flux = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return flux.get("joint_attention_dim"), flux.get("pooled_projection_dim")


def check_widths(args) -> None:
    """A DLA file (given or embedded) writes what the FLUX transformer (given or embedded) reads, read from their
    files' metadata before either loads: the embedded mini models are 64 wide, FLUX.1-dev reads 4096 and 768."""
    from ..weights import read_dla_metadata

    dla = dla_path(args)
    if dla is None:
        return  # an untrained DLA is built to the transformer's widths
    config = read_dla_metadata(dla)[0]
    made = (config.context_dim, config.pooled_dim)
    read = flux_widths(args)
    if made != read:
        raise SqueezeError(f"the DLA writes context {made[0]} and pooled {made[1]} wide, but the FLUX transformer reads "
                           f"{read[0]} and {read[1]}: the embedded mini models only work with each other. Give --dla trained "
                           "for this FLUX (with --mllm, --transformer and --vae), or none of them for the embedded default.")


def load_encoder_and_dla(args, device, widths: tuple[int, int] | None = None, mllm_device=None):
    """The MLLM (--mllm, else the embedded mini InternVL3) and the DLA (--dla; else the embedded mini DLA with the
    embedded MLLM and no --lora; else an untrained one seeded by --seed, writing `widths` (context, pooled): those
    of the FLUX it feeds). mllm_device: where the MLLM's weights are loaded, if not on `device` (--offload-mllm: host
    memory, moved in for each prompt's encodes)."""
    import torch

    from ..dla import DLAConfig, DualLayerAggregator
    from ..mllm import InternVL3Encoder
    from ..weights import load_dla

    config = EncoderConfig(max_references=args.max_references, aspect_mode=args.aspect_mode)
    mllm_dir = Path(args.mllm) if args.mllm is not None else EmbeddedModels.packaged().mllm
    encoder = InternVL3Encoder.from_pretrained(mllm_dir, dtype=mllm_dtype(args.dtype, device), device=mllm_device or device,
                                               config=config)
    from ..quantization import quantize_weights

    quantize_weights(encoder.backbone.language_model, args.mllm_quantization)
    dla = dla_path(args)
    if dla is not None:
        if args.dla is None:
            print("No --mllm/--dla given: using the embedded mini InternVL3 and the DLA trained on it.")
        return encoder, load_dla(dla, mllm=encoder.info, device=device)
    print("No --dla given: using an untrained DLA (a near-uniform mix of all layers).")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        sizes = dict(zip(("context_dim", "pooled_dim"), widths)) if widths else {}
        return encoder, DualLayerAggregator(DLAConfig.for_mllm(encoder.info, **sizes)).to(device).eval()


def load_pipeline(args, device, remember: int = 0):
    """InternVL3 + DLA + FLUX (+ LoRA) + VAE from the options; the embedded mini models where none are given."""
    import torch

    from ..dtypes import DTYPES
    from ..flux import load_flux_transformer
    from ..lora import load_comfyui_lora
    from ..pipeline import SqueezePipeline
    from ..vae import load_flux_vae

    offload = getattr(args, "offload_mllm", False)
    encoder, dla = load_encoder_and_dla(args, device, flux_widths(args), mllm_device="cpu" if offload else None)
    if embedded_flux(args):
        embedded = EmbeddedModels.packaged()
        print("No --transformer/--vae given: using the embedded mini FLUX and VAE"
              + (" with the LoRA trained on them." if embedded_squeeze(args) else "."))
        transformer = load_flux_transformer(embedded.transformer, torch.float32, device)
        vae = load_flux_vae(embedded.vae, torch.float32, device)
    else:
        transformer = load_flux_transformer(args.transformer, DTYPES[args.flux_dtype], device)
        vae = load_flux_vae(args.vae, torch.float32, device)
    lora = args.lora or (EmbeddedModels.packaged().lora if embedded_squeeze(args) else None)
    if lora:
        load_comfyui_lora(transformer, lora)
    pipe = SqueezePipeline(encoder, dla, transformer, vae, remember=remember, offload_mllm=offload)
    from ..quantization import quantize_weights

    quantize_weights(pipe.transformer, args.flux_quantization)  # after the pipeline merged the LoRA into the weights
    if args.compile:
        from ..compiling import compile_transformer

        compile_transformer(pipe.transformer)
    return pipe
