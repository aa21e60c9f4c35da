"""The paper's ablations in one run, and the report that shows them.

    rows = run_ablations(pipe, bench, "ablations/", GenerateConfig(prompt=""), dino, clip)
    write_report("ablations/", rows, layer_weights(pipe, bench))     # report.md + PNG charts

Variants (each generated into its own folder, resumable, then scored):
    branches   mllm_only, vae_only, refs_every_step (see pipeline.CONDITIONING_MODES), and staged at the defaults
    tau        staged over a grid of (tau1, tau2)
    layers     staged with the DLA restricted to the early / middle / late third of the MLLM's layers: one trained
               DLA whose per-layer weights are renormalised over the group at inference (the paper trains a model per
               group; this asks what each group contributes to the DLA we have)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..pipeline import GenerateConfig, SqueezePipeline
from .generate import generate_benchmark
from .metrics import PUBLISHED, score_folder

logger = logging.getLogger("squeeze.eval")

DEFAULT_TAUS = ((0.9, 0.1), (0.9, 0.3), (0.8, 0.2), (0.7, 0.1), (0.7, 0.3), (0.6, 0.2))
METRICS = (("dino_i", "DINO-I"), ("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"), ("copy_paste", "copy-paste"))


@dataclass
class Variant:
    name: str  # folder name
    label: str
    group: str  # "branches", "tau" or "layers"
    changes: dict  # GenerateConfig fields


def ablation_variants(num_layers: int, base: GenerateConfig, taus=DEFAULT_TAUS) -> list[Variant]:
    variants = [
        Variant("staged", f"staged {base.tau1}/{base.tau2} (Squeeze)", "branches", {}),
        Variant("mllm_only", "MLLM only", "branches", {"mode": "mllm_only"}),
        Variant("vae_only", "VAE only", "branches", {"mode": "vae_only"}),
        Variant("refs_every_step", "MLLM + VAE in every step", "branches", {"mode": "refs_every_step"}),
    ]
    variants += [Variant(f"tau_{t1}_{t2}", f"{t1}/{t2}", "tau", {"tau1": t1, "tau2": t2}) for t1, t2 in taus]
    third = num_layers / 3
    for index, label in enumerate(("early", "middle", "late")):
        start, end = round(index * third), round((index + 1) * third)
        variants.append(Variant(f"layers_{label}", f"DLA {label} layers {start}-{end - 1}", "layers", {"dla_layers": (start, end)}))
    return variants


def run_ablations(pipe: SqueezePipeline, bench, out_dir, base: GenerateConfig, dino, clip, variants=None, seeds: int = 1,
                  prompt_indices=None, rank: int = 0, world_size: int = 1, barrier=lambda: None, progress: bool = True) -> list[dict]:
    """Generate (this process's share) and score (process 0) every variant; returns the table rows on process 0."""
    out_dir = Path(out_dir)
    variants = variants or ablation_variants(pipe.dla.config.num_layers, base)
    for variant in variants:
        generate_benchmark(pipe, bench, out_dir / variant.name, dataclasses.replace(base, **variant.changes), seeds,
                           prompt_indices, rank, world_size, progress)
    barrier()
    if rank != 0:
        return []
    rows = []
    for variant in variants:
        scores = score_folder(out_dir / variant.name, bench, dino, clip, prompt_indices, progress=False)["overall"]
        rows.append({"name": variant.name, "label": variant.label, "group": variant.group,
                     **{key: scores[key] for key, _ in METRICS}, "images": scores["images"]})
        logger.info("%s: %s", variant.label, scores)
    (out_dir / "ablations.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


@torch.no_grad()
def layer_weights(pipe: SqueezePipeline, bench, prompt_indices=None) -> dict[str, list[float]]:
    """Mean per-layer DLA weight of text and of image tokens over the benchmark's prompts with their reference."""
    from .metrics import open_rgb

    pairs = []
    for subject in bench.subjects.values():
        reference = open_rgb(subject.reference)
        pairs += [(subject.prompts[i], reference) for i in (prompt_indices if prompt_indices is not None else range(len(subject.prompts)))]
    return mean_dla_layer_weights(pipe, pairs)


@torch.no_grad()
def mean_dla_layer_weights(pipe: SqueezePipeline, prompts_and_references) -> dict[str, list[float]]:
    """Mean per-layer DLA weight of text and of image tokens over (prompt, reference image) pairs."""
    from ..conditioning import encode_conditioning
    from ..plots import mean_layer_weights

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for prompt, reference in prompts_and_references:
        cond = encode_conditioning(pipe.encoder, pipe.dla, [prompt], [[reference]]).item(0)
        for kind, weights in mean_layer_weights(cond.layer_weights[0], cond.token_types[0]).items():
            sums[kind] = sums.get(kind, 0) + weights
            counts[kind] = counts.get(kind, 0) + 1
    return {kind: (sums[kind] / counts[kind]).tolist() for kind in sums}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_report(out_dir, rows: list[dict], weights: dict[str, list[float]], note: str = "") -> Path:
    """report.md with three PNG charts beside it; returns the report's path."""
    from .charts import grouped_bars, heatmap, line_panels

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tau_rows = [r for r in rows if r["group"] == "tau"]
    line_panels([r["label"] for r in tau_rows], {label: [r[key] for r in tau_rows] for key, label in METRICS},
                title="Staged sampler: metrics over (tau1 / tau2)").save(out_dir / "tau_sweep.png")
    heatmap({f"{kind} LAP": values for kind, values in weights.items()},
            title="DLA: mean weight per MLLM layer, text vs image tokens").save(out_dir / "layer_weights.png")
    systems = {r["label"]: r for r in rows if r["group"] in ("branches", "layers")}
    bars = {label: {name: row[key] for name, row in systems.items()} for key, label in METRICS[:3]}
    for name, published in PUBLISHED.items():
        for key, label in METRICS[:3]:
            bars[label][f"{name} (published)"] = published[key]
    grouped_bars(bars, title="DreamBench: ours beside the published rows").save(out_dir / "metrics.png")

    lines = ["# Squeeze evaluation on DreamBench", ""]
    if note:
        lines += [note, ""]
    lines += ["| variant | group | DINO-I | CLIP-I | CLIP-T | copy-paste | images |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['group']} | {_fmt(r['dino_i'])} | {_fmt(r['clip_i'])} | {_fmt(r['clip_t'])} | "
              f"{_fmt(r['copy_paste'])} | {r['images']} |" for r in rows]
    lines += ["", "Published rows (DESIGN.md):", "", "| system | DINO-I | CLIP-I | CLIP-T |", "|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(v['dino_i'])} | {_fmt(v['clip_i'])} | {_fmt(v['clip_t'])} |" for name, v in PUBLISHED.items()]
    lines += ["", "![metrics](metrics.png)", "", "![tau sweep](tau_sweep.png)", "", "![layer weights](layer_weights.png)", "",
              "Copy-paste: +1 = a copy of the reference, -1 = a copy of another photo of the subject, 0 = as far from both.", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
