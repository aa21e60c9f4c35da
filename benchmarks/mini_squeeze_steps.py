"""Does longer Squeeze training make the identity transfer? Trains Squeeze on the mini world (the shipped base models,
`squeeze mini train`'s code: train_squeeze + evaluate_squeeze) at several (stage 1, stage 2) step counts and prints,
per length, the judge's identity / prompt / copy-paste on the 90 default held-out jobs for staged, MLLM only,
VAE only and prompt only (the no-reference floor), beside the final training losses and wall times.

    python benchmarks/mini_squeeze_steps.py --steps 600:300 3000:3000 --out runs/steps     # a GPU: minutes
    python benchmarks/mini_squeeze_steps.py --steps 600:300 --out runs/steps                # this CPU: ~5 min
    python benchmarks/mini_squeeze_steps.py --steps 600:300 --stage2 mllm_reference_drop=1  # stage 2: VAE-only identity
    python benchmarks/mini_squeeze_steps.py --steps 600:1200 --stage2 mllm_reference_drop=1 --oracle   # can it copy?
    python benchmarks/mini_squeeze_steps.py --steps 600:600 --shifted-oracle --probe   # can it find it by content?
    python benchmarks/mini_squeeze_steps.py --steps 600:6000 --score-every 1500   # identity along one long stage 2
    python benchmarks/mini_squeeze_steps.py --steps 600:300 --crop-references     # references cropped to their subject

--score-every N keeps a stage-2 checkpoint every N steps and scores each one the same way, so one training run gives
identity against stage-2 length (results.json: "curve", stage-2 step -> variant -> scores).

--oracle trains stage 2 on the world's pairs with each reference replaced by the pair's own target, so the reference
latents hold the exact answer: a check that FLUX + LoRA can learn to read them at all (the loss falls) and how fast.

--shifted-oracle is the oracle with each reference the target rolled sideways (wrapping round) by a random 1-3
latent tokens (16-48 px; a token is 2 x 2 latent cells): the answer is in the sequence, but only content, not the
position, says where. It separates "cannot look things up by content" from "cannot relate two scenes".

--probe adds the judge-free measures of squeeze_core/mini/probe.py (VAE only: the loss with another identity's
reference latents minus the loss with the right ones, its standard error over held-out pairs, and the target ->
reference attention share per FLUX layer) for the base FLUX, the stage-1 model, every scored stage-2 checkpoint and
the final model (results.json: "probe").

--crop-references trains and scores with every reference (the training pairs' and the held-out ones) cropped to a
square around its subject (the world's exact subject box, 1.3 times its longer side) and resized back to 64 px, as
DreamBench's references show their subject filling the frame; targets and prompts are unchanged. The derived world
goes to <out>/crops/world (the models are linked), so the run's world stays untouched. Copy-paste then compares with
the uncropped reference's layout.

The world is rendered into <out>/world if missing (deterministic: the same renders as `squeeze mini world`), and
the base models are the package's (squeeze_core/embedded/weights) unless <out>/models exists (e.g. a variant's from
benchmarks/mini_pretrain_variant.py). Results go to <out>/results.json after each length, and each length's
reference | variant grid to <out>/squeeze/<length>/variants.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squeeze_core.embedded import EmbeddedModels  # noqa: E402
from squeeze_core.files import atomic_write_text  # noqa: E402
from squeeze_core.mini.build import MiniRun  # noqa: E402
from squeeze_core.mini.data import WorldConfig, build_world  # noqa: E402
from squeeze_core.mini.probe import probe_base_flux, probe_line, probe_squeeze  # noqa: E402
from squeeze_core.mini.squeeze import MiniSqueezeConfig, evaluate_squeeze, train_squeeze  # noqa: E402

VARIANTS = ("staged", "mllm_only", "vae_only", "prompt_only")


def parse_train_fields(pairs: list[str]) -> dict:
    """["mllm_reference_drop=1"] -> {"mllm_reference_drop": 1}, parsed as mini_pretrain_variant.py parses its fields;
    a value TrainConfig refuses is a ValueError too, checked here, before stage 1 trains."""
    from mini_pretrain_variant import parse_fields  # this script's folder is on sys.path when it runs

    from squeeze_core.errors import SqueezeInputError
    from squeeze_core.train.config import TrainConfig

    changes = parse_fields(pairs, TrainConfig)
    try:
        TrainConfig(**changes)
    except SqueezeInputError as error:
        raise ValueError(f"--stage2: {error}") from None
    return changes


def judged(evaluation: dict) -> dict:
    """evaluate_squeeze's result -> variant -> {identity, prompt, copy_paste}."""
    return {k: {m: v[m] for m in ("identity", "prompt", "copy_paste")} for k, v in evaluation["scores"].items()}


def roll_image(source: Path, destination: Path, tokens: int, token_px: int = 16) -> Path:
    """`source` rolled right by `tokens` FLUX tokens (token_px pixels each), wrapping round, saved at `destination`."""
    import numpy as np
    from PIL import Image

    if not destination.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            Image.fromarray(np.roll(np.asarray(image.convert("RGB")), tokens * token_px, axis=1)).save(destination)
    return destination.resolve()


