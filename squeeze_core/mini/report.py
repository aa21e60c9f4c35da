"""The miniature's report: docs/mini/README.md and its pictures, written from a run's stats and files.

    write_report(MiniRun("runs/mini"), "docs/mini")

Every figure in it is read from stats/*.json, which the phases wrote; nothing is typed in by hand except
`findings.md` (the interpretation), which is included as written when it exists in the docs folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

from ..eval.charts import heatmap, line_panels
from ..plots import _font
from .build import MiniRun, read_stats
from .data import load_world
from .world import IDENTITY_ATTRIBUTES, SCENE_ATTRIBUTES

SCALE = 2  # 64 px images drawn at 128 px


def _tile(path_or_image) -> Image.Image:
    image = Image.open(path_or_image).convert("RGB") if isinstance(path_or_image, (str, Path)) else path_or_image
    return image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)


def _captioned_rows(rows: list[tuple[list, str]], text_width: int = 560) -> Image.Image:
    """Each row: some images side by side, then a line of text."""
    side = 64 * SCALE
    width = max(len(images) for images, _ in rows) * (side + 4) + text_width
    sheet = Image.new("RGB", (width, len(rows) * (side + 4)), "white")
    draw, font = ImageDraw.Draw(sheet), _font(14)
    for r, (images, text) in enumerate(rows):
        y = r * (side + 4)
        for c, image in enumerate(images):
            sheet.paste(_tile(image), (c * (side + 4), y))
        x = len(images) * (side + 4) + 8
        for k, line in enumerate(_wrap(text, 64)):
            draw.text((x, y + 8 + 18 * k), line, fill="black", font=font)
    return sheet


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if len(current) + len(word) + 1 > width and current:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current]


def _losses(curves: dict[str, list[float]], path: Path) -> None:
    panels, labels = {}, []
    for name, values in curves.items():
        bucket = max(1, len(values) // 20)  # 20 points a curve: the mean of each window
        means = [sum(values[i : i + bucket]) / len(values[i : i + bucket]) for i in range(0, len(values), bucket)][:20]
        panels[f"{name} (mean of {bucket} steps)"] = means
        labels = [str(i) for i in range(1, len(means) + 1)]
    line_panels(labels, {k: v + [None] * (len(labels) - len(v)) for k, v in panels.items()},
                title="training loss (x: window of steps)").save(path)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def write_report(run: MiniRun, docs) -> Path:
    docs = Path(docs)
    world_stats, pretrain = read_stats(run, "world"), read_stats(run, "pretrain")  # before anything is written
    world = load_world(run.world_dir)
    docs.mkdir(parents=True, exist_ok=True)
    parts = ["# Squeeze Mini: the world, its metrics, the base models, and Squeeze trained on them",
             "", f"Run: `squeeze mini all --seed {run.seed}{' --quick' if run.quick else ''}` "
             f"(`--out {run.out}`). Every number below is read from the run's `stats/*.json`.", ""]
    findings = docs / "findings.md"
    if findings.is_file():
        parts += [findings.read_text(encoding="utf-8"), ""]

    # ---------------------------------------------------------------- the world
    rows = [([r.path for r in t.renders[:6]], t.identity.details()) for t in world.train[:6]]
    _captioned_rows(rows).save(docs / "renders.png")
    pairs = [line for line in (run.world_dir / "pairs.jsonl").read_text(encoding="utf-8").splitlines()[:8]]
    pair_rows = [([run.world_dir / p["references"][0], run.world_dir / p["target"]], f"prompt: {p['prompt']}")
                 for p in map(json.loads, pairs)]
    _captioned_rows(pair_rows).save(docs / "pairs.png")
    held = Image.new("RGB", (10 * 64 * SCALE, ((len(world.heldout) + 9) // 10) * 64 * SCALE), "white")
    for i, h in enumerate(world.heldout):
        held.paste(_tile(h.references[0].path), ((i % 10) * 64 * SCALE, (i // 10) * 64 * SCALE))
    held.save(docs / "heldout_references.png")
    w = world_stats["world"]
    parts += ["## The world", "",
              f"{w['train_identities']} training identities drawn in {w['train_renders']} renders, {w['pairs']} Squeeze "
              f"training pairs (`world/pairs.jsonl`, the training manifest format), {w['heldout_identities']} held-out "
              f"identities with {w['benchmark_prompts']} benchmark prompts. Images are 64 x 64 px.", "",
              "Six renders each of six training identities (each row one identity, its details on the right):", "",
              "![renders](renders.png)", "", "Training pairs: reference, target, and the prompt (class word + target scene only):", "",
              "![pairs](pairs.png)", "", "The held-out identities' first references (never seen by any training):", "",
              "![held-out](heldout_references.png)", ""]

    # ---------------------------------------------------------------- the judge
    validation = world_stats["judge"]["validation"]
    cases = [k for k in validation if k != "attribute accuracy"]
    parts += ["## The metrics, validated before they judge", "",
              "The judge reads every attribute off an image. Identity score = share of the six identity details read as "
              "the reference identity's (DINO-I's role); identified = the most likely of the held-out identities is the "
              "right one; prompt score = share of the four scene attributes read as the prompt asked (CLIP-T's role); "
              "copy-paste = share of position / size read as the reference's where the prompt asked otherwise.", "",
              "Controlled renders of the held-out identities in their benchmark scenes (none seen by the judge):", "",
              _table(["case", "images", "identity", "identified", "prompt", "copy-paste"],
                     [[c, validation[c]["images"], validation[c]["identity"], validation[c]["identified"], validation[c]["prompt"],
                       validation[c]["copy_paste"]] for c in cases]), "",
              "Per-attribute accuracy on ground truth: "
              + ", ".join(f"{k} {v:.3f}" for k, v in validation["attribute accuracy"].items()), ""]

    # ---------------------------------------------------------------- VAE and FLUX
    vae, flux = pretrain["vae"], pretrain["flux"]
    for name in ("vae_reconstructions", "flux_samples", "heldout_truth"):
        shutil.copyfile(run.out / "stats" / f"{name}.png", docs / f"{name}.png")
    parts += ["## The VAE", "",
              f"diffusers `AutoencoderKL`, 16 latent channels, 8x down, FLUX's scaling/shift; {vae['parameters']:,} parameters.",
              f"Held-out PSNR {vae['validation']['psnr_heldout']:.2f} dB; the judge reads the reconstructions with identity "
              f"score {vae['validation']['identity_of_reconstructions']:.3f} and prompt score "
              f"{vae['validation']['prompt_of_reconstructions']:.3f}.", "",
              "Held-out renders (top) and their reconstructions (bottom):", "", "![truth](heldout_truth.png)", "",
              "![reconstructions](vae_reconstructions.png)", "",
              "## The base FLUX (text to image)", "",
              f"diffusers `FluxTransformer2DModel`, {flux['parameters']:,} parameters, "
              f"with its own T5 encoder ({flux['text_parameters']:,}).",
              f"Sampled for {flux['validation']['captions']} held-out captions (identities no model has seen) with the euler + real CFG "
              f"sampler Squeeze uses: identity score {flux['validation']['identity']:.3f}, "
              f"prompt score {flux['validation']['prompt']:.3f}.", "",
              "Per-attribute accuracy of the samples: "
              + ", ".join(f"{k} {v:.3f}" for k, v in flux["validation"]["attribute_accuracy"].items()), "",
              "Samples for the captions of the held-out renders shown above, in the same order:", "", "![samples](flux_samples.png)", ""]

    # ---------------------------------------------------------------- MLLM
    parts += _mllm_section(pretrain["mllm"], docs, run.out / "stats" / "mllm_examples")

    # ---------------------------------------------------------------- Squeeze
    squeeze = read_stats(run, "squeeze") if run.stats_path("squeeze").is_file() else None
    if squeeze is not None and "reference_probe" not in squeeze:  # a run trained before the probe joined the train phase
        squeeze = _add_reference_probe(run, squeeze)
    if squeeze is not None:
        parts += _squeeze_section(squeeze, docs, run)

    # ---------------------------------------------------------------- curves and times
    curves = {"judge": world_stats["judge"]["losses"], "vae": vae["losses"], "flux": flux["losses"],
              "mllm": pretrain["mllm"]["loss_curve"]}
    if squeeze is not None:
        first = f"dual-seed{squeeze['seeds'][0]}"
        curves.update({f"squeeze {first} {stage}": v["losses"] for stage, v in squeeze["training"][first].items()})
        if "release" in squeeze:
            curves["squeeze release stage2"] = squeeze["release"]["training"]["stage2"]["losses"]
    _losses(curves, docs / "losses.png")
    times = {**world_stats["seconds"], **pretrain["seconds"]}
    if squeeze is not None:
        times.update(squeeze["seconds"])
    parts += ["## Training curves and wall time", "", "![losses](losses.png)", "",
              _table(["phase", "seconds"], [[k, round(v, 1)] for k, v in times.items()] + [["total", round(sum(times.values()), 1)]]), ""]
    path = docs / "README.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


AGGREGATOR_NAMES = {"dual": "DLA (two LAPs: text, image)", "joint": "one joint LAP", "last_layer": "last MLLM layer only"}


def _mean_spread(metrics: dict, metric: str) -> str:
    mean, spread, count = metrics[metric]
    return f"{mean:.3f} ± {spread:.3f}" if count > 1 else f"{mean:.3f}"


def _loss_lines(stats: dict) -> list[str]:
    """The judge-free reading: flow-matching losses on held-out pairs with the right, no and a wrong reference."""
    import statistics

    losses = stats.get("denoising_losses")
    if not losses:
        return []
    by_aggregation: dict[str, list[dict]] = {}
    for model, values in losses.items():
        by_aggregation.setdefault(model.rsplit("-seed", 1)[0], []).append(values)
    names = list(next(iter(losses.values())))
    rows = [[name] + [f"{statistics.fmean(v[name] for v in runs):.4f}" for runs in by_aggregation.values()] for name in names]
    return ["### What the reference is worth to the denoiser (no judge)", "",
            f"Flow-matching loss on {stats['config']['loss_pairs']} held-out pairs (the target: the identity rendered in the "
            "prompt's scene), the same noise and times in every cell, mean over each aggregator's seeds. The base FLUX "
            "rows (the same in every column) show what naming every identity detail is worth to this generator at all:", "",
            _table(["conditioning"] + [AGGREGATOR_NAMES.get(a, a) for a in by_aggregation], rows), ""]


def _squeeze_section(stats: dict, docs: Path, run: MiniRun) -> list[str]:
    config, summary = stats["config"], stats["summary"]
    shutil.copyfile(run.out / "stats" / "squeeze_modes.png", docs / "squeeze_modes.png")
    weights = stats["layer_weights"]
    heatmap({f"{kind} tokens": values for kind, values in weights.items()},
            title="trained DLA: mean weight per MLLM layer").save(docs / "dla_layer_weights.png")
    first = f"dual-seed{stats['seeds'][0]}"
    dual = stats["scores"][first]
    images = next(iter(dual.values()))["images"]
    seeds = len(stats["seeds"])
    spread = f"mean ± standard deviation over {seeds} training seeds ({', '.join(map(str, stats['seeds']))})" if seeds > 1 else "one seed"
    metrics_of = ("identity", "prompt", "copy_paste")
    rows = [[dual[name]["label"], dual[name]["group"]] + [_mean_spread(metrics, m) for m in metrics_of]
            for name, metrics in summary["dual"].items()]
    aggregator_rows = [[AGGREGATOR_NAMES.get(aggregation, aggregation), variant] + [_mean_spread(metrics, m) for m in metrics_of]
                       for aggregation, variants in summary.items() for variant, metrics in variants.items()
                       if variant in ("staged", "mllm_only")]
    return ["## Squeeze trained on the world (part 2)", "",
            f"`squeeze train`'s code, unchanged, on the miniature InternVL3, FLUX and VAE above and the world's "
            f"`pairs.jsonl`: training stage 1 (MLLM-only conditioning) for {config['stage1_steps']} steps, then training "
            f"stage 2 (+ VAE reference latents) for {config['stage2_steps']} steps; batch {config['batch_size']}, LoRA rank "
            f"{config['lora_rank']}, learning rate {config['learning_rate']}. Each trained model generates {images} held-out "
            f"images per variant ({images // config['eval_prompts']} held-out identities x their first {config['eval_prompts']} "
            f"benchmark prompts, the first reference, {config['eval_steps']} steps, CFG {config['cfg']}, the same seeds in every "
            f"variant), scored by the judge. Figures: {spread}.", "",
            "### Inference variants of the DLA models", "",
            _table(["variant", "group", "identity", "prompt", "copy-paste"], rows), "",
            *_loss_lines(stats),
            "### The aggregator ablation", "",
            _table(["aggregator", "variant", "identity", "prompt", "copy-paste"], aggregator_rows), "",
            f"Rows: held-out identities ({first}); columns: the reference, then every variant (labelled), the same seed in each:", "",
            "![variants](squeeze_modes.png)", "",
            f"The trained DLA's ({first}) mean weight per MLLM layer, for text and for image tokens (over the benchmark prompts):", "",
            "![DLA layer weights](dla_layer_weights.png)", "",
            _table(["tokens"] + [f"layer {i}" for i in range(len(next(iter(weights.values()))))],
                   [[kind] + values for kind, values in weights.items()]), "",
            *_release_lines(stats, docs, run),
            *_probe_lines(stats)]


def _add_reference_probe(run: MiniRun, stats: dict) -> dict:
    """The train phase's judge-free measures, computed now and written into stats/squeeze.json (atomically)."""
    import time

    from ..files import atomic_write_text
    from .probe import probe_run

    start = time.perf_counter()
    stats["reference_probe"] = probe_run(run)
    stats["seconds"]["squeeze: the VAE branch without the judge (every model)"] = time.perf_counter() - start
    atomic_write_text(run.stats_path("squeeze"), json.dumps(stats, indent=1))
    return stats


