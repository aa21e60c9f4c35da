"""The embedded benchmark behind `squeeze score`, `squeeze eval` and `squeeze ablate` when no --dreambench is given:
the mini world's 30 held-out identities, scored by its judge (identity, prompt, copy-paste), with whatever models the
verb was given (by default the embedded ones). scores.json holds one object per variant. Registered with
squeeze_core/eval/cli.py by `register()` (called from squeeze_core/mini/cli.py), so eval never imports the miniature.
"""

from __future__ import annotations

from pathlib import Path

from ..cli.models import check_model_options, load_pipeline, sampling_config
from ..embedded import EmbeddedModels
from ..errors import SqueezeError
from ..eval import cli as eval_cli
from ..eval.cli import parse_taus, write_json
from ..settings import CONDITIONING_MODES, PROMPT_ONLY


def register() -> None:
    eval_cli.EMBEDDED_BENCHMARK.update(score=run_mini_score, eval=run_mini, ablate=run_mini)


def print_rows(rows: list[dict]) -> None:
    """The mini benchmark's scores, one row per variant."""
    print(f"{'variant':<20} {'identity':>8} {'prompt':>7} {'copy-paste':>10} {'images':>6}")
    for row in rows:
        print(f"{row['variant']:<20} {row['identity']:>8.4f} {row['prompt']:>7.4f} {row['copy_paste']:>10.4f} {row['images']:>6}")


def check_no_metric_models(args) -> None:
    if args.dino or args.clip:
        raise SqueezeError("--dino/--clip score DreamBench; without --dreambench the mini benchmark is scored by the mini "
                           "world's judge. Drop --dino/--clip, or give --dreambench.")


def run_mini(args, verb: str) -> None:  # eval, ablate
    """eval / ablate on the mini benchmark: every job under each variant, judged -> <output>/scores.json (one object
    per variant), the images under <output>/generated/<variant>/, a sheet; ablate adds report.md."""
    from .. import checks
    from .benchmark import evaluate_variants, select_jobs
    from .data import load_world
    from .judge import load_judge
    from .squeeze import mini_variants

    check_no_metric_models(args)
    base = sampling_config(args, mini_size=True, prompt="")  # validated before anything loads
    taus = parse_taus(args.taus) if verb == "ablate" else None
    check_model_options(args)
    output = checks.output_dir(args.output, "--output")
    models = EmbeddedModels.packaged().check()
    jobs = select_jobs(load_world(models.world_dir), args.subjects, args.prompts, args.seeds)
    pipe = load_pipeline(args, args.device, remember=2 * len(jobs) + 2)  # the variants come back to each job's prompt
    variants = mini_variants(pipe.dla.config.num_layers, base, taus)
    if verb == "eval":
        names = args.mode or [*CONDITIONING_MODES, PROMPT_ONLY]
        variants = [next(v for v in variants if v.name == name) for name in names]
    print(f"mini benchmark: {len({j.identity_index for j in jobs})} held-out identities, {len(jobs)} images per variant, "
          f"{len(variants)} variant(s), {base.width}x{base.height}, {base.steps} steps, CFG {base.cfg}")
    rows = evaluate_variants(pipe, load_judge(models.judge), jobs, base, variants, output)
    print_rows(rows)
    if verb == "ablate":
        from ..eval.ablations import mean_dla_layer_weights
        from .benchmark import job_reference, write_mini_report

        weights = mean_dla_layer_weights(pipe, [(job.prompt.prompt, job_reference(job)) for job in jobs])
        print(f"report        {write_mini_report(output, rows, weights, variants)}")
    print(f"saved         {output / 'scores.json'}")


def run_mini_score(args, verb: str = "score") -> None:
    """The mini judge on a folder of generated images, or (no folder) on the benchmark's ground-truth renders."""
    from .benchmark import ground_truth, jobs_in_folder, read_images, score_rows, select_jobs
    from .data import load_world
    from .judge import load_judge

    check_no_metric_models(args)
    if args.output:
        from .. import checks

        checks.output_file(args.output, "--output", ".json")
    models = EmbeddedModels.packaged().check()
    world = load_world(models.world_dir)
    if args.generated is None:
        jobs = select_jobs(world, args.subjects, args.prompts)
        print(f"No folder given: scoring the mini benchmark's ground truth ({len(jobs)} held-out identity renders in the "
              "prompts' scenes), what a perfect generator would score.")
        name, images = "ground_truth", ground_truth(jobs)
    else:
        jobs, paths = jobs_in_folder(world, args.generated)
        keep = [k for k, job in enumerate(jobs) if (not args.subjects or f"{job.identity_index:02d}" in args.subjects
                                                    or str(job.identity_index) in args.subjects)
                and (not args.prompts or job.prompt_index in args.prompts)]
        if not keep:
            raise SqueezeError(f"'{args.generated}' holds no image of the --subjects/--prompts asked for.")
        jobs, name = [jobs[k] for k in keep], Path(args.generated).name
        images = read_images([paths[k] for k in keep])
    rows = score_rows(load_judge(models.judge), {name: images}, jobs, {})
    print_rows(rows)
    if args.output:
        write_json(dict(benchmark="mini", variants=rows), args.output)
        print(f"saved         {args.output}")
