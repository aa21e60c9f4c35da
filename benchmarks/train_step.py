"""Training-step benchmark: steps/s and peak memory, printed side by side, asserting nothing.

    python benchmarks/train_step.py                      # tiny configuration on this machine (CPU or GPU)
    python benchmarks/train_step.py --steps 20 --batch-size 2

Each variant runs in its own process (so its peak memory is its own): the tiny embedded models (InternVL3 6 x 64,
FLUX 1 + 1 blocks, rank-4 LoRA) on the synthetic pairs, one fixed batch encoded once, then --steps optimiser steps
timed after one warm-up step. Reported: steps/s (median step time), peak memory (CUDA: max allocated; CPU: the
process's peak resident set, which includes Python and the libraries) and the ratio of each variant to the first.
Variants: stage 1 batched (samples of one shape share a FLUX forward) and one forward per sample; stage 2 (reference
latents in FLUX's sequence); gradient checkpointing on; bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "stage 1, fp32": dict(stage=1),
    "stage 1, one forward per sample": dict(stage=1, batched=False),
    "stage 2, fp32": dict(stage=2),
    "stage 2, grad. checkpointing": dict(stage=2, gradient_checkpointing=True),
    "stage 2, bf16 autocast": dict(stage=2, mixed_precision="bf16"),
}
TINY = dict(resolution=128, bucket_step=16, reference_long_side=128, lora_rank=4, dla_attn_dim=32, dla_num_heads=4,
            base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, num_workers=0, max_steps=1,
            prompt_drop=0.0, mllm_reference_drop=0.0, vae_reference_drop=0.0)


def measure(settings: dict, steps: int, batch_size: int) -> dict:
    """Runs in the child process."""
    import resource

    import torch

    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.data import collate
    from squeeze_core.train.trainer import Trainer, train

    settings = dict(settings)
    batched = settings.pop("batched", True)
    from squeeze_core.train.demo import write_demo_dataset

    with tempfile.TemporaryDirectory() as scratch:
        manifest = str(write_demo_dataset(f"{scratch}/pairs", pairs=8 * batch_size))  # batch_size x 2 per bucket
        stage1 = f"{scratch}/stage1"
        if settings.get("stage") == 2:
            from accelerate.state import AcceleratorState

            train(TrainConfig(**dict(TINY, manifest=manifest, output_dir=stage1, max_steps=1, checkpoint_every=1)))
            AcceleratorState._reset_state(reset_partial_state=True)
        config = TrainConfig(**dict(TINY, **settings, manifest=manifest, batch_size=batch_size, output_dir=f"{scratch}/run",
                                    init_from=stage1 if settings.get("stage") == 2 else None))
        trainer = Trainer(config)
        trainer.setup()
        bucket = trainer.dataset.bucket_of[0]
        indices = [i for i, b in enumerate(trainer.dataset.bucket_of) if b == bucket][:batch_size]
        samples = trainer.prepare_batch(collate([trainer.dataset[i] for i in indices]))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train_step(samples, batched)  # warm-up
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            trainer.train_step(samples, batched)
            times.append(time.perf_counter() - start)
        if torch.cuda.is_available():
            peak, kind = torch.cuda.max_memory_allocated() / 2**20, "CUDA max allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS"
    return {"steps_per_s": 1.0 / statistics.median(times), "peak_mib": peak, "memory": kind, "samples": len(indices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.steps, args.batch_size)))
        return
    rows = {}
    for name, settings in VARIANTS.items():
        done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                               "--child", json.dumps(settings)], capture_output=True, text=True, check=True)
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    first = next(iter(rows.values()))
    print(f"tiny training step, {first['samples']} samples at {TINY['resolution']} px, median of {args.steps} steps; "
          f"memory = {first['memory']}")
    print(f"{'variant':<30} {'steps/s':>8} {'ratio':>6} {'peak MiB':>9} {'ratio':>6}")
    for name, row in rows.items():
        print(f"{name:<30} {row['steps_per_s']:>8.2f} {row['steps_per_s'] / first['steps_per_s']:>6.2f} "
              f"{row['peak_mib']:>9.0f} {row['peak_mib'] / first['peak_mib']:>6.2f}")


if __name__ == "__main__":
    main()
