"""The report's charts, drawn with Pillow only: grouped bars, line panels, a heatmap.

    grouped_bars({"DINO-I": {"Squeeze": 0.71, "UNO": 0.76}, ...}).save("metrics.png")
    line_panels(["0.9/0.1", "0.8/0.2"], {"DINO-I": [0.70, 0.72], "CLIP-T": [0.31, 0.30]}).save("tau.png")
    heatmap({"text": text_weights, "image": image_weights}).save("layers.png")
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from ..plots import _font

PALETTE = [(52, 101, 164), (230, 126, 34), (46, 139, 87), (192, 57, 43), (142, 68, 173), (127, 140, 141), (22, 160, 133),
           (211, 84, 0), (44, 62, 80)]


def _decimals(low: float, high: float) -> str:
    """A tick format with enough decimals that ticks over [low, high] read differently."""
    import math

    span = abs(high - low) or abs(high) or 1.0
    return f"{{:.{max(2, min(6, 1 - math.floor(math.log10(span / 4))))}f}}"


def _axes(draw, left, top, width, height, low, high, ticks=4, font=None, fmt=None):
    fmt = fmt or _decimals(low, high)
    draw.line((left, top, left, top + height), fill="black")
    draw.line((left, top + height, left + width, top + height), fill="black")
    for tick in range(ticks + 1):
        value = low + (high - low) * tick / ticks
        y = top + height - height * tick / ticks
        draw.line((left - 4, y, left, y), fill="black")
        draw.line((left + 1, y, left + width, y), fill=(232, 232, 232))
        label = fmt.format(value)
        draw.text((left - 8 - draw.textlength(label, font=font), y - 7), label, fill="black", font=font)


def grouped_bars(groups: dict[str, dict[str, float | None]], title: str = "", width: int = 1000, height: int = 440) -> Image.Image:
    """One cluster per group (metric), one bar per series (system); None values are left out (and labelled n/a)."""
    series = list(dict.fromkeys(name for values in groups.values() for name in values))
    width = max(width, 110 + len(groups) * (len(series) * 44 + 30))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(18), _font(12)
    left, right, top, bottom = 70, 20, 50, 90
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([v for values in groups.values() for v in values.values() if v is not None] + [1e-6]) * 1.1
    draw.text((left, 12), title, fill="black", font=font)
    _axes(draw, left, top, plot_w, plot_h, 0.0, peak, font=small)
    slot = plot_w / max(1, len(groups))
    bar = slot * 0.8 / max(1, len(series))
    for g, (group, values) in enumerate(groups.items()):
        x0 = left + slot * g + slot * 0.1
        for s, name in enumerate(series):
            value = values.get(name)
            x = x0 + s * bar
            if value is None:
                draw.text((x + 2, top + plot_h - 16), "n/a", fill=(150, 150, 150), font=small)
                continue
            y = top + plot_h - plot_h * value / peak
            draw.rectangle((x, y, x + bar - 2, top + plot_h), fill=PALETTE[s % len(PALETTE)])
            label = f"{value:.3f}"
            if draw.textlength(label, font=small) <= bar:  # else the table in the report has it
                draw.text((x + (bar - draw.textlength(label, font=small)) / 2, y - 14), label, fill="black", font=small)
        text_w = draw.textlength(group, font=small)
        draw.text((left + slot * (g + 0.5) - text_w / 2, top + plot_h + 6), group, fill="black", font=small)
    for s, name in enumerate(series):  # legend, wrapped in rows of 4
        x, y = left + (s % 4) * 230, height - 60 + (s // 4) * 18
        draw.rectangle((x, y, x + 12, y + 12), fill=PALETTE[s % len(PALETTE)])
        draw.text((x + 18, y - 1), name, fill="black", font=small)
    return image


def line_panels(labels: list[str], panels: dict[str, list[float | None]], title: str = "", width: int = 1000,
                panel_height: int = 180) -> Image.Image:
    """One panel per metric, each a line over the same x labels, with its own y range."""
    height = 50 + len(panels) * (panel_height + 40) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(18), _font(12)
    left, right = 90, 50  # room for the tick labels and for the last x label, centred on its point
    plot_w = width - left - right
    draw.text((left, 12), title, fill="black", font=font)
    step = plot_w / max(1, len(labels) - 1) if len(labels) > 1 else 0
    for p, (name, values) in enumerate(panels.items()):
        top = 50 + p * (panel_height + 40)
        known = [v for v in values if v is not None]
        low, high = (min(known), max(known)) if known else (0.0, 1.0)
        pad = (high - low) * 0.15 or abs(high) * 0.05 or 0.01
        low, high = low - pad, high + pad
        draw.text((left, top - 18), name, fill=PALETTE[p % len(PALETTE)], font=small)
        _axes(draw, left, top, plot_w, panel_height, low, high, font=small)
        points = [(left + i * step if len(labels) > 1 else left + plot_w / 2, top + panel_height - panel_height * (v - low) / (high - low))
                  for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            draw.line(points, fill=PALETTE[p % len(PALETTE)], width=3)
        for x, y in points:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=PALETTE[p % len(PALETTE)])
        if p == len(panels) - 1:
            for i, label in enumerate(labels):
                x = left + i * step if len(labels) > 1 else left + plot_w / 2
                draw.text((x - draw.textlength(label, font=small) / 2, top + panel_height + 6), label, fill="black", font=small)
    return image


def heatmap(rows: dict[str, list[float]], title: str = "", cell: int = 44, value_labels: bool = True) -> Image.Image:
    """Rows of values (e.g. per-layer weights of the text and the image LAP), white (row minimum) to blue (maximum
    over all rows); columns numbered from 0."""
    columns = max(len(v) for v in rows.values())
    left, top = 90, 50
    font, small = _font(18), _font(11)
    title_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)
    width, height = int(max(title_width + 30, left + columns * cell + 20, 480)), top + len(rows) * cell + 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    everything = [v for values in rows.values() for v in values]
    low, high = min(everything), max(everything)
    draw.text((10, 12), title, fill="black", font=font)
    for r, (name, values) in enumerate(rows.items()):
        draw.text((10, top + r * cell + cell / 2 - 7), name, fill="black", font=small)
        for c, value in enumerate(values):
            share = (value - low) / (high - low) if high > low else 0.5
            colour = tuple(int(255 - share * (255 - target)) for target in (31, 78, 160))
            box = (left + c * cell, top + r * cell, left + (c + 1) * cell - 1, top + (r + 1) * cell - 1)
            draw.rectangle(box, fill=colour)
            if value_labels and cell >= 36:
                text = f"{value:.3f}".lstrip("0") if 0 <= value < 1 else f"{value:.2f}"
                draw.text((box[0] + (cell - draw.textlength(text, font=small)) / 2, box[1] + cell / 2 - 7), text,
                          fill="white" if share > 0.55 else "black", font=small)
    for c in range(columns):
        draw.text((left + c * cell + cell / 2 - draw.textlength(str(c), font=small) / 2, top + len(rows) * cell + 4), str(c),
                  fill="black", font=small)
    draw.text((left, top + len(rows) * cell + 24), f"MLLM layer (colour: {low:.3f} white to {high:.3f} blue)", fill="black", font=small)
    return image
