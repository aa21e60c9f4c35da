"""The settings users give, with their defaults and their checks, in one torch-free module: the command line builds
its parser (and answers --help) from these without importing torch, and every other module re-exports them.

    GenerateConfig(prompt="a toy on the beach", seed=1)     # headless sampling settings, checked on creation
    EncoderConfig(max_references=4, aspect_mode="pad")     # how the MLLM reads references
    check_thresholds(0.8, 0.2)                             # the staged sampler's tau1 > tau2 in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SqueezeInputError

DEFAULT_TAU1 = 0.8  # flow time where denoising phase 2 starts (the paper's text does not give its values)
DEFAULT_TAU2 = 0.2  # where denoising phase 3 starts
MIN_IMAGE_SIDE = 32  # px, a reference's short side: below this it holds too little of the subject to be useful
ASPECT_MODES = ("pad", "crop", "stretch")  # how a non-square reference fits the MLLM's square tile
LATENT_MULTIPLE = 16  # VAE factor 8 x FLUX 2x2 patch
DEFAULT_LONG_SIDE = 512  # reference long side for the VAE branch, px
MIN_LONG_SIDE, MAX_LONG_SIDE = 64, 4096

# The conditionings a denoising step or a training sample can get, one name each wherever they appear: the phases of
# staged denoising (squeeze_core/phases.py), the training stages' condition counts, the ablation modes, the docs.
CONDITIONINGS = {
    "mllm_refs": "MLLM(prompt + references), no reference latents",
    "mllm_refs+latents": "MLLM(prompt + references) + reference latents",
    "prompt+latents": "MLLM(prompt only) + reference latents",
    "prompt": "MLLM(prompt only), no reference latents",
    "unconditional": "MLLM(empty prompt), no references: what real CFG guides against",
}
PHASE_CONDITIONINGS = ("mllm_refs", "mllm_refs+latents", "prompt+latents")  # denoising phases 1, 2, 3

CONDITIONING_MODES = {  # the paper's ablations (its names); "staged" is the method
    "staged": "the three phases: mllm_refs above tau1, mllm_refs+latents down to tau2, prompt+latents below",
    "mllm_only": "mllm_refs in every step (phase 1's conditioning throughout)",
    "vae_only": "prompt+latents in every step (phase 3's; the MLLM still reads the prompt)",
    "refs_every_step": "mllm_refs+latents in every step (phase 2's; UNO-style)",
}
PROMPT_ONLY = "prompt_only"  # the mini benchmark's variant given no reference (the "prompt" conditioning throughout)
# every ablation is one denoising phase's conditioning in every step
EVERY_STEP_PHASE = {"mllm_only": 1, "refs_every_step": 2, "vae_only": 3}


def _same(name: str) -> str:
    return name


def check_thresholds(tau1: float, tau2: float, label=_same) -> None:
    for name, value in (("tau1", tau1), ("tau2", tau2)):
        if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
            raise SqueezeInputError(f"{label(name)}={value!r} is outside [0, 1]; thresholds are flow times (1 = pure noise).")
    if not tau1 > tau2:
        raise SqueezeInputError(
            f"{label('tau1')}={tau1} must be greater than {label('tau2')}={tau2}: denoising phase 1 runs for t > tau1, "
            f"phase 3 for t <= tau2 (e.g. tau1={DEFAULT_TAU1}, tau2={DEFAULT_TAU2})."
        )


def check_long_side(long_side, label=_same) -> int:
    if not isinstance(long_side, int) or long_side % LATENT_MULTIPLE or not MIN_LONG_SIDE <= long_side <= MAX_LONG_SIDE:
        raise SqueezeInputError(
            f"{label('long_side')}={long_side!r} must be a multiple of {LATENT_MULTIPLE} between {MIN_LONG_SIDE} and "
            f"{MAX_LONG_SIDE}."
        )
    return long_side


def check_generate_settings(values: dict, label=_same) -> None:
    """The one check of generation settings (GenerateConfig's fields), for GenerateConfig itself and for the command
    line, which names its options with `label` ("width" -> "--width"). Limits: squeeze_core/limits.py."""
    from .limits import IMAGE_SIDE_VARIABLE, MAX_CFG, MAX_STEPS, max_image_side

    check_thresholds(values["tau1"], values["tau2"], label)
    if values["mode"] not in CONDITIONING_MODES:
        raise SqueezeInputError(f"{label('mode')}={values['mode']!r} is not one of {sorted(CONDITIONING_MODES)}.")
    for name in ("width", "height"):
        value = values[name]
        if not isinstance(value, int) or value < 16 or value % 16:
            raise SqueezeInputError(f"{label(name)}={value!r} must be a multiple of 16 (at least 16).")
        if value > max_image_side():
            raise SqueezeInputError(f"{label(name)}={value} is over the {max_image_side()} px limit; set ${IMAGE_SIDE_VARIABLE} "
                                    "to a larger number if your device has the memory.")
    steps = values["steps"]
    if not isinstance(steps, int) or steps < 1:
        raise SqueezeInputError(f"{label('steps')}={steps!r} must be a positive integer.")
    if steps > MAX_STEPS:
        raise SqueezeInputError(f"{label('steps')}={steps} is over {MAX_STEPS}; FLUX needs 20-50.")
    check_long_side(values["long_side"], label)
    for name in ("cfg", "guidance"):
        value = values[name]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_CFG:
            raise SqueezeInputError(f"{label(name)}={value!r} must be a finite number in [0, {MAX_CFG:g}].")
    for name in ("prompt", "negative_prompt"):
        value = values[name]
        if not isinstance(value, str):
            raise SqueezeInputError(f"{label(name)}={value!r} must be text.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SqueezeInputError(f"{label(name)} is not valid UTF-8 text ({error.reason} at character {error.start}); "
                                    "write it in UTF-8.") from None


@dataclass
class EncoderConfig:
    max_references: int = 4  # per prompt; each reference adds tokens_per_image tokens (256 at 448 px)
    aspect_mode: str = "pad"  # how a non-square reference fits its square tile: "pad", "crop" or "stretch"
    system_prompt: str = ""  # optional system turn; empty = none

    def __post_init__(self):
        if self.aspect_mode not in ASPECT_MODES:
            raise SqueezeInputError(f"aspect_mode={self.aspect_mode!r} is not one of {ASPECT_MODES}.")
        if not isinstance(self.max_references, int) or self.max_references < 0:
            raise SqueezeInputError(f"max_references={self.max_references!r} must be an integer >= 0.")


@dataclass
class GenerateConfig:
    prompt: str
    seed: int = 0
    steps: int = 28  # denoising steps
    cfg: float = 2.5  # real CFG in every denoising phase (the paper's value)
    tau1: float = DEFAULT_TAU1  # denoising phase 1 above, phase 2 at or below
    tau2: float = DEFAULT_TAU2  # denoising phase 3 at or below
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
        check_generate_settings(vars(self))
