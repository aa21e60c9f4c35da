"""The miniature FLUX VAE: diffusers `AutoencoderKL` with the FLUX VAE's interface (16 latent channels, 8x down,
FLUX's scaling 0.3611 and shift 0.1159), trained to reconstruct the world's renders.

    vae, stats = pretrain_vae(world, MiniVAEConfig())
    vae.save_pretrained("runs/mini/models/vae")          # loads with squeeze_core.vae.load_flux_vae

FLUX normalises latents as (z - 0.1159) * 0.3611 and everything downstream (the sampler, ComfyUI) uses those two
numbers. At `fold_at` of training the per-channel mean and spread of the latents are folded into the encoder's last
conv and the decoder's first conv, so that the world's normalised latents have zero mean and unit spread per channel,
as FLUX's do for photographs. The fold is exact but for the decoder's zero padding (a zero at the border no longer
means the same latent value), which the rest of training absorbs with the encoder frozen, so the statistics the fold
set stay as they are.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..flux import FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT, vae_downscale
from .schedule import optimise, warmup_cosine

logger = logging.getLogger("squeeze.mini.vae")


@dataclass
class MiniVAEConfig:
    seed: int = 0
    steps: int = 1_500
    batch_size: int = 8
    crop: int = 64  # px: random crops on the latent grid (whole renders at 64; 32 px crops were 4x cheaper, 2 dB worse)
    learning_rate: float = 2e-3
    kl_weight: float = 1e-5  # small: the latent must keep the details; folding fixes its scale afterwards
    # per resolution (64, 32, 16, 8 px); 4 blocks = 8x down as FLUX. 3 blocks (4 px cells) keep far more of the
    # identity details (docs/mini/findings.md), but the mini FLUX cannot draw on that grid within the CPU budget
    channels: tuple[int, ...] = (16, 32, 32, 32)
    mid_attention: bool = True  # the FLUX VAE's attention in the middle block
    fold_at: float = 0.8  # share of training after which the latent statistics are folded and the encoder frozen
    sample_posterior: bool = True  # decode a draw from the posterior (a VAE); False: its mean (a plain autoencoder)
    # reconstruction-loss weight of the subject's box (world.subject_box) against the rest; 1 is the plain loss. The
    # subject covers a fifth of a render: x16 lifts the identity the judge reads on reconstructions from 0.544 to 0.732
    subject_weight: float = 16.0

    def __post_init__(self):
        if not self.subject_weight > 0:
            raise ValueError(f"MiniVAEConfig.subject_weight must be > 0 (1 = the plain loss), got {self.subject_weight}")

    @classmethod
    def quick(cls) -> "MiniVAEConfig":
        return cls(steps=40, batch_size=8)


def build_vae(config: MiniVAEConfig):
    from diffusers import AutoencoderKL

    torch.manual_seed(config.seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=tuple(config.channels), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * len(config.channels), up_block_types=("UpDecoderBlock2D",) * len(config.channels),
        layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=FLUX_LATENT_SCALE, shift_factor=FLUX_LATENT_SHIFT, sample_size=64, mid_block_add_attention=config.mid_attention,
    )


def pretrain_vae(images: torch.Tensor, config: MiniVAEConfig | None = None, progress: bool = True, device="cpu",
                 subject_boxes: torch.Tensor | None = None):
    """images: (N, 64, 64, 3) uint8 training renders; subject_boxes: (N, 4) px (left, top, right, bottom) of each
    render's subject (`world.subject_box`), needed when config.subject_weight != 1.
    -> (vae in eval mode on the CPU, stats with the loss curve).
    Random draws come from a CPU generator, so a GPU run draws the same batches as a CPU run."""
    config = config or MiniVAEConfig()
    weighted = config.subject_weight != 1.0
    if weighted and (subject_boxes is None or subject_boxes.shape != (len(images), 4)):
        raise ValueError(f"MiniVAEConfig.subject_weight={config.subject_weight} needs subject_boxes of shape ({len(images)}, 4),"
                         f" one (left, top, right, bottom) per image; got {None if subject_boxes is None else tuple(subject_boxes.shape)}")
    start = time.perf_counter()
    vae = build_vae(config).to(device).train()
    cell = vae_downscale(vae)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, config.steps, 0.05)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    bar = tqdm(range(config.steps), desc="vae: training", unit="step", disable=not progress)
    fold_at = int(config.steps * config.fold_at)
    for step in bar:
        if step == fold_at:
            fold_latent_statistics(vae, images[:512])
            vae.encoder.requires_grad_(False)  # the folded statistics stay exact; the decoder absorbs the padding
        index = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        x = images[index].float().movedim(-1, 1) / 127.5 - 1.0
        if weighted:  # the weight map rides along as a 4th channel so that the crop cuts both alike
            x = torch.cat([x, box_weights(subject_boxes[index], x.shape[-1], config.subject_weight)], dim=1)
        x = random_crop(x, config.crop, generator, cell).to(device)
        x, weight = (x[:, :3], x[:, 3:]) if weighted else (x, None)
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(device)  # drawn either way: same batches
        z = posterior.mean + posterior.std * noise if config.sample_posterior else posterior.mean
        reconstruction = vae.decode(z).sample
        loss = reconstruction_loss(reconstruction, x, weight) + config.kl_weight * posterior.kl().mean()
        losses.append(optimise(optimiser, schedule, loss))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    vae = vae.cpu().eval().requires_grad_(False)
    return vae, dict(losses=losses, latent_statistics=normalised_latent_statistics(vae, images[:512]),
                     seconds=time.perf_counter() - start, parameters=sum(p.numel() for p in vae.parameters()))


def box_weights(boxes: torch.Tensor, size: int, weight: float) -> torch.Tensor:
    """(B, 4) px boxes -> (B, 1, size, size) maps: `weight` inside each box, 1 outside."""
    grid = torch.arange(size)
    inside_x = (grid[None, :] >= boxes[:, 0:1]) & (grid[None, :] < boxes[:, 2:3])  # (B, size)
    inside_y = (grid[None, :] >= boxes[:, 1:2]) & (grid[None, :] < boxes[:, 3:4])
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return (1.0 + (weight - 1.0) * inside.float())[:, None]


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE + 0.5 L1; with `weight` (B, 1, H, W) a weighted mean of both, so its scale matches the plain loss."""
    if weight is None:
        return F.mse_loss(reconstruction, target) + 0.5 * F.l1_loss(reconstruction, target)
    error = reconstruction - target
    per_pixel = error.square().mean(dim=1, keepdim=True) + 0.5 * error.abs().mean(dim=1, keepdim=True)
    return (per_pixel * weight).sum() / weight.sum()


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator, cell: int = 8) -> torch.Tensor:
    """One crop per batch at a random offset on the latent grid of `cell` px (so latent cells line up as in whole
    images)."""
    if size >= x.shape[-1]:
        return x
    cells = (x.shape[-1] - size) // cell + 1
    top, left = (int(v) * cell for v in torch.randint(0, cells, (2,), generator=generator))
    return x[:, :, top : top + size, left : left + size]


