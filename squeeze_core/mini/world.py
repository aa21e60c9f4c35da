"""The miniature world: procedural subjects in procedural scenes, with ground truth for every pixel's cause.

    identity = Identity("toy", 1, "red", "blue", "striped", "ring")
    scene = Scene("beach", "left", "small", "tree")
    image = render(identity, scene, seed=3)          # 64 x 64 RGB, deterministic for (identity, scene, seed)
    prompt(identity.klass, scene)                    # "a small toy on the beach, on the left, next to a tree"
    caption(identity, scene)                         # the prompt plus every identity detail (what a T2I model reads)

An identity is a class (its class word: "toy", "box", "vase", "house") plus details a viewer can only tell apart by
looking: the class's body variant (ears, proportions, neck, roof), two colours, the pattern that mixes them, and a
mark on the body. A scene is what a prompt can ask for: the setting, the subject's horizontal position, its size,
and a companion object standing next to it. Held-out identities are new combinations of attribute values that all
occur in training, as DreamBench's subjects are new objects of familiar kinds.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass, fields

from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 64  # px: every render, reference and generated image of the world
SUPERSAMPLE = 4  # drawn at 4x and reduced, so edges are anti-aliased

CLASS_VARIANTS = {  # class word -> the words for its three body variants
    "toy": ("round-eared", "pointy-eared", "antennaed"),
    "box": ("square", "tall", "wide"),
    "vase": ("narrow-necked", "wide-necked", "handled"),
    "house": ("pointed-roof", "flat-roof", "chimneyed"),
}
COLOURS = {
    "red": (215, 40, 40), "orange": (245, 145, 25), "yellow": (240, 215, 40),
    "green": (35, 165, 75), "blue": (40, 90, 225), "purple": (150, 60, 195),
}
PATTERNS = ("striped", "checked", "spotted", "split")
MARKS = ("dot", "cross", "ring", "triangle")

SETTINGS = {  # setting -> (sky / wall colour, ground / floor colour, prompt phrase)
    "beach": ((135, 200, 240), (235, 215, 160), "on the beach"),
    "grass": ((175, 215, 245), (95, 175, 80), "on the grass"),
    "snow": ((195, 200, 212), (250, 250, 252), "in the snow"),
    "night": ((20, 24, 60), (55, 55, 75), "at night"),
    "room": ((232, 218, 192), (140, 95, 60), "in a room"),
}
POSITIONS = {"left": (0.27, "on the left"), "center": (0.5, "in the middle"), "right": (0.73, "on the right")}
SIZES = {"small": 0.30, "large": 0.50}  # subject height / image height
COMPANIONS = ("none", "ball", "tree", "cone")

IDENTITY_ATTRIBUTES = {  # the details that make an identity (what the identity score reads)
    "klass": tuple(CLASS_VARIANTS), "variant": (0, 1, 2), "primary": tuple(COLOURS), "secondary": tuple(COLOURS),
    "pattern": PATTERNS, "mark": MARKS,
}
SCENE_ATTRIBUTES = {"setting": tuple(SETTINGS), "position": tuple(POSITIONS), "size": tuple(SIZES), "companion": COMPANIONS}
ATTRIBUTES = {**IDENTITY_ATTRIBUTES, **SCENE_ATTRIBUTES}


@dataclass(frozen=True)
class Identity:
    klass: str  # class word
    variant: int  # 0..2, the class's body variant (CLASS_VARIANTS)
    primary: str  # body colour
    secondary: str  # pattern colour, never the primary
    pattern: str
    mark: str

    def __post_init__(self):
        for name, values in IDENTITY_ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"Identity.{name}={getattr(self, name)!r} is not one of {values}")
        if self.primary == self.secondary:
            raise ValueError("an identity's two colours must differ")

    @property
    def key(self) -> str:
        return f"{self.klass}-{self.variant}-{self.primary}-{self.secondary}-{self.pattern}-{self.mark}"

    def details(self) -> str:
        """The words that single this identity out: 'pointy-eared red and blue striped toy with a ring mark'."""
        variant = CLASS_VARIANTS[self.klass][self.variant]
        return f"{variant} {self.primary} and {self.secondary} {self.pattern} {self.klass} with a {self.mark} mark"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scene:
    setting: str
    position: str
    size: str
    companion: str = "none"

    def __post_init__(self):
        for name, values in SCENE_ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"Scene.{name}={getattr(self, name)!r} is not one of {values}")

    def to_dict(self) -> dict:
        return asdict(self)


def all_identities() -> list[Identity]:
    combos = itertools.product(CLASS_VARIANTS, range(3), COLOURS, COLOURS, PATTERNS, MARKS)
    return [Identity(*c) for c in combos if c[2] != c[3]]


def all_scenes() -> list[Scene]:
    return [Scene(*c) for c in itertools.product(SETTINGS, POSITIONS, SIZES, COMPANIONS)]


def _scene_words(scene: Scene) -> str:
    words = f"{SETTINGS[scene.setting][2]}, {POSITIONS[scene.position][1]}"
    return words + (f", next to a {scene.companion}" if scene.companion != "none" else "")


def prompt(klass: str, scene: Scene) -> str:
    """A subject-driven prompt: the class word and the scene, never the identity's details."""
    return f"a {scene.size} {klass} {_scene_words(scene)}"


