"""The mini world's data on disk: training identities' renders, Squeeze training pairs, and the held-out benchmark.

    world = build_world("runs/mini/world", WorldConfig(seed=0))      # renders PNGs, writes world.json + pairs.jsonl
    world = load_world("runs/mini/world")
    world.train[0].identity, world.train[0].renders[0].path, world.train[0].renders[0].scene
    world.heldout[0].references, world.heldout[0].prompts          # 30 identities x 25 prompts, as DreamBench

Layout::

    world.json            every identity, every render (file, scene, jitter seed), every benchmark prompt
    pairs.jsonl           Squeeze's training manifest: a reference render -> another render of the same identity
    images/train/*.png    renders of the training identities
    images/heldout/*.png  the held-out identities' reference renders (their targets are never rendered for training)

Held-out identities are drawn first and excluded from everything else, so no training of any model sees them.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ..errors import SqueezeInputError
from ..files import atomic_write, atomic_write_text
from .world import IMAGE_SIZE, Identity, Scene, all_identities, all_scenes, identity_from_dict, prompt, render, scene_from_dict

if TYPE_CHECKING:
    import torch

WORLD_FILE, PAIRS_FILE = "world.json", "pairs.jsonl"


@dataclass
class WorldConfig:
    seed: int = 0
    train_identities: int = 400  # identities that training (base models and Squeeze) may see
    heldout_identities: int = 30  # never seen in any training, as DreamBench's 30 subjects
    renders_per_identity: int = 12  # scenes each training identity is drawn in
    pairs_per_identity: int = 12  # Squeeze pairs (reference render -> target render) per training identity
    references_per_heldout: int = 3  # reference renders per held-out identity (the first is the one used)
    prompts_per_heldout: int = 25  # benchmark prompts per held-out identity, as DreamBench

    def __post_init__(self):
        for name in ("train_identities", "heldout_identities", "renders_per_identity", "references_per_heldout", "prompts_per_heldout"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r} must be a positive integer")
        if self.renders_per_identity < 2:
            raise ValueError("WorldConfig.renders_per_identity must be at least 2 (a pair needs two renders)")
        if self.prompts_per_heldout > len(all_scenes()):
            raise ValueError(f"WorldConfig.prompts_per_heldout must be at most {len(all_scenes())} (the number of scenes)")


@dataclass
class Render:
    path: Path
    scene: Scene
    seed: int


@dataclass
class TrainIdentity:
    identity: Identity
    renders: list[Render]


@dataclass
class BenchmarkPrompt:
    prompt: str
    scene: Scene


@dataclass
class HeldoutIdentity:
    identity: Identity
    references: list[Render]
    prompts: list[BenchmarkPrompt]


@dataclass
class World:
    root: Path
    config: WorldConfig
    train: list[TrainIdentity] = field(default_factory=list)
    heldout: list[HeldoutIdentity] = field(default_factory=list)

    @property
    def pairs_manifest(self) -> Path:
        return self.root / PAIRS_FILE

    @property
    def heldout_keys(self) -> set[str]:
        return {h.identity.key for h in self.heldout}

    def train_renders(self):
        """(identity, render) for every training render."""
        return [(t.identity, r) for t in self.train for r in t.renders]


def split_identities(config: WorldConfig) -> tuple[list[Identity], list[Identity]]:
    """(held-out, training) identities: disjoint, drawn from every combination with the seed."""
    rng = random.Random(config.seed)
    chosen = rng.sample(all_identities(), config.heldout_identities + config.train_identities)
    return chosen[: config.heldout_identities], chosen[config.heldout_identities :]


def _render_seed(seed: int, group: int, index: int, slot: int) -> int:
    return (seed * 1_000_003 + group * 10_007 + index * 101 + slot) % (2**31)


def build_world(root, config: WorldConfig | None = None, progress: bool = True) -> World:
    """Render the world into `root` (created). Deterministic for config.seed: same files, same bytes."""
    config = config or WorldConfig()
    root = Path(root)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "images" / "heldout").mkdir(parents=True, exist_ok=True)
    heldout_ids, train_ids = split_identities(config)
    scenes = all_scenes()
    world = World(root, config)
    total = len(train_ids) * config.renders_per_identity + len(heldout_ids) * config.references_per_heldout
    bar = tqdm(total=total, desc="world: rendering", unit="img", disable=not progress)
    for index, identity in enumerate(train_ids):
        rng = random.Random(_render_seed(config.seed, 1, index, 0))
        renders = []
        for slot, scene in enumerate(rng.sample(scenes, config.renders_per_identity)):
            seed = _render_seed(config.seed, 1, index, slot + 1)
            path = root / "images" / "train" / f"{index:04d}_{slot:02d}.png"
            _save_image(render(identity, scene, seed), path)
            renders.append(Render(path, scene, seed))
            bar.update()
        world.train.append(TrainIdentity(identity, renders))
    for index, identity in enumerate(heldout_ids):
        rng = random.Random(_render_seed(config.seed, 2, index, 0))
        picked = rng.sample(scenes, config.references_per_heldout + config.prompts_per_heldout)
        references = []
        for slot, scene in enumerate(picked[: config.references_per_heldout]):
            seed = _render_seed(config.seed, 2, index, slot + 1)
            path = root / "images" / "heldout" / f"{index:02d}_ref{slot}.png"
            _save_image(render(identity, scene, seed), path)
            references.append(Render(path, scene, seed))
            bar.update()
        prompts = [BenchmarkPrompt(prompt(identity.klass, s), s) for s in picked[config.references_per_heldout :]]
        world.heldout.append(HeldoutIdentity(identity, references, prompts))
    bar.close()
    _write_pairs(world)
    _write_index(world)
    return world


def _write_pairs(world: World) -> None:
    lines = []
    for index, item in enumerate(world.train):
        rng = random.Random(_render_seed(world.config.seed, 3, index, 0))
        count = len(item.renders)
        for _ in range(world.config.pairs_per_identity):
            ref, target = rng.sample(range(count), 2)
            lines.append(dict(
                references=[str(item.renders[ref].path.relative_to(world.root))],
                target=str(item.renders[target].path.relative_to(world.root)),
                prompt=prompt(item.identity.klass, item.renders[target].scene),
                width=IMAGE_SIZE, height=IMAGE_SIZE,
            ))
    atomic_write_text(world.pairs_manifest, "".join(json.dumps(line) + "\n" for line in lines))


def _render_dict(root: Path, r: Render) -> dict:
    return dict(file=str(r.path.relative_to(root)), scene=r.scene.to_dict(), seed=r.seed)


def _write_index(world: World) -> None:
    data = dict(
        config=asdict(world.config), image_size=IMAGE_SIZE,
        train=[dict(identity=t.identity.to_dict(), renders=[_render_dict(world.root, r) for r in t.renders]) for t in world.train],
        heldout=[dict(identity=h.identity.to_dict(), references=[_render_dict(world.root, r) for r in h.references],
                      prompts=[dict(prompt=p.prompt, scene=p.scene.to_dict()) for p in h.prompts]) for h in world.heldout],
    )
    atomic_write_text(world.root / WORLD_FILE, json.dumps(data, indent=1))


def _save_image(image, path: Path) -> None:
    atomic_write(path, lambda temporary: image.save(temporary, format="PNG"))


def load_images(paths) -> torch.Tensor:
    """PNG files -> (N, H, W, 3) uint8 tensor."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = []
    for path in paths:
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    return torch.from_numpy(np.stack(arrays))


def load_world(root) -> World:
    root = Path(root)
    index = root / WORLD_FILE
    if not index.is_file():
        raise SqueezeInputError(f"'{root}' holds no mini world ({WORLD_FILE} missing); build it with `squeeze mini world`.")
    data = json.loads(index.read_text(encoding="utf-8"))
    world = World(root, WorldConfig(**data["config"]))

    def renders(items):
        return [Render(root / r["file"], scene_from_dict(r["scene"]), int(r["seed"])) for r in items]

    world.train = [TrainIdentity(identity_from_dict(t["identity"]), renders(t["renders"])) for t in data["train"]]
    world.heldout = [
        HeldoutIdentity(identity_from_dict(h["identity"]), renders(h["references"]),
                        [BenchmarkPrompt(p["prompt"], scene_from_dict(p["scene"])) for p in h["prompts"]])
        for h in data["heldout"]
    ]
    return world
