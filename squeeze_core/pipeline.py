"""Headless Squeeze generation: InternVL3 + DLA + FLUX (diffusers) + the FLUX VAE, sampled in stages exactly as the
shipped ComfyUI graph (workflows/squeeze_subject.json) samples: the same conditionings, reference-latent sizes and
positions, resolution shift, cosine schedule, euler steps and real CFG against an empty-prompt negative.

    pipe = SqueezePipeline(encoder, dla, transformer, vae)
    latent, image = pipe(GenerateConfig(prompt="a dog on the beach", seed=1), references=[Image.open("dog.png")])
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .conditioning import encode_conditioning
from .dla import DLAOutput, DualLayerAggregator
from .errors import SqueezeInputError
from .images import to_pil, to_rgb
from .lora import merge_lora
from .mllm import InternVL3Encoder
from .references import DEFAULT_LONG_SIDE, resize_reference
from .sampling import FluxConditioning, cosine_flux_sigmas, flux_noise, staged_euler
from .stages import DEFAULT_TAU1, DEFAULT_TAU2, StageThresholds
from .vae import vae_decode, vae_encode

logger = logging.getLogger("squeeze.pipeline")

CONDITIONING_MODES = {  # the paper's ablations; "staged" is the method
    "staged": "MLLM(prompt + refs) above tau1; + reference latents until tau2; MLLM(prompt) + reference latents below",
    "mllm_only": "MLLM(prompt + refs) in every step, no reference latents",
    "vae_only": "MLLM(prompt only) + reference latents in every step",
    "refs_every_step": "MLLM(prompt + refs) + reference latents in every step (UNO-style)",
}


@dataclass
class GenerateConfig:
    prompt: str
    seed: int = 0
    steps: int = 28  # denoising steps
    cfg: float = 2.5  # real CFG in every stage (the paper's value)
    tau1: float = DEFAULT_TAU1  # stage 1 above, stage 2 at or below
    tau2: float = DEFAULT_TAU2  # stage 3 at or below
    width: int = 1024  # output size in px, multiples of 16
    height: int = 1024
    guidance: float = 3.5  # FLUX.1-dev's distilled guidance input
    long_side: int = DEFAULT_LONG_SIDE  # reference size for the VAE branch
    negative_prompt: str = ""
    max_shift: float = 1.15  # FLUX's resolution shift, as ComfyUI's ModelSamplingFlux computes it
    base_shift: float = 0.5
    mode: str = "staged"  # which conditioning each step gets: see CONDITIONING_MODES
    dla_layers: tuple[int, int] | None = None  # [start, end) MLLM layers the DLA may mix; None = all (layer analysis)

    def __post_init__(self):
        StageThresholds(self.tau1, self.tau2)
        if self.mode not in CONDITIONING_MODES:
            raise SqueezeInputError(f"mode={self.mode!r} is not one of {sorted(CONDITIONING_MODES)}.")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16 or value % 16:
                raise SqueezeInputError(f"{name}={value!r} must be a multiple of 16 (at least 16).")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise SqueezeInputError(f"steps={self.steps!r} must be a positive integer.")
        for name in ("cfg", "guidance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SqueezeInputError(f"{name}={value!r} must be a finite number >= 0.")


def flux_resolution_shift(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """ComfyUI's ModelSamplingFlux: linear in image tokens, base_shift at 256 tokens, max_shift at 4096."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * 256)


def to_flux(output: DLAOutput, guidance: float, references=()) -> FluxConditioning:
    return FluxConditioning(output.context, output.pooled, list(references), guidance)


def reference_pixels(image) -> torch.Tensor:
    """Any accepted reference -> (1, H, W, 3) float in [0, 1], as ComfyUI's LoadImage gives it."""
    rgb = to_rgb(to_pil(image))
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]


@dataclass
class PreparedConditioning:
    """What each denoising step is conditioned on; middle and late are None when every step gets `first`."""

    first: FluxConditioning  # stage 1, or every step when not staged
    middle: FluxConditioning | None
    late: FluxConditioning | None
    negative: FluxConditioning  # real CFG's negative, every step


def conditioning_needs(config: GenerateConfig, has_references: bool, sigmas: torch.Tensor) -> set[str]:
    """Which of "with_references" (MLLM reads prompt + refs), "prompt_only" and "latents" (reference latents) the
    steps of this run use: nothing is computed for a stage that gets no step."""
    if not has_references:
        return {"prompt_only"}
    if config.mode != "staged":
        return {"mllm_only": {"with_references"}, "vae_only": {"prompt_only", "latents"},
                "refs_every_step": {"with_references", "latents"}}[config.mode]
    thresholds = StageThresholds(config.tau1, config.tau2)
    stages = {thresholds.stage(float(sigma)) for sigma in sigmas[:-1]}
    needs = set()
    if stages & {1, 2}:
        needs.add("with_references")
    if stages & {2, 3}:
        needs.add("latents")
    if 3 in stages:
        needs.add("prompt_only")
    return needs


def reference_fingerprint(pixels: list[torch.Tensor]) -> tuple:
    return tuple((tuple(p.shape), hashlib.sha1(p.numpy().tobytes()).hexdigest()) for p in pixels)