def write_oracle_manifest(manifest: Path, out: Path, shifted: bool = False, seed: int = 0) -> Path:
    """<out>/oracle_pairs.jsonl: `manifest`'s pairs with each reference replaced by the pair's target (absolute paths,
    so the world stays untouched wherever it lives). `shifted`: by the target rolled sideways by 1-3 tokens (drawn
    per pair with `seed`; <out>/shifted/*.png) -> <out>/shifted_oracle_pairs.jsonl."""
    import random

    root = manifest.resolve().parent
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    references = []
    for row in rows:
        target = root / row["target"]
        if shifted:
            tokens = rng.choice((1, 2, 3))
            target = roll_image(target, out / "shifted" / f"{Path(row['target']).stem}_roll{tokens}.png", tokens)
        references.append(str(target))
    text = "".join(json.dumps({**row, "target": str(root / row["target"]), "references": [reference]}) + "\n"
                   for row, reference in zip(rows, references))
    path = out / ("shifted_oracle_pairs.jsonl" if shifted else "oracle_pairs.jsonl")
    atomic_write_text(path, text)
    return path


def crop_square(box: tuple[int, int, int, int], margin: float = 1.3, size: int = 64) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) around `box`, `margin` times its longer side, moved (not shrunk) to lie
    inside the size x size image; the whole image if it would not fit."""
    left, top, right, bottom = box
    side = min(size, max(8, round(max(right - left, bottom - top) * margin)))
    x0 = min(max(0, round((left + right - side) / 2)), size - side)
    y0 = min(max(0, round((top + bottom - side) / 2)), size - side)
    return x0, y0, x0 + side, y0 + side


def write_cropped_world(run: MiniRun) -> MiniRun:
    """<run.out>/crops: a run whose world is `run`'s with every reference cropped to its subject (crop_square of
    world.subject_box) and resized back; pairs.jsonl names the crops and the original targets by absolute path; the
    models are a link to `run`'s."""
    from PIL import Image

    from squeeze_core.mini.data import load_world
    from squeeze_core.mini.world import subject_box

    world = load_world(run.world_dir)
    cropped = MiniRun(run.out / "crops", seed=run.seed)
    root = cropped.world_dir
    shutil.rmtree(root, ignore_errors=True)
    renders = {r.path.resolve(): (t.identity, r) for t in world.train for r in t.renders}
    renders.update({r.path.resolve(): (h.identity, r) for h in world.heldout for r in h.references})

    def crop(path: Path) -> Path:
        identity, render = renders[path.resolve()]
        destination = root / path.resolve().relative_to(run.world_dir.resolve())
        if not destination.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
                size = image.width
                square = image.convert("RGB").crop(crop_square(subject_box(identity, render.scene, render.seed, size), size=size))
            square.resize((size, size), Image.LANCZOS).save(destination)
        return destination.resolve()

    rows = [json.loads(line) for line in world.pairs_manifest.read_text().splitlines() if line.strip()]
    text = "".join(json.dumps({**row, "references": [str(crop(world.root / r)) for r in row["references"]],
                               "target": str((world.root / row["target"]).resolve())}) + "\n" for row in rows)
    index = json.loads((run.world_dir / "world.json").read_text())
    for item in index["train"]:  # training renders stay where they are
        for render in item["renders"]:
            render["file"] = str((world.root / render["file"]).resolve())
    for item in index["heldout"]:
        for render in item["references"]:
            crop(world.root / render["file"])  # same relative name inside the derived world
    atomic_write_text(root / "pairs.jsonl", text)
    atomic_write_text(root / "world.json", json.dumps(index, indent=1))
    if not cropped.models.exists():
        cropped.models.symlink_to(run.models.resolve())
    return cropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", default=["600:300"], help="stage1:stage2 step counts, one run each")
    parser.add_argument("--out", default="runs/steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=1e9, help="seconds: skip the lengths that start after this")
    parser.add_argument("--stage2", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig fields set in stage 2 only, e.g. mllm_reference_drop=1 (the MLLM never sees the "
                             "references in stage 2, so the reference latents are the only way to the identity)")
    parser.add_argument("--oracle", action="store_true",
                        help="stage 2 trains on pairs whose reference is the target itself (<out>/oracle_pairs.jsonl)")
    parser.add_argument("--shifted-oracle", action="store_true",
                        help="as --oracle, with each reference the target rolled sideways by 1-3 tokens")
    parser.add_argument("--probe", action="store_true",
                        help="also the judge-free VAE-branch measures (squeeze_core/mini/probe.py) of every model")
    parser.add_argument("--crop-references", action="store_true",
                        help="every reference cropped to its subject, training and held-out (<out>/crops/world)")
    parser.add_argument("--stage1", metavar="FOLDER",
                        help="continue from this stage-1 model (a run's <length>/stage1 on the same base models) instead of "
                             "training stage 1; the lengths' stage-1 counts are then only labels")
    parser.add_argument("--score-every", type=int, default=0, metavar="N",
                        help="keep a stage-2 checkpoint every N steps and score each (0: only the final model)")
    args = parser.parse_args()
    try:
        stage2_changes = parse_train_fields(args.stage2)
    except ValueError as error:
        parser.error(str(error))
    if args.score_every < 0:
        parser.error(f"--score-every {args.score_every}: give a number of stage-2 steps >= 1, or 0 to score only the final model")
    start = time.perf_counter()
    out = Path(args.out)
    run = MiniRun(out, seed=args.seed)
    if not (run.world_dir / "world.json").is_file():
        build_world(run.world_dir, WorldConfig(seed=args.seed))
    if not run.models.is_dir():
        shipped_only = shutil.ignore_patterns("squeeze", "benchmark", "*_stats.json", "MANIFEST.json")
        shutil.copytree(EmbeddedModels.packaged().models, run.models, ignore=shipped_only)
    if args.crop_references:
        run = write_cropped_world(run)
    label = [f"{k}{v}" for k, v in stage2_changes.items()]
    if args.oracle and args.shifted_oracle:
        parser.error("give --oracle or --shifted-oracle, not both")
    label += (["oracle"] if args.oracle else []) + (["shifted-oracle"] if args.shifted_oracle else [])
    label += ["crop"] if args.crop_references else []
    if args.score_every:
        stage2_changes = dict(stage2_changes, checkpoint_every=args.score_every, keep_checkpoints=1_000_000)
    if args.oracle or args.shifted_oracle:
        manifest = write_oracle_manifest(run.world_dir / "pairs.jsonl", out, shifted=args.shifted_oracle, seed=args.seed)
        stage2_changes = dict(stage2_changes, manifest=str(manifest))
    results = {}
    base_probe = probe_base_flux(run) if args.probe else None
    if base_probe:
        print(probe_line("base FLUX", base_probe), flush=True)
    for steps in args.steps:
        if time.perf_counter() - start > args.budget:
            print(f"{steps}: skipped, past the --budget")
            continue
        stage1, stage2 = (int(x) for x in steps.split(":"))
        config = dataclasses.replace(MiniSqueezeConfig(), stage1_steps=stage1, stage2_steps=stage2, seed=args.seed)
        folder = out / "squeeze" / "-".join([f"{stage1}-{stage2}", *label])
        began = time.perf_counter()
        training = train_squeeze(run, config, folder, stage2_changes, stage1=Path(args.stage1).resolve() if args.stage1 else None)
        trained = time.perf_counter() - began
        evaluation = evaluate_squeeze(run, folder / "stage2", config, VARIANTS, progress=False, grid=folder / "variants.png")
        curve = {}
        if args.score_every:  # every kept stage-2 checkpoint but the last, which is the final model scored above
            for checkpoint in sorted((folder / "stage2").glob("checkpoint-*"))[:-1]:
                curve[int(checkpoint.name.split("-")[1])] = judged(evaluate_squeeze(run, checkpoint, config, VARIANTS, progress=False))
        results[steps] = dict(stage2_changes=stage2_changes, training_seconds=trained, eval_seconds=time.perf_counter() - began - trained,
                              final_loss={k: sum(v["losses"][-50:]) / len(v["losses"][-50:]) for k, v in training.items()},
                              conditions={k: v["conditions"] for k, v in training.items()},
                              scores=judged(evaluation),
                              layer_weights=evaluation["layer_weights"])
        if args.score_every:
            curve[stage2] = results[steps]["scores"]
            results[steps]["curve"] = curve
        if args.probe:
            probed = {"base FLUX": base_probe, "stage 1": probe_squeeze(run, Path(args.stage1) if args.stage1 else folder / "stage1")}
            for checkpoint in sorted((folder / "stage2").glob("checkpoint-*"))[:-1] if args.score_every else []:
                probed[f"stage 2 step {int(checkpoint.name.split('-')[1])}"] = probe_squeeze(run, checkpoint)
            probed[f"stage 2 step {stage2}"] = probe_squeeze(run, folder / "stage2")
            results[steps]["probe"] = probed
        atomic_write_text(out / "results.json", json.dumps(results, indent=1))
        row = results[steps]
        print(f"{steps}: training {trained:.0f} s, final loss (last 50) " + ", ".join(f"{k} {v:.4f}" for k, v in row["final_loss"].items()))
        for variant, scores in row["scores"].items():
            print(f"   {variant:<12} " + "  ".join(f"{m} {v:.3f}" for m, v in scores.items()))
        for step, scores in row.get("curve", {}).items():
            print(f"   stage 2 step {step:>6}: identity " + "  ".join(f"{variant} {v['identity']:.3f}" for variant, v in scores.items()))
        for name, probe in row.get("probe", {}).items():
            print("   " + probe_line(name, probe))


if __name__ == "__main__":
    main()
