"""`squeeze mini publish`: copy a mini run's models into the package as the embedded default
(squeeze_core/embedded, which every verb and the `Squeeze Mini ...` nodes read without importing this package).

    publish(MiniRun("runs/mini"))                    # into squeeze_core/embedded/weights/, atomically
    publish(run, Path("/tmp/elsewhere"))             # any folder; EmbeddedModels("/tmp/elsewhere") reads it

Besides the run's models, the shipped Squeeze model (stage 2 of SHIPPED_MODEL) and the stats, it writes the held-out
benchmark in the form the product reads: world.json without the training identities, each held-out subject with the
words that describe it, and pairs.jsonl, a small training manifest on the held-out references (one reference to
another of the same subject, prompted with the target render's scene) for `squeeze train`'s embedded smoke run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..embedded import MANIFEST, PACKAGED, PAIRS_FILE, WORLD_FILE, file_hashes
from ..errors import SqueezeInputError
from ..files import atomic_write_text
from .world import identity_from_dict, prompt, scene_from_dict

SHIPPED_MODEL = "release"  # which of `squeeze mini train`'s models is shipped (squeeze.RELEASE_MODEL: the DLA, long stage 2)


def _write_benchmark(world_dir: Path, destination: Path) -> None:
    """The held-out half of a world: world.json without the training identities, with each subject's words; its
    reference renders; pairs.jsonl over them."""
    index = json.loads((world_dir / WORLD_FILE).read_text(encoding="utf-8"))
    index["train"] = []
    pairs = []
    for subject in index["heldout"]:
        identity = identity_from_dict(subject["identity"])
        subject["words"] = identity.details()
        references = subject["references"]
        for k, target in enumerate(references):
            source = references[(k + 1) % len(references)]
            if source is not target:
                pairs.append(dict(references=[source["file"]], target=target["file"],
                                  prompt=prompt(identity.klass, scene_from_dict(target["scene"])),
                                  width=index["image_size"], height=index["image_size"]))
    destination.mkdir(parents=True)
    (destination / WORLD_FILE).write_text(json.dumps(index, indent=1), encoding="utf-8")
    (destination / PAIRS_FILE).write_text("".join(json.dumps(line) + "\n" for line in pairs), encoding="utf-8")
    shutil.copytree(world_dir / "images" / "heldout", destination / "images" / "heldout")


def publish(run, destination: Path = PACKAGED) -> Path:
    """Copy a run's base models, its shipped Squeeze model, the held-out benchmark and the stats into `destination`,
    with a manifest of sha256 hashes; written beside it first, then swapped in, so a failure leaves the old copy whole."""
    destination = Path(destination)
    trained = run.out / "squeeze" / SHIPPED_MODEL / "stage2"
    needed = [run.models / "mllm" / "config.json", trained / "squeeze_dla.safetensors", run.world_dir / WORLD_FILE,
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