def _probe_lines(stats: dict) -> list[str]:
    probes = stats["reference_probe"]
    first = next(iter(probes.values()))
    layers = list(first["attention_to_references"])
    config = first["config"]
    rows = [[name, f"{p['difference']:+.4f} ± {p['stderr']:.4f}", f"{p['loss_right']:.4f} / {p['loss_wrong']:.4f} / {p['loss_none']:.4f}"]
            + [f"{p['attention_to_references'][layer]:.3f}" for layer in layers] for name, p in probes.items()]
    return ["### The VAE branch without the judge", "",
            f"On {config['pairs']} held-out pairs (a held-out identity's first reference; the identity rendered in a benchmark "
            "scene as the target), VAE-only conditioning (the DLA reads the prompt alone; the reference reaches FLUX only as "
            f"latents at UNO's positions; the base FLUX reads its own T5 encoding of the prompt), the target noised at flow "
            f"times {', '.join(map(str, config['times']))} with {config['noise_seeds']} noise seeds each: the flow-matching loss on the "
            "target tokens with another identity's reference latents minus the loss with the right ones (\"wrong - right\"; "
            "positive: the branch reads identity; ± the standard error over pairs), the three losses, and per attention layer "
            "the share of the target tokens' attention on reference tokens (`squeeze_core/mini/probe.py`).", "",
            _table(["model", "wrong - right", "loss right / wrong / none"] + [f"attention, {layer}" for layer in layers], rows), ""]


