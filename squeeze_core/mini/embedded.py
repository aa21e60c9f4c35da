"""The embedded default: the mini world's trained models, shipped in the package, that every `squeeze` verb uses when
it is given no models (no download, a few seconds on a CPU).

    models = MiniModels.packaged()          # squeeze_core/mini/weights/, what `squeeze mini publish` wrote
    models.mllm, models.transformer, models.vae      # the miniature InternVL3, FLUX and VAE (part 1's base models)
    models.dla, models.lora                          # Squeeze trained on them: `squeeze mini train`'s DLA seed-0 model
    world = models.benchmark()                       # the 30 held-out identities, their references and 25 prompts each
    publish(MiniRun("runs/mini"))                    # `squeeze mini publish`: copy a run's models here, atomically

Layout (also what `publish` writes into any destination)::

    mllm/ vae/ flux/transformer/ flux/text_encoder/ flux/tokenizer/ judge.safetensors    the run's models/
    squeeze/squeeze_dla.safetensors, squeeze/squeeze_flux_lora.safetensors, squeeze/train_config.json
    benchmark/world.json, benchmark/images/heldout/*.png     the held-out part of the world (no training renders)
    world_stats.json, pretrain_stats.json, squeeze_stats.json, MANIFEST.json (sha256 of every file, and its source)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import SqueezeInputError
from ..files import atomic_write_text

PACKAGED = Path(__file__).resolve().parent / "weights"
SHIPPED_MODEL = "release"  # which of `squeeze mini train`'s models is shipped (squeeze.RELEASE_MODEL: the DLA, long stage 2)
MANIFEST = "MANIFEST.json"
SAMPLING = {"steps": 12, "width": 64, "height": 64, "long_side": 64}  # GenerateConfig for the mini FLUX (MiniSqueezeConfig's)


@dataclass(frozen=True)
class MiniModels:
    """Where a complete set of mini models lives; `.models` and `.world_dir` make it usable wherever a MiniRun is."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def packaged(cls) -> "MiniModels":
        return cls(PACKAGED)

    @property
    def models(self) -> Path:
        return self.root

    @property
    def world_dir(self) -> Path:
        return self.root / "benchmark"

    @property
    def mllm(self) -> Path:
        return self.root / "mllm"

    @property
    def transformer(self) -> Path:
        return self.root / "flux" / "transformer"

    @property
    def vae(self) -> Path:
        return self.root / "vae"

    @property
    def judge(self) -> Path:
        return self.root / "judge.safetensors"

    @property
    def squeeze(self) -> Path:
        return self.root / "squeeze"

    @property
    def dla(self) -> Path:
        from ..train.models import DLA_FILE

        return self.squeeze / DLA_FILE

    @property
    def lora(self) -> Path:
        from ..train.models import LORA_FILE

        return self.squeeze / LORA_FILE

    def required(self) -> list[Path]:
        return [self.mllm / "config.json", self.transformer / "config.json", self.vae / "config.json", self.judge,
                self.dla, self.lora, self.world_dir / "world.json"]

    def check(self) -> "MiniModels":
        missing = [str(path) for path in self.required() if not path.is_file()]
        if missing:
            raise SqueezeInputError(f"the embedded mini models in '{self.root}' lack {', '.join(missing)}: reinstall the package, "
                                    "or rebuild them with `squeeze mini all` then `squeeze mini publish`.")
        return self

    def verify(self, under: tuple[str, ...] = ("",)) -> "MiniModels":
        """check(), then every file that MANIFEST.json records under these folders (relative to root, e.g. ("mllm/",))
        against its sha256: a changed, truncated or missing file is an error naming it. Hashes are remembered per
        (size, mtime), so a second check of unchanged files reads nothing."""
        self.check()
        manifest = self.root / MANIFEST
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError) as error:
            raise SqueezeInputError(f"the embedded mini models' manifest '{manifest}' cannot be read ({error}): "
                                    "reinstall the package.") from error
        changed = []
        for relative in sorted(name for name in recorded if name.startswith(tuple(under))):
            path = self.root / relative
            if not path.is_file() or _cached_sha256(path) != recorded[relative]:
                changed.append(relative)
        if changed:
            raise SqueezeInputError(
                f"the embedded mini models in '{self.root}' were changed: {', '.join(changed[:5])}"
                f"{' and more' if len(changed) > 5 else ''} no longer match {MANIFEST}. Reinstall the package (or "
                "`git checkout -- squeeze_core/mini/weights` in a clone); to use other mini models, publish them with "
                "`squeeze mini publish`.")
        return self

    def benchmark(self):
        from .data import load_world

        return load_world(self.world_dir)

    def manifest(self) -> dict:
        return json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_hash_cache: dict = {}


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = sha256(path)
    return _hash_cache[key]


def file_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256, for every file under root but the manifest."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _write_benchmark(world_dir: Path, destination: Path) -> None:
    """The held-out half of a world: world.json without the training identities, and the held-out references."""
    index = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    index["train"] = []
    destination.mkdir(parents=True)
    (destination / "world.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    shutil.copytree(world_dir / "images" / "heldout", destination / "images" / "heldout")


def publish(run, destination: Path = PACKAGED) -> Path:
    """Copy a run's base models, its shipped Squeeze model (stage 2 of SHIPPED_MODEL), the held-out benchmark and the
    stats into `destination`, with a manifest of sha256 hashes; written beside it first, then swapped in, so a
    failure leaves the old copy whole."""
    destination = Path(destination)
    trained = run.out / "squeeze" / SHIPPED_MODEL / "stage2"
    needed = [run.models / "mllm" / "config.json", trained / "squeeze_dla.safetensors", run.world_dir / "world.json",
              run.stats_path("squeeze")]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise SqueezeInputError(f"'{run.out}' lacks {', '.join(missing)}: run `squeeze mini all --out {run.out}` first.")
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(run.models, partial)
    (partial / "squeeze").mkdir()
    for name in ("squeeze_dla.safetensors", "squeeze_flux_lora.safetensors", "train_config.json"):
        shutil.copyfile(trained / name, partial / "squeeze" / name)
    _write_benchmark(run.world_dir, partial / "benchmark")
    for stats in ("world", "pretrain", "squeeze"):
        shutil.copyfile(run.stats_path(stats), partial / f"{stats}_stats.json")
    manifest = dict(source=str(run.out), seed=run.seed, quick=run.quick, squeeze_model=trained.parent.name,
                    command=f"squeeze mini all --out {run.out} --seed {run.seed}" + (" --quick" if run.quick else ""),
                    files=file_hashes(partial))
    atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=1))
    if destination.exists():
        shutil.rmtree(destination)
    partial.replace(destination)
    return destination
