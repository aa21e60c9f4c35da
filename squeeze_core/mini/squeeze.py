"""Squeeze trained on the mini world with `squeeze train`'s own code, then scored on the held-out identities.

    stats = run_squeeze_phase(run)                 # `squeeze mini train`: every aggregator x seed, trained and scored
    train_squeeze(run, MiniSqueezeConfig(), out)   # training stages 1 and 2 -> out/stage1, out/stage2
    evaluate_squeeze(run, out / "stage2", MiniSqueezeConfig())   # every inference variant, judged

Training is `squeeze_core.train.train(TrainConfig)` unchanged: the run's miniature InternVL3, FLUX and VAE are the
frozen models, the world's `pairs.jsonl` is the manifest, and only the sizes (64 px, a small LoRA and DLA, CPU
float32) differ from the paper's recipe. `training_configs` is what `squeeze train --config` would read; each stage's
`train_config.json` is written beside its weights.

Evaluation generates, for each held-out identity (never seen in any training) and its first `eval_prompts` benchmark
prompts, one image per inference variant (squeeze_core.eval.ablations: the conditioning branches, the (tau1, tau2)
grid, the DLA layer groups; plus "prompt only", the same model given no reference: the floor identity falls to when
the reference is ignored) with `SqueezePipeline`, what `squeeze generate` runs. The judge scores each image:
identity (the share of the reference's six details read in the image, DINO-I's role), prompt (the share of the four
scene attributes read as asked, CLIP-T's role) and copy-paste (how often position or size is the reference's where
the prompt asked otherwise).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import atomic_write_text
from ..settings import PROMPT_ONLY  # the variant given no reference: the floor without one

logger = logging.getLogger("squeeze.mini.squeeze")


@dataclass
class MiniSqueezeConfig:
    seed: int = 0
    stage1_steps: int = 600  # MLLM-only conditioning (the paper: 25K)
    stage2_steps: int = 300  # + VAE reference latents, continuing stage 1 (the paper: 10K), for the ablation's models
    # the published model (RELEASE_MODEL: the DLA, first seed's stage 1) continues stage 2 this long instead: identity
    # rises with stage-2 length (docs/mini/findings.md, 600:6000 curve), too slowly to train every ablation model so
    release_stage2_steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 1e-3  # LoRA and DLA (the paper's 1e-4 is for a 12B FLUX)
    lora_rank: int = 16  # the mini FLUX is 128 wide (the paper: rank 512 on 3072)
    dla_attn_dim: int = 64
    dla_num_heads: int = 4
    aggregation: str = "dual"  # "dual" (the DLA), "joint" (one LAP) or "last_layer": the paper's aggregator ablation
    eval_prompts: int = 3  # benchmark prompts per held-out identity (of 25)
    eval_steps: int = 12  # denoising steps
    cfg: float = 2.5  # the paper's real CFG
    eval_batch: int = 30  # images denoised together (prompts of one token length)
    loss_pairs: int = 90  # held-out pairs for `denoising_losses`

    @classmethod
    def quick(cls) -> "MiniSqueezeConfig":
        return cls(stage1_steps=4, stage2_steps=3, release_stage2_steps=5, batch_size=4, eval_prompts=1, eval_steps=3, loss_pairs=4)

    def release(self) -> "MiniSqueezeConfig":
        """The published model's settings: the DLA, this seed, stage 2 for `release_stage2_steps`."""
        return replace(self, aggregation="dual", stage2_steps=self.release_stage2_steps)


RELEASE_MODEL = "release"  # `squeeze mini train`'s published model, beside the ablation's "<aggregation>-seed<n>" ones