@torch.no_grad()
def _modes(vae, images: torch.Tensor) -> torch.Tensor:
    x = images.float().movedim(-1, 1) / 127.5 - 1.0
    device = next(vae.parameters()).device
    return torch.cat([vae.encode(x[i : i + 64].to(device)).latent_dist.mode().cpu() for i in range(0, len(x), 64)])


def normalised_latent_statistics(vae, images: torch.Tensor) -> dict:
    """Mean and spread of FLUX-normalised latents over channels' means/stds: what the sampler's noise should match."""
    z = (_modes(vae, images) - FLUX_LATENT_SHIFT) * FLUX_LATENT_SCALE
    mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
    return dict(channel_mean_abs_max=float(mean.abs().max()), channel_std_min=float(std.min()), channel_std_max=float(std.max()))


@torch.no_grad()
def fold_latent_statistics(vae, images: torch.Tensor) -> None:
    """Rescale so that (mode - shift) * scale has zero mean and unit spread per channel on `images`. Exact on the
    encoder side; on the decoder side exact but for its zero padding (see the module docstring)."""
    z = _modes(vae, images)
    device = vae.encoder.conv_out.weight.device
    mean, std = z.mean(dim=(0, 2, 3)).to(device), z.std(dim=(0, 2, 3)).clamp(min=1e-6).to(device)
    gain = 1.0 / (std * FLUX_LATENT_SCALE)  # z' = gain * (z - mean) + shift
    conv_out, conv_in = vae.encoder.conv_out, vae.decoder.conv_in
    channels = len(mean)
    conv_out.weight[:channels] *= gain[:, None, None, None]
    conv_out.bias[:channels] = gain * (conv_out.bias[:channels] - mean) + FLUX_LATENT_SHIFT
    conv_out.bias[channels:] += 2.0 * torch.log(gain)  # log-variance moves with the mean's scale
    # decoder sees z = (z' - shift) / gain + mean
    offset = mean - FLUX_LATENT_SHIFT / gain
    conv_in.bias += (conv_in.weight * offset[None, :, None, None]).sum(dim=(1, 2, 3))
    conv_in.weight /= gain[None, :, None, None]


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> reconstructions (N, 64, 64, 3) float in [0, 1], through the latent's mode."""
    x = images.float().movedim(-1, 1) / 127.5 - 1.0
    out = torch.cat([vae.decode(vae.encode(x[i : i + 64]).latent_dist.mode()).sample for i in range(0, len(x), 64)])
    return ((out + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(F.mse_loss(a.float(), b.float()))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))