def _release_lines(stats: dict, docs: Path, run: MiniRun) -> list[str]:
    """The published model: the first DLA model's stage 1, stage 2 continued for release_stage2_steps."""
    release = stats.get("release")
    if release is None:
        return []
    shutil.copyfile(run.out / "stats" / "squeeze_release.png", docs / "squeeze_release.png")
    scores, first = release["scores"], stats["scores"][release["stage1"]]
    rows = [[scores[name]["label"]] + [f"{scores[name][m]:.3f}" for m in ("identity", "prompt", "copy_paste")]
            + [f"{first[name]['identity']:.3f}"] for name in ("staged", "mllm_only", "vae_only", "refs_every_step", "prompt_only")]
    steps = release["config"]["stage2_steps"]
    return ["### The published model", "",
            f"What `squeeze mini publish` ships and every verb uses by default: {release['stage1']}'s stage 1, then stage 2 for "
            f"{steps} steps instead of {stats['config']['stage2_steps']} (identity rises with stage-2 length; too slowly to train "
            f"every ablation model so long). The same {next(iter(scores.values()))['images']} held-out images per variant:", "",
            _table(["variant", "identity", "prompt", "copy-paste", f"identity after {stats['config']['stage2_steps']} steps"], rows), "",
            "![published model's variants](squeeze_release.png)", ""]