def training_configs(run, config: MiniSqueezeConfig, out: Path | None = None) -> dict:
    """The two stages' TrainConfig settings (what a stage1.yaml / stage2.yaml would hold)."""
    out = Path(out or run.out / "squeeze")
    models = run.models
    common = dict(
        mllm=str(models / "mllm"), transformer=str(models / "flux" / "transformer"), vae=str(models / "vae"),
        manifest=str(run.world_dir / "pairs.jsonl"), resolution=64, bucket_step=64, reference_long_side=64,
        base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, num_workers=0,
        batch_size=config.batch_size, learning_rate=config.learning_rate, lora_rank=config.lora_rank,
        dla_attn_dim=config.dla_attn_dim, dla_num_heads=config.dla_num_heads, dla_aggregation=config.aggregation,
        seed=config.seed, log_every=50, keep_checkpoints=1, resume="never",
    )
    stage1 = dict(common, training_stage=1, max_steps=config.stage1_steps, checkpoint_every=config.stage1_steps,
                  output_dir=str(out / "stage1"))
    stage2 = dict(common, training_stage=2, max_steps=config.stage2_steps, checkpoint_every=config.stage2_steps,
                  init_from=str(out / "stage1"), output_dir=str(out / "stage2"))
    return {1: stage1, 2: stage2}


def train_squeeze(run, config: MiniSqueezeConfig, out: Path | None = None, stage2_changes: dict | None = None,
                  stage1: Path | None = None) -> dict:
    """Both training stages with `squeeze train`'s code -> loss curves and wall time per stage. `stage2_changes`:
    TrainConfig fields to set in stage 2 only (an experiment's, e.g. {"mllm_reference_drop": 1.0}). With `stage1`
    (an earlier model's stage-1 folder), only stage 2 is trained, continuing from it."""
    from ..train.config import TrainConfig
    from ..train.trainer import train

    stages = training_configs(run, config, out)
    stages[2].update(stage2_changes or {})
    if stage1 is not None:
        del stages[1]
        stages[2]["init_from"] = str(stage1)
    stats = {}
    for stage, settings in stages.items():
        start = time.perf_counter()
        result = train(TrainConfig(**settings))
        stats[f"stage{stage}"] = dict(losses=[float(v) for v in result.losses], steps=result.steps,
                                      conditions=dict(result.condition_counts), seconds=time.perf_counter() - start)
        logger.info("training stage %d: %d steps, loss %.4f -> %.4f", stage, result.steps, result.losses[0], result.losses[-1])
    return stats


def load_squeeze_pipeline(run, trained: Path):
    """The run's frozen models + a stage's DLA and LoRA, as `squeeze generate --dla --lora` loads them."""
    from ..flux import load_flux_transformer
    from ..lora import load_comfyui_lora
    from ..mllm import InternVL3Encoder
    from ..pipeline import SqueezePipeline
    from ..train.models import DLA_FILE, LORA_FILE
    from ..vae import load_flux_vae
    from ..weights import load_dla

    encoder = InternVL3Encoder.from_pretrained(run.models / "mllm", dtype=torch.float32)
    dla = load_dla(Path(trained) / DLA_FILE, mllm=encoder.info)
    transformer = load_flux_transformer(run.models / "flux" / "transformer", dtype=torch.float32)
    load_comfyui_lora(transformer, Path(trained) / LORA_FILE)
    vae = load_flux_vae(run.models / "vae", dtype=torch.float32)
    return SqueezePipeline(encoder, dla, transformer, vae, remember=1024)  # an ablation comes back to each prompt


def benchmark_jobs(world, prompts_per_identity: int) -> list[tuple]:
    """(held-out identity, its reference render, benchmark prompt, seed) in a fixed order."""
    return [(h, h.references[0], p, index) for h in world.heldout for index, p in enumerate(h.prompts[:prompts_per_identity])]




def mini_variants(num_layers: int, base, taus=None) -> list:
    """The paper's inference ablations (squeeze_core.eval.ablations: branches, (tau1, tau2) grid, DLA layer groups)
    plus "prompt only", for one trained model."""
    from ..eval.ablations import DEFAULT_TAUS, Variant, ablation_variants

    return ablation_variants(num_layers, base, taus or DEFAULT_TAUS) + [Variant(PROMPT_ONLY, "prompt only (no reference)", "branches", {})]


def base_settings(config: MiniSqueezeConfig):
    from ..pipeline import GenerateConfig

    return GenerateConfig(prompt="", steps=config.eval_steps, cfg=config.cfg, width=64, height=64, long_side=64)


