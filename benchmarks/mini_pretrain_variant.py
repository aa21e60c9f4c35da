"""Retrain base models of the miniature with some config fields changed, exactly as `squeeze mini pretrain --only`
does, and print their validation beside the run it starts from:
- the generator (--vae / --flux fields): the VAE's held-out PSNR and the judge's identity / prompt scores of its
  reconstructions, then the base FLUX's identity, prompt and per-attribute accuracy on 60 held-out captions that name
  every detail;
- the MLLM (--mllm fields): per-attribute accuracy of its descriptions of 150 held-out images;
and the wall time of each training phase.

    python benchmarks/mini_pretrain_variant.py --run runs/mini --out /tmp/mini-vae4x --vae channels=16,32,32
    python benchmarks/mini_pretrain_variant.py --run runs/mini --out /tmp/mini-p4 --mllm patch_size=4
    python benchmarks/mini_pretrain_variant.py --run runs/mini --out /tmp/panels --flux panel_share=0.5   # FLUX only

--flux without --vae retrains FLUX + T5 alone, on the run's VAE (linked, not retrained).

`--out` gets the retrained models and stats, links to the run's world and to its models that were not retrained
(so benchmarks/mini_squeeze_steps.py --out can train Squeeze on the result); the run is only read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squeeze_core.mini.build import FLUX_ONLY, MiniRun, read_stats, run_pretrain  # noqa: E402
from squeeze_core.mini.flux_base import MiniFluxConfig  # noqa: E402
from squeeze_core.mini.mllm import MiniMLLMConfig  # noqa: E402
from squeeze_core.mini.vae import MiniVAEConfig  # noqa: E402


def parse_fields(pairs: list[str], config_class) -> dict:
    """["channels=16,32,32", "steps=3000"] -> {"channels": (16, 32, 32), "steps": 3000}; a field `config_class`
    lacks or a value that is not numbers is a ValueError naming it."""
    known = {f.name for f in dataclasses.fields(config_class)}
    fields = {}
    for pair in pairs or []:
        name, _, text = pair.partition("=")
        if name not in known:
            raise ValueError(f"'{pair}': {config_class.__name__} has no field '{name}' (fields: {', '.join(sorted(known))})")
        try:
            values = [float(v) if "." in v else int(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"'{pair}': give numbers, e.g. {name}=16,32,32 or {name}=3000") from None
        fields[name] = tuple(values) if "," in text else values[0]
    return fields


def summary(stats: dict, part: str) -> dict:
    seconds = stats["seconds"]
    if part == FLUX_ONLY:
        return {k: v for k, v in summary(stats, "generator").items() if not k.startswith("VAE")}
    if part == "mllm":
        accuracy = stats["mllm"]["validation"]["accuracy"]
        return {**{f"MLLM reads {k}": v for k, v in accuracy.items()}, "MLLM minutes": seconds["mllm: training"] / 60}
    vae, flux = stats["vae"]["validation"], stats["flux"]["validation"]
    return {"VAE PSNR (dB)": vae["psnr_heldout"], "VAE identity": vae["identity_of_reconstructions"],
            "VAE prompt": vae["prompt_of_reconstructions"], "FLUX identity": flux["identity"], "FLUX prompt": flux["prompt"],
            **{f"FLUX {k}": v for k, v in flux["attribute_accuracy"].items()},
            "VAE minutes": seconds["vae: training"] / 60, "FLUX minutes": seconds["flux: training"] / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/mini", help="a finished `squeeze mini pretrain` run (only read)")
    parser.add_argument("--out", required=True, help="where the variant's models and stats go")
    parser.add_argument("--vae", nargs="*", metavar="FIELD=VALUE", help="MiniVAEConfig fields to change")
    parser.add_argument("--flux", nargs="*", metavar="FIELD=VALUE", help="MiniFluxConfig fields to change")
    parser.add_argument("--mllm", nargs="*", metavar="FIELD=VALUE", help="MiniMLLMConfig fields to change")
    parser.add_argument("--quick", action="store_true", help="the CI sizes (for a `squeeze mini all --quick` run)")
    args = parser.parse_args()
    try:
        overrides = {cls.__name__: parse_fields(given, cls)
                     for cls, given in ((MiniVAEConfig, args.vae), (MiniFluxConfig, args.flux), (MiniMLLMConfig, args.mllm))}
        for cls in (MiniVAEConfig, MiniFluxConfig, MiniMLLMConfig):
            cls(**overrides[cls.__name__])  # the configs' own checks, before anything is written
    except ValueError as error:
        parser.error(str(error))
    parts = tuple(p for p, given in (("generator", args.vae), (FLUX_ONLY, args.flux and not args.vae), ("mllm", args.mllm)) if given)
    if not parts:
        parser.error("change at least one field: --vae, --flux or --mllm FIELD=VALUE")
    source, out = Path(args.run).resolve(), Path(args.out)
    needed = ["world/world.json", "models/judge.safetensors", "stats/pretrain.json", "models/vae", "models/flux", "models/mllm"]
    missing = [name for name in needed if not (source / name).exists()]
    if missing:
        parser.error(f"--run {args.run} lacks {', '.join(missing)}: give a finished `squeeze mini all` run "
                     "(or run `squeeze mini world` and `squeeze mini pretrain --out` it first)")
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "stats").mkdir(exist_ok=True)
    kept = ["world", "models/judge.safetensors"] + (["models/vae"] if "generator" not in parts else []) + (
        ["models/flux"] if "generator" not in parts and FLUX_ONLY not in parts else []) + (
        ["models/mllm"] if "mllm" not in parts else [])
    for name in kept:
        if not (out / name).exists():
            (out / name).symlink_to(source / name, target_is_directory=(source / name).is_dir())
    shutil.copy2(source / "stats" / "pretrain.json", out / "stats" / "pretrain.json")
    before, after = read_stats(MiniRun(source), "pretrain"), run_pretrain(MiniRun(out, quick=args.quick, overrides=overrides), parts=parts)
    print(f"\nvariant: {json.dumps({k: v for k, v in overrides.items() if v})}\n\n| figure | {source.name} | variant |\n|---|---|---|")
    for part in parts:
        new = summary(after, part)
        for name, value in summary(before, part).items():
            print(f"| {name} | {value:.3f} | {new[name]:.3f} |")


if __name__ == "__main__":
    main()
