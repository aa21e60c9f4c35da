"""Build the miniature from scratch: the world and its judge, then the three base models, each validated.

    squeeze mini world    --out runs/mini      # renders + pairs + benchmark, trains and validates the judge
    squeeze mini pretrain --out runs/mini      # VAE, FLUX + T5, InternVL3; each validated on held-out data
    squeeze mini report   --out runs/mini      # docs/mini/README.md and its pictures, from the run's stats
    (--quick: a few-minute size that runs every code path, for CI; --seed: everything follows it)

Layout of `--out`::

    world/                      world.json, pairs.jsonl (Squeeze's manifest), images/
    models/judge.safetensors    the metric network
    models/vae/                 diffusers AutoencoderKL      (squeeze_core.vae.load_flux_vae loads it)
    models/flux/transformer/    diffusers FluxTransformer2DModel (squeeze_core.flux.load_flux_transformer loads it)
    models/flux/text_encoder/   T5 encoder + models/flux/tokenizer/: the base model's own text encoder
    models/mllm/                InternVL3 "-hf"              (squeeze_core.mllm.InternVL3Encoder loads it)
    stats/world.json, stats/pretrain.json   loss curves, validation figures, wall time of every phase
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import SqueezeInputError
from ..files import atomic_write_text
from ..flux import vae_downscale
from .data import WorldConfig, build_world, load_images, load_world
from .flux_base import MiniFluxConfig, pretrain_flux, sample_base, save_mini_flux
from .judge import JudgeConfig, identity_score, load_judge, prompt_score, read_images, save_judge, train_judge, validate_judge
from .vae import MiniVAEConfig, pretrain_vae, psnr, reconstruct
from .world import caption, prompt, subject_box

logger = logging.getLogger("squeeze.mini")


@dataclass
class MiniRun:
    out: Path
    seed: int = 0
    quick: bool = False  # the CI size: every code path in minutes, no claim about quality
    # per config class name, fields that replace its defaults, e.g. {"MiniVAEConfig": {"channels": (16, 32, 32)}}:
    # how benchmarks try a variant of one phase with everything else as `squeeze mini` runs it
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)

    @property
    def world_dir(self) -> Path:
        return self.out / "world"

    @property
    def models(self) -> Path:
        return self.out / "models"

    def stats_path(self, phase: str) -> Path:
        return self.out / "stats" / f"{phase}.json"

    def world_config(self) -> WorldConfig:
        if self.quick:
            return WorldConfig(seed=self.seed, train_identities=24, heldout_identities=4, renders_per_identity=6,
                               pairs_per_identity=4, references_per_heldout=2, prompts_per_heldout=5)
        return WorldConfig(seed=self.seed)

    def configured(self, cls):
        config = cls.quick() if self.quick else cls()
        config.seed = self.seed
        return replace(config, **self.overrides.get(cls.__name__, {}))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1))


def read_stats(run: MiniRun, phase: str) -> dict:
    path = run.stats_path(phase)
    if not path.is_file():
        raise SqueezeInputError(f"'{path}' is missing: run `squeeze mini {phase} --out {run.out}` first.")
    return json.loads(path.read_text(encoding="utf-8"))


def run_world(run: MiniRun, progress: bool = True) -> dict:
    """Phase 1: the world's data, then the judge, validated on held-out renders before it judges anything."""
    times = {}
    start = time.perf_counter()
    world = build_world(run.world_dir, run.world_config(), progress)
    times["world: rendering"] = time.perf_counter() - start
    judge, judge_stats = train_judge(world.heldout_keys, run.configured(JudgeConfig), progress)
    times["judge: training"] = judge_stats.pop("seconds")
    save_judge(judge, run.models / "judge.safetensors")
    start = time.perf_counter()
    validation = validate_judge(judge, world.heldout, run.seed)
    times["judge: validation"] = time.perf_counter() - start
    stats = dict(seed=run.seed, quick=run.quick, world=dict(train_identities=len(world.train), heldout_identities=len(world.heldout),
                 train_renders=sum(len(t.renders) for t in world.train), pairs=sum(1 for _ in open(world.pairs_manifest, encoding="utf-8")),
                 benchmark_prompts=sum(len(h.prompts) for h in world.heldout)),
                 judge=dict(judge_stats, validation=validation), seconds=times)
    _write_json(run.stats_path("world"), stats)
    return stats


