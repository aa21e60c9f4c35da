"""The mini world's metrics: a reader network that reads every ground-truth attribute off an image, and the scores
built on it that mirror DreamBench's.

    judge = train_judge(world, JudgeConfig())             # or load_judge("judge.safetensors")
    reading = read_images(judge, images)                  # images: PIL 64 x 64, or (B, 3, 64, 64) in [0, 1]
    identity_score(reading, identity)                     # DINO-I's role: share of identity details read as the reference's
    identified(reading, candidates, identity)             # the identity the details point to is the right one
    prompt_score(reading, scene)                          # CLIP-T's role: share of the prompt's scene attributes read
    copy_paste(reading, prompt_scene, reference_scene)    # position / size read as the reference's instead of the prompt's

Why a reader and not an embedding: the world has ground truth, so "is this the subject?" and "is this the scene
the prompt asked for?" can be answered attribute by attribute and exactly, instead of through a similarity whose
scale means nothing. The reader is trained on fresh renders of random identities (never the held-out ones) with
blur and noise, so that it also reads the softer images a generator makes; `validate_judge` shows, on held-out
renders, that ground truth scores high and a wrong identity or a wrong scene scores low, before the judge judges.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .schedule import optimise, warmup_cosine
from .world import ATTRIBUTES, IDENTITY_ATTRIBUTES, SCENE_ATTRIBUTES, Identity, Scene, all_identities, all_scenes, render

logger = logging.getLogger("squeeze.mini.judge")
COPY_ATTRIBUTES = ("position", "size")  # what a copy-pasted subject keeps from its reference


@dataclass
class JudgeConfig:
    seed: int = 0
    pool: int = 12_000  # fresh renders of random non-held-out identities and scenes, drawn once
    steps: int = 1_200  # optimiser steps over the pool
    batch_size: int = 48
    learning_rate: float = 2e-3
    width: int = 32  # channels of the first stage; doubled twice
    blur_max: float = 1.2  # px sigma of the random Gaussian blur (generated images are softer than renders)
    noise_max: float = 0.06  # std of the random pixel noise

    @classmethod
    def quick(cls) -> "JudgeConfig":
        return cls(pool=600, steps=60, batch_size=32)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class Judge(nn.Module):
    """A small CNN with one classification head per world attribute. Input (B, 3, 64, 64) in [0, 1]."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.features = nn.Sequential(
            _block(3, width // 2, 1), _block(width // 2, width, 2),  # full resolution first: marks are ~6 px; 32 x 32
            _block(width, 2 * width, 2), _block(2 * width, 2 * width, 1),  # 16 x 16
            _block(2 * width, 4 * width, 2),  # 8 x 8
            _block(4 * width, 4 * width, 2),  # 4 x 4: position and size survive the flatten
        )
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 16, 256), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(self.features(images * 2.0 - 1.0))
        return {name: head(features) for name, head in self.heads.items()}


def to_tensor(images) -> torch.Tensor:
    """PIL images, or a (B, 3, H, W) / (B, H, W, 3) tensor in [0, 1] -> (B, 3, 64, 64) float."""
    if isinstance(images, torch.Tensor):
        x = images.float()
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.movedim(-1, 1)
    else:
        x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])).movedim(-1, 1)
    if x.shape[-2:] != (64, 64):
        x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    return x


def targets(identity: Identity, scene: Scene) -> dict[str, int]:
    values = {**identity.to_dict(), **scene.to_dict()}
    return {name: ATTRIBUTES[name].index(values[name]) for name in ATTRIBUTES}


def degrade(x: torch.Tensor, generator: torch.Generator, blur_max: float, noise_max: float) -> torch.Tensor:
    """Random Gaussian blur (per image sigma) and pixel noise."""
    sigma = torch.rand(x.shape[0], generator=generator) * blur_max
    radius = 3
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-(grid[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, 7); sigma ~0 gives a delta
    batch, channels, height, width = x.shape
    flat = x.reshape(1, batch * channels, height, width)
    k = kernels.repeat_interleave(channels, dim=0)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=batch * channels)
    noise = torch.randn(x.shape, generator=generator) * (torch.rand(batch, 1, 1, 1, generator=generator) * noise_max)
    return (flat.reshape(x.shape) + noise).clamp(0, 1)


