"""`squeeze mini`: build the miniature world and its base models from scratch (squeeze_core/mini/build.py), train
Squeeze on it (squeeze_core/mini/squeeze.py) and write the report."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..cli.arguments import seed

RUN_FOLDERS = ("world", "models", "stats", "squeeze")  # what a mini run folder holds
PHASES = ("world", "pretrain", "train", "report")  # "all" runs these; "publish" is asked for on its own


def add_parsers(commands) -> None:
    mini = commands.add_parser(
        "mini", help="build the miniature world, its judge and base models (VAE, FLUX + T5, InternVL3), train Squeeze on it, "
                     "and write the report",
        description="Phases: world (renders, pairs, benchmark, judge), pretrain (VAE, FLUX + T5, InternVL3), train (Squeeze's "
                    "training stages 1 and 2 with `squeeze train`'s code, then every conditioning mode scored on the held-out "
                    "identities), report (docs/mini). 'all' runs the four in order.",
    )
    mini.add_argument("phase", choices=PHASES + ("all", "publish"),
                      help="which phase to run; publish copies the run's base models, its published Squeeze model "
                           "('release': the first DLA model with the long stage 2; DLA + LoRA) and the held-out benchmark "
                           "into the package: the embedded default every verb uses")
    mini.add_argument("--out", default="runs/mini", help="run directory (default runs/mini)")
    mini.add_argument("--seed", type=seed, default=0, help="every random draw follows it, 0 to 2**63 - 1 (default 0)")
    mini.add_argument("--quick", action="store_true", help="CI size: every code path in a few minutes, no quality claim")
    mini.add_argument("--docs", default="docs/mini", help="where `report` writes README.md and pictures (default docs/mini)")
    mini.add_argument("--only", choices=("generator", "mllm"),
                      help="pretrain: retrain only the VAE + FLUX ('generator') or only the MLLM, keeping the other")
    mini.set_defaults(func=run_command)

    from .verbs import register

    register()  # `squeeze score | eval | ablate` without --dreambench run the embedded mini benchmark


def run_command(args: argparse.Namespace) -> None:
    from ..errors import SqueezeInputError
    from .build import PRETRAIN_PARTS, MiniRun, run_pretrain, run_world
    from .embedded import publish
    from .report import write_report
    from .squeeze import run_squeeze_phase

    for flag, value in (("--out", args.out), ("--docs", args.docs)):
        if Path(value).exists() and not Path(value).is_dir():
            raise SqueezeInputError(f"{flag} '{value}' is a file; give a directory (it is created if missing).")
    out = Path(args.out)
    if args.phase in ("world", "all") and out.is_dir() and any(out.iterdir()) \
            and not any((out / name).exists() for name in RUN_FOLDERS):
        raise SqueezeInputError(f"--out '{out}' is a folder that holds no mini run ({', '.join(RUN_FOLDERS)}) but other files; "
                                "give a new or empty folder, so nothing of yours is mixed with the run.")
    run = MiniRun(args.out, seed=args.seed, quick=args.quick)
    if args.phase == "publish":
        destination = publish(run)
        files = sorted(p for p in destination.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files) / 1e6
        print(f"publish: {destination}, {len(files)} files, {size:.1f} MB (sha256 of each in MANIFEST.json)")
        return
    phases = PHASES if args.phase == "all" else (args.phase,)
    for phase in phases:
        start = time.perf_counter()
        if phase == "world":
            stats = run_world(run)
            summary = {k: round(v["identity"], 3) for k, v in stats["judge"]["validation"].items() if "identity" in v}
            print(f"world: {json.dumps(stats['world'])}\njudge validation, identity score by case: {json.dumps(summary)}")
        elif phase == "pretrain":
            stats = run_pretrain(run, parts=(args.only,) if args.only else PRETRAIN_PARTS)
            vae, flux, mllm = (stats[k]["validation"] for k in ("vae", "flux", "mllm"))
            print(f"vae: held-out PSNR {vae['psnr_heldout']:.1f} dB, identity of reconstructions {vae['identity_of_reconstructions']:.3f}\n"
                  f"flux: held-out captions, identity {flux['identity']:.3f}, prompt {flux['prompt']:.3f}\n"
                  f"mllm: held-out descriptions, " + ", ".join(f"{k} {v:.2f}" for k, v in mllm["accuracy"].items()))
        elif phase == "train":
            stats = run_squeeze_phase(run)
            for model, stages in stats["training"].items():
                print(f"{model}: " + ", ".join(f"{stage} {len(v['losses'])} steps, loss {v['losses'][0]:.4f} -> {v['losses'][-1]:.4f}"
                                               for stage, v in stages.items()))
            for aggregation, variants in stats["summary"].items():
                for variant, metrics in variants.items():
                    print(f"{aggregation:<10} {variant:<18} " + "  ".join(
                        f"{metric} {mean:.3f} ± {spread:.3f}" for metric, (mean, spread, _) in metrics.items()))
        else:
            path = write_report(run, args.docs)
            print(f"report: {path}")
        print(f"{phase}: {time.perf_counter() - start:.0f} s")