def _mllm_section(stats: dict, docs: Path, examples_dir: Path) -> list[str]:
    validation, probe = stats["validation"], stats["probe"]
    lines = ["## The InternVL3 (describes held-out images)", "",
             f"InternVL3 architecture (InternViT + Qwen2, {probe['layers']} decoder layers), {stats['parameters']:,} parameters, "
             f"final training loss {stats['final_loss']:.4f}. Asked \"Describe the image.\" about {validation['n']} held-out renders "
             f"(identities it never saw), its answers are parsed back into attributes: whole caption right "
             f"{validation['exact']:.3f}.", "",
             "Per-attribute accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in validation["accuracy"].items()), ""]
    examples = validation.get("examples", [])[:8]
    if examples:
        _captioned_rows([([examples_dir / e["image"]], f"truth: {e['truth']} | answer: {e['answer']}") for e in examples],
                        text_width=900).save(docs / "mllm_answers.png")
        lines += ["Held-out renders, the true caption and the MLLM's answer:", "", "![answers](mllm_answers.png)", ""]
    heat = {f"{short} {attribute}": values for feature, short in (("image_mean", "I"), ("last_token", "L"))
            for attribute, values in probe[feature].items()}
    heatmap(heat, title="probe accuracy per MLLM layer (I: image-token mean, L: last token)").save(docs / "mllm_probe.png")
    lines += ["How the layers differ: a ridge probe per layer, fitted on training renders and tested on held-out renders, on "
              "the mean of the image tokens (I) and on the last token (L) of an empty-prompt turn, for identity details "
              f"({', '.join(IDENTITY_ATTRIBUTES)}) and scene attributes ({', '.join(SCENE_ATTRIBUTES)}). Always guessing the "
              "most common value scores: " + ", ".join(f"{k} {v:.2f}" for k, v in probe["majority"].items()) + ".", "",
              "![probe](mllm_probe.png)", "",
              _table(["feature, attribute"] + [f"layer {i}" for i in range(probe["layers"])],
                     [[name] + values for name, values in heat.items()]), ""]
    return lines