def caption(identity: Identity, scene: Scene) -> str:
    """Everything in the image, as a text-to-image model or a describing MLLM sees it."""
    return f"a {scene.size} {identity.details()} {_scene_words(scene)}"


def identity_from_dict(data: dict) -> Identity:
    return Identity(**{f.name: data[f.name] for f in fields(Identity)})


def scene_from_dict(data: dict) -> Scene:
    return Scene(**{f.name: data[f.name] for f in fields(Scene)})


# ------------------------------------------------------------------------------------------------------- drawing
def _silhouette(identity: Identity, width: int, height: int) -> tuple[Image.Image, tuple[float, float]]:
    """The subject's mask in a (width, height) box and where its mark goes (fractions of the box)."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    w, h, v = width, height, identity.variant
    if identity.klass == "toy":
        draw.ellipse((0.08 * w, 0.28 * h, 0.92 * w, h - 1), fill=255)
        if v == 0:
            for x in (0.12, 0.58):
                draw.ellipse((x * w, 0.06 * h, (x + 0.3) * w, 0.4 * h), fill=255)
        elif v == 1:
            draw.polygon([(0.12 * w, 0.45 * h), (0.2 * w, 0.0), (0.42 * w, 0.35 * h)], fill=255)
            draw.polygon([(0.58 * w, 0.35 * h), (0.8 * w, 0.0), (0.88 * w, 0.45 * h)], fill=255)
        else:
            draw.rectangle((0.46 * w, 0.08 * h, 0.54 * w, 0.32 * h), fill=255)
            draw.ellipse((0.36 * w, 0.0, 0.64 * w, 0.18 * h), fill=255)
        return mask, (0.5, 0.66)
    if identity.klass == "box":
        draw.rectangle((0, 0, w - 1, h - 1), fill=255)
        return mask, (0.5, 0.5)
    if identity.klass == "vase":
        neck = (0.36, 0.64) if v == 0 else (0.22, 0.78)
        draw.rectangle((neck[0] * w, 0.0, neck[1] * w, 0.45 * h), fill=255)
        draw.ellipse((0.12 * w, 0.25 * h, 0.88 * w, h - 1), fill=255)
        if v == 2:
            for x0 in (0.0, 0.76):
                draw.ellipse((x0 * w, 0.3 * h, (x0 + 0.24) * w, 0.62 * h), outline=255, width=max(2, w // 12))
        return mask, (0.5, 0.66)
    # house
    draw.rectangle((0.1 * w, 0.45 * h, 0.9 * w, h - 1), fill=255)
    if v == 0:
        draw.polygon([(0.0, 0.47 * h), (0.5 * w, 0.0), (w - 1, 0.47 * h)], fill=255)
    elif v == 1:
        draw.rectangle((0.02 * w, 0.3 * h, 0.98 * w, 0.47 * h), fill=255)
    else:
        draw.polygon([(0.0, 0.47 * h), (0.5 * w, 0.1 * h), (w - 1, 0.47 * h)], fill=255)
        draw.rectangle((0.66 * w, 0.0, 0.8 * w, 0.35 * h), fill=255)
    return mask, (0.5, 0.72)


SUBJECT_ASPECT = {("box", 1): 0.6, ("box", 2): 1.3, ("box", 0): 0.95}  # width / height; others below


def _aspect(identity: Identity) -> float:
    return SUBJECT_ASPECT.get((identity.klass, identity.variant), {"toy": 0.85, "vase": 0.75, "house": 0.95}.get(identity.klass, 0.9))


def _pattern(identity: Identity, width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), COLOURS[identity.primary])
    draw = ImageDraw.Draw(image)
    second = COLOURS[identity.secondary]
    # the second colour always covers clearly less than the first, so (red, blue) never looks like (blue, red)
    if identity.pattern == "striped":
        band = max(2, height // 6)
        for y in range(band, height, 2 * band):
            draw.rectangle((0, y, width, y + band // 2), fill=second)
    elif identity.pattern == "checked":
        cell = max(2, min(width, height) // 5)
        for row, y in enumerate(range(0, height, cell)):
            for col, x in enumerate(range(0, width, cell)):
                if row % 2 and col % 2:
                    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=second)
    elif identity.pattern == "spotted":
        radius = max(2, min(width, height) // 10)
        for y in (0.22, 0.5, 0.78):
            for x in (0.2, 0.5, 0.8):
                cx, cy = x * width, y * height
                draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=second)
    else:  # split: the right third in the second colour
        draw.rectangle((width * 2 // 3, 0, width, height), fill=second)
    return image


def _mark(draw: ImageDraw.ImageDraw, mark: str, cx: float, cy: float, radius: float, line: int) -> None:
    white, black = (250, 250, 250), (15, 15, 15)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if mark == "dot":
        draw.ellipse(box, fill=white, outline=black, width=line)
    elif mark == "ring":
        draw.ellipse(box, fill=black)
        draw.ellipse(box, outline=white, width=max(line, int(radius * 0.4)))
    elif mark == "cross":
        arm = radius * 0.38
        draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=white, outline=black, width=line)
        draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=white, outline=black, width=line)
        if arm > line:  # cover the first bar's outline where the bars cross
            draw.rectangle((cx - radius + line, cy - arm + line, cx + radius - line, cy + arm - line), fill=white)
    else:  # triangle
        draw.polygon([(cx, cy - radius), (cx + radius, cy + radius * 0.8), (cx - radius, cy + radius * 0.8)],
                     fill=white, outline=black, width=line)


def _companion(draw: ImageDraw.ImageDraw, kind: str, cx: float, bottom: float, size: float, line: int) -> None:
    black = (20, 20, 20)
    if kind == "ball":
        r = size * 0.32
        draw.ellipse((cx - r, bottom - 2 * r, cx + r, bottom), fill=(250, 250, 250), outline=black, width=line)
        draw.rectangle((cx - r * 0.9, bottom - r * 1.15, cx + r * 0.9, bottom - r * 0.85), fill=(220, 30, 60))
    elif kind == "tree":
        draw.rectangle((cx - size * 0.07, bottom - size * 0.35, cx + size * 0.07, bottom), fill=(110, 70, 35))
        draw.polygon([(cx - size * 0.3, bottom - size * 0.3), (cx, bottom - size), (cx + size * 0.3, bottom - size * 0.3)],
                     fill=(20, 110, 45), outline=black, width=line)
    elif kind == "cone":
        draw.polygon([(cx - size * 0.22, bottom), (cx, bottom - size * 0.7), (cx + size * 0.22, bottom)],
                     fill=(250, 120, 20), outline=black, width=line)
        draw.rectangle((cx - size * 0.1, bottom - size * 0.38, cx + size * 0.1, bottom - size * 0.28), fill=(250, 250, 250))


def _layout(identity: Identity, scene: Scene, rng: random.Random, s: int) -> dict:
    """The render's random placement, in drawing order (so `render` and `subject_box` draw the same numbers)."""
    layout = dict(horizon=int(s * (0.55 + rng.uniform(-0.03, 0.03))))
    layout["moon_x"] = s * rng.uniform(0.08, 0.9) if scene.setting == "night" else None
    layout["height"] = s * SIZES[scene.size] * rng.uniform(0.93, 1.07)
    layout["width"] = layout["height"] * _aspect(identity)
    layout["cx"] = s * (POSITIONS[scene.position][0] + rng.uniform(-0.03, 0.03))
    layout["bottom"] = s * (0.9 + rng.uniform(-0.03, 0.03))
    return layout