class SqueezePipeline:
    """Headless generation. A LoRA the transformer carries (peft) is merged into its weights here, as ComfyUI merges
    one before sampling: each step then costs what the base model costs. The negative is encoded once per negative
    prompt, and the last prompt's conditioning and reference latents are kept, so seeds of one prompt reuse them."""

    def __init__(self, encoder: InternVL3Encoder, dla: DualLayerAggregator, transformer, vae):
        dla.check_mllm(encoder.info)
        merged = merge_lora(transformer)
        if merged:
            logger.info("merged the LoRA into %d FLUX layers", merged)
        self.encoder, self.dla, self.transformer, self.vae = encoder, dla, transformer, vae
        self._negatives: dict[tuple, DLAOutput] = {}
        self._last: tuple | None = None  # (key, PreparedConditioning) of the last prompt + references

    def forget(self) -> None:
        """Drop the kept negative and last conditioning (e.g. after changing the DLA's weights in place)."""
        self._negatives, self._last = {}, None

    def _encode(self, prompt: str, references: list[torch.Tensor]) -> DLAOutput:
        return encode_conditioning(self.encoder, self.dla, [prompt], [[r[0] for r in references]] if references else None).item(0)

    def _negative(self, config: GenerateConfig) -> DLAOutput:
        key = (config.negative_prompt, config.dla_layers)
        if key not in self._negatives:
            self._negatives[key] = self._encode(config.negative_prompt, [])
        return self._negatives[key]

    def sigmas(self, config: GenerateConfig) -> torch.Tensor:
        return cosine_flux_sigmas(config.steps, flux_resolution_shift(config.width, config.height, config.max_shift, config.base_shift))

    @torch.no_grad()
    def prepare(self, config: GenerateConfig, references=()) -> PreparedConditioning:
        """Everything before the first denoising step: the MLLM + DLA encodes and the reference latents that the run's
        steps use (one MLLM pass each), reused while the prompt and references stay the same."""
        pixels = [reference_pixels(r) for r in references]
        needs = conditioning_needs(config, bool(pixels), self.sigmas(config))
        key = (config.prompt, config.negative_prompt, config.mode, config.long_side, config.guidance, config.dla_layers,
               frozenset(needs), reference_fingerprint(pixels))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        layers = self.dla.restricted_to(range(*config.dla_layers)) if config.dla_layers is not None else contextlib.nullcontext()
        with layers:
            with_refs = self._encode(config.prompt, pixels) if "with_references" in needs else None
            prompt_only = self._encode(config.prompt, []) if "prompt_only" in needs else None
            negative = to_flux(self._negative(config), config.guidance)
        latents = [vae_encode(self.vae, resize_reference(p, config.long_side)) for p in pixels] if "latents" in needs else []
        if not pixels:
            prepared = PreparedConditioning(to_flux(prompt_only, config.guidance), None, None, negative)
        elif config.mode != "staged":  # one conditioning for every step
            output = with_refs if with_refs is not None else prompt_only
            prepared = PreparedConditioning(to_flux(output, config.guidance, latents if "latents" in needs else ()), None, None, negative)
        else:
            early = to_flux(with_refs, config.guidance) if with_refs is not None else None
            middle = to_flux(with_refs, config.guidance, latents) if with_refs is not None else None
            late = to_flux(prompt_only, config.guidance, latents) if prompt_only is not None else None
            fallback = early or late  # a stage that gets no step never reads its conditioning
            prepared = PreparedConditioning(early or fallback, middle or fallback, late or fallback, negative)
        self._last = (key, prepared)
        return prepared

    @torch.no_grad()
    def sample(self, config: GenerateConfig, prepared: PreparedConditioning, progress: bool = True) -> torch.Tensor:
        """The denoising loop -> latent in raw VAE space (1, 16, H/8, W/8), on the transformer's device."""
        sigmas = self.sigmas(config)
        noise = flux_noise((1, 16, config.height // 8, config.width // 8), config.seed)
        device = next(self.transformer.parameters()).device
        staged = prepared.middle is not None
        return staged_euler(
            self.transformer, noise.to(device), sigmas, prepared.first, prepared.negative, config.cfg,
            middle=prepared.middle, late=prepared.late,
            thresholds=StageThresholds(config.tau1, config.tau2) if staged else None, progress=progress,
        )

    @torch.no_grad()
    def __call__(self, config: GenerateConfig, references=(), progress: bool = True):
        """-> (latent in raw VAE space (1, 16, H/8, W/8), image (1, H, W, 3) in [0, 1])."""
        latent = self.sample(config, self.prepare(config, references), progress)
        return latent.cpu(), vae_decode(self.vae, latent).cpu()


def _load_diffusers(cls, path, kind: str, hint: str, dtype, device):
    from pathlib import Path

    from .errors import SqueezeModelError

    path = Path(path)
    if not (path / "config.json").is_file():
        raise SqueezeModelError(f"{kind} directory '{path}' has no config.json. {hint} Squeeze never downloads weights.")
    if not any(path.glob("*.safetensors")):
        raise SqueezeModelError(f"{kind} directory '{path}' has no .safetensors weights (pickled weights are not loaded).")
    try:
        model = cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise SqueezeModelError(f"{kind} directory '{path}' could not be loaded: {error}") from error
    return model.to(device).eval().requires_grad_(False)


def load_flux_transformer(path, dtype=torch.bfloat16, device="cpu"):
    """FLUX.1-dev's transformer in the diffusers layout (the `transformer/` folder of the FLUX.1-dev repository)."""
    from diffusers import FluxTransformer2DModel

    return _load_diffusers(FluxTransformer2DModel, path, "FLUX transformer", "Point --transformer at the 'transformer/' folder of a local FLUX.1-dev copy.", dtype, device)


def load_flux_vae(path, dtype=torch.float32, device="cpu"):
    """The FLUX VAE in the diffusers layout (the `vae/` folder of the FLUX.1-dev repository)."""
    from diffusers import AutoencoderKL

    return _load_diffusers(AutoencoderKL, path, "FLUX VAE", "Point --vae at the 'vae/' folder of a local FLUX.1-dev copy.", dtype, device)