@torch.no_grad()
def _encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    x = images.float().movedim(-1, 1) / 127.5 - 1.0
    return torch.cat([vae.encode(x[i : i + 128]).latent_dist.mode() for i in range(0, len(x), 128)])


def heldout_renders(world, limit: int | None = None):
    """(identity, scene, image) for the held-out identities in their benchmark scenes: data no model trained on."""
    from .world import render

    rows = [(h.identity, p.scene) for h in world.heldout for p in h.prompts][:limit]
    return [(identity, scene, render(identity, scene, 7_000 + i)) for i, (identity, scene) in enumerate(rows)]


PRETRAIN_PARTS = ("generator", "mllm")  # the VAE + FLUX (FLUX learns the VAE's latents), and the MLLM: independent
FLUX_ONLY = "flux"  # a part run_pretrain also takes: FLUX + T5 alone, on the run's trained VAE (a FLUX variant)


def run_pretrain(run: MiniRun, progress: bool = True, parts: tuple[str, ...] = PRETRAIN_PARTS) -> dict:
    """Phase 2: the VAE, then FLUX + T5 on the VAE's latents, and InternVL3; each validated on held-out renders.
    `parts` retrains only some (the others' models and stats are kept from the previous run); FLUX_ONLY retrains
    FLUX + T5 on the run's VAE."""
    unknown = set(parts) - set(PRETRAIN_PARTS) - {FLUX_ONLY}
    if unknown or not parts:
        raise ValueError(f"pretrain parts {sorted(unknown) or '(none)'} not in {PRETRAIN_PARTS}")
    world = load_world(run.world_dir)
    stats = read_stats(run, "pretrain") if set(parts) != set(PRETRAIN_PARTS) else dict(seed=run.seed, quick=run.quick, seconds={})
    if "generator" in parts or FLUX_ONLY in parts:
        stats.update(_pretrain_generator(run, world, stats["seconds"], progress, train_vae="generator" in parts))
    if "mllm" in parts:
        stats["mllm"] = _pretrain_mllm(run, world, stats["seconds"], progress)
    _write_json(run.stats_path("pretrain"), stats)
    return stats


