"""The FLUX transformer on the headless side: loading it, and its call with inputs laid out exactly as ComfyUI lays
them out.

    transformer = load_flux_transformer("FLUX.1-dev/transformer", dtype=torch.bfloat16, device="cuda")
    velocity = flux_velocity(transformer, latent, sigma, context, pooled, guidance=3.5, references=[ref_latent, ...])

`transformer` is a diffusers `FluxTransformer2DModel`; latents are (B, 16, h, w) in the model's normalised latent
space (ComfyUI's `process_latent_in`: (vae_latent - 0.1159) * 0.3611 for the FLUX VAE). Reference latents are appended
after the target tokens with the UNO-style ids of `squeeze_core.positions`; the returned velocity covers the target
only, unpacked to (B, 16, h, w). The timestep is the flow sigma (diffusers scales it by 1000 inside, as ComfyUI does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .positions import PATCH, uxo_position_ids

FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT = 0.3611, 0.1159
LATENT_CHANNELS = 16  # the FLUX VAE's latent channels
VAE_DOWNSCALE = 8  # pixels per latent cell on each side (the FLUX VAE's; a smaller VAE may halve fewer times)


def latent_shape(width: int, height: int, batch: int = 1, downscale: int = VAE_DOWNSCALE) -> tuple[int, int, int, int]:
    """The VAE latent of a width x height px image: (batch, 16, height / downscale, width / downscale)."""
    return (batch, LATENT_CHANNELS, height // downscale, width // downscale)


def vae_downscale(vae) -> int:
    """Pixels per latent cell of a diffusers `AutoencoderKL`: each encoder block but the last halves the image, as
    diffusers' pipelines compute it (8 for the FLUX VAE's four blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_diffusers_folder(cls, path, kind: str, hint: str, dtype, device):
    """A diffusers model from a local folder (config.json + safetensors), frozen, in eval mode. Pickled weights are
    never loaded and nothing is downloaded: a missing or incomplete folder is an error that says what to point at."""
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

    return load_diffusers_folder(FluxTransformer2DModel, path, "FLUX transformer",
                                 "Point --transformer at the 'transformer/' folder of a local FLUX.1-dev copy.", dtype, device)


def pad_to_patches(latent: torch.Tensor) -> torch.Tensor:
    height, width = latent.shape[-2:]
    return F.pad(latent, (0, (-width) % PATCH, 0, (-height) % PATCH), mode="circular")


def pack(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, C * 4), the token order of both ComfyUI and diffusers."""
    return rearrange(pad_to_patches(latent), "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=PATCH, pw=PATCH)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    rows, columns = (height + PATCH // 2) // PATCH, (width + PATCH // 2) // PATCH
    latent = rearrange(tokens, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=rows, w=columns, ph=PATCH, pw=PATCH)
    return latent[:, :, :height, :width]


def flux_velocity(transformer, latent, sigma, context, pooled, guidance=3.5, references=(), context_mask=None) -> torch.Tensor:
    """context_mask (B, T), 1 for real context tokens: a batch of prompts of different lengths, right-padded; the
    padding is masked out of every attention, so each item gets what it would get alone."""
    return flux_velocities(transformer, latent, sigma, context, pooled, guidance, references, context_mask)[0]


def flux_velocities(transformer, latent, sigma, context, pooled, guidance=3.5, references=(), context_mask=None) -> list:
    """As flux_velocity, but FLUX's output for every latent: [target, *references], each (B, C, h, w) as given."""
    batch, _, height, width = latent.shape
    tokens = [pack(latent)] + [pack(ref.expand(batch, -1, -1, -1)) for ref in references]
    image_ids = uxo_position_ids((height, width), [tuple(ref.shape[-2:]) for ref in references])
    dtype = next(transformer.parameters()).dtype
    sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(batch)
    guidance = torch.full((batch,), float(guidance)) if transformer.config.guidance_embeds else None
    attention = None
    if context_mask is not None and not bool(context_mask.all()):
        image_tokens = sum(t.shape[1] for t in tokens)
        keys = torch.cat([context_mask.bool(), context_mask.new_ones(batch, image_tokens, dtype=torch.bool)], dim=1)
        attention = {"attention_mask": keys[:, None, None, :].to(latent.device)}  # (B, 1, 1, T + image tokens)
    out = transformer(
        hidden_states=torch.cat(tokens, dim=1).to(dtype),
        encoder_hidden_states=context.to(dtype),
        pooled_projections=pooled.to(dtype),
        timestep=sigma.to(latent.device, dtype),
        img_ids=image_ids.to(latent.device),
        txt_ids=torch.zeros(context.shape[1], 3, device=latent.device),
        guidance=None if guidance is None else guidance.to(latent.device, dtype),
        joint_attention_kwargs=attention,
        return_dict=False,
    )[0]
    sizes = [t.shape[1] for t in tokens]
    shapes = [(height, width)] + [tuple(ref.shape[-2:]) for ref in references]
    return [unpack(part.float(), h, w) for part, (h, w) in zip(out.split(sizes, dim=1), shapes)]
