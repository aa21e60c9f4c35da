"""Which miniature VAE carries the identity details? Trains MiniVAEConfig variants on the world's training renders
(runs/mini from `squeeze mini world`) and prints, per variant, the held-out reconstruction PSNR, the judge's identity
and prompt scores of the reconstructions (ground truth: identity 0.955), the latent statistics after the fold, and
the wall time; with --cpu-step-time also the seconds per training step on this machine's CPU, measured side by side.

    python benchmarks/mini_vae_sweep.py --run runs/mini --device cuda           # the sweep (minutes on a GPU)
    python benchmarks/mini_vae_sweep.py --run runs/mini --cpu-step-time 20      # CPU cost per step of each variant
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squeeze_core.mini.build import heldout_renders  # noqa: E402
from squeeze_core.mini.data import load_images, load_world  # noqa: E402
from squeeze_core.mini.judge import identity_score, load_judge, prompt_score, read_images  # noqa: E402
from squeeze_core.mini.vae import MiniVAEConfig, normalised_latent_statistics, pretrain_vae, psnr, reconstruct  # noqa: E402
from squeeze_core.mini.world import subject_box  # noqa: E402

PLAIN = dict(subject_weight=1.0)  # the plain loss: what the VAE shipped with until the subject weight became the default
VARIANTS = {
    "default": dict(),  # MiniVAEConfig() as it is now (the subject's box weighted x16)
    "plain": PLAIN,
    "plain, 4000 steps": dict(PLAIN, steps=4000),
    "plain, posterior mean (no sampling)": dict(PLAIN, sample_posterior=False),
    "wide (32,64,64,64)": dict(PLAIN, channels=(32, 64, 64, 64)),
    "wide, 4000 steps": dict(PLAIN, channels=(32, 64, 64, 64), steps=4000),
    "wide, batch 32, 3000 steps": dict(PLAIN, channels=(32, 64, 64, 64), batch_size=32, steps=3000),
    "wider (64,128,128,128), 3000 steps": dict(PLAIN, channels=(64, 128, 128, 128), steps=3000),
    "4x down (16,32,32)": dict(PLAIN, channels=(16, 32, 32)),  # 16 x 16 latents at 64 px: one latent cell per 4 px
    "subject x4": dict(subject_weight=4.0),  # the loss weighs the subject's box 4 times the background
    "subject x16": dict(subject_weight=16.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/mini", help="a run directory with world/ and models/judge.safetensors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", help="names from VARIANTS (default: all)")
    parser.add_argument("--cpu-step-time", type=int, metavar="STEPS", help="only time this many CPU steps per variant")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    run = Path(args.run)
    world = load_world(run / "world")
    renders = world.train_renders()
    images = load_images([r.path for _, r in renders])
    boxes = torch.tensor([subject_box(identity, r.scene, r.seed) for identity, r in renders])
    names = args.variants or list(VARIANTS)
    if args.cpu_step_time:
        for name in names:
            config = MiniVAEConfig(**{**VARIANTS[name], "steps": args.cpu_step_time})
            start = time.perf_counter()
            pretrain_vae(images, config, progress=False, subject_boxes=boxes)
            seconds = (time.perf_counter() - start) / args.cpu_step_time
            print(f"{name:<40} {seconds:.3f} s/step on the CPU, {seconds * MiniVAEConfig(**VARIANTS[name]).steps / 60:.1f} min in all")
        return
    judge = load_judge(run / "models" / "judge.safetensors")
    heldout = heldout_renders(world)
    truth_images = torch.from_numpy(np.stack([np.asarray(im) for _, _, im in heldout]))
    truth = truth_images.float() / 255.0
    identities, scenes = [i for i, _, _ in heldout], [s for _, s, _ in heldout]
    reading = read_images(judge, truth.movedim(-1, 1))
    print(f"ground truth: identity {identity_score(reading, identities).mean():.3f}, prompt {prompt_score(reading, scenes).mean():.3f}"
          f" ({len(heldout)} held-out renders, {len(images)} training renders)")
    rows = []
    for name in names:
        config = MiniVAEConfig(**VARIANTS[name])
        start = time.perf_counter()
        vae, stats = pretrain_vae(images, config, progress=False, device=args.device, subject_boxes=boxes)
        seconds = time.perf_counter() - start
        reconstructions = reconstruct(vae, truth_images)
        reading = read_images(judge, reconstructions.movedim(-1, 1))
        row = dict(variant=name, parameters=stats["parameters"], psnr=psnr(reconstructions, truth),
                   identity=float(identity_score(reading, identities).mean()), prompt=float(prompt_score(reading, scenes).mean()),
                   final_loss=float(np.mean(stats["losses"][-50:])), seconds=seconds, **normalised_latent_statistics(vae, images[:512]))
        rows.append(row)
        print(f"{name:<40} {row['parameters']:>8} params  PSNR {row['psnr']:5.2f} dB  identity {row['identity']:.3f}  "
              f"prompt {row['prompt']:.3f}  loss {row['final_loss']:.4f}  latent std {row['channel_std_min']:.2f}-"
              f"{row['channel_std_max']:.2f}  {seconds:.0f} s on {args.device}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
