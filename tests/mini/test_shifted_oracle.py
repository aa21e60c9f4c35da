"""benchmarks/mini_squeeze_steps.py --shifted-oracle: each pair's reference is its own target rolled sideways by
1-3 FLUX tokens (16-48 px), so the answer is in the sequence but only content says where."""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from mini_squeeze_steps import write_oracle_manifest  # noqa: E402


def test_shifted_oracle_references_are_the_targets_rolled_by_whole_tokens(tmp_path):
    world = tmp_path / "world"
    (world / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(world / "images" / f"{k:02d}.png")
        rows.append(dict(references=[f"images/{(k + 1) % 12:02d}.png"], target=f"images/{k:02d}.png", prompt=f"prompt {k}"))
    (world / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write_oracle_manifest(world / "pairs.jsonl", tmp_path / "out", shifted=True, seed=0)
    assert path.name == "shifted_oracle_pairs.jsonl"
    shifted = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prompt"] for r in shifted] == [r["prompt"] for r in rows]
    rolls = []
    for k, row in enumerate(shifted):
        target = np.asarray(Image.open(row["target"]))
        reference = np.asarray(Image.open(row["references"][0]))
        assert Path(row["target"]) == (world / "images" / f"{k:02d}.png").resolve()
        matches = [k for k in range(4) if np.array_equal(reference, np.roll(target, 16 * k, axis=1))]
        assert len(matches) == 1 and matches[0] in (1, 2, 3)  # never the target itself
        rolls.append(matches[0])
    assert len(set(rolls)) == 3  # every shift is drawn
    again = write_oracle_manifest(world / "pairs.jsonl", tmp_path / "again", shifted=True, seed=0)
    assert [Path(r["references"][0]).name for r in map(json.loads, again.read_text().splitlines())] == \
        [Path(r["references"][0]).name for r in shifted]
    plain = [json.loads(line) for line in write_oracle_manifest(world / "pairs.jsonl", tmp_path / "plain").read_text().splitlines()]
    assert all(r["references"] == [r["target"]] for r in plain)
