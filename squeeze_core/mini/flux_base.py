"""The miniature FLUX.1-dev: a small diffusers `FluxTransformer2DModel` with its own T5 text encoder, trained from
scratch as a text-to-image model of the world, so that Squeeze adapts a pretrained generator through a LoRA (as the
paper adapts FLUX.1-dev) instead of training one.

    transformer, text, stats = pretrain_flux(latents, captions, MiniFluxConfig())
    context, mask, pooled = text.encode(["a small red and blue striped toy ..."])
    images = sample_base(transformer, text, vae, captions, seeds)          # the euler + CFG sampler Squeeze uses
    save_mini_flux("runs/mini/models", transformer, text)                  # transformer/, text_encoder/, tokenizer/

As in FLUX.1, the transformer reads a sequence of text-encoder tokens (here a 2-layer T5 encoder, trained with it)
and a pooled vector (FLUX.1 takes CLIP's; here the masked mean of the T5 tokens, to keep one text model). Squeeze
replaces both with the DLA's output, so the text encoder is only needed to pretrain and to show the base model.
Captions name every identity detail; 10% are dropped to the empty caption, which is what CFG guides against.

The in-context prior (`MiniFluxConfig.panel_share`, 0.5 by default): FLUX.1-dev can draw one subject consistently
across the panels of one image, which is what reference latents at UNO's positions rely on. With panel_share > 0 that
share of the training steps draws two-panel canvases instead of single renders: two renders of one training identity
in different scenes, the first at the target's place (RoPE rows and columns 0-3), the second where a reference's
latents sit (diagonally past it, 4-7: the diagonal panels of a 2 x 2 grid, whose two empty panels are left out of the
sequence). The caption is the first panel's detail-free prompt ("a small toy on the beach, on the left"), so the
identity's details can only come from the other panel. `panel_clean` of these canvases give the second panel clean
and out of the loss, as Squeeze gives reference latents; the rest noise both panels at one time and denoise both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..flux import VAE_DOWNSCALE, flux_velocities, flux_velocity, latent_shape, vae_downscale
from ..phases import PhaseConditioning
from ..sampling import FluxConditioning, cosine_flux_sigmas, flux_noise, flux_resolution_shift, staged_euler
from ..train.step import sample_timesteps
from ..vae import vae_decode
from .schedule import optimise, warmup_cosine
from .vae import box_weights

logger = logging.getLogger("squeeze.mini.flux")
PAD, UNK, EOS = "<pad>", "<unk>", "</s>"


@dataclass
class MiniFluxConfig:
    seed: int = 0
    steps: int = 4_000  # about half of them on two-panel canvases (panel_share)
    batch_size: int = 24
    learning_rate: float = 1e-3
    caption_drop: float = 0.1  # P(empty caption): the unconditional branch of CFG
    heads: int = 4  # attention heads x 32 = transformer width (FLUX.1-dev: 24 x 128)
    double_blocks: int = 2  # FLUX.1-dev: 19
    single_blocks: int = 2  # FLUX.1-dev: 38
    text_dim: int = 64  # T5 width = FLUX context width = pooled width (FLUX.1: 4096 / 768)
    text_layers: int = 2
    # flow-matching loss weight of the latent cells under the subject's box; 1 is the plain loss. x4 draws the
    # asked-for body colour 0.617 of the time against 0.467 (docs/mini/findings.md)
    subject_weight: float = 4.0
    # the in-context prior (module docstring): the share of training steps on two-panel canvases of one identity, the
    # second panel where reference latents sit; 0 trains on single renders only. Without it the VAE reference branch
    # carries no identity in any Squeeze model trained on the miniature (docs/mini/README.md, "The in-context prior")
    panel_share: float = 0.5
    # share of two-panel canvases whose second panel is given clean and out of the loss, as Squeeze gives reference
    # latents; jointly noised canvases (0) teach this mini FLUX no prior at 4,000 steps
    panel_clean: float = 1.0

    def __post_init__(self):
        if not self.subject_weight > 0:
            raise ValueError(f"MiniFluxConfig.subject_weight must be > 0 (1 = the plain loss), got {self.subject_weight}")
        for name in ("panel_share", "panel_clean"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"MiniFluxConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def quick(cls) -> "MiniFluxConfig":
        return cls(steps=30, batch_size=8)


def build_text_tokenizer(texts):
    """A word-level tokenizer over the world's vocabulary (every word a caption can use), T5-style end token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in pre_tokenizers.Whitespace().pre_tokenize_str(text) for w in [w[0]]})
    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK] + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK)


