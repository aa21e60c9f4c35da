"""Training configuration: one dataclass, read from YAML or JSON, written beside every checkpoint.

    config = TrainConfig.from_file("stage1.yaml", overrides=["max_steps=100", "batch_size=2"])
    config.save(path)        # train_config.json, the exact settings a checkpoint was made with

Model fields left at None use the embedded models (squeeze_core/embedded: the miniature's InternVL3, FLUX and VAE; a
smoke run with no downloads); `manifest` left at None uses the embedded benchmark's reference pairs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..dtypes import DTYPE_NAMES
from ..errors import SqueezeInputError
from ..limits import MAX_SEED

PAPER_STEPS = {1: 25_000, 2: 10_000}  # section 4.1: 25K steps MLLM-only, then 10K with MLLM + VAE
# settings whose override value is taken as written (YAML would read `no` as false, `1e-4`-like paths as numbers)
STRING_FIELDS = ("init_from", "mllm", "transformer", "vae", "base_dtype", "manifest", "timestep_sampling",
                 "mixed_precision", "distributed", "output_dir", "resume")


def _coerce(name: str, value, annotation: str, source: str):
    """Check a setting's type; numbers written as strings (YAML reads `2e-5` as a string) become numbers."""
    if value is None and "None" in annotation:
        return None
    base = annotation.split("|")[0].strip()
    kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[base]
    error = SqueezeInputError(f"{source}: {name}={value!r} must be {kind}{' or null' if 'None' in annotation else ''}.")
    try:
        if base == "float" and not isinstance(value, bool):
            number = float(value)
            if not math.isfinite(number):
                raise SqueezeInputError(f"{source}: {name}={value!r} must be a finite number.")
            return number
        if base == "int" and not isinstance(value, bool) and float(value) == int(float(value)):
            return int(float(value))
    except (TypeError, ValueError, OverflowError) as cause:  # OverflowError: int(inf)
        if isinstance(cause, SqueezeInputError):
            raise
        raise error from cause
    if (base == "bool" and isinstance(value, bool)) or (base == "str" and isinstance(value, str)):
        return value
    raise error


