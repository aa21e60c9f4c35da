"""Training-step benchmark: steps per second side by side, printed, asserting nothing.

    python benchmarks/train_step.py                      # tiny configuration on this machine (CPU or GPU)
    python benchmarks/train_step.py --rounds 7 --batch-size 2

The tiny embedded models (InternVL3 6 x 64, FLUX 1 + 1 blocks, rank-4 LoRA) train on the synthetic pairs, one
Trainer per variant, all in this process. A round times one step of every variant in turn (A B C ... A B C ...), so
drift on a shared machine hits every variant alike. Printed: the median and the range over the rounds, and each
variant's ratio to the first. A timed step is what the training loop does per batch: `prepare_batch` (the frozen VAE
encodes of targets and references, the frozen MLLM forward, drawing times and noise) plus `train_step` (forward,
backward, optimiser step). The same batch of images is used every round. On a GPU, peak memory per variant is
torch's max allocated over its steps; on the CPU no per-variant peak is printed (the process's resident set mixes
all variants).

Variants:
- stage 1: samples of one shape share a FLUX forward.
- stage 1, one forward per sample.
- stage 2: reference latents in FLUX's sequence; references VAE-encoded in one call per size.
- stage 2, references one at a time: the VAE path before references were batched (the "before" column).
- stage 2 with gradient checkpointing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

TINY = dict(resolution=128, bucket_step=16, reference_long_side=128, lora_rank=4, dla_attn_dim=32, dla_num_heads=4,
            base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, num_workers=0, max_steps=1,
            prompt_drop=0.0, mllm_reference_drop=0.0, vae_reference_drop=0.0)
VARIANTS = {
    "stage 1": dict(training_stage=1),
    "stage 1, one forward per sample": dict(training_stage=1, batched=False),
    "stage 2": dict(training_stage=2),
    "stage 2, references one at a time": dict(training_stage=2, references_one_at_a_time=True),
    "stage 2, grad. checkpointing": dict(training_stage=2, gradient_checkpointing=True),
}


def one_at_a_time_trainer():
    """A Trainer that VAE-encodes each reference on its own, as `prepare_batch` did before references were batched."""
    from squeeze_core.references import resize_reference
    from squeeze_core.sampling import to_model_space
    from squeeze_core.train.trainer import Trainer
    from squeeze_core.vae import vae_encode

    class OneAtATime(Trainer):
        def _encode_references(self, references):
            return [[to_model_space(vae_encode(self.models.vae, resize_reference(r[None], self.config.reference_long_side)))
                     for r in refs] for refs in references]

    return OneAtATime


def build(settings: dict, batch_size: int, manifest: str, stage1: str, scratch: str):
    """-> (step function, samples per step) for one variant."""
    from accelerate.state import AcceleratorState

    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.data import collate
    from squeeze_core.train.trainer import Trainer

    settings = dict(settings)
    batched = settings.pop("batched", True)
    trainer_class = one_at_a_time_trainer() if settings.pop("references_one_at_a_time", False) else Trainer
    config = TrainConfig(**dict(TINY, **settings, manifest=manifest, batch_size=batch_size,
                                output_dir=f"{scratch}/{len(settings)}-{time.monotonic_ns()}",
                                init_from=stage1 if settings.get("training_stage") == 2 else None))
    AcceleratorState._reset_state(reset_partial_state=True)  # every variant has the same accelerate settings
    trainer = trainer_class(config)
    trainer.setup()
    bucket = trainer.dataset.bucket_of[0]
    indices = [i for i, b in enumerate(trainer.dataset.bucket_of) if b == bucket][:batch_size]
    batch = collate([trainer.dataset[i] for i in indices])

    def step():
        trainer.train_step(trainer.prepare_batch(batch), batched)

    return step, len(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (one step per variant each)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from accelerate.state import AcceleratorState

    from squeeze_core.testing import write_demo_dataset
    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.trainer import train

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        manifest = str(write_demo_dataset(f"{scratch}/pairs", pairs=8 * args.batch_size))  # batch_size x 2 per bucket
        stage1 = f"{scratch}/stage1"
        train(TrainConfig(**dict(TINY, manifest=manifest, output_dir=stage1, max_steps=1, checkpoint_every=1)))
        AcceleratorState._reset_state(reset_partial_state=True)
        steps = {name: build(settings, args.batch_size, manifest, stage1, scratch) for name, settings in VARIANTS.items()}
        times = {name: [] for name in steps}
        peaks = {name: 0.0 for name in steps}
        for name, (step, _) in steps.items():  # warm-up
            step()
        for _ in range(args.rounds):
            for name, (step, _) in steps.items():
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                step()
                if cuda:
                    torch.cuda.synchronize()
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**20)
                times[name].append(time.perf_counter() - start)
    samples = next(iter(steps.values()))[1]
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"tiny training step (prepare_batch + train_step), {samples} samples at {TINY['resolution']} px, "
          f"{args.rounds} interleaved rounds; {device}")
    first = statistics.median(next(iter(times.values())))
    print(f"{'variant':<36} {'steps/s':>8} {'range':>13} {'ratio':>6}" + (f" {'peak MiB':>9}" if cuda else ""))
    for name, values in times.items():
        rates = [1.0 / v for v in values]
        median = 1.0 / statistics.median(values)
        print(f"{name:<36} {median:>8.2f} {min(rates):>6.2f}-{max(rates):<6.2f} {first * median:>6.2f}"
              + (f" {peaks[name]:>9.0f}" if cuda else ""))


if __name__ == "__main__":
    main()
