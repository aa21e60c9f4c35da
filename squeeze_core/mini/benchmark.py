"""The mini benchmark from the command line: what `squeeze eval`, `squeeze ablate` and `squeeze score` run when no
--dreambench is given. The mini world's 30 held-out identities play DreamBench's 30 subjects, its judge plays
DINO and CLIP (identity, prompt and copy-paste scores; see squeeze_core/mini/judge.py).

    jobs = select_jobs(world, identities=["00", "07"], prompts=[0, 1, 2], seeds=1)
    rows = evaluate_variants(pipe, judge, jobs, base, variants, output)   # images + scores.json, one object per variant
    jobs, paths = jobs_in_folder(world, "runs/eval/generated/staged")     # any folder laid out as below
    rows = score_rows(judge, {"staged": read_images(paths)}, jobs, {})

Generated images are laid out as `<identity>/<prompt>_<seed>.png`: identity = the held-out index, two digits;
prompt = the benchmark prompt's index (0-24); seed = the sampling seed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SqueezeInputError
from ..files import atomic_write_text

logger = logging.getLogger("squeeze.mini.benchmark")

DEFAULT_PROMPTS = (0, 1, 2)  # prompts per identity the default run scores (the report's 90 images), of 25
IMAGE_NAME = re.compile(r"^(\d+)_(\d+)\.png$")


@dataclass(frozen=True)
class Job:
    heldout: object  # data.HeldoutIdentity
    identity_index: int
    prompt_index: int
    seed: int

    @property
    def reference(self):
        return self.heldout.references[0]

    @property
    def prompt(self):
        return self.heldout.prompts[self.prompt_index]

    @property
    def name(self) -> str:
        return f"{self.identity_index:02d}/{self.prompt_index}_{self.seed}.png"

    def as_tuple(self) -> tuple:
        """(identity, reference render, benchmark prompt, seed): what squeeze_core.mini.squeeze's functions take."""
        return (self.heldout, self.reference, self.prompt, self.seed)


def select_jobs(world, identities=None, prompts=None, seeds: int = 1) -> list[Job]:
    """Held-out identities (two-digit indices as strings, or None: all) x prompt indices (None: DEFAULT_PROMPTS)
    x seeds 0..seeds-1, checked against the world."""
    count, per = len(world.heldout), len(world.heldout[0].prompts)
    chosen = list(range(count))
    if identities:
        chosen = []
        for text in identities:
            if not str(text).isdigit() or int(text) >= count:
                raise SqueezeInputError(f"--subjects {text!r}: the mini benchmark's identities are 00 to {count - 1:02d}.")
            chosen.append(int(text))
    prompt_indices = list(DEFAULT_PROMPTS if prompts is None else prompts)
    for index in prompt_indices:
        if not 0 <= index < per:
            raise SqueezeInputError(f"--prompts {index}: the mini benchmark's prompts are 0 to {per - 1}.")
    if not isinstance(seeds, int) or seeds < 1:
        raise SqueezeInputError(f"--seeds {seeds!r} must be a positive integer.")
    return [Job(world.heldout[i], i, p, s) for i in chosen for p in prompt_indices for s in range(seeds)]


def score_rows(judge, images: dict[str, torch.Tensor], jobs: list[Job], labels: dict[str, str]) -> list[dict]:
    from .squeeze import score_images

    tuples = [job.as_tuple() for job in jobs]
    return [dict(variant=name, label=labels.get(name, name), **score_images(judge, stack, tuples)) for name, stack in images.items()]


def save_images(images: torch.Tensor, jobs: list[Job], folder: Path) -> None:
    from ..images import save_png

    for image, job in zip(images, jobs):
        path = folder / job.name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(image[None], path)