class MiniTextEncoder:
    """The tokenizer and T5 encoder: captions -> (context (B, T, D), mask (B, T), pooled (B, D))."""

    def __init__(self, tokenizer, model):
        self.tokenizer, self.model = tokenizer, model

    def encode(self, captions: list[str]):
        batch = self.tokenizer(list(captions), padding=True, return_tensors="pt")
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return hidden, mask, pooled

    @classmethod
    def from_pretrained(cls, root) -> "MiniTextEncoder":
        from transformers import PreTrainedTokenizerFast, T5EncoderModel

        root = Path(root)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(root / "tokenizer", local_files_only=True)
        model = T5EncoderModel.from_pretrained(root / "text_encoder", local_files_only=True, use_safetensors=True)
        return cls(tokenizer, model.eval().requires_grad_(False))


def build_models(config: MiniFluxConfig, tokenizer):
    from diffusers import FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(config.seed)
    text_model = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=config.text_dim, d_kv=config.text_dim // 4, d_ff=2 * config.text_dim,
        num_layers=config.text_layers, num_heads=4, relative_attention_num_buckets=16, relative_attention_max_distance=32,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=config.double_blocks, num_single_layers=config.single_blocks,
        attention_head_dim=32, num_attention_heads=config.heads, joint_attention_dim=config.text_dim,
        pooled_projection_dim=config.text_dim, guidance_embeds=False, axes_dims_rope=(8, 12, 12),
    )
    return transformer, MiniTextEncoder(tokenizer, text_model)


