"""Pictures of what the DLA learned, drawn with Pillow only (works inside ComfyUI, no plotting library needed).

`layer_weight_chart(layer_weights, token_types)` -> an RGB image: for every MLLM layer, the mean weight the text LAP
(blue) and the image LAP (orange) give it, with the uniform mix 1/L as a dashed line. This is the paper's
figure 3(b) for one prompt.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from .mllm import TokenType

TEXT_COLOR = (52, 101, 164)
IMAGE_COLOR = (230, 126, 34)


def mean_layer_weights(layer_weights: torch.Tensor, token_types: torch.Tensor) -> dict[str, torch.Tensor]:
    """(T, L) weights and (T,) types of one item -> {"text": (L,), "image": (L,)} means (absent if no such token)."""
    layer_weights = layer_weights.float().cpu()
    token_types = token_types.cpu()
    groups = {"text": (token_types == TokenType.TEXT) | (token_types == TokenType.TEMPLATE), "image": token_types == TokenType.IMAGE}
    return {name: layer_weights[mask].mean(dim=0) for name, mask in groups.items() if bool(mask.any())}


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def layer_weight_chart(layer_weights: torch.Tensor, token_types: torch.Tensor, width: int = 960, height: int = 420,
                       title: str = "DLA layer weights") -> Image.Image:
    means = mean_layer_weights(layer_weights, token_types)
    num_layers = layer_weights.shape[-1]
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(18), _font(13)
    left, right, top, bottom = 70, 20, 50, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([float(m.max()) for m in means.values()] + [1.0 / num_layers]) * 1.15

    draw.text((left, 12), title, fill="black", font=font)
    draw.line((left, top, left, top + plot_h), fill="black")
    draw.line((left, top + plot_h, left + plot_w, top + plot_h), fill="black")
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        draw.line((left - 5, y, left, y), fill="black")
        draw.text((6, y - 8), f"{value:.3f}", fill="black", font=small)

    slot = plot_w / num_layers
    bar = slot * 0.38
    for layer in range(num_layers):
        x0 = left + slot * (layer + 0.5) - bar
        for offset, (name, color) in enumerate((("text", TEXT_COLOR), ("image", IMAGE_COLOR))):
            if name in means:
                value = float(means[name][layer])
                draw.rectangle((x0 + offset * bar, top + plot_h - plot_h * value / peak, x0 + (offset + 1) * bar, top + plot_h), fill=color)
        if num_layers <= 32 or layer % max(1, num_layers // 16) == 0:
            label_w = draw.textlength(str(layer), font=small)
            draw.text((left + slot * (layer + 0.5) - label_w / 2, top + plot_h + 6), str(layer), fill="black", font=small)
    draw.text((left + plot_w // 2 - 40, height - 22), "MLLM layer", fill="black", font=small)

    uniform_y = top + plot_h - plot_h / (num_layers * peak)
    for x in range(left, left + plot_w, 12):
        draw.line((x, uniform_y, min(x + 6, left + plot_w), uniform_y), fill=(120, 120, 120))
    legend_x = width - right - 330
    for index, (label, color) in enumerate((("text LAP", TEXT_COLOR), ("image LAP", IMAGE_COLOR), ("uniform 1/L", (120, 120, 120)))):
        x = legend_x + index * 110
        draw.rectangle((x, 18, x + 14, 32), fill=color)
        draw.text((x + 20, 17), label, fill="black", font=small)
    return image