def _pretrain_generator(run: MiniRun, world, times: dict, progress: bool, train_vae: bool = True) -> dict:
    judge = load_judge(run.models / "judge.safetensors")
    renders = world.train_renders()
    images = load_images([r.path for _, r in renders])
    heldout = heldout_renders(world, limit=None if not run.quick else 8)
    heldout_images = torch.from_numpy(np.stack([np.asarray(im) for _, _, im in heldout]))
    truth = heldout_images.float() / 255.0

    boxes = torch.tensor([subject_box(identity, r.scene, r.seed) for identity, r in renders])
    generator = {}
    if train_vae:
        vae, vae_stats = pretrain_vae(images, run.configured(MiniVAEConfig), progress, subject_boxes=boxes)
        times["vae: training"] = vae_stats.pop("seconds")
        vae.save_pretrained(run.models / "vae", safe_serialization=True)
        reconstructions = reconstruct(vae, heldout_images)
        reading = read_images(judge, reconstructions.movedim(-1, 1))
        vae_stats["validation"] = dict(
            psnr_heldout=psnr(reconstructions, truth),
            identity_of_reconstructions=float(identity_score(reading, [i for i, _, _ in heldout]).mean()),
            prompt_of_reconstructions=float(prompt_score(reading, [s for _, s, _ in heldout]).mean()),
        )
        generator["vae"] = vae_stats
    else:
        from ..vae import load_flux_vae

        vae = load_flux_vae(run.models / "vae", dtype=torch.float32).requires_grad_(False)

    start = time.perf_counter()
    latents = _encode_latents(vae, images)
    times["vae: encoding the training set"] = time.perf_counter() - start
    captions = [caption(identity, r.scene) for identity, r in renders]
    groups: dict[str, int] = {}  # identity key -> its index among the training identities
    transformer, text, flux_stats = pretrain_flux(latents, captions, run.configured(MiniFluxConfig), progress,
                                                  downscale=vae_downscale(vae), subject_boxes=boxes,
                                                  identities=[groups.setdefault(i.key, len(groups)) for i, _ in renders],
                                                  prompts=[prompt(identity.klass, r.scene) for identity, r in renders])
    times["flux: training"] = flux_stats.pop("seconds")
    save_mini_flux(run.models / "flux", transformer, text)
    start = time.perf_counter()
    shown = heldout[: (8 if run.quick else 60)]
    samples = sample_base(transformer, text, vae, [caption(i, s) for i, s, _ in shown], list(range(len(shown))), progress=progress)
    times["flux: sampling held-out captions"] = time.perf_counter() - start
    reading = read_images(judge, samples.movedim(-1, 1))
    flux_stats["validation"] = dict(
        captions=len(shown),
        identity=float(identity_score(reading, [i for i, _, _ in shown]).mean()),
        prompt=float(prompt_score(reading, [s for _, s, _ in shown]).mean()),
        attribute_accuracy=attribute_accuracy(reading, [(i, s) for i, s, _ in shown]),
    )
    _save_grid(samples, run.out / "stats" / "flux_samples.png")
    if train_vae:
        _save_grid(reconstructions[: len(shown)], run.out / "stats" / "vae_reconstructions.png")
    _save_grid(truth[: len(shown)], run.out / "stats" / "heldout_truth.png")
    return dict(generator, flux=flux_stats)


def _pretrain_mllm(run: MiniRun, world, times: dict, progress: bool) -> dict:
    from . import mllm as mini_mllm

    mllm_stats = mini_mllm.pretrain_mllm(world, run.models / "mllm", run.configured(mini_mllm.MiniMLLMConfig), progress=progress)
    times["mllm: training"] = mllm_stats.pop("wall_seconds")
    start = time.perf_counter()
    mllm_stats["validation"] = mini_mllm.validate_mllm(run.models / "mllm", world, n=8 if run.quick else 150,
                                                       example_dir=run.out / "stats" / "mllm_examples", progress=progress)
    times["mllm: validation"] = time.perf_counter() - start
    start = time.perf_counter()
    mllm_stats["probe"] = mini_mllm.layer_probe(run.models / "mllm", world, progress=progress,
                                                **({"n_train": 60, "n_test": 30} if run.quick else {}))
    times["mllm: layer probe"] = time.perf_counter() - start
    return mllm_stats


def attribute_accuracy(reading, truth) -> dict[str, float]:
    """Per attribute, the share of images read as their (identity, scene) says."""
    values = [{**identity.to_dict(), **scene.to_dict()} for identity, scene in truth]
    return {a: float(np.mean([reading.value(a, k) == v[a] for k, v in enumerate(values)])) for a in reading.predicted}


def _save_grid(images: torch.Tensor, path: Path, columns: int = 10) -> None:
    """(N, H, W, 3) in [0, 1] -> one PNG, `columns` images a row, scaled 2x for reading."""
    from PIL import Image

    count, height, width, _ = images.shape
    rows = (count + columns - 1) // columns
    sheet = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for index in range(count):
        tile = Image.fromarray((images[index].clamp(0, 1).numpy() * 255).round().astype("uint8"))
        sheet.paste(tile, ((index % columns) * width, (index // columns) * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST).save(path)
