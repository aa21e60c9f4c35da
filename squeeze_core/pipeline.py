"""Headless Squeeze generation: InternVL3 + DLA + FLUX (diffusers) + the FLUX VAE, sampled in denoising phases exactly as the
shipped ComfyUI graph ("workflows/Squeeze subject from one reference.json") samples: the same conditionings, reference-latent sizes and
positions, resolution shift, cosine schedule, euler steps and real CFG against an empty-prompt negative.

    pipe = SqueezePipeline(encoder, dla, transformer, vae)
    latent, image = pipe(GenerateConfig(prompt="a dog on the beach", seed=1), references=[Image.open("dog.png")])
    images = pipe.generate_batch([config_a, config_b, ...], [[ref_a], [ref_b], ...])   # many prompts/seeds, batched
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .conditioning import KeptEncodings, encode_conditioning
from .dla import DLAOutput, DualLayerAggregator
from .errors import SqueezeInputError
from .flux import latent_shape, vae_downscale
from .host_copy import HostCopy
from .images import to_image_batch, to_pil, to_rgb
from .lora import merge_lora
from .mllm import InternVL3Encoder
from .phases import PhaseConditioning, PhaseThresholds
from .references import resize_reference
from .sampling import FluxConditioning, cosine_flux_sigmas, flux_noise, flux_resolution_shift, staged_euler
from .settings import CONDITIONING_MODES, EVERY_STEP_PHASE, GenerateConfig  # noqa: F401 (re-exported)
from .vae import vae_decode, vae_encode

logger = logging.getLogger("squeeze.pipeline")

def to_flux(output: DLAOutput, guidance: float, references=()) -> FluxConditioning:
    return FluxConditioning(output.context, output.pooled, list(references), guidance)


def reference_pixels(image) -> torch.Tensor:
    """Any accepted reference -> (1, H, W, 3) float in [0, 1], as ComfyUI's LoadImage gives it."""
    return to_image_batch(to_rgb(to_pil(image)))


@dataclass
class PreparedConditioning:
    """What each denoising step is conditioned on."""

    positive: PhaseConditioning[FluxConditioning]  # the same in every phase when the mode is not "staged"
    negative: FluxConditioning  # real CFG's negative, every step


def phases_used(config: GenerateConfig, has_references: bool, sigmas: torch.Tensor) -> set[int]:
    """The denoising phases whose conditioning some step of this run reads: nothing is computed for the others.
    Without references every phase's MLLM encoding is the prompt alone, which is phase 3's (with no latents)."""
    if not has_references:
        return {3}
    if config.mode != "staged":
        return {EVERY_STEP_PHASE[config.mode]}
    thresholds = PhaseThresholds(config.tau1, config.tau2)
    return {thresholds.phase(float(sigma)) for sigma in sigmas[:-1]}


def stack_conditioning(items: list[FluxConditioning]) -> FluxConditioning:
    """Conditionings of equal shapes (see `conditioning_shapes`) -> one batch: contexts (B, T, D), pooled (B, P),
    each reference latent (B, 16, h, w)."""
    return FluxConditioning(torch.cat([c.context for c in items]), torch.cat([c.pooled for c in items]),
                            [torch.cat(latents) for latents in zip(*(c.references for c in items))], items[0].guidance)


def conditioning_shapes(prepared: PreparedConditioning) -> tuple:
    """What must be equal for two prepared conditionings to share a batch (no padding, so no attention mask)."""
    def shapes(c: FluxConditioning) -> tuple:
        return tuple(c.context.shape[1:]), tuple(tuple(r.shape[1:]) for r in c.references)

    staged = prepared.positive
    return tuple(shapes(c) for c in (staged.first, staged.middle, staged.late, prepared.negative))


def reference_fingerprint(pixels: list[torch.Tensor]) -> tuple:
    return tuple((tuple(p.shape), hashlib.sha1(p.numpy().tobytes()).hexdigest()) for p in pixels)


