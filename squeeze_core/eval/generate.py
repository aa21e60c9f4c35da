"""Generate DreamBench with the headless pipeline, resumable and split over processes.

    pipe = SqueezePipeline(encoder, dla, transformer, vae)
    generate_benchmark(pipe, bench, "generated/", GenerateConfig(prompt="", steps=28), seeds=4)
    accelerate launch --num_processes 8 -m squeeze_core.cli eval ...     # 8 GPUs share the images

Jobs are (subject, prompt index, seed) in a fixed order, grouped by (subject, prompt): process k of n takes every
n-th group, so the seeds of one prompt run one after another on one process and share its conditioning and reference
latents (SqueezePipeline keeps them). An image already on disk is skipped, so a stopped run continues where it was;
images are written to a temporary name and renamed, so a file that exists is complete. Seed s of a job is the
sampling seed, identical on every machine.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from tqdm.auto import tqdm

from ..images import save_png
from ..pipeline import GenerateConfig, SqueezePipeline
from .dreambench import DreamBench, generated_path

logger = logging.getLogger("squeeze.eval")


def benchmark_jobs(bench: DreamBench, seeds: int, prompt_indices=None) -> list[tuple[str, int, int]]:
    jobs = []
    for name, subject in bench.subjects.items():
        for index in prompt_indices if prompt_indices is not None else range(len(subject.prompts)):
            jobs += [(name, index, seed) for seed in range(seeds)]
    return jobs


def prompt_groups(jobs: list[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """Consecutive jobs of one (subject, prompt index), in order."""
    groups: dict[tuple[str, int], list] = {}
    for job in jobs:
        groups.setdefault(job[:2], []).append(job)
    return list(groups.values())


def generate_benchmark(pipe: SqueezePipeline, bench: DreamBench, folder, base: GenerateConfig, seeds: int = 1,
                       prompt_indices=None, rank: int = 0, world_size: int = 1, progress: bool = True) -> dict[str, int]:
    """Write this process's share of the benchmark into `folder`; returns {"generated": n, "existing": m}."""
    folder = Path(folder)
    mine = [job for group in prompt_groups(benchmark_jobs(bench, seeds, prompt_indices))[rank::world_size] for job in group]
    counts = {"generated": 0, "existing": 0}
    references = {}
    for name, index, seed in tqdm(mine, desc=f"generating{f' [{rank}]' if world_size > 1 else ''}", disable=not progress):
        path = generated_path(folder, name, index, seed)
        if path.is_file():
            counts["existing"] += 1
            continue
        subject = bench.subjects[name]
        if name not in references:
            from .metrics import open_rgb

            references[name] = open_rgb(subject.reference)
        config = dataclasses.replace(base, prompt=subject.prompts[index], seed=seed)
        _, image = pipe(config, [references[name]], progress=False)  # seeds of one prompt reuse its conditioning
        save_png(image, path)
        counts["generated"] += 1
    logger.info("process %d: %s", rank, counts)
    return counts
