"""The models a training run needs, loaded and frozen as the paper trains them.

Frozen: InternVL3, the FLUX VAE, every FLUX weight outside the LoRA. Trained: the LoRA (peft, FLUX attention in
double and single blocks) and the DLA, both kept in float32 whatever `base_dtype` the frozen weights use.
Stage 1 starts a new LoRA (B = 0, so FLUX starts as itself) and a new DLA; stage 2 loads both from `init_from`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dla import DLAConfig, DualLayerAggregator
from ..dtypes import DTYPES
from ..errors import SqueezeModelError, SqueezeWeightsError
from ..flux import LATENT_CHANNELS
from ..lora import flux_lora_config, load_comfyui_lora
from ..mllm import EncoderConfig, InternVL3Encoder
from ..weights import load_dla
from .config import TrainConfig

logger = logging.getLogger("squeeze.train")

DLA_FILE, LORA_FILE, CONFIG_FILE = "squeeze_dla.safetensors", "squeeze_flux_lora.safetensors", "train_config.json"


@dataclass
class TrainingModels:
    encoder: InternVL3Encoder
    dla: DualLayerAggregator
    transformer: torch.nn.Module
    vae: torch.nn.Module

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(f"dla.{n}", p) for n, p in self.dla.named_parameters()] + [
            (f"transformer.{n}", p) for n, p in self.transformer.named_parameters() if p.requires_grad
        ]


def load_training_models(config: TrainConfig, device) -> TrainingModels:
    """The frozen models the config names; a model field left at None is the embedded one (squeeze_core/embedded)."""
    from ..embedded import EmbeddedModels
    from ..flux import load_flux_transformer
    from ..vae import load_flux_vae

    dtype = DTYPES[config.base_dtype]
    embedded = EmbeddedModels.packaged()
    encoder = InternVL3Encoder.from_pretrained(config.mllm or embedded.mllm, dtype=dtype, device=device,
                                               config=EncoderConfig(max_references=config.max_references))
    encoder.model.requires_grad_(False).eval()
    transformer = load_flux_transformer(config.transformer or embedded.transformer, dtype=dtype, device=device)
    vae = load_flux_vae(config.vae or embedded.vae, dtype=dtype, device=device)
    if vae.config.latent_channels != LATENT_CHANNELS or transformer.config.in_channels != LATENT_CHANNELS * 4:
        raise SqueezeModelError(
            f"the VAE has {vae.config.latent_channels} latent channels and FLUX takes {transformer.config.in_channels} "
            "packed channels; Squeeze trains FLUX.1 (16-channel VAE, 64 packed). Point vae/transformer at FLUX.1-dev's folders."
        )

    init = Path(config.init_from) if config.init_from else None
    return assemble_training_models(config, encoder, transformer, vae, device, init)


def assemble_training_models(config: TrainConfig, encoder: InternVL3Encoder, transformer, vae, device,
                             init: Path | None = None) -> TrainingModels:
    """Frozen models already in memory -> the training set-up: a new DLA and LoRA (or stage 1's from `init`), LoRA
    and DLA in float32, gradient checkpointing as configured. benchmarks/real_size.py builds its models this way."""
    if init is not None:
        dla_path, lora_path = init / DLA_FILE, init / LORA_FILE
        for path in (dla_path, lora_path):
            if not path.is_file():
                raise SqueezeWeightsError(
                    f"init_from '{init}' has no {path.name}; point it at a stage-1 output or checkpoint directory."
                )
        dla = load_dla(dla_path, mllm=encoder.info)
        if dla.config.aggregation != config.dla_aggregation:
            raise SqueezeWeightsError(
                f"init_from's DLA aggregates layers as {dla.config.aggregation!r} but dla_aggregation="
                f"{config.dla_aggregation!r}; training stage 2 continues stage 1's DLA, so set "
                f"dla_aggregation={dla.config.aggregation}."
            )
        load_comfyui_lora(transformer, lora_path)
        rank = transformer.peft_config["default"].r
        if rank != config.lora_rank:
            raise SqueezeWeightsError(
                f"init_from's LoRA has rank {rank} but lora_rank={config.lora_rank}; stage 2 continues stage 1's "
                f"LoRA, so set lora_rank={rank}."
            )
        logger.info("initialised DLA and LoRA from %s", init)
    else:
        dla_config = DLAConfig.for_mllm(
            encoder.info, context_dim=transformer.config.joint_attention_dim, pooled_dim=transformer.config.pooled_projection_dim,
            attn_dim=config.dla_attn_dim, num_heads=config.dla_num_heads, aggregation=config.dla_aggregation,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            dla = DualLayerAggregator(dla_config)
            transformer.add_adapter(flux_lora_config(config.lora_rank, config.lora_alpha))
    if ((dla.config.context_dim, dla.config.pooled_dim)
            != (transformer.config.joint_attention_dim, transformer.config.pooled_projection_dim)):
        raise SqueezeWeightsError(
            f"the DLA outputs context {dla.config.context_dim} / pooled {dla.config.pooled_dim} but this FLUX takes "
            f"{transformer.config.joint_attention_dim} / {transformer.config.pooled_projection_dim}."
        )
    dla = dla.to(device, torch.float32).train()
    for name, parameter in transformer.named_parameters():
        is_lora = ".lora_" in name
        parameter.requires_grad_(is_lora)
        if is_lora:
            parameter.data = parameter.data.float()
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    vae.eval()
    return TrainingModels(encoder, dla, transformer, vae)