def evaluate_variants(pipe, judge, jobs: list[Job], base, variants, output: Path, batch_size: int = 30,
                      progress: bool = True) -> list[dict]:
    """Generate every job under every variant (the same seeds), write the images to output/generated/<variant>/,
    a sheet of the first jobs (reference | one column per variant) and output/scores.json; -> one row per variant."""
    from .squeeze import generate_variants, save_mode_grid

    output = Path(output)
    images = generate_variants(pipe, [job.as_tuple() for job in jobs], base, variants, batch_size, progress)
    images = {name: (stack * 255).round() / 255 for name, stack in images.items()}  # scored as saved: `squeeze score` agrees
    for name, stack in images.items():
        save_images(stack, jobs, output / "generated" / name)
    rows = score_rows(judge, images, jobs, {v.name: v.label for v in variants})
    save_mode_grid(images, [job.as_tuple() for job in jobs], output / "sheet.png", rows=8, tile=128)
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(base).items() if k != "prompt"}
    atomic_write_text(output / "scores.json", json.dumps(dict(benchmark="mini", images_per_variant=len(jobs), settings=settings,
                                                              variants=rows), indent=2) + "\n")
    logger.info("mini benchmark: %d variants x %d images -> %s", len(rows), len(jobs), output)
    return rows


def job_reference(job: Job):
    from PIL import Image

    with Image.open(job.reference.path) as opened:
        return opened.convert("RGB")


def jobs_in_folder(world, folder) -> tuple[list[Job], list[Path]]:
    """The jobs a folder of generated images answers, from its `<identity>/<prompt>_<seed>.png` names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SqueezeInputError(f"'{folder}' is not a folder of generated images (laid out as <identity>/<prompt>_<seed>.png).")
    jobs, paths = [], []
    for path in sorted(folder.glob("*/*.png")):
        match = IMAGE_NAME.match(path.name)
        if not path.parent.name.isdigit() or match is None:
            continue
        identity, prompt_index, seed = int(path.parent.name), int(match.group(1)), int(match.group(2))
        if identity >= len(world.heldout) or prompt_index >= len(world.heldout[identity].prompts):
            raise SqueezeInputError(f"'{path}' names identity {identity}, prompt {prompt_index}, which the mini benchmark "
                                    f"lacks (identities 00-{len(world.heldout) - 1:02d}, prompts 0-{len(world.heldout[0].prompts) - 1}).")
        jobs.append(Job(world.heldout[identity], identity, prompt_index, seed))
        paths.append(path)
    if not jobs:
        raise SqueezeInputError(f"'{folder}' holds no image laid out as <identity>/<prompt>_<seed>.png (e.g. 03/7_0.png).")
    return jobs, paths


def read_images(paths: list[Path], size: int = 64) -> torch.Tensor:
    """PNG files -> (N, size, size, 3) in [0, 1]; other sizes are resized (the judge reads the world's size)."""
    import numpy as np

    from ..images import open_image

    arrays = []
    for path in paths:
        image = open_image(path, name=str(path)).convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), resample=3)  # bicubic
        arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays))


def ground_truth(jobs: list[Job]) -> torch.Tensor:
    """Each job's identity rendered in its prompt's scene: what a perfect generator would draw."""
    import numpy as np

    from .world import render

    return torch.from_numpy(np.stack([np.asarray(render(j.heldout.identity, j.prompt.scene, 9_000 + j.seed), dtype=np.float32)
                                      for j in jobs]) / 255.0)


def write_mini_report(output: Path, rows: list[dict], layer_weights: dict[str, list[float]], variants) -> Path:
    """output/report.md: the variant table, the sheet, and the DLA's mean weight per MLLM layer for text vs image."""
    groups = {v.name: v.group for v in variants}
    lines = ["# Squeeze ablations on the mini benchmark", "",
             f"{rows[0]['images']} images per variant (held-out identities x prompts x seeds), the same seeds in every "
             "variant; scored by the mini world's judge. Identity: share of the reference's details drawn (DINO-I's role); "
             "prompt: share of the scene attributes drawn as asked (CLIP-T's role); copy-paste: how often position or size "
             "is the reference's where the prompt asked otherwise (lower is better).", "",
             "| variant | group | identity | prompt | copy-paste |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['label']} | {groups.get(r['variant'], '')} | {r['identity']:.3f} | {r['prompt']:.3f} | {r['copy_paste']:.3f} |"
              for r in rows]
    lines += ["", "![reference | one column per variant](sheet.png)", "", "DLA mean weight per MLLM layer:", "",
              "| tokens | " + " | ".join(f"layer {k}" for k in range(len(next(iter(layer_weights.values()))))) + " |",
              "| --- |" + " ---: |" * len(next(iter(layer_weights.values())))]
    lines += [f"| {name} | " + " | ".join(f"{w:.3f}" for w in weights) + " |" for name, weights in layer_weights.items()]
    path = Path(output) / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