@torch.no_grad()
def generate_variants(pipe, jobs, base, variants, batch_size: int = 30, progress: bool = True) -> dict[str, torch.Tensor]:
    """variant name -> (N, H, W, 3) images in [0, 1], one per job, the same seed for every variant; `base` is the
    GenerateConfig each variant changes. The jobs of a variant are denoised in batches
    (`SqueezePipeline.generate_batch`): the same images as one at a time."""
    import dataclasses

    from PIL import Image

    references = []
    for _, reference, _, _ in jobs:
        with Image.open(reference.path) as opened:
            references.append(opened.convert("RGB"))
    images = {}
    for variant in tqdm(variants, desc="squeeze: generating", unit="variant", disable=not progress):
        settings = [dataclasses.replace(base, prompt=benchmark.prompt, seed=seed, **variant.changes) for _, _, benchmark, seed in jobs]
        given = [[] if variant.name == PROMPT_ONLY else [image] for image in references]
        images[variant.name] = pipe.generate_batch(settings, given, batch_size=batch_size)
    return images


def score_images(judge, images: torch.Tensor, jobs) -> dict[str, float]:
    """The judge's identity, prompt and copy-paste scores of one mode's images (DreamBench's three numbers)."""
    from .judge import copy_paste, identity_score, prompt_score, read_images

    reading = read_images(judge, images.movedim(-1, 1))
    identities = [h.identity for h, _, _, _ in jobs]
    scenes = [p.scene for _, _, p, _ in jobs]
    copied, eligible = copy_paste(reading, scenes, [r.scene for _, r, _, _ in jobs])
    return dict(identity=float(identity_score(reading, identities).mean()), prompt=float(prompt_score(reading, scenes).mean()),
                copy_paste=copied / max(eligible, 1), images=len(jobs))


def reference_layer_weights(pipe, jobs) -> dict[str, list[float]]:
    """The DLA's mean weight per MLLM layer for text and for image tokens, over the jobs' prompts with their reference."""
    from PIL import Image

    from ..eval.ablations import mean_dla_layer_weights

    pairs = []
    for _, reference, benchmark, _ in jobs:
        with Image.open(reference.path) as opened:
            pairs.append((benchmark.prompt, opened.convert("RGB")))
    return mean_dla_layer_weights(pipe, pairs)


def evaluate_squeeze(run, trained: Path, config: MiniSqueezeConfig, names: tuple[str, ...] | None = None,
                     progress: bool = True, grid: Path | None = None) -> dict[str, dict]:
    """-> {"scores": variant -> scores on the held-out benchmark, "layer_weights": the DLA's, text vs image tokens}.
    `names`: which of mini_variants to run (None: all); with `grid`, also a PNG: reference | one column per
    variant."""
    from .data import load_world
    from .judge import load_judge

    world = load_world(run.world_dir)
    judge = load_judge(run.models / "judge.safetensors")
    jobs = benchmark_jobs(world, config.eval_prompts)
    pipe = load_squeeze_pipeline(run, trained)
    variants = [v for v in mini_variants(pipe.dla.config.num_layers, base_settings(config)) if names is None or v.name in names]
    images = generate_variants(pipe, jobs, base_settings(config), variants, config.eval_batch, progress)
    scores = {v.name: dict(score_images(judge, images[v.name], jobs), label=v.label, group=v.group) for v in variants}
    if grid is not None:
        save_mode_grid({v.name: images[v.name] for v in variants}, jobs, grid)
    return dict(scores=scores, layer_weights=reference_layer_weights(pipe, jobs))


def save_mode_grid(images: dict[str, torch.Tensor], jobs, path: Path, rows: int = 12, tile: int = 96) -> None:
    """reference | one labelled column per variant, one held-out job per row (the lowest seeds first)."""
    from PIL import Image

    from ..sheet import image_sheet, save_sheet

    order = sorted(range(len(jobs)), key=lambda i: (jobs[i][3], i))[:rows]
    sheet_rows = []
    for index in order:
        with Image.open(jobs[index][1].path) as reference:
            sheet_rows.append([reference.convert("RGB")] + [stack[index] for stack in images.values()])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_sheet(image_sheet(sheet_rows, ["reference", *images], tile=tile), path)