class MLLMResidency:
    """Which of the MLLM and FLUX hold the compute device, headless. By default both, throughout. With `offload`,
    one at a time: FLUX moves to host memory while a prompt's encodes run, the MLLM once they are done, so the peak
    is the larger of the two phases, not their sum (InternVL3-8B and FLUX.1-dev: about 15 and 22 GiB of bf16
    weights). Each model's host copy (HostCopy) is made at its first eviction, pinned where CUDA is present, and
    kept: later evictions copy nothing and every reload is one DMA copy; host memory then holds both models. A prompt whose
    encodings are kept (its other seeds, the negative) moves nothing; a batch of prompts moves once
    (`held`). `bytes_moved` counts weight bytes moved either way."""

    def __init__(self, encoder: InternVL3Encoder, transformer, offload: bool = False, device=None):
        self.encoder, self.transformer, self.offload = encoder, transformer, offload
        self.compute_device = torch.device(device) if device is not None else next(transformer.parameters()).device
        self.mllm_on_device = encoder.device == self.compute_device
        self.flux_on_device = True
        self.mllm_bytes = sum(p.numel() * p.element_size() for p in encoder.model.parameters())
        self.flux_bytes = sum(p.numel() * p.element_size() for p in transformer.parameters())
        pin = self.compute_device.type == "cuda"
        self.mllm_copy, self.flux_copy = HostCopy(encoder.model, pin), HostCopy(transformer, pin)
        self.bytes_moved = 0
        self._holding = False

    def acquire(self) -> None:
        """Before an encode: the MLLM on the compute device (with offload, FLUX off it first)."""
        if self.offload and self.flux_on_device:
            self.flux_copy.to_host()
            self.bytes_moved += self.flux_bytes
            self.flux_on_device = False
        if not self.mllm_on_device:
            self.mllm_copy.to_device(self.compute_device)
            self.bytes_moved += self.mllm_bytes
            self.mllm_on_device = True

    def release(self) -> None:
        """After a prompt's encodes: with offload, the MLLM to host memory and FLUX back for sampling."""
        if not self.offload or self._holding:
            return
        if self.mllm_on_device:
            self.mllm_copy.to_host()
            self.bytes_moved += self.mllm_bytes
            self.mllm_on_device = False
        if not self.flux_on_device:
            self.flux_copy.to_device(self.compute_device)
            self.bytes_moved += self.flux_bytes
            self.flux_on_device = True

    @contextlib.contextmanager
    def held(self):
        """Many prompts' encodes in a row (a batch) with one swap back at the end, not one per prompt."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self.release()


class SqueezePipeline:
    """Headless generation. A LoRA the transformer carries (peft) is merged into its weights here, as ComfyUI merges
    one before sampling: each step then costs what the base model costs. The negative is encoded once per negative
    prompt, and the last prompt's conditioning and reference latents are kept, so seeds of one prompt reuse them."""

    def __init__(self, encoder: InternVL3Encoder, dla: DualLayerAggregator, transformer, vae, remember: int = 0,
                 offload_mllm: bool = False):
        """remember: how many MLLM + DLA encodings (prompt, references, DLA layers) to keep besides the last prompt's,
        for a run that comes back to the same prompts under other settings (an ablation); each is a (T, D) context.
        offload_mllm: the MLLM and FLUX take turns on the device (MLLMResidency); the encoder may then be loaded on
        the CPU, and the device is the transformer's."""
        dla.check_mllm(encoder.info)
        merged = merge_lora(transformer)
        if merged:
            logger.info("merged the LoRA into %d FLUX layers", merged)
        self.encoder, self.dla, self.transformer, self.vae = encoder, dla, transformer, vae
        self._negatives: dict[tuple, DLAOutput] = {}
        self._last: tuple | None = None  # (key, PreparedConditioning) of the last prompt + references
        self._encodings = KeptEncodings(remember)
        self.mllm = MLLMResidency(encoder, transformer, offload_mllm)

    def forget(self) -> None:
        """Drop the kept negative and last conditioning (e.g. after changing the DLA's weights in place)."""
        self._negatives, self._last = {}, None
        self._encodings.clear()

    def _encode(self, prompt: str, references: list[torch.Tensor], layers: tuple | None = None) -> DLAOutput:
        """The DLA's output for a prompt and reference pixels, with the DLA restricted to `layers` by the caller."""
        key = (prompt, layers, reference_fingerprint(references))
        kept = self._encodings.get(key)
        if kept is not None:
            return kept
        self.mllm.acquire()
        output = encode_conditioning(self.encoder, self.dla, [prompt], [[r[0] for r in references]] if references else None).item(0)
        self._encodings.put(key, output)
        return output

    def _negative(self, config: GenerateConfig) -> DLAOutput:
        key = (config.negative_prompt, config.dla_layers)
        if key not in self._negatives:
            self._negatives[key] = self._encode(config.negative_prompt, [], config.dla_layers)
        return self._negatives[key]

    def sigmas(self, config: GenerateConfig) -> torch.Tensor:
        return cosine_flux_sigmas(config.steps, flux_resolution_shift(config.width, config.height, config.max_shift, config.base_shift))

    @torch.no_grad()
    def prepare(self, config: GenerateConfig, references=()) -> PreparedConditioning:
        """Everything before the first denoising step: the MLLM + DLA encodes and the reference latents that the run's
        steps use (one MLLM pass each), reused while the prompt and references stay the same."""
        pixels = [reference_pixels(r) for r in references]
        used = phases_used(config, bool(pixels), self.sigmas(config))
        key = (config.prompt, config.negative_prompt, config.mode, config.long_side, config.guidance, config.dla_layers,
               frozenset(used), reference_fingerprint(pixels))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        layers = self.dla.restricted_to(range(*config.dla_layers)) if config.dla_layers is not None else contextlib.nullcontext()
        with layers:
            with_refs = self._encode(config.prompt, pixels, config.dla_layers) if used & {1, 2} else None
            prompt_only = self._encode(config.prompt, [], config.dla_layers) if 3 in used else None
            negative = to_flux(self._negative(config), config.guidance)
        latents = [vae_encode(self.vae, resize_reference(p, config.long_side)) for p in pixels] if used & {2, 3} else []
        by_phase = {
            1: to_flux(with_refs, config.guidance) if 1 in used else None,
            2: to_flux(with_refs, config.guidance, latents) if 2 in used else None,
            3: to_flux(prompt_only, config.guidance, latents) if 3 in used else None,
        }
        if config.mode != "staged" or len(used) == 1:
            positive = PhaseConditioning.every_step(by_phase[min(used)])
        else:
            unread = by_phase[min(used)]  # a phase that gets no step never reads its conditioning
            positive = PhaseConditioning(*(by_phase[phase] or unread for phase in (1, 2, 3)))
        prepared = PreparedConditioning(positive, negative)
        self._last = (key, prepared)
        self.mllm.release()
        return prepared

    @torch.no_grad()
    def sample(self, config: GenerateConfig, prepared: PreparedConditioning, progress: bool = True) -> torch.Tensor:
        """The denoising loop -> latent in raw VAE space (1, 16, H/d, W/d), d = vae_downscale (8 for FLUX's VAE), on the
        transformer's device."""
        noise = flux_noise(latent_shape(config.width, config.height, downscale=vae_downscale(self.vae)), config.seed)
        device = next(self.transformer.parameters()).device
        return staged_euler(self.transformer, noise.to(device), self.sigmas(config), prepared.positive, prepared.negative,
                            config.cfg, thresholds=PhaseThresholds(config.tau1, config.tau2), progress=progress)

    @torch.no_grad()
    def generate_batch(self, configs: list[GenerateConfig], references: list[list], batch_size: int = 32,
                       progress: bool = False) -> torch.Tensor:
        """Many images whose settings differ only in prompt and seed -> (N, H, W, 3) in [0, 1], in order. Items whose
        conditionings have equal shapes (prompts of one token length, the same number of references) are denoised
        together, up to `batch_size` at a time: each image is what `__call__` gives for it alone (up to float
        rounding), at a fraction of the time for a small model, whose cost is per step rather than per image."""
        if len(configs) != len(references):
            raise SqueezeInputError(f"generate_batch got {len(configs)} configs but {len(references)} reference lists.")
        if not configs:
            raise SqueezeInputError("generate_batch needs at least one config.")
        shared = dataclasses.replace(configs[0], prompt="", seed=0)
        for config in configs:
            if dataclasses.replace(config, prompt="", seed=0) != shared:
                raise SqueezeInputError("generate_batch: every config must share all settings but prompt and seed "
                                        f"(got {config} beside {configs[0]}); call it once per setting.")
        with self.mllm.held():
            prepared = [self.prepare(c, r) for c, r in zip(configs, references)]
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(conditioning_shapes(item), []).append(index)
        chunks = [indices[k : k + batch_size] for indices in groups.values() for k in range(0, len(indices), batch_size)]
        device = next(self.transformer.parameters()).device
        images: list[torch.Tensor | None] = [None] * len(configs)
        for chunk in tqdm(chunks, desc="generating", unit="batch", disable=not progress):
            items = [prepared[i] for i in chunk]
            positive = PhaseConditioning(*(stack_conditioning([p.positive.at(phase) for p in items]) for phase in (1, 2, 3)))
            negative = stack_conditioning([p.negative for p in items])
            grid = latent_shape(shared.width, shared.height, downscale=vae_downscale(self.vae))
            noise = torch.cat([flux_noise(grid, configs[i].seed) for i in chunk])
            latent = staged_euler(self.transformer, noise.to(device), self.sigmas(shared), positive, negative, shared.cfg,
                                  thresholds=PhaseThresholds(shared.tau1, shared.tau2), progress=False)
            for i, image in zip(chunk, vae_decode(self.vae, latent).cpu()):
                images[i] = image
        return torch.stack(images)

    @torch.no_grad()
    def __call__(self, config: GenerateConfig, references=(), progress: bool = True):
        """-> (latent in raw VAE space (1, 16, H/d, W/d), d = vae_downscale, image (1, H, W, 3) in [0, 1])."""
        latent = self.sample(config, self.prepare(config, references), progress)
        return latent.cpu(), vae_decode(self.vae, latent).cpu()
