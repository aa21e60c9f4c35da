"""The `squeeze` command.

    squeeze encode                                     # embedded default: tiny built-in InternVL3 + DLA, no download
    squeeze encode --mllm models/mllm/InternVL3-8B-hf --dla models/squeeze/squeeze_dla.safetensors \\
                   --prompt "a dog wearing a red hat" --reference dog.jpg --plot layers.png --save cond.safetensors

    squeeze generate                                   # embedded default: tiny InternVL3, DLA, FLUX and VAE
    squeeze generate --mllm models/mllm/InternVL3-8B-hf --dla squeeze_dla.safetensors --lora squeeze_flux_lora.safetensors \
                     --transformer FLUX.1-dev/transformer --vae FLUX.1-dev/vae --prompt "a dog wearing a red hat" \
                     --reference dog.jpg --device cuda --output dog_hat.png

`encode` runs the joint MLLM encoding and the DLA on one prompt with its references, prints what came out (token
counts by type, context / pooled shapes, per-layer weights for text and image tokens) and can draw the layer
weights (`--plot`) and save the conditioning tensors (`--save`). `generate` samples an image headless in stages,
exactly as the shipped ComfyUI workflow does (squeeze_core.pipeline).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

from .dtypes import DTYPES
from .errors import SqueezeError

logger = logging.getLogger("squeeze.cli")

DEFAULT_PROMPT = "a photo of the red toy on a sandy beach at sunset"


def _open_image(path: str):
    from .images import open_image

    return open_image(path, name="--reference")


def _load_encoder_and_dla(args, scratch: str):
    """The MLLM (the embedded tiny one without --mllm) and the DLA (untrained without --dla)."""
    from .dla import DLAConfig, DualLayerAggregator
    from .mllm import EncoderConfig, InternVL3Encoder
    from .tiny import save_tiny_internvl3
    from .weights import load_dla

    config = EncoderConfig(max_references=args.max_references, aspect_mode=args.aspect_mode)
    if args.mllm is None:
        print("No --mllm given: using the embedded tiny InternVL3 (random weights)"
              + (f" with the DLA in {args.dla}." if args.dla else " and an untrained DLA."))
        mllm_dir = save_tiny_internvl3(Path(scratch) / "tiny-internvl3")
    else:
        mllm_dir = Path(args.mllm)
    encoder = InternVL3Encoder.from_pretrained(mllm_dir, dtype=DTYPES[args.dtype], device=args.device, config=config)
    if args.dla:
        return encoder, load_dla(args.dla, mllm=encoder.info, device=args.device)
    if args.mllm is not None:
        print("No --dla given: using an untrained DLA (a near-uniform mix of all layers).")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return encoder, DualLayerAggregator(DLAConfig.for_mllm(encoder.info)).to(args.device).eval()


def _given(value, default):
    """An option's value, or its default when it was not given (0 is a value: it is checked, not replaced)."""
    return default if value is None else value


EMBEDDED_MLLM = ("internvl", 6, 64)  # what squeeze_core.tiny.save_tiny_internvl3 writes: family, layers, width


def _check_model_options(args) -> None:
    """Everything about the model options that can be checked without loading a model: the device, the MLLM folder
    and its config.json, the DLA file's header and recorded MLLM against that config, the FLUX folders, the LoRA
    file's header, and the references. Runs before anything heavy loads."""
    from . import checks
    from .mllm import MLLMInfo, check_mllm_dir
    from .weights import check_dla_made_for, read_dla_metadata

    checks.device(args.device)
    checks.positive_int(args.max_references, "--max-references")
    if args.mllm is not None:
        mllm = MLLMInfo.from_config(check_mllm_dir(args.mllm), Path(args.mllm).name)
    else:
        from .tiny import build_tiny_tokenizer

        mllm = MLLMInfo(*EMBEDDED_MLLM, name="the embedded tiny InternVL3", text_model_type="qwen2",
                        vocab_size=len(build_tiny_tokenizer()))
    if args.dla is not None:
        if Path(args.dla).is_file():  # a missing file gets read_dla_metadata's message, which says where it goes
            checks.safetensors_file(args.dla, "--dla", "DLA weights")
        _, made_for = read_dla_metadata(args.dla)
        check_dla_made_for(args.dla, made_for, mllm, mllm_label="--mllm" if args.mllm else "the MLLM (no --mllm: the embedded tiny one)")
    if hasattr(args, "transformer") and (args.transformer is None) != (args.vae is None):
        raise SqueezeError("give --transformer and --vae together (both from the same FLUX.1-dev copy), or neither for the embedded default.")
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
    args.opened_references = [_open_image(path) for path in references]


def _check_sampling_options(args) -> None:
    from . import checks

    for name in ("cfg", "guidance"):
        checks.finite(getattr(args, name), f"--{name}", low=0.0)
    for name in ("steps", "width", "height"):
        if getattr(args, name) is not None:
            checks.positive_int(getattr(args, name), f"--{name}", multiple_of=1 if name == "steps" else 16)
    checks.positive_int(args.long_side, "--long-side", multiple_of=16)


def _references(args):
    from .tiny import demo_reference_image

    if args.reference:
        return getattr(args, "opened_references", None) or [_open_image(p) for p in args.reference]
    return [demo_reference_image()] if args.mllm is None else []


def _cmd_encode(args) -> None:
    from .conditioning import encode_conditioning
    from .mllm import TokenType
    from .plots import layer_weight_chart, mean_layer_weights
    from .weights import atomic_save_safetensors

    from . import checks

    _check_model_options(args)
    if args.plot:
        checks.output_file(args.plot, "--plot", ".png")
    if args.save:
        checks.output_file(args.save, "--save", ".safetensors")
    with tempfile.TemporaryDirectory(prefix="squeeze-tiny-") as scratch:
        encoder, dla = _load_encoder_and_dla(args, scratch)
    references = _references(args)
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
        layer_weight_chart(cond.layer_weights[0], types, title=f"DLA layer weights: {encoder.info.name or encoder.info.model_type}, {encoder.info.num_layers} layers").save(args.plot)
        print(f"plot          {args.plot}")
    if args.save:
        tensors = {
            "context": cond.context[0], "pooled": cond.pooled[0],
            "layer_weights": cond.layer_weights[0], "token_types": cond.token_types[0].to(torch.int32),
        }
        atomic_save_safetensors({k: v.float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous() for k, v in tensors.items()},
                                args.save, {"squeeze.prompt": args.prompt})
        print(f"saved         {args.save}")


def _load_pipeline(args, device=None):
    """InternVL3 + DLA + FLUX (+ LoRA) + VAE from the options; embedded tiny models where none are given."""
    from .lora import load_comfyui_lora
    from .flux import load_flux_transformer
    from .pipeline import SqueezePipeline
    from .vae import load_flux_vae
    from .tiny import tiny_flux_transformer, tiny_flux_vae

    device = device or args.device
    args.device = str(device)
    embedded = args.transformer is None  # _check_model_options ran first: --vae is given exactly when --transformer is
    with tempfile.TemporaryDirectory(prefix="squeeze-tiny-") as scratch:
        encoder, dla = _load_encoder_and_dla(args, scratch)
    if embedded:
        print("No --transformer/--vae given: using an embedded tiny FLUX and VAE with random weights (the image is noise).")
        transformer, vae = tiny_flux_transformer(args.seed).to(device), tiny_flux_vae(args.seed).to(device)
    else:
        transformer = load_flux_transformer(args.transformer, DTYPES[args.flux_dtype], device)
        vae = load_flux_vae(args.vae, torch.float32, device)
    if args.lora:
        load_comfyui_lora(transformer, args.lora)
    return SqueezePipeline(encoder, dla, transformer, vae)