@dataclass
class TrainConfig:
    # --- stage (paper 3.5) ---
    training_stage: int = 1  # 1: MLLM-only conditioning; 2: MLLM + VAE reference latents, continuing training stage 1
    init_from: str | None = None  # stage 2: a stage-1 output dir or checkpoint dir (holds squeeze_dla / squeeze_flux_lora)

    # --- models (None = the embedded mini model, no download) ---
    mllm: str | None = None  # InternVL3 "-hf" checkpoint directory
    transformer: str | None = None  # FLUX.1-dev `transformer/` folder (diffusers layout)
    vae: str | None = None  # FLUX.1-dev `vae/` folder (diffusers layout)
    base_dtype: str = "bfloat16"  # dtype of the frozen weights (MLLM, FLUX base, VAE); LoRA and DLA train in float32

    # --- data ---
    manifest: str | None = None  # JSONL of {references, target, prompt}; None = the embedded benchmark's pairs
    resolution: int = 512  # bucket area is resolution^2 px (UNO-1M is trained at 512)
    bucket_step: int = 64  # bucket sides are multiples of this (a multiple of 16)
    max_aspect: float = 2.0  # widest bucket is max_aspect:1, tallest 1:max_aspect
    reference_long_side: int = 512  # VAE-branch reference size, as the ComfyUI node / headless pipeline use it
    max_references: int = 4  # per sample; more is an error in the manifest
    num_workers: int = 2  # DataLoader worker processes per training process

    # --- conditioning drop (paper 3.4: every combination the staged sampler uses is trained) ---
    mllm_reference_drop: float = 0.1  # P(the MLLM reads the prompt without the references): denoising phase 3's conditioning
    vae_reference_drop: float = 0.3  # training stage 2 only, P(no reference latents): denoising phase 1's conditioning
    prompt_drop: float = 0.05  # P(empty prompt): the negative that real CFG guides against

    # --- model ---
    lora_rank: int = 512  # the paper's rank, FLUX attention in double and single blocks
    lora_alpha: float | None = None  # None = rank (LoRA scale 1)
    dla_attn_dim: int = 512  # new DLA only (stage 1 without init_from)
    dla_num_heads: int = 8
    dla_aggregation: str = "dual"  # new DLA only: "dual" (the DLA), "joint" (one LAP) or "last_layer" (paper's ablations)
    guidance: float = 3.5  # FLUX.1-dev's distilled-guidance input, as at inference

    # --- timesteps (docs/training.md: "Timestep sampling") ---
    timestep_sampling: str = "logit_normal"  # "logit_normal" (SD3 / FLUX training) or "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    resolution_shift: bool = True  # shift t by FLUX's resolution shift, exactly as the sampler's schedule does

    # --- optimisation ---
    max_steps: int | None = None  # None = the paper's count for the stage (25K / 10K)
    batch_size: int = 1  # samples per process per micro-step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4  # constant, as in the paper (its text does not give the value)
    dla_learning_rate: float | None = None  # None = learning_rate
    warmup_steps: int = 0  # linear warm-up, then constant
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    mixed_precision: str = "bf16"  # "bf16" autocast or "no"
    gradient_checkpointing: bool = True  # FLUX blocks recompute activations in backward
    distributed: str = "ddp"  # "ddp" or "fsdp" (through accelerate; a single process ignores it)
    seed: int = 0

    # --- checkpoints and logs ---
    output_dir: str = "squeeze-train"
    checkpoint_every: int = 1000  # steps
    keep_checkpoints: int = 3  # newest N checkpoints kept
    resume: str = "auto"  # "auto": newest checkpoint in output_dir if any; "never"; or a checkpoint directory
    log_every: int = 10  # steps between progress lines (metrics.jsonl has every step)

    def __post_init__(self):
        def fail(name, why):
            raise SqueezeInputError(f"training config: {name}={getattr(self, name)!r} {why}")

        if self.training_stage not in (1, 2):
            fail("training_stage", "must be 1 (MLLM only) or 2 (MLLM + VAE).")
        if self.training_stage == 2 and not self.init_from:
            raise SqueezeInputError(
                "training config: stage 2 continues stage 1 (paper 3.5); set init_from to the stage-1 output "
                "directory (it holds squeeze_dla.safetensors and squeeze_flux_lora.safetensors)."
            )
        for name in ("mllm_reference_drop", "vae_reference_drop", "prompt_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "is a probability: it must be in [0, 1].")
        for name in ("lora_rank", "batch_size", "gradient_accumulation_steps", "checkpoint_every", "keep_checkpoints",
                     "log_every", "resolution", "bucket_step", "reference_long_side", "dla_attn_dim", "dla_num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(name, "must be a positive integer.")
        from ..dla import AGGREGATIONS

        if self.dla_aggregation not in AGGREGATIONS:
            fail("dla_aggregation", f"must be one of {', '.join(AGGREGATIONS)}.")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            fail("max_steps", "must be a positive integer (or null for the paper's count).")
        if self.bucket_step % 16:
            fail("bucket_step", "must be a multiple of 16 (VAE factor 8 x FLUX's 2x2 patches).")
        if self.resolution % self.bucket_step:
            fail("resolution", f"must be a multiple of bucket_step={self.bucket_step}.")
        if self.max_aspect < 1.0:
            fail("max_aspect", "must be at least 1.0.")
        if self.timestep_sampling not in ("logit_normal", "uniform"):
            fail("timestep_sampling", "must be 'logit_normal' or 'uniform'.")
        if self.mixed_precision not in ("bf16", "no"):
            fail("mixed_precision", "must be 'bf16' or 'no'.")
        if self.distributed not in ("ddp", "fsdp"):
            fail("distributed", "must be 'ddp' or 'fsdp'.")
        if self.base_dtype not in DTYPE_NAMES:
            fail("base_dtype", f"must be one of {DTYPE_NAMES}.")
        if self.learning_rate <= 0 or (self.dla_learning_rate is not None and self.dla_learning_rate <= 0):
            fail("learning_rate", "and dla_learning_rate must be positive.")
        if self.max_references < 1:
            fail("max_references", "must be at least 1.")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            fail("warmup_steps", "must be an integer >= 0 (0: no warm-up).")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            fail("seed", "must be an integer from 0 to 2**63 - 1 (the seeds torch accepts).")

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else PAPER_STEPS[self.training_stage]

    # ------------------------------------------------------------------ files
    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        if not isinstance(data, dict):
            raise SqueezeInputError(f"{source} must hold a mapping of settings, not {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        data = dict(data)
        if data.get("mixed_precision") is False:  # YAML 1.1 reads a bare `no` as false
            data["mixed_precision"] = "no"
        unknown = sorted(set(data) - known)
        if unknown:
            raise SqueezeInputError(f"{source} has unknown settings {unknown}; known ones are: {sorted(known)}.")
        types = {f.name: f.type for f in fields(cls)}
        return cls(**{name: _coerce(name, value, types[name], source) for name, value in data.items()})

    @classmethod
    def from_file(cls, path=None, overrides=()) -> "TrainConfig":
        """Settings from a .yaml/.yml/.json file (or none), then `key=value` overrides (values parsed as YAML)."""
        import yaml

        data = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise SqueezeInputError(f"training config file '{path}' does not exist.")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as error:
                raise SqueezeInputError(f"training config file '{path}' is not UTF-8 text ({error}); save it as UTF-8 "
                                        "YAML or JSON.") from error
            except OSError as error:
                raise SqueezeInputError(f"training config file '{path}' cannot be read: {error}") from error
            try:
                data = json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})
            except (json.JSONDecodeError, yaml.YAMLError) as error:
                raise SqueezeInputError(f"training config file '{path}' could not be parsed: {error}") from error
        for override in overrides:
            key, sep, value = override.partition("=")
            if not sep or not key.strip():
                raise SqueezeInputError(f"override {override!r} is not of the form key=value (e.g. max_steps=100).")
            key = key.strip()
            text_field = key in STRING_FIELDS and value.strip() not in ("null", "~", "")
            data[key] = value if text_field else yaml.safe_load(value)
        return cls.from_dict(data, source=str(path) if path else "overrides")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