def subject_box(identity: Identity, scene: Scene, seed: int = 0, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) px of the subject, its outline included, in `render(identity, scene, seed, size)`."""
    layout = _layout(identity, scene, random.Random(seed), size * SUPERSAMPLE)
    w, h = max(4, int(layout["width"])), max(4, int(layout["height"]))
    x0, y0 = int(layout["cx"] - w / 2), int(layout["bottom"] - h)
    pad = 2 * SUPERSAMPLE + SUPERSAMPLE  # the outline, then the reach of the Lanczos reduction (1 px)
    return (max(0, (x0 - pad) // SUPERSAMPLE), max(0, (y0 - pad) // SUPERSAMPLE),
            min(size, -(-(x0 + w + pad) // SUPERSAMPLE)), min(size, -(-(y0 + h + pad) // SUPERSAMPLE)))


def render(identity: Identity, scene: Scene, seed: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw `identity` in `scene`. `seed` moves things by a few pixels (placement jitter), nothing else."""
    s = size * SUPERSAMPLE
    rng = random.Random(seed)
    layout = _layout(identity, scene, rng, s)
    sky, ground, _ = SETTINGS[scene.setting]
    image = Image.new("RGB", (s, s), sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, layout["horizon"], s, s), fill=ground)
    if layout["moon_x"] is not None:
        mx, r = layout["moon_x"], s * 0.07
        draw.ellipse((mx - r, s * 0.06, mx + r, s * 0.06 + 2 * r), fill=(245, 240, 200))
    line = max(1, SUPERSAMPLE)

    height, width, cx, bottom = layout["height"], layout["width"], layout["cx"], layout["bottom"]
    if scene.companion != "none":
        side = {"left": 1, "right": -1}.get(scene.position, rng.choice((-1, 1)))
        companion_size = s * 0.3
        ccx = cx + side * (width / 2 + companion_size * 0.3)
        _companion(draw, scene.companion, ccx, bottom - s * 0.02, companion_size, line)

    w, h = max(4, int(width)), max(4, int(height))
    mask, (mark_x, mark_y) = _silhouette(identity, w, h)
    x0, y0 = int(cx - w / 2), int(bottom - h)
    pad = 2 * line  # room for the outline around silhouettes that fill their box (boxes)
    padded = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    padded.paste(mask, (pad, pad))
    image.paste((15, 15, 15), (x0 - pad, y0 - pad), padded.filter(ImageFilter.MaxFilter(2 * line + 1)))
    image.paste(_pattern(identity, w, h), (x0, y0), mask)
    _mark(draw, identity.mark, x0 + mark_x * w, y0 + mark_y * h, 0.22 * min(w, h), line)
    return image.resize((size, size), Image.LANCZOS)
