"""A small synthetic subject-pair set: the embedded default of `squeeze train`, and the tests' data.

Each subject is a coloured toy (a shape with a face-like mark); its reference shows it alone on a plain background,
its targets show it in scenes of different sizes and aspect ratios, with a prompt that names both.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40)}
SCENES = {"beach": ((240, 220, 170), (90, 160, 220)), "forest": ((50, 110, 50), (140, 190, 140)),
          "snow": ((245, 245, 250), (170, 190, 210)), "city": ((90, 90, 100), (200, 180, 160))}
SIZES = [(96, 96), (128, 64), (64, 128), (112, 80)]


def draw_toy(draw: ImageDraw.ImageDraw, box, colour, shape: str) -> None:
    x0, y0, x1, y1 = box
    if shape == "ball":
        draw.ellipse(box, fill=colour, outline=(20, 20, 20), width=2)
    else:
        draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=2)
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, max(2, (x1 - x0) // 6)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 250, 250))


def subject_image(colour, shape: str, size, scene=None, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    width, height = size
    ground, sky = SCENES[scene] if scene else ((235, 235, 235), (235, 235, 235))
    image = Image.new("RGB", size, sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, int(height * 0.6), width, height), fill=ground)
    side = min(width, height) // 2
    x0 = rng.randint(0, width - side) if scene else (width - side) // 2
    y0 = rng.randint(0, height - side) if scene else (height - side) // 2
    draw_toy(draw, (x0, y0, x0 + side, y0 + side), colour, shape)
    return image


def write_demo_dataset(folder, pairs: int = 8, seed: int = 0) -> Path:
    """Write `pairs` samples (PNG files + manifest.jsonl) into `folder`; returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for index in range(pairs):
        colour = list(COLOURS)[index % len(COLOURS)]
        shape = ("ball", "box")[(index // len(COLOURS)) % 2]
        scene = rng.choice(list(SCENES))
        size = SIZES[index % len(SIZES)]
        reference, target = f"{index:03d}_ref.png", f"{index:03d}_target.png"
        subject_image(COLOURS[colour], shape, (80, 80), seed=index).save(folder / reference)
        subject_image(COLOURS[colour], shape, size, scene, seed=index).save(folder / target)
        lines.append({"references": [reference], "target": target, "prompt": f"a photo of the {colour} toy {shape} in the {scene}"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest
