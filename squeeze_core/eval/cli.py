"""`squeeze score`, `squeeze eval` and `squeeze ablate`: DreamBench from the command line (see squeeze_core/eval).

    squeeze eval                   # the embedded default: the mini models on the mini benchmark -> runs/eval/scores.json
    squeeze ablate                 # every ablation variant on the mini benchmark -> runs/ablate/report.md
    squeeze score                  # the mini judge on the benchmark's ground truth (what a perfect generator scores)
    squeeze score generated/ --dreambench ../shared/dreambench --dino dino-vits16 --clip clip-vit-base-patch32
    squeeze eval --dreambench ../shared/dreambench --output runs/eval ...model options as for generate...
    accelerate launch --num_processes 8 -m squeeze_core.cli eval ...     # 8 GPUs share the images
    squeeze ablate --dreambench ../shared/dreambench --output runs/ablate --taus 0.9:0.1,0.8:0.2

Without --dreambench the verbs run the mini benchmark (squeeze_core/mini/benchmark.py): the mini world's 30 held-out
identities, scored by its judge (identity, prompt, copy-paste), with whatever models are given (by default the
embedded mini ones). scores.json then holds one object per variant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..cli.arguments import bounded_int
from ..cli.models import add_flux_options, add_mllm_options, check_model_options, load_pipeline, sampling_config
from ..errors import SqueezeError
from ..limits import MAX_SEEDS
from ..settings import CONDITIONING_MODES, PROMPT_ONLY, GenerateConfig

if TYPE_CHECKING:
    from ..pipeline import SqueezePipeline

# Without --dreambench the verbs run the embedded benchmark. Its judge and jobs are the miniature's research code,
# which sits above this module: squeeze_core/mini/cli.py registers its runners here ("score", "eval", "ablate":
# functions of (args, verb)); nothing here imports it.
EMBEDDED_BENCHMARK: dict[str, Callable] = {}


def run_embedded_benchmark(args, verb: str) -> None:
    if verb not in EMBEDDED_BENCHMARK:
        raise SqueezeError(f"squeeze {verb} without --dreambench runs the embedded mini benchmark, which is not loaded "
                           "here (squeeze_core.mini registers it); give --dreambench DIR.")
    EMBEDDED_BENCHMARK[verb](args, verb)


def add_parsers(commands) -> None:
    score = commands.add_parser("score", help="score a folder of generated images on DreamBench (DINO-I, CLIP-I, CLIP-T, copy-paste)")
    score.add_argument("generated", nargs="?", help="folder laid out as <subject>/<prompt index>_<seed>.png (mini benchmark: "
                                                    "<identity 00-29>/<prompt>_<seed>.png; none: score its ground truth)")
    add_bench_options(score)
    score.add_argument("--device", default="cpu", help="torch device for the metric models")
    score.add_argument("--output", help="write the scores here as JSON")
    score.set_defaults(func=run_score)

    for name, help_text in (("eval", "generate DreamBench with Squeeze, then score it"),
                            ("ablate", "run the paper's ablations on DreamBench and write a report with charts")):
        command = commands.add_parser(name, help=help_text)
        add_mllm_options(command, prompt=False)
        add_flux_options(command)
        add_bench_options(command)
        command.add_argument("--seeds", type=bounded_int(1, MAX_SEEDS, "seeds per prompt"), default=1,
                             help=f"seeds per prompt, 1 to {MAX_SEEDS} (default 1)")
        command.add_argument("--output", default=f"runs/{name}",
                             help=f"output folder: generated images, scores, report (default runs/{name})")
        if name == "eval":
            command.add_argument("--mode", nargs="+", choices=sorted(CONDITIONING_MODES) + [PROMPT_ONLY],
                                 help="conditioning per step (default: staged on DreamBench; every mode and prompt_only on the "
                                      "mini benchmark, one scores.json object each)")
            command.set_defaults(func=run_eval)
        else:
            command.add_argument("--taus", default=None, help="tau grid as tau1:tau2 pairs, e.g. 0.9:0.1,0.8:0.2 (default: 6 points)")
            command.set_defaults(func=run_ablate)


def add_bench_options(command) -> None:
    command.add_argument("--dreambench", help="the DreamBench folder (subject folders + prompts_and_classes.txt); default: the "
                                              "mini benchmark, scored by the mini world's judge")
    command.add_argument("--subjects", nargs="+", help="score only these subjects (DreamBench names, or mini identities 00-29; "
                                                       "default: all 30)")
    prompt_index = bounded_int(0, 24, "(each subject has 25 prompts, 0 to 24)")
    command.add_argument("--prompts", nargs="+", type=prompt_index, help="only these prompt indices, 0-24 (default: all 25 on DreamBench, "
                                                                "0 1 2 on the mini benchmark)")
    command.add_argument("--dino", help="facebook/dino-vits16 in transformers format (a local directory)")
    command.add_argument("--clip", help="openai/clip-vit-base-patch32 in transformers format (a local directory)")


def metric_models(args, device):
    """DINO and CLIP from --dino/--clip (local copies; Squeeze never downloads weights)."""
    from ..eval.metrics import ClipEmbedder, DinoEmbedder

    if args.dino is None or args.clip is None:
        raise SqueezeError("give --dino and --clip: local copies of facebook/dino-vits16 and openai/clip-vit-base-patch32 "
                           "in transformers format (DreamBench's metric models). Squeeze never downloads weights.")
    return DinoEmbedder.from_pretrained(args.dino, device), ClipEmbedder.from_pretrained(args.clip, device)


def print_scores(scores: dict) -> None:
    def fmt(value):
        return "  n/a " if value is None else f"{value:.4f}"

    print(f"{'subject':<20} {'DINO-I':>7} {'CLIP-I':>7} {'CLIP-T':>7} {'copy-paste':>10} {'images':>6}")
    for name, row in list(scores["subjects"].items()) + [("overall", scores["overall"])]:
        print(f"{name:<20} {fmt(row['dino_i']):>7} {fmt(row['clip_i']):>7} {fmt(row['clip_t']):>7} "
              f"{fmt(row['copy_paste']):>10} {row['images']:>6}")


def write_json(data, path) -> None:
    from ..files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def run_score(args) -> None:
    from .. import checks
    from .dreambench import DreamBench
    from .metrics import score_folder

    checks.device(args.device)
    if args.dreambench is None:
        return run_embedded_benchmark(args, "score")
    if args.generated is None:
        raise SqueezeError("give the folder of generated images to score on DreamBench (laid out as <subject>/<prompt>_<seed>.png).")
    bench = DreamBench.load(args.dreambench, args.subjects)
    dino, clip = metric_models(args, args.device)
    scores = score_folder(args.generated, bench, dino, clip, args.prompts)
    print_scores(scores)
    if args.output:
        write_json(scores, args.output)
        print(f"saved         {args.output}")


@dataclass
class EvalRun:
    """What eval and ablate share once their options are checked and their models loaded."""

    state: object  # accelerate's PartialState: this process's index among the processes that share the images
    bench: object  # DreamBench
    pipe: SqueezePipeline
    base: GenerateConfig  # the sampling settings every image starts from
    device: str


def prepare_eval(args, mode: str = "staged") -> EvalRun:
    from accelerate import PartialState

    from .. import checks
    from .dreambench import DreamBench
    from .metrics import ClipEmbedder, DinoEmbedder

    base = sampling_config(args, prompt="", mode=mode)  # validated before anything loads
    check_model_options(args)
    checks.positive_int(args.seeds, "--seeds")
    checks.output_dir(args.output, "--output")
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True, CPU processes would not see each other
    bench = DreamBench.load(args.dreambench, args.subjects)
    device = str(state.device) if args.device == "cpu" and state.device.type != "cpu" else args.device  # one GPU per process
    if args.dino is None or args.clip is None:  # fail before hours of generation, not after
        metric_models(args, device)  # raises, saying what to give
    DinoEmbedder.check_dir(args.dino)
    ClipEmbedder.check_dir(args.clip)
    return EvalRun(state, bench, load_pipeline(args, device), base, device)


def run_eval(args) -> None:
    from .generate import generate_benchmark
    from .metrics import score_folder

    if args.dreambench is None:
        return run_embedded_benchmark(args, "eval")
    if args.mode and len(args.mode) > 1:
        raise SqueezeError(f"--mode {' '.join(args.mode)}: DreamBench eval takes one mode; `squeeze ablate` compares them.")
    mode = args.mode[0] if args.mode else "staged"
    if mode == PROMPT_ONLY:
        raise SqueezeError("--mode prompt_only is a mini benchmark variant; on DreamBench choose one of "
                           f"{sorted(CONDITIONING_MODES)}.")
    run = prepare_eval(args, mode=mode)
    output = Path(args.output)
    counts = generate_benchmark(run.pipe, run.bench, output / "generated", run.base, args.seeds, args.prompts,
                                run.state.process_index, run.state.num_processes, progress=run.state.is_main_process)
    run.state.wait_for_everyone()
    if not run.state.is_main_process:
        return
    print(f"generated     {counts['generated']} new, {counts['existing']} already there (process 0)")
    dino, clip = metric_models(args, run.device)
    scores = score_folder(output / "generated", run.bench, dino, clip, args.prompts)
    print_scores(scores)
    write_json({"settings": {k: str(v) for k, v in vars(run.base).items()}, **scores}, output / "scores.json")
    print(f"saved         {output / 'scores.json'}")


def parse_taus(text: str | None) -> tuple[tuple[float, float], ...]:
    """--taus "0.9:0.1,0.8:0.2" -> ((0.9, 0.1), (0.8, 0.2)), each pair checked; None -> the default grid."""
    from ..phases import PhaseThresholds
    from .ablations import DEFAULT_TAUS

    if not text:
        return DEFAULT_TAUS
    try:
        taus = tuple(tuple(float(x) for x in pair.split(":")) for pair in text.split(","))
    except ValueError as error:
        raise SqueezeError(f"--taus {text!r} is not a list of tau1:tau2 pairs (e.g. 0.9:0.1,0.8:0.2).") from error
    for pair in taus:
        if len(pair) != 2:
            raise SqueezeError(f"--taus {text!r}: each entry needs tau1:tau2.")
        PhaseThresholds(*pair)
    return taus


def run_ablate(args) -> None:
    from .ablations import ablation_variants, layer_weights, run_ablations, write_report

    taus = parse_taus(args.taus)
    if args.dreambench is None:
        return run_embedded_benchmark(args, "ablate")
    run = prepare_eval(args)
    main = run.state.is_main_process
    dino, clip = metric_models(args, run.device) if main else (None, None)
    variants = ablation_variants(run.pipe.dla.config.num_layers, run.base, taus)
    rows = run_ablations(run.pipe, run.bench, args.output, run.base, dino, clip, variants, args.seeds, args.prompts,
                         run.state.process_index, run.state.num_processes, run.state.wait_for_everyone, progress=main)
    if not main:
        return
    note = (f"{len(run.bench.subjects)} subjects x {len(args.prompts) if args.prompts else 25} prompts x {args.seeds} seed(s), "
            f"{run.base.width}x{run.base.height}, {run.base.steps} steps, CFG {run.base.cfg}.")
    report = write_report(args.output, rows, layer_weights(run.pipe, run.bench, args.prompts), note)
    for row in rows:
        print(f"{row['label']:<36} DINO-I {row['dino_i']:.4f}  CLIP-I {row['clip_i']:.4f}  CLIP-T {row['clip_t']:.4f}")
    print(f"report        {report}")
