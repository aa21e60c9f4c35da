"""Does a base mini FLUX read the second panel on the data it was pretrained on? For the first `--identities` training
identities, their first render is the target (noised at flow times 0.3-0.9, its detail-free prompt as caption) and
their second render the partner at the reference latents' place; prints, per time, the loss on the target with the
right partner and with another identity's (the next one's), each clean and noised to the same time, and with none.

    python benchmarks/mini_panel_check.py --models runs/panels2/models --world runs/base/world
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squeeze_core.flux import flux_velocity, load_flux_transformer  # noqa: E402
from squeeze_core.mini.build import _encode_latents  # noqa: E402
from squeeze_core.mini.data import load_images, load_world  # noqa: E402
from squeeze_core.mini.flux_base import MiniTextEncoder  # noqa: E402
from squeeze_core.mini.world import prompt  # noqa: E402
from squeeze_core.sampling import to_model_space  # noqa: E402
from squeeze_core.vae import load_flux_vae  # noqa: E402


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="a models/ folder (flux/, vae/)")
    parser.add_argument("--world", required=True, help="the world the models were pretrained on")
    parser.add_argument("--identities", type=int, default=40)
    args = parser.parse_args()
    models, train = Path(args.models), load_world(args.world).train[: args.identities]
    transformer = load_flux_transformer(models / "flux" / "transformer", dtype=torch.float32)
    text = MiniTextEncoder.from_pretrained(models / "flux")
    vae = load_flux_vae(models / "vae", dtype=torch.float32)
    images = load_images([t.renders[k].path for t in train for k in (0, 1)])
    latents = to_model_space(_encode_latents(vae, images)).reshape(len(train), 2, *vae_grid(images, vae))
    x0, partner = latents[:, 0], latents[:, 1]
    wrong = partner.roll(1, 0)
    context, mask, pooled = text.encode([prompt(t.identity.klass, t.renders[0].scene) for t in train])
    generator = torch.Generator().manual_seed(0)
    for time in (0.3, 0.5, 0.7, 0.9):
        noise, noise1 = torch.randn(x0.shape, generator=generator), torch.randn(x0.shape, generator=generator)
        t = torch.full((len(train),), time)
        xt = (1 - time) * x0 + time * noise
        cases = {"right": [partner], "wrong": [wrong], "right noised": [(1 - time) * partner + time * noise1],
                 "wrong noised": [(1 - time) * wrong + time * noise1], "none": []}
        losses = {name: float((flux_velocity(transformer, xt, t, context, pooled, 1.0, refs, context_mask=mask) - (noise - x0))
                              .square().mean()) for name, refs in cases.items()}
        print(f"t {time}: " + ", ".join(f"{name} {value:.4f}" for name, value in losses.items()), flush=True)


def vae_grid(images, vae) -> tuple[int, int, int]:
    """(channels, h, w) of the VAE's latents for these images."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return vae.config.latent_channels, images.shape[1] // scale, images.shape[2] // scale


if __name__ == "__main__":
    main()