def pretrain_flux(latents: torch.Tensor, captions: list[str], config: MiniFluxConfig | None = None, progress: bool = True,
                  downscale: int = VAE_DOWNSCALE, subject_boxes: torch.Tensor | None = None,
                  identities: list[int] | None = None, prompts: list[str] | None = None):
    """latents: (N, 16, h, w) raw VAE latents (the distribution's mode) of the training renders; captions: N texts;
    downscale: the VAE's pixels per latent cell (the timestep shift follows the image's pixel size);
    subject_boxes: (N, 4) px boxes of the subjects (`world.subject_box`), needed when config.subject_weight != 1;
    identities (N ints: which renders show one identity) and prompts (N detail-free prompts), needed when
    config.panel_share > 0. -> (transformer, text encoder, stats with the loss curve)."""
    from ..sampling import to_model_space

    config = config or MiniFluxConfig()
    partners = None
    if config.panel_share > 0:
        if identities is None or prompts is None or len(identities) != len(latents) or len(prompts) != len(latents):
            raise ValueError(f"MiniFluxConfig.panel_share={config.panel_share} needs identities and prompts, one per latent")
        members: dict[int, list[int]] = {}
        for index, identity in enumerate(identities):
            members.setdefault(int(identity), []).append(index)
        partners = [[j for j in members[int(identity)] if j != i] for i, identity in enumerate(identities)]
        if not all(partners):
            raise ValueError("MiniFluxConfig.panel_share > 0 needs at least two renders of every identity")
    weights = None
    if config.subject_weight != 1.0:
        if subject_boxes is None or subject_boxes.shape != (len(latents), 4):
            raise ValueError(f"MiniFluxConfig.subject_weight={config.subject_weight} needs subject_boxes of shape"
                             f" ({len(latents)}, 4); got {None if subject_boxes is None else tuple(subject_boxes.shape)}")
        cells = torch.cat([subject_boxes[:, :2] // downscale, -(-subject_boxes[:, 2:] // downscale)], dim=1)  # cells touched
        weights = box_weights(cells, latents.shape[-1], config.subject_weight)  # (N, 1, h, w)
    start = time.perf_counter()
    tokenizer = build_text_tokenizer(captions + list(prompts or []))
    transformer, text = build_models(config, tokenizer)
    transformer.train()
    text.model.train()
    parameters = list(transformer.parameters()) + list(text.model.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.01)
    schedule = warmup_cosine(optimiser, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    panels = torch.Generator().manual_seed(config.seed + 1)  # its own stream: panel_share=0 trains as before, bit for bit
    x0_all = to_model_space(latents)
    height, width = latents.shape[-2] * downscale, latents.shape[-1] * downscale
    losses, panel_losses = [], []
    bar = tqdm(range(config.steps), desc="flux: training", unit="step", disable=not progress)
    for _ in bar:
        if partners is not None and float(torch.rand(1, generator=panels)) < config.panel_share:
            loss = _panel_loss(transformer, text, x0_all, weights, partners, prompts, config, generator, panels, width, height)
            losses.append(optimise(optimiser, schedule, loss, clip_parameters=parameters))
            panel_losses.append(losses[-1])
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            continue
        index = torch.randint(0, len(latents), (config.batch_size,), generator=generator)
        drop = torch.rand(config.batch_size, generator=generator) < config.caption_drop
        batch_captions = ["" if d else captions[int(i)] for i, d in zip(index, drop)]
        context, mask, pooled = text.encode(batch_captions)
        x0 = x0_all[index]
        noise = torch.randn(x0.shape, generator=generator)
        t = sample_timesteps(generator, config.batch_size, width, height)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        velocity = flux_velocity(transformer, xt, t, context, pooled, context_mask=mask)
        if weights is None:
            loss = F.mse_loss(velocity, noise - x0)
        else:
            loss = ((velocity - (noise - x0)).square() * weights[index]).sum() / (weights[index].sum() * x0.shape[1])
        losses.append(optimise(optimiser, schedule, loss, clip_parameters=parameters))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    transformer.eval().requires_grad_(False)
    text.model.eval().requires_grad_(False)
    count = sum(p.numel() for p in transformer.parameters())
    return transformer, text, dict(losses=losses, panel_losses=panel_losses, seconds=time.perf_counter() - start, parameters=count,
                                   text_parameters=sum(p.numel() for p in text.model.parameters()))


def _panel_loss(transformer, text, x0_all, weights, partners, prompts, config, generator, panels, width, height):
    """One batch of two-panel canvases (module docstring): the loss on the first panel, plus the second's where it is
    noised too."""
    batch = config.batch_size
    index = torch.randint(0, len(x0_all), (batch,), generator=generator)
    partner = torch.tensor([partners[int(i)][int(torch.randint(0, len(partners[int(i)]), (1,), generator=panels))] for i in index])
    drop = torch.rand(batch, generator=generator) < config.caption_drop
    context, mask, pooled = text.encode(["" if d else prompts[int(i)] for i, d in zip(index, drop)])
    x0, x1 = x0_all[index], x0_all[partner]
    noise, noise1 = torch.randn(x0.shape, generator=generator), torch.randn(x1.shape, generator=generator)
    t = sample_timesteps(generator, batch, width, height)[:, None, None, None]
    clean = (torch.rand(batch, generator=panels) < config.panel_clean)[:, None, None, None]
    xt = (1 - t) * x0 + t * noise
    x1t = torch.where(clean, x1, (1 - t) * x1 + t * noise1)
    velocity, velocity1 = flux_velocities(transformer, xt, t.flatten(), context, pooled, references=[x1t], context_mask=mask)
    w0 = torch.ones_like(x0[:, :1]) if weights is None else weights[index]
    w1 = (torch.ones_like(x1[:, :1]) if weights is None else weights[partner]) * (~clean)
    error = (velocity - (noise - x0)).square() * w0 + (velocity1 - (noise1 - x1)).square() * w1
    return error.sum() / ((w0.sum() + w1.sum()) * x0.shape[1])


@torch.no_grad()
def sample_base(transformer, text: MiniTextEncoder, vae, captions: list[str], seeds: list[int], steps: int = 20,
                cfg: float = 3.0, size: int = 64, progress: bool = True, references: list | None = None) -> torch.Tensor:
    """Text-to-image with the base model, through the same euler + real-CFG sampler Squeeze uses. -> (N, H, W, 3).
    `references`: per caption, raw VAE latents (1, 16, h, w) appended as Squeeze appends reference latents (the
    negative gets none), or None."""
    shift = flux_resolution_shift(size, size)
    sigmas = cosine_flux_sigmas(steps, shift)
    context, mask, pooled = text.encode([""])
    negative = FluxConditioning(context, pooled, [], 1.0)
    grid = latent_shape(size, size, downscale=vae_downscale(vae))
    images = []
    references = references or [None] * len(captions)
    for caption, seed, reference in tqdm(list(zip(captions, seeds, references)), desc="flux: sampling", disable=not progress):
        context, mask, pooled = text.encode([caption])
        positive = PhaseConditioning.every_step(FluxConditioning(context, pooled, [] if reference is None else [reference], 1.0))
        latent = staged_euler(transformer, flux_noise(grid, seed), sigmas, positive, negative, cfg,
                              progress=False)
        images.append(vae_decode(vae, latent))
    return torch.cat(images)


def save_mini_flux(root, transformer, text: MiniTextEncoder) -> None:
    """diffusers / transformers layouts, safetensors only: root/transformer, root/text_encoder, root/tokenizer."""
    root = Path(root)
    transformer.save_pretrained(root / "transformer", safe_serialization=True)
    text.model.save_pretrained(root / "text_encoder", safe_serialization=True)
    text.tokenizer.save_pretrained(root / "tokenizer")
