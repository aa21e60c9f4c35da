"""Score one trained Squeeze stage on the branches and the (tau1, tau2) grid: `squeeze mini train`'s evaluation
(squeeze_core.mini.squeeze.evaluate_squeeze, the 90 default held-out jobs) for a model trained elsewhere, e.g. by
benchmarks/mini_squeeze_steps.py on a variant's base models.

    python benchmarks/mini_score_variants.py --run runs/panels2 --trained runs/panels2/squeeze/600-300/stage2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squeeze_core.files import atomic_write_text  # noqa: E402
from squeeze_core.mini.build import MiniRun  # noqa: E402
from squeeze_core.mini.squeeze import MiniSqueezeConfig, evaluate_squeeze  # noqa: E402

NAMES = ("staged", "mllm_only", "vae_only", "refs_every_step", "tau_0.9_0.1", "tau_0.9_0.3", "tau_0.8_0.2", "tau_0.7_0.1",
         "tau_0.7_0.3", "tau_0.6_0.2", "prompt_only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folder with models/ and world/")
    parser.add_argument("--trained", required=True, help="a Squeeze stage folder (DLA + LoRA) trained on those models")
    parser.add_argument("--json", help="write the scores here (default: <trained>/variants.json)")
    args = parser.parse_args()
    result = evaluate_squeeze(MiniRun(Path(args.run)), Path(args.trained), MiniSqueezeConfig(), NAMES, progress=False)
    scores = {k: {m: v[m] for m in ("identity", "prompt", "copy_paste")} for k, v in result["scores"].items()}
    atomic_write_text(Path(args.json or Path(args.trained) / "variants.json"), json.dumps(scores, indent=1))
    for name, values in scores.items():
        print(f"{name:<16} " + "  ".join(f"{metric} {value:.3f}" for metric, value in values.items()), flush=True)


if __name__ == "__main__":
    main()