def _cmd_generate(args) -> None:
    from .images import save_png
    from .pipeline import GenerateConfig

    from . import checks

    embedded = args.transformer is None
    _check_sampling_options(args)
    _check_model_options(args)
    checks.output_file(args.output, "--output", ".png")
    config = GenerateConfig(  # validated before anything loads
        prompt=args.prompt, seed=args.seed, steps=_given(args.steps, 8 if embedded else 28), cfg=args.cfg, tau1=args.tau1,
        tau2=args.tau2, width=_given(args.width, 256 if embedded else 1024), height=_given(args.height, 256 if embedded else 1024),
        guidance=args.guidance, long_side=args.long_side, negative_prompt=args.negative_prompt,
    )
    pipe = _load_pipeline(args)
    references = _references(args)
    latent, image = pipe(config, references)
    output = Path(args.output)
    save_png(image, output)  # atomically: never a half-written image
    print(f"generated     {config.width}x{config.height}, {config.steps} steps, cfg {config.cfg}, tau {config.tau1}/{config.tau2}, "
          f"{len(references)} reference(s), seed {config.seed}")
    print(f"saved         {output}")


def _metric_models(args, scratch: str, embedded_ok: bool):
    from .eval.metrics import ClipEmbedder, DinoEmbedder
    from .tiny import save_tiny_clip, save_tiny_dino

    if args.dino is None or args.clip is None:
        if not embedded_ok:
            raise SqueezeError("give --dino and --clip: local copies of facebook/dino-vits16 and openai/clip-vit-base-patch32 "
                               "in transformers format. Squeeze never downloads weights.")
        print("No --dino/--clip given: scoring with embedded tiny random DINO and CLIP (the numbers mean nothing).")
        args.dino = args.dino or str(save_tiny_dino(Path(scratch) / "tiny-dino"))
        args.clip = args.clip or str(save_tiny_clip(Path(scratch) / "tiny-clip"))
    return DinoEmbedder.from_pretrained(args.dino, args.device), ClipEmbedder.from_pretrained(args.clip, args.device)


def _print_scores(scores: dict) -> None:
    def fmt(value):
        return "  n/a " if value is None else f"{value:.4f}"

    print(f"{'subject':<20} {'DINO-I':>7} {'CLIP-I':>7} {'CLIP-T':>7} {'copy-paste':>10} {'images':>6}")
    for name, row in list(scores["subjects"].items()) + [("overall", scores["overall"])]:
        print(f"{name:<20} {fmt(row['dino_i']):>7} {fmt(row['clip_i']):>7} {fmt(row['clip_t']):>7} {fmt(row['copy_paste']):>10} {row['images']:>6}")


def _write_json(data, path) -> None:
    import json

    from .files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _cmd_score(args) -> None:
    from .eval.dreambench import DreamBench
    from .eval.metrics import score_folder

    bench = DreamBench.load(args.dreambench, args.subjects)
    with tempfile.TemporaryDirectory(prefix="squeeze-eval-") as scratch:
        dino, clip = _metric_models(args, scratch, embedded_ok=False)
    scores = score_folder(args.generated, bench, dino, clip, args.prompts)
    _print_scores(scores)
    if args.output:
        _write_json(scores, args.output)
        print(f"saved         {args.output}")


def _eval_setup(args):
    """(process state, DreamBench, pipeline, base GenerateConfig) for eval / ablate."""
    from accelerate import PartialState

    from .eval.dreambench import DreamBench
    from .pipeline import GenerateConfig

    from . import checks

    _check_sampling_options(args)
    _check_model_options(args)
    checks.positive_int(args.seeds, "--seeds")
    checks.output_dir(args.output, "--output")
    state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True, CPU processes would not see each other
    bench = DreamBench.load(args.dreambench, args.subjects)
    embedded = args.transformer is None
    base = GenerateConfig(
        prompt="", steps=_given(args.steps, 8 if embedded else 28), cfg=args.cfg, tau1=args.tau1, tau2=args.tau2,
        width=_given(args.width, 256 if embedded else 512), height=_given(args.height, 256 if embedded else 512),
        guidance=args.guidance, long_side=args.long_side, negative_prompt=args.negative_prompt,
        mode=getattr(args, "mode", "staged"),
    )
    if args.device == "cpu" and state.device.type != "cpu":
        args.device = str(state.device)  # under accelerate launch every process takes its own GPU
    args.embedded = args.mllm is None
    if not args.embedded:  # fail before hours of generation, not after
        from .eval.metrics import ClipEmbedder, DinoEmbedder

        if args.dino is None or args.clip is None:
            _metric_models(args, "", embedded_ok=False)  # raises, saying what to give
        DinoEmbedder.check_dir(args.dino)
        ClipEmbedder.check_dir(args.clip)
    if args.embedded:  # one copy of the tiny MLLM that every process reads (transformers writes on rank 0 only)
        from .tiny import save_tiny_internvl3

        args.mllm = str(Path(args.output) / "embedded-tiny-internvl3")
        if state.is_main_process and not (Path(args.mllm) / "config.json").is_file():
            print("No --mllm given: using the embedded tiny InternVL3 (random weights) and an untrained DLA.")
            save_tiny_internvl3(args.mllm)
        state.wait_for_everyone()
    return state, bench, _load_pipeline(args), base


