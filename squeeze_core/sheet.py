"""Side-by-side sheets: one row per example, one labelled column per source (reference, then each mode).

    sheet = image_sheet([[reference, mllm_only, vae_only, staged]], ["reference", "MLLM only", "VAE only", "staged"])
    save_sheet(sheet, "squeeze_sheet.png")          # atomically
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 14  # px of the label strip above the columns


def to_picture(image) -> Image.Image:
    """A PIL image, or an (H, W, 3) / (1, H, W, 3) tensor in [0, 1] -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = image[0] if image.dim() == 4 else image
    return Image.fromarray((array.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


def image_sheet(rows: list[list], labels: list[str] | None = None, tile: int = 256) -> Image.Image:
    """rows of images (PIL or tensors, any size: each is scaled to `tile` px square, nearest neighbour so small images
    stay sharp) -> one RGB sheet, with `labels` written above the columns."""
    columns = max(len(row) for row in rows)
    top = LABEL_HEIGHT if labels else 0
    sheet = Image.new("RGB", (columns * tile, top + len(rows) * tile), (255, 255, 255))
    if labels:
        draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=11)
        for column, label in enumerate(labels):
            draw.text((column * tile + 4, 1), label, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            sheet.paste(to_picture(image).resize((tile, tile), Image.NEAREST), (c * tile, top + r * tile))
    return sheet


def save_sheet(sheet: Image.Image, path) -> None:
    from .files import atomic_write

    atomic_write(path, lambda temporary: sheet.save(temporary, format="PNG"))