def render_pool(count: int, seed: int, exclude: set[str], progress: bool = True):
    """`count` renders of random identities (none in `exclude`) in random scenes -> (images uint8, targets)."""
    rng = random.Random(seed)
    identities = [i for i in all_identities() if i.key not in exclude]
    scenes = all_scenes()
    images = np.empty((count, 64, 64, 3), dtype=np.uint8)
    labels = {name: np.empty(count, dtype=np.int64) for name in ATTRIBUTES}
    for index in tqdm(range(count), desc="judge: rendering pool", unit="img", disable=not progress):
        identity, scene = rng.choice(identities), rng.choice(scenes)
        images[index] = np.asarray(render(identity, scene, rng.randrange(2**31)))
        for name, value in targets(identity, scene).items():
            labels[name][index] = value
    return torch.from_numpy(images), {k: torch.from_numpy(v) for k, v in labels.items()}


def train_judge(exclude: set[str], config: JudgeConfig | None = None, progress: bool = True) -> tuple[Judge, dict]:
    """Train the reader on fresh renders of identities not in `exclude` (the held-out keys). -> (judge, stats)."""
    config = config or JudgeConfig()
    start = time.perf_counter()
    images, labels = render_pool(config.pool, config.seed, exclude, progress)
    torch.manual_seed(config.seed)
    judge = Judge(config.width)
    optimiser = torch.optim.AdamW(judge.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = warmup_cosine(optimiser, config.steps, 0.1)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    bar = tqdm(range(config.steps), desc="judge: training", unit="step", disable=not progress)
    for _ in bar:
        index = torch.randint(0, config.pool, (config.batch_size,), generator=generator)
        x = degrade(images[index].float().movedim(-1, 1) / 255.0, generator, config.blur_max, config.noise_max)
        logits = judge(x)
        loss = sum(F.cross_entropy(logits[name], labels[name][index]) for name in ATTRIBUTES) / len(ATTRIBUTES)
        losses.append(optimise(optimiser, schedule, loss))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    judge.eval().requires_grad_(False)
    return judge, dict(losses=losses, seconds=time.perf_counter() - start, parameters=sum(p.numel() for p in judge.parameters()))


@dataclass
class Reading:
    """What the judge read off a batch of images: per attribute, the value index and the probabilities."""

    predicted: dict[str, torch.Tensor]  # attribute -> (B,) index into ATTRIBUTES[attribute]
    log_probs: dict[str, torch.Tensor]  # attribute -> (B, values)

    def value(self, attribute: str, index: int):
        return ATTRIBUTES[attribute][int(self.predicted[attribute][index])]

    def __len__(self) -> int:
        return len(next(iter(self.predicted.values())))


@torch.no_grad()
def read_images(judge: Judge, images, batch_size: int = 256) -> Reading:
    x = to_tensor(images)
    chunks = [judge(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    log_probs = {name: torch.cat([c[name] for c in chunks]).log_softmax(-1) for name in ATTRIBUTES}
    return Reading({name: lp.argmax(-1) for name, lp in log_probs.items()}, log_probs)


def _share_correct(reading: Reading, truth: dict, attributes) -> torch.Tensor:
    hits = [reading.predicted[name] == ATTRIBUTES[name].index(truth[name]) for name in attributes]
    return torch.stack(hits).float().mean(0)


def identity_score(reading: Reading, identity: Identity | list[Identity]) -> torch.Tensor:
    """(B,) share of the six identity details (class, variant, colours, pattern, mark) read as `identity`'s."""
    identities = identity if isinstance(identity, list) else [identity] * len(reading)
    return torch.stack([_share_correct(_row(reading, i), ident.to_dict(), IDENTITY_ATTRIBUTES)[0] for i, ident in enumerate(identities)])


def prompt_score(reading: Reading, scene: Scene | list[Scene]) -> torch.Tensor:
    """(B,) share of the four scene attributes (setting, position, size, companion) read as the prompt asked."""
    scenes = scene if isinstance(scene, list) else [scene] * len(reading)
    return torch.stack([_share_correct(_row(reading, i), s.to_dict(), SCENE_ATTRIBUTES)[0] for i, s in enumerate(scenes)])


def identified(reading: Reading, candidates: list[Identity], identity: Identity | list[Identity]) -> torch.Tensor:
    """(B,) 1 where the most likely of `candidates` (joint log-probability of the details) is the true identity."""
    identities = identity if isinstance(identity, list) else [identity] * len(reading)
    index = {name: torch.tensor([ATTRIBUTES[name].index(getattr(c, name)) for c in candidates]) for name in IDENTITY_ATTRIBUTES}
    scores = sum(reading.log_probs[name][:, index[name]] for name in IDENTITY_ATTRIBUTES)  # (B, candidates)
    best = scores.argmax(-1)
    return torch.tensor([float(candidates[int(b)] == ident) for b, ident in zip(best, identities)])


def copy_paste(reading: Reading, prompt_scenes: list[Scene], reference_scenes: list[Scene]) -> tuple[int, int]:
    """(copied, eligible): over the images' position and size where the prompt differs from the reference, how
    many were read as the reference's value. The rate copied / eligible is the copy-paste score."""
    copied = eligible = 0
    for i, (asked, ref) in enumerate(zip(prompt_scenes, reference_scenes)):
        for name in COPY_ATTRIBUTES:
            if getattr(asked, name) != getattr(ref, name):
                eligible += 1
                copied += int(reading.value(name, i) == getattr(ref, name))
    return copied, eligible


def _row(reading: Reading, index: int) -> Reading:
    return Reading({k: v[index : index + 1] for k, v in reading.predicted.items()},
                   {k: v[index : index + 1] for k, v in reading.log_probs.items()})


def save_judge(judge: Judge, path) -> None:
    from ..weights import atomic_save_safetensors

    atomic_save_safetensors(judge.state_dict(), path, {"format": "squeeze-mini-judge", "width": str(judge.width)})


def load_judge(path) -> Judge:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "squeeze-mini-judge":
        raise ValueError(f"'{path}' is not a mini-world judge file (format={metadata.get('format')!r}).")
    judge = Judge(int(metadata["width"]))
    judge.load_state_dict(load_file(str(path)))
    return judge.eval().requires_grad_(False)


def validate_judge(judge: Judge, heldout, seed: int = 0) -> dict:
    """Score controlled renders of the held-out identities (a list of data.HeldoutIdentity) in their benchmark scenes:

    ground truth      the identity in the prompt's scene: identity, prompt high; copy-paste low
    wrong identity    another held-out identity in the prompt's scene: identity low (by chance some details agree)
    near identity     its near twin, the same identity with another mark: identity 5/6, not identified as the identity
    wrong scene       the identity in another scene: prompt low
    copy-paste        the identity with the reference's position and size, the prompt's setting and companion
    blurred truth     ground truth blurred as much as the judge's training blur: the judge still reads it
    """
    from .world import MARKS

    rng = random.Random(seed)
    scenes = all_scenes()
    near_of = {h.identity: Identity(**{**h.identity.to_dict(), "mark": rng.choice([m for m in MARKS if m != h.identity.mark])})
               for h in heldout}
    # identification among the held-out identities and their near twins: telling them apart needs every detail
    candidates = [h.identity for h in heldout] + list(near_of.values())
    rows = {name: ([], [], []) for name in ("ground truth", "wrong identity", "near identity", "wrong scene", "copy-paste")}
    prompt_scenes, reference_scenes = [], []
    for index, item in enumerate(heldout):
        reference = item.references[0].scene
        for p in item.prompts:
            others = [h.identity for h in heldout if h.identity != item.identity] or [near_of[item.identity]]
            other = rng.choice(others)
            near = near_of[item.identity]
            wrong_scene = rng.choice([s for s in scenes
                                      if all(getattr(s, a) != getattr(p.scene, a) for a in ("setting", "position", "size"))])
            copied = Scene(p.scene.setting, reference.position, reference.size, p.scene.companion)
            for name, identity, scene in (("ground truth", item.identity, p.scene), ("wrong identity", other, p.scene),
                                          ("near identity", near, p.scene), ("wrong scene", item.identity, wrong_scene),
                                          ("copy-paste", item.identity, copied)):
                rows[name][0].append(render(identity, scene, rng.randrange(2**31)))
                rows[name][1].append(item.identity)
                rows[name][2].append(p.scene)
            prompt_scenes.append(p.scene)
            reference_scenes.append(reference)
    generator = torch.Generator().manual_seed(seed)
    truth_tensor = to_tensor(rows["ground truth"][0])
    blurred = degrade(truth_tensor, generator, JudgeConfig.blur_max, JudgeConfig.noise_max)
    rows["blurred truth"] = (blurred, rows["ground truth"][1], rows["ground truth"][2])
    results = {}
    for name, (images, identities, asked) in rows.items():
        reading = read_images(judge, images)
        copied, eligible = copy_paste(reading, asked, reference_scenes)
        results[name] = dict(
            identity=float(identity_score(reading, identities).mean()),
            identified=float(identified(reading, candidates, identities).mean()),
            prompt=float(prompt_score(reading, asked).mean()),
            copy_paste=copied / max(eligible, 1),
            images=len(identities),
        )
        if name == "ground truth":
            truth = {**{a: [getattr(i, a) for i in identities] for a in IDENTITY_ATTRIBUTES},
                     **{a: [getattr(s, a) for s in asked] for a in SCENE_ATTRIBUTES}}
            results["attribute accuracy"] = {
                a: float(np.mean([reading.value(a, i) == truth[a][i] for i in range(len(reading))])) for a in ATTRIBUTES
            }
    return results