def heldout_pairs(world, count: int) -> list[tuple]:
    """(identity, reference render path, benchmark prompt, target image) for held-out identities: the target is the
    identity rendered in the prompt's scene (fixed seeds), what a perfect generation would look like."""
    from .world import render

    jobs = benchmark_jobs(world, max(1, -(-count // len(world.heldout))))[:count]
    return [(h.identity, reference.path, benchmark, render(h.identity, benchmark.scene, 9_000 + k))
            for k, (h, reference, benchmark, _) in enumerate(jobs)]


@torch.no_grad()
def denoising_losses(run, trained: Path, count: int = 90, seed: int = 0) -> dict[str, float]:
    """The flow-matching loss of a trained model on held-out pairs, at the same noise and times, given the right
    reference, no reference, and another identity's reference (MLLM branch; and with the reference latents too):
    how much of the target the reference explains, read without the judge. Beside it, the base FLUX given the
    target's full caption (which names every identity detail) and only its prompt: what knowing the details is worth
    to this generator at all."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    from ..conditioning import encode_conditioning
    from ..flux import flux_velocity, load_flux_transformer
    from ..sampling import to_model_space
    from ..train.step import sample_timesteps
    from ..vae import vae_encode
    from .data import load_world
    from .flux_base import MiniTextEncoder
    from .world import caption

    pipe = load_squeeze_pipeline(run, trained)
    text = MiniTextEncoder.from_pretrained(run.models / "flux")
    base = load_flux_transformer(run.models / "flux" / "transformer", dtype=torch.float32)
    pairs = heldout_pairs(load_world(run.world_dir), count)
    generator = torch.Generator().manual_seed(seed)
    losses: dict[str, list[float]] = {}

    def pixels(image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]

    for k, (identity, reference_path, benchmark, target) in enumerate(pairs):
        x0 = to_model_space(vae_encode(pipe.vae, pixels(target)))
        noise = torch.randn(x0.shape, generator=generator)
        t = sample_timesteps(generator, 1, 64, 64)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        with Image.open(reference_path) as opened:
            reference = opened.convert("RGB")
        with Image.open(pairs[(k + len(pairs) // 2) % len(pairs)][1]) as opened:
            wrong = opened.convert("RGB")
        latents = {id(image): to_model_space(vae_encode(pipe.vae, pixels(image))) for image in (reference, wrong)}

        def loss(transformer, context, pooled, references=()) -> float:
            return float(F.mse_loss(flux_velocity(transformer, xt, t, context, pooled, 1.0, references), noise - x0))

        cases = {}
        for name, refs in (("right reference", [[reference]]), ("no reference", None), ("wrong reference", [[wrong]])):
            cond = encode_conditioning(pipe.encoder, pipe.dla, [benchmark.prompt], refs).item(0)
            cases[f"Squeeze, MLLM: {name}"] = loss(pipe.transformer, cond.context, cond.pooled)
            if refs is not None:
                cases[f"Squeeze, MLLM + VAE latents: {name}"] = loss(pipe.transformer, cond.context, cond.pooled, [latents[id(refs[0][0])]])
        for name, words in (("full caption", caption(identity, benchmark.scene)), ("prompt only", benchmark.prompt)):
            context, _, pooled = text.encode([words])
            cases[f"base FLUX: {name}"] = loss(base, context, pooled)
        for name, value in cases.items():
            losses.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in losses.items()}


AGGREGATIONS = ("dual", "joint", "last_layer")  # the paper's aggregator ablation: DLA, one joint LAP, last layer only
AGGREGATOR_VARIANTS = ("staged", "mllm_only")  # what the other aggregators are scored on (MLLM only isolates them)
METRICS = ("identity", "prompt", "copy_paste")


def summarize(scores: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """{"<aggregation>-seed<n>": {variant: scores}} -> {aggregation: {variant: {metric: [mean, std over seeds, seeds]}}}."""
    import statistics

    grouped: dict[str, dict[str, dict[str, list[float]]]] = {}
    for model, variants in scores.items():
        aggregation = model.rsplit("-seed", 1)[0]
        for variant, values in variants.items():
            for metric in METRICS:
                grouped.setdefault(aggregation, {}).setdefault(variant, {}).setdefault(metric, []).append(values[metric])
    return {aggregation: {variant: {metric: [statistics.fmean(v), statistics.pstdev(v), len(v)] for metric, v in metrics.items()}
                          for variant, metrics in variants.items()} for aggregation, variants in grouped.items()}


def run_squeeze_phase(run, config: MiniSqueezeConfig | None = None, seeds: int | None = None, progress: bool = True) -> dict:
    """Train Squeeze (both stages) with each aggregator and `seeds` seeds, score every inference variant of the DLA
    models and the staged / MLLM-only variants of the others, then the published model (RELEASE_MODEL: the first
    DLA model's stage 2 continued for `release_stage2_steps`), scored on every variant; the judge-free measures of the
    VAE branch for every model (probe.probe_run) -> stats/squeeze.json. Starts from an empty
    `squeeze/` folder: models trained on an earlier run's base models are never reused."""
    import dataclasses
    import shutil

    from ..errors import SqueezeInputError

    needed = [run.models / "mllm" / "config.json", run.models / "flux" / "transformer" / "config.json",
              run.models / "vae" / "config.json", run.models / "judge.safetensors", run.world_dir / "pairs.jsonl"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise SqueezeInputError(f"'{run.out}' lacks {', '.join(missing)}: run `squeeze mini world --out {run.out}` and "
                                f"`squeeze mini pretrain --out {run.out}` first (or `squeeze mini all`).")
    config = config or (MiniSqueezeConfig.quick() if run.quick else MiniSqueezeConfig())
    seeds = seeds or (1 if run.quick else 3)
    root = run.out / "squeeze"
    shutil.rmtree(root, ignore_errors=True)
    stats = dict(config=asdict(config), seeds=[run.seed + k for k in range(seeds)], training={}, scores={}, seconds={})

    def train_and_score(name: str, model_config: MiniSqueezeConfig, names=None, grid=None, stage1=None) -> dict:
        start = time.perf_counter()
        training = train_squeeze(run, model_config, root / name, stage1=stage1)
        stats["seconds"][f"squeeze {name}: training"] = time.perf_counter() - start
        start = time.perf_counter()
        evaluation = evaluate_squeeze(run, root / name / "stage2", model_config, names, progress, grid=grid)
        stats["seconds"][f"squeeze {name}: generating and scoring"] = time.perf_counter() - start
        start = time.perf_counter()
        losses = denoising_losses(run, root / name / "stage2", config.loss_pairs)
        stats["seconds"][f"squeeze {name}: denoising losses"] = time.perf_counter() - start
        return dict(training=training, scores=evaluation["scores"], denoising_losses=losses, layer_weights=evaluation["layer_weights"])

    for aggregation in AGGREGATIONS:
        for seed in stats["seeds"]:
            name = f"{aggregation}-seed{seed}"
            first = aggregation == "dual" and seed == run.seed
            result = train_and_score(name, dataclasses.replace(config, aggregation=aggregation, seed=seed),
                                     None if aggregation == "dual" else AGGREGATOR_VARIANTS,
                                     grid=run.out / "stats" / "squeeze_modes.png" if first else None)
            stats["training"][name], stats["scores"][name] = result["training"], result["scores"]
            stats.setdefault("denoising_losses", {})[name] = result["denoising_losses"]
            if first:
                stats["layer_weights"] = result["layer_weights"]
    # the published model: the first DLA model's stage 1, stage 2 continued for release_stage2_steps
    release = dataclasses.replace(config, seed=run.seed).release()
    stats["release"] = dict(config=asdict(release), stage1=f"dual-seed{run.seed}", **train_and_score(
        RELEASE_MODEL, release, grid=run.out / "stats" / "squeeze_release.png", stage1=root / f"dual-seed{run.seed}" / "stage1"))
    stats["summary"] = summarize(stats["scores"])
    from .probe import probe_run

    start = time.perf_counter()
    stats["reference_probe"] = probe_run(run, progress=progress)
    stats["seconds"]["squeeze: the VAE branch without the judge (every model)"] = time.perf_counter() - start
    path = run.stats_path("squeeze")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(stats, indent=1))
    return stats
