"""Where the time of `squeeze generate` on the embedded default goes: the interpreter and imports, loading the models,
encoding, sampling, decoding and writing, against the whole command's wall time, measured side by side in one run.

    python benchmarks/generate_startup.py                 # --rounds 5
    python benchmarks/generate_startup.py --rounds 9 --threads 2

Each round runs, in fresh processes, one after another (interleaved, so drift on a shared machine hits every row):
- `python -c pass`, `python -c "import torch"`: what any PyTorch program pays before its first line;
- `squeeze --help`: the dispatcher (it must import no torch);
- the whole `squeeze generate --output <tmp>` as a user runs it (image + branch sheet);
- the same work in one instrumented process (this file with --child), which times each part of what
  squeeze_core/cli/generate.py does, in its order: imports (the CLI and what loading needs), load (the embedded
  InternVL3, DLA, FLUX + LoRA, VAE), encode (MLLM + DLA passes and reference latents), sample (the denoising loops of the
  three images: staged, MLLM only, VAE only), decode + write (VAE decodes, the PNGs).
Prints the median and range over rounds of each, and the ratio of the whole command to its sampling time. Asserts
nothing; the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(output: Path) -> None:
    """The work of `squeeze generate` with its defaults, each part timed; prints one JSON line."""
    times = {}
    start = time.perf_counter()
    import dataclasses

    import torch  # noqa: F401

    from squeeze_core.cli import build_parser
    from squeeze_core.cli.generate import SHEET_MODES
    from squeeze_core.cli.models import load_pipeline, prompt_and_reference, sampling_config
    from squeeze_core.images import save_png
    from squeeze_core.sheet import image_sheet, save_sheet
    from squeeze_core.vae import vae_decode

    args = build_parser().parse_args(["generate", "--output", str(output)])
    times["imports"] = time.perf_counter() - start
    mark = time.perf_counter()
    pipe = load_pipeline(args, args.device)
    import transformers  # noqa: F401  (already imported by the load; named so the split is visible)

    times["load"] = time.perf_counter() - mark
    config = sampling_config(args, prompt="", seed=args.seed)
    prompt, references = prompt_and_reference(args, [])
    config = dataclasses.replace(config, prompt=prompt)
    configs = [config] + [dataclasses.replace(config, mode=mode) for mode in SHEET_MODES]
    times["encode"] = times["sample"] = times["decode + write"] = 0.0
    images = []
    for variant in configs:
        mark = time.perf_counter()
        prepared = pipe.prepare(variant, references)
        times["encode"] += time.perf_counter() - mark
        mark = time.perf_counter()
        latent = pipe.sample(variant, prepared, progress=False)
        times["sample"] += time.perf_counter() - mark
        mark = time.perf_counter()
        images.append(vae_decode(pipe.vae, latent).cpu())
        times["decode + write"] += time.perf_counter() - mark
    mark = time.perf_counter()
    save_png(images[0], output)
    save_sheet(image_sheet([[references[0], *images[1:], images[0]]], ["reference", *SHEET_MODES.values(), "staged"]),
               output.with_name(f"{output.stem}_sheet.png"))
    times["decode + write"] += time.perf_counter() - mark
    print(json.dumps(times))


def wall(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every process (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    python = sys.executable
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="squeeze-startup-") as scratch:
        for round_ in range(args.rounds):
            for name, command in (("python -c pass", [python, "-c", "pass"]),
                                  ("import torch", [python, "-c", "import torch"]),
                                  ("squeeze --help", [python, "-m", "squeeze_core.cli", "--help"]),
                                  ("squeeze generate (whole command)",
                                   [python, "-m", "squeeze_core.cli", "generate", "--output", f"{scratch}/g.png"])):
                rows.setdefault(name, []).append(wall(command, env))
            done = subprocess.run([python, __file__, "--child", f"{scratch}/c.png"], check=True, env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                rows.setdefault(f"  {name}", []).append(seconds)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'part':<36} {'median s':>9}  range (s), {args.rounds} interleaved rounds, OMP_NUM_THREADS={args.threads}")
    for name, values in rows.items():
        print(f"{name:<36} {statistics.median(values):>9.3f}  {min(values):.3f}-{max(values):.3f}")
    whole, sample = statistics.median(rows["squeeze generate (whole command)"]), statistics.median(rows["  sample"])
    print(f"whole command / sampling time: {whole / sample:.1f}x (three images: staged, MLLM only, VAE only)")


if __name__ == "__main__":
    main()
