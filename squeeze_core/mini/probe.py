"""Does the VAE reference branch read identity? Two judge-free measures on held-out pairs, for any FLUX (the base
model, or a Squeeze stage with its LoRA) given some conditioning plus the reference latents.

    probe = probe_squeeze(run, run.out / "squeeze/600-300/stage2")     # VAE only: prompt-only DLA + reference latents
    probe = probe_base_flux(run)                                        # the base FLUX: its T5 prompt + reference latents
    probe["difference"], probe["stderr"]       # loss(another identity's reference) - loss(the right one), over pairs
    probe["attention_to_references"]           # per layer: share of the target tokens' attention on reference tokens
    prior = reference_prior(run)                # the base FLUX's samples with the right / a wrong / no reference, judged

For each held-out pair (a held-out identity's first reference render and the identity rendered in a benchmark scene,
as `squeeze.heldout_pairs`) the target is noised at fixed flow times with fixed noise seeds, and the flow-matching
loss on the target tokens is taken three ways at the same noise: with the right reference's latents, with another
identity's (the pair half the list away, always another identity), and with none. `difference` = wrong - right,
averaged over the times and seeds of a pair, then over pairs; `stderr` is the standard error over pairs. Positive:
the branch reads the reference's identity (the right reference lowers the loss more than a wrong one).
`attention_to_references` is measured on the right-reference pass: for every attention layer (double blocks, then
single blocks), the softmax mass that target-token queries put on reference-token keys (text, target and reference
keys sum to 1), averaged over heads, target tokens, times, seeds and pairs.

`reference_prior` measures the base FLUX's in-context prior with the judge: for the same pairs it samples the
benchmark prompt (T5) with the right reference's latents, with another identity's, and with none, and scores each
image's identity against the pair's identity (the share of its six details read).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass
class ProbeConfig:
    pairs: int = 90  # held-out pairs (the benchmark's first jobs: 3 prompts x 30 identities)
    times: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)  # flow times the target is noised to (1 = pure noise)
    noise_seeds: int = 2  # noise draws per pair and time
    seed: int = 0

    @classmethod
    def quick(cls) -> "ProbeConfig":
        return cls(pairs=4, times=(0.5,), noise_seeds=1)


@dataclass
class ProbeItem:
    """One held-out pair, encoded: target and reference latents in model space (1, C, h, w), the conditioning."""

    target: torch.Tensor
    right: torch.Tensor
    wrong: torch.Tensor
    context: torch.Tensor  # (1, T, D)
    pooled: torch.Tensor  # (1, D)


class _RecordingProcessor:
    """FluxAttnProcessor's computation with the softmax written out, so the attention weights can be read: adds, per
    call, the mean mass target queries put on reference keys to `record[name]`. The image tokens are the sequence's
    last `target + references` tokens in both kinds of FLUX block (text tokens come first)."""

    def __init__(self, record: dict, name: str, target: int, references: int):
        self.record, self.name, self.target, self.references = record, name, target, references

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if attn.added_kv_proj_dim is not None:
            encoder_query, encoder_key, encoder_value = (
                x.unflatten(-1, (-1, attn.head_dim)) for x in (encoder_query, encoder_key, encoder_value))
            encoder_query, encoder_key = attn.norm_added_q(encoder_query), attn.norm_added_k(encoder_key)
            query, key, value = (torch.cat(pair, dim=1) for pair in ((encoder_query, query), (encoder_key, key), (encoder_value, value)))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # (B, heads, L, d)
        scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        elif attention_mask is not None:
            scores = scores + attention_mask
        weights = scores.softmax(dim=-1)
        length = weights.shape[-1]
        queries = weights[:, :, length - self.target - self.references : length - self.references]
        if self.references:
            self.record.setdefault(self.name, []).append(float(queries[..., length - self.references :].sum(-1).mean().detach()))
        hidden = (weights @ value).transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            text = encoder_hidden_states.shape[1]
            encoder_hidden, hidden = hidden.split_with_sizes([text, hidden.shape[1] - text], dim=1)
            return attn.to_out[1](attn.to_out[0](hidden.contiguous())), attn.to_add_out(encoder_hidden.contiguous())
        return hidden


def attention_layers(transformer) -> list[tuple[str, torch.nn.Module]]:
    """(name, attention module) of every FLUX block in order: "double 0", ..., "single 0", ..."""
    return ([(f"double {i}", block.attn) for i, block in enumerate(transformer.transformer_blocks)]
            + [(f"single {i}", block.attn) for i, block in enumerate(transformer.single_transformer_blocks)])


@contextmanager
def recording_attention(transformer, record: dict, target: int, references: int):
    """Within the block, every attention layer of `transformer` adds its target -> reference share to `record`."""
    layers = attention_layers(transformer)
    saved = [attn.processor for _, attn in layers]
    try:
        for name, attn in layers:
            attn.set_processor(_RecordingProcessor(record, name, target, references))
        yield record
    finally:
        for (_, attn), processor in zip(layers, saved):
            attn.set_processor(processor)


@torch.no_grad()
def reference_probe(transformer, items: list[ProbeItem], config: ProbeConfig | None = None) -> dict:
    """The two measures over `items` (see the module's docstring) -> {difference, stderr, loss_right, loss_wrong,
    loss_none, per_pair (wrong - right per item), attention_to_references {layer: share}, config}."""
    from ..flux import flux_velocity, pack

    config = config or ProbeConfig()
    if len(items) < 2:
        raise ValueError("reference_probe needs at least 2 pairs (the spread is over pairs)")
    generator = torch.Generator().manual_seed(config.seed)
    losses = {"right": [], "wrong": [], "none": []}
    record: dict[str, list[float]] = {}
    for item in items:
        times = torch.tensor(config.times, dtype=torch.float32).repeat_interleave(config.noise_seeds)
        x0 = item.target.expand(len(times), -1, -1, -1)
        noise = torch.randn(x0.shape, generator=generator)
        xt = (1 - times[:, None, None, None]) * x0 + times[:, None, None, None] * noise
        context, pooled = item.context.expand(len(times), -1, -1), item.pooled.expand(len(times), -1)

        def loss(references) -> float:
            return float(F.mse_loss(flux_velocity(transformer, xt, times, context, pooled, 1.0, references), noise - x0))

        with recording_attention(transformer, record, pack(item.target).shape[1], pack(item.right).shape[1]):
            losses["right"].append(loss([item.right]))
        losses["wrong"].append(loss([item.wrong]))
        losses["none"].append(loss([]))
    per_pair = torch.tensor(losses["wrong"]) - torch.tensor(losses["right"])
    return dict(difference=float(per_pair.mean()), stderr=float(per_pair.std() / math.sqrt(len(per_pair))),
                **{f"loss_{k}": float(torch.tensor(v).mean()) for k, v in losses.items()},
                per_pair=[float(v) for v in per_pair],
                attention_to_references={name: sum(v) / len(v) for name, v in record.items()}, config=asdict(config))


def _pixels(image) -> torch.Tensor:
    from ..images import to_image_batch

    return to_image_batch(image)


def heldout_items(world_dir, vae, condition, count: int) -> list[ProbeItem]:
    """ProbeItems for the first `count` held-out pairs; `condition(prompt) -> (context (1, T, D), pooled (1, D))`."""
    from PIL import Image

    from ..sampling import to_model_space
    from ..vae import vae_encode
    from .data import load_world
    from .squeeze import heldout_pairs

    pairs = heldout_pairs(load_world(world_dir), count)
    references = []
    for _, path, _, _ in pairs:
        with Image.open(path) as opened:
            references.append(to_model_space(vae_encode(vae, _pixels(opened))))
    items = []
    for k, (_, _, benchmark, target) in enumerate(pairs):
        context, pooled = condition(benchmark.prompt)
        items.append(ProbeItem(to_model_space(vae_encode(vae, _pixels(target))), references[k],
                               references[(k + len(pairs) // 2) % len(pairs)], context, pooled))
    return items


@torch.no_grad()
def probe_squeeze(run, trained: Path, config: ProbeConfig | None = None) -> dict:
    """The measures for a Squeeze stage folder (DLA + LoRA) in its VAE-only mode: the DLA reads the prompt alone,
    the reference reaches FLUX only as latents. `run`: anything with .models and .world_dir (a MiniRun, EmbeddedModels)."""
    from ..conditioning import encode_conditioning
    from .squeeze import load_squeeze_pipeline

    config = config or ProbeConfig()
    pipe = load_squeeze_pipeline(run, trained)

    def condition(prompt):
        encoded = encode_conditioning(pipe.encoder, pipe.dla, [prompt]).item(0)
        return encoded.context, encoded.pooled

    return reference_probe(pipe.transformer, heldout_items(run.world_dir, pipe.vae, condition, config.pairs), config)


@torch.no_grad()
def probe_base_flux(run, config: ProbeConfig | None = None) -> dict:
    """The measures for the base FLUX (no LoRA) given its own T5 encoding of the benchmark prompt + reference latents."""
    from ..flux import load_flux_transformer
    from ..vae import load_flux_vae
    from .flux_base import MiniTextEncoder

    config = config or ProbeConfig()
    text = MiniTextEncoder.from_pretrained(Path(run.models) / "flux")
    transformer = load_flux_transformer(Path(run.models) / "flux" / "transformer", dtype=torch.float32)
    vae = load_flux_vae(Path(run.models) / "vae", dtype=torch.float32)

    def condition(prompt):
        context, _, pooled = text.encode([prompt])
        return context, pooled

    return reference_probe(transformer, heldout_items(run.world_dir, vae, condition, config.pairs), config)


def probe_line(name: str, probe: dict) -> str:
    """One printable line: the difference with its standard error, the three losses, the attention shares."""
    shares = " ".join(f"{k.replace(' ', '')} {v:.3f}" for k, v in probe["attention_to_references"].items())
    return (f"{name}: wrong - right {probe['difference']:+.4f} ± {probe['stderr']:.4f} (loss right {probe['loss_right']:.4f}, "
            f"wrong {probe['loss_wrong']:.4f}, none {probe['loss_none']:.4f}); attention to references {shares}")


@torch.no_grad()
def reference_prior(run, count: int = 90, steps: int = 20, cfg: float = 3.0) -> dict:
    """The base FLUX of `run.models` drawing held-out pairs' prompts given reference latents -> {identity: {"right
    reference", "wrong reference", "no reference": mean identity score}, difference: right - wrong per pair, mean,
    stderr: its standard error over pairs, prompt: the same three for the prompt score}."""
    from PIL import Image

    from ..flux import load_flux_transformer
    from ..vae import load_flux_vae, vae_encode
    from .data import load_world
    from .flux_base import MiniTextEncoder, sample_base
    from .judge import identity_score, load_judge, prompt_score, read_images
    from .squeeze import heldout_pairs

    models = Path(run.models)
    text = MiniTextEncoder.from_pretrained(models / "flux")
    transformer = load_flux_transformer(models / "flux" / "transformer", dtype=torch.float32)
    vae = load_flux_vae(models / "vae", dtype=torch.float32)
    judge = load_judge(models / "judge.safetensors")
    pairs = heldout_pairs(load_world(run.world_dir), count)
    latents = []
    for _, path, _, _ in pairs:
        with Image.open(path) as opened:
            latents.append(vae_encode(vae, _pixels(opened)))
    prompts, seeds = [b.prompt for _, _, b, _ in pairs], list(range(len(pairs)))
    cases = {"right reference": latents, "wrong reference": [latents[(k + len(pairs) // 2) % len(pairs)] for k in seeds],
             "no reference": None}
    identity, prompt = {}, {}
    for name, references in cases.items():
        reading = read_images(judge, sample_base(transformer, text, vae, prompts, seeds, steps, cfg, progress=False,
                                                 references=references).movedim(-1, 1))
        identity[name] = identity_score(reading, [i for i, _, _, _ in pairs])
        prompt[name] = float(prompt_score(reading, [b.scene for _, _, b, _ in pairs]).mean())
    per_pair = (identity["right reference"] - identity["wrong reference"]).float()
    return dict(identity={k: float(v.float().mean()) for k, v in identity.items()}, prompt=prompt,
                difference=float(per_pair.mean()), stderr=float(per_pair.std() / math.sqrt(len(per_pair))), pairs=len(pairs))


def probe_run(run, config: ProbeConfig | None = None, progress: bool = True) -> dict:
    """The judge-free measures for every model of a mini run: the base FLUX, each trained model's stage 1 and stage 2,
    and the published model's stage 2 -> {"base FLUX": probe, "<model> stage1": probe, ...} (per_pair dropped)."""
    from tqdm.auto import tqdm

    config = config or (ProbeConfig.quick() if getattr(run, "quick", False) else ProbeConfig())
    root = Path(run.out) / "squeeze"
    folders = [(f"{model.name} {stage}", model / stage) for model in sorted(p for p in root.iterdir() if p.is_dir())
               for stage in ("stage1", "stage2") if (model / stage / "squeeze_dla.safetensors").is_file()]
    results = {}
    for name, folder in tqdm([("base FLUX", None), *folders], desc="probe: the VAE branch without the judge", disable=not progress):
        probe = probe_base_flux(run, config) if folder is None else probe_squeeze(run, folder, config)
        probe.pop("per_pair")
        results[name] = probe
    return results
