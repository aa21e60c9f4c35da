"""Does the VAE reference branch read identity? The judge-free measures of squeeze_core/mini/probe.py (loss with
another identity's reference latents minus loss with the right ones, with its standard error over held-out pairs;
the share of target-token attention on reference tokens per FLUX layer) for a set of mini base models' FLUX and for
Squeeze stage folders trained on them (in VAE-only mode: prompt-only DLA conditioning + reference latents).

    python benchmarks/mini_reference_probe.py                                   # the shipped base FLUX and published model
    python benchmarks/mini_reference_probe.py --run runs/panels --trained --prior   # a variant's base FLUX, and its samples
    python benchmarks/mini_reference_probe.py --run runs/steps --trained runs/steps/squeeze/600-300/stage1 \\
        runs/steps/squeeze/600-300/stage2                                        # a benchmark run's models and stages

`--run`: a folder with models/ and world/ (a `squeeze mini` run, or benchmarks/mini_squeeze_steps.py's --out); by
default the package's embedded models and their held-out benchmark. Prints one line per model and writes the
figures to --json if given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squeeze_core.embedded import EmbeddedModels  # noqa: E402
from squeeze_core.files import atomic_write_text  # noqa: E402
from squeeze_core.mini.build import MiniRun  # noqa: E402
from squeeze_core.mini.probe import ProbeConfig, probe_base_flux, probe_line, probe_squeeze, reference_prior  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a folder with models/ and world/ (default: the embedded models)")
    parser.add_argument("--trained", nargs="*", help="Squeeze stage folders (DLA + LoRA); default: the embedded published "
                                                     "model when --run is not given")
    parser.add_argument("--pairs", type=int, default=ProbeConfig.pairs)
    parser.add_argument("--prior", action="store_true", help="also the base FLUX's in-context prior, judged: its samples "
                                                              "with the right, a wrong and no reference's latents")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if args.run:
        run, trained = MiniRun(Path(args.run)), [Path(p) for p in args.trained or []]
    else:
        run = EmbeddedModels.packaged()
        trained = [Path(p) for p in args.trained] if args.trained is not None else [run.models / "squeeze"]
    config = ProbeConfig(pairs=args.pairs)
    results = {"base FLUX": probe_base_flux(run, config)}
    print(probe_line("base FLUX (T5 prompt + reference latents)", results["base FLUX"]), flush=True)
    if args.prior:
        prior = results["base FLUX prior"] = reference_prior(run, args.pairs)
        print("base FLUX prior, judged identity: " + ", ".join(f"{k} {v:.3f}" for k, v in prior["identity"].items())
              + f"; right - wrong {prior['difference']:+.3f} ± {prior['stderr']:.3f}; prompt "
              + ", ".join(f"{v:.3f}" for v in prior["prompt"].values()), flush=True)
    for folder in trained:
        results[str(folder)] = probe_squeeze(run, folder, config)
        print(probe_line(f"{folder} (VAE only)", results[str(folder)]), flush=True)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
