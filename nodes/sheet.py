"""SqueezeComparisonSheet: reference | MLLM only | VAE only | staged side by side, labelled, as `squeeze generate
--sheet` draws it (squeeze_core.sheet), so the canvas shows what each conditioning branch draws with one seed."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..squeeze_core.images import to_image_batch
from ..squeeze_core.references import check_image_batch
from ..squeeze_core.sheet import image_sheet

COLUMNS = {"reference": "reference", "mllm_only": "MLLM only", "vae_only": "VAE only", "staged": "staged"}


def comparison_sheet(images: dict, tile: int) -> torch.Tensor:
    """{input name: IMAGE batch} in COLUMNS order -> (1, H, W, 3) sheet; the first image of each batch."""
    columns = [check_image_batch(images[name], name=name)[0] for name in COLUMNS]
    sheet = image_sheet([columns], list(COLUMNS.values()), tile=tile)
    return to_image_batch(sheet)


class SqueezeComparisonSheet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SqueezeComparisonSheet",
            display_name="Squeeze Comparison Sheet",
            category="Squeeze",
            description="The reference and the images of each conditioning branch side by side, labelled "
                        "(same seed in each): what the MLLM and the VAE reference latents each carry.",
            inputs=[
                io.Image.Input("reference", tooltip="The reference image."),
                io.Image.Input("mllm_only", tooltip="Sampled with MLLM(prompt + references) in every step."),
                io.Image.Input("vae_only", tooltip="Sampled with MLLM(prompt only) + reference latents in every step."),
                io.Image.Input("staged", tooltip="Sampled in denoising phases (the method)."),
                io.Int.Input("tile", default=256, min=32, max=1024, step=16,
                             tooltip="Each image is scaled to this square size (nearest neighbour, so small images stay sharp)."),
            ],
            outputs=[io.Image.Output(display_name="sheet", tooltip="One image: the four columns with their labels.")],
        )

    @classmethod
    def execute(cls, reference, mllm_only, vae_only, staged, tile) -> io.NodeOutput:
        images = dict(reference=reference, mllm_only=mllm_only, vae_only=vae_only, staged=staged)
        return io.NodeOutput(comparison_sheet(images, tile))