def _cmd_eval(args) -> None:
    from .eval.generate import generate_benchmark
    from .eval.metrics import score_folder

    state, bench, pipe, base = _eval_setup(args)
    output = Path(args.output)
    counts = generate_benchmark(pipe, bench, output / "generated", base, args.seeds, args.prompts,
                                state.process_index, state.num_processes, progress=state.is_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return
    print(f"generated     {counts['generated']} new, {counts['existing']} already there (process 0)")
    with tempfile.TemporaryDirectory(prefix="squeeze-eval-") as scratch:
        dino, clip = _metric_models(args, scratch, embedded_ok=args.embedded)
    scores = score_folder(output / "generated", bench, dino, clip, args.prompts)
    _print_scores(scores)
    _write_json({"settings": {k: str(v) for k, v in vars(base).items()}, **scores}, output / "scores.json")
    print(f"saved         {output / 'scores.json'}")


def _cmd_ablate(args) -> None:
    from .eval.ablations import DEFAULT_TAUS, ablation_variants, layer_weights, run_ablations, write_report

    taus = DEFAULT_TAUS
    if args.taus:
        try:
            taus = tuple(tuple(float(x) for x in pair.split(":")) for pair in args.taus.split(","))
        except ValueError as error:
            raise SqueezeError(f"--taus {args.taus!r} is not a list of tau1:tau2 pairs (e.g. 0.9:0.1,0.8:0.2).") from error
        from .stages import StageThresholds

        for pair in taus:
            if len(pair) != 2:
                raise SqueezeError(f"--taus {args.taus!r}: each entry needs tau1:tau2.")
            StageThresholds(*pair)
    state, bench, pipe, base = _eval_setup(args)
    with tempfile.TemporaryDirectory(prefix="squeeze-eval-") as scratch:
        dino, clip = _metric_models(args, scratch, embedded_ok=args.embedded) if state.is_main_process else (None, None)
        variants = ablation_variants(pipe.dla.config.num_layers, base, taus)
        rows = run_ablations(pipe, bench, args.output, base, dino, clip, variants, args.seeds, args.prompts,
                             state.process_index, state.num_processes, state.wait_for_everyone, progress=state.is_main_process)
    if not state.is_main_process:
        return
    note = (f"{len(bench.subjects)} subjects x {len(args.prompts) if args.prompts else 25} prompts x {args.seeds} seed(s), "
            f"{base.width}x{base.height}, {base.steps} steps, CFG {base.cfg}.")
    report = write_report(args.output, rows, layer_weights(pipe, bench, args.prompts), note)
    for row in rows:
        print(f"{row['label']:<36} DINO-I {row['dino_i']:.4f}  CLIP-I {row['clip_i']:.4f}  CLIP-T {row['clip_t']:.4f}")
    print(f"report        {report}")


EMBEDDED_TRAINING = dict(  # `squeeze train` without --config: a CPU smoke run on tiny models and synthetic pairs
    resolution=64, bucket_step=16, reference_long_side=64, lora_rank=8, dla_attn_dim=32, dla_num_heads=4,
    base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, max_steps=20, checkpoint_every=10,
    num_workers=0, learning_rate=1e-3, output_dir="squeeze-train-demo",
)


def _cmd_train(args) -> None:
    from .train.config import TrainConfig
    from .train.trainer import train

    if args.config is None:
        own_data = any(item.split("=", 1)[0].strip() == "manifest" for item in args.set or [])
        print("No --config given: training the embedded tiny models on "
              + ("the --set manifest (a smoke run)." if own_data else "a synthetic pair set (a smoke run)."))
        overrides = [f"{key}={value}" for key, value in EMBEDDED_TRAINING.items()] + list(args.set or [])
    else:
        overrides = list(args.set or [])
    config = TrainConfig.from_file(args.config, overrides)
    result = train(config)
    if not result.main_process:
        return
    if result.already_complete:
        print(f"complete      {config.output_dir} already holds this run at step {result.steps} of {config.total_steps}: "
              "nothing to train (raise max_steps, or give another output_dir)")
        return
    if result.losses:
        print(f"trained       training stage {config.training_stage}, steps {result.steps - len(result.losses) + 1}..{result.steps}, "
              f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    print(f"skipped       {result.skipped} image(s)")
    print(f"conditions    {result.condition_counts}")
    print(f"exported      {Path(config.output_dir) / 'squeeze_dla.safetensors'} (models/squeeze/), "
          f"{Path(config.output_dir) / 'squeeze_flux_lora.safetensors'} (models/loras/)")


def _cmd_convert_uno(args) -> None:
    from .train.uno import convert_uno

    counts = convert_uno(args.root, args.output, args.labels, args.min_score, args.both_directions)
    print(f"wrote         {counts['written']} samples to {args.output}")
    print(f"left out      {counts['low_score']} below score {args.min_score}, {counts['missing_image']} with a missing "
          f"image, {counts['malformed']} malformed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeeze", description="Squeeze: MLLM-conditioned subject-driven generation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and conversions")
    commands = parser.add_subparsers(dest="command", required=True)
    def mllm_options(command, prompt: bool = True):
        command.add_argument("--mllm", help="InternVL3 '-hf' checkpoint directory (default: the embedded tiny model)")
        command.add_argument("--dla", help="DLA weights .safetensors (default: an untrained DLA)")
        if prompt:
            command.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt (may be empty)")
            command.add_argument("--reference", action="append", help="a reference image; repeat for several")
        command.add_argument("--max-references", type=int, default=4, help="limit on references per prompt (default 4)")
        command.add_argument("--aspect-mode", default="pad", choices=["pad", "crop", "stretch"], help="fit non-square references")
        command.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="MLLM dtype")
        command.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
        command.add_argument("--seed", type=int, default=0, help="noise seed (and the seed of an untrained DLA)")

    def flux_options(command):
        command.add_argument("--transformer", help="FLUX.1-dev transformer directory, diffusers layout (default: embedded tiny)")
        command.add_argument("--vae", help="FLUX VAE directory, diffusers layout (default: embedded tiny)")
        command.add_argument("--lora", help="the Squeeze FLUX LoRA .safetensors (the file ComfyUI loads)")
        command.add_argument("--flux-dtype", default="bfloat16", choices=sorted(DTYPES), help="FLUX transformer dtype")
        command.add_argument("--negative-prompt", default="", help="negative prompt for real CFG (default: empty)")
        command.add_argument("--steps", type=int, help="denoising steps (default 28; 8 for the embedded default)")
        command.add_argument("--cfg", type=float, default=2.5, help="real CFG scale in every stage (default 2.5)")
        command.add_argument("--guidance", type=float, default=3.5, help="FLUX distilled guidance input (default 3.5)")
        command.add_argument("--tau1", type=float, default=0.8, help="flow time where stage 2 starts (default 0.8)")
        command.add_argument("--tau2", type=float, default=0.2, help="flow time where stage 3 starts (default 0.2)")
        command.add_argument("--width", type=int, help="output width, a multiple of 16 (default 1024; 256 embedded)")
        command.add_argument("--height", type=int, help="output height, a multiple of 16 (default 1024; 256 embedded)")
        command.add_argument("--long-side", type=int, default=512, help="reference size for the VAE branch (default 512)")

    def bench_options(command):
        command.add_argument("--dreambench", required=True, help="the DreamBench folder (subject folders + prompts_and_classes.txt)")
        command.add_argument("--subjects", nargs="+", help="score only these subjects (default: all 30)")
        command.add_argument("--prompts", nargs="+", type=int, help="only these prompt indices, 0-24 (default: all 25)")
        command.add_argument("--dino", help="facebook/dino-vits16 in transformers format (a local directory)")
        command.add_argument("--clip", help="openai/clip-vit-base-patch32 in transformers format (a local directory)")

    encode = commands.add_parser("encode", help="encode a prompt + references with InternVL3 and the DLA")
    mllm_options(encode)
    encode.add_argument("--prompt-only", action="store_true", help="ignore references (the last denoising stage)")
    encode.add_argument("--plot", help="write a PNG of the per-layer weights here")
    encode.add_argument("--save", help="write the conditioning tensors to this .safetensors file")
    encode.set_defaults(func=_cmd_encode)

    generate = commands.add_parser("generate", help="generate an image headless, staged as the ComfyUI graph samples")
    mllm_options(generate)
    flux_options(generate)
    generate.add_argument("--output", default="squeeze.png", help="the PNG to write (default squeeze.png)")
    generate.set_defaults(func=_cmd_generate)

    score = commands.add_parser("score", help="score a folder of generated images on DreamBench (DINO-I, CLIP-I, CLIP-T, copy-paste)")
    score.add_argument("generated", help="folder laid out as <subject>/<prompt index>_<seed>.png")
    bench_options(score)
    score.add_argument("--device", default="cpu", help="torch device for the metric models")
    score.add_argument("--output", help="write the scores here as JSON")
    score.set_defaults(func=_cmd_score)

    for name, help_text in (("eval", "generate DreamBench with Squeeze, then score it"),
                            ("ablate", "run the paper's ablations on DreamBench and write a report with charts")):
        command = commands.add_parser(name, help=help_text)
        mllm_options(command, prompt=False)
        flux_options(command)
        bench_options(command)
        command.add_argument("--seeds", type=int, default=1, help="seeds per prompt (default 1)")
        command.add_argument("--output", required=True, help="output folder (generated images, scores, report)")
        if name == "eval":
            command.add_argument("--mode", default="staged", choices=["staged", "mllm_only", "vae_only", "refs_every_step"],
                                 help="conditioning per step (default: staged)")
        else:
            command.add_argument("--taus", default=None, help="tau grid as tau1:tau2 pairs, e.g. 0.9:0.1,0.8:0.2 (default: 6 points)")
        command.set_defaults(func=_cmd_eval if name == "eval" else _cmd_ablate)

    train = commands.add_parser("train", help="train the DLA and the FLUX LoRA (stage 1 or 2; accelerate launch for several GPUs)")
    train.add_argument("--config", help="YAML or JSON training config (default: the embedded tiny smoke run)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config setting; repeat for several")
    train.set_defaults(func=_cmd_train)

    uno = commands.add_parser("convert-uno", help="write a training manifest for an unpacked UNO-1M")
    uno.add_argument("root", help="the UNO-1M directory (holds images/ and uno_1m_total_labels.json or labels/)")
    uno.add_argument("--output", default="uno1m_manifest.jsonl", help="manifest to write")
    uno.add_argument("--labels", help="a labels JSON other than the default")
    uno.add_argument("--min-score", type=float, default=4.0, help="keep pairs with score_final >= this (default 4.0)")
    uno.add_argument("--both-directions", action="store_true", help="also train each pair the other way round")
    uno.set_defaults(func=_cmd_convert_uno)

    from .mini.cli import add_parser as add_mini_parser

    add_mini_parser(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        args.func(args)
    except SqueezeError as error:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"squeeze {args.command}: error: {error}", file=sys.stderr)
        if not args.verbose:
            print("(run with -v for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
