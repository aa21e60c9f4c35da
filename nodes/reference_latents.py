"""SqueezeReferenceLatents: reference images -> VAE latents attached to a conditioning (UNO-style positions)."""

from __future__ import annotations

import comfy.utils
import node_helpers
from comfy_api.latest import io

from ..squeeze_core.references import DEFAULT_LONG_SIDE, LATENT_MULTIPLE, MAX_LONG_SIDE, MIN_LONG_SIDE, resize_reference
from .dla_encode import MAX_IMAGE_INPUTS, split_references

# ComfyUI's FLUX places "uxo" reference tokens at RoPE index 0, diagonally past the target canvas (UNO / USO).
REFERENCE_METHOD = "uxo"


def encode_references(vae, images: list, long_side: int = DEFAULT_LONG_SIDE) -> list:
    references = split_references(images)
    progress = comfy.utils.ProgressBar(len(references))
    latents = []
    for reference in references:
        pixels = resize_reference(reference[None], long_side)  # (1, h, w, 3), h and w multiples of 16
        latents.append(vae.encode(pixels))
        progress.update(1)
    return latents


def attach_references(conditioning, latents: list) -> list:
    """Append to any reference latents the conditioning already has (chained nodes add up)."""
    conditioning = node_helpers.conditioning_set_values(conditioning, {"reference_latents": latents}, append=True)
    return node_helpers.conditioning_set_values(conditioning, {"reference_latents_method": REFERENCE_METHOD})


class SqueezeReferenceLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        image_inputs = [
            io.Image.Input(f"image_{i}", optional=i > 1,
                           tooltip=f"Reference image(s) of the subject (slot {i}); every image of a batch is one reference.")
            for i in range(1, MAX_IMAGE_INPUTS + 1)
        ]
        return io.Schema(
            node_id="SqueezeReferenceLatents",
            display_name="Squeeze Reference Latents",
            category="Squeeze",
            description="VAE-encodes the references and attaches them to the conditioning as reference latents "
                        "(identity detail for denoising phases 2 and 3).",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="Usually a Squeeze DLA Encode output."),
                io.Vae.Input("vae", tooltip="The FLUX VAE."),
                *image_inputs,
                io.Int.Input("long_side", default=DEFAULT_LONG_SIDE, min=MIN_LONG_SIDE, max=MAX_LONG_SIDE, step=LATENT_MULTIPLE,
                             tooltip="Each reference is resized so its long side is this (a multiple of 16), keeping its aspect ratio."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning", tooltip="The conditioning with the reference latents added.")],
        )

    @classmethod
    def execute(cls, conditioning, vae, long_side, image_1, image_2=None, image_3=None, image_4=None) -> io.NodeOutput:
        latents = encode_references(vae, [image_1, image_2, image_3, image_4], long_side)
        return io.NodeOutput(attach_references(conditioning, latents))
