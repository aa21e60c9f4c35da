"""The mini world: deterministic renders, a disjoint held-out split, prompts that leave the details to the reference."""

import hashlib
import json
import random

import numpy as np
import pytest

from squeeze_core.errors import SqueezeInputError
from squeeze_core.mini.data import WorldConfig, build_world, load_world, split_identities
from squeeze_core.mini.world import (
    CLASS_VARIANTS,
    COLOURS,
    MARKS,
    PATTERNS,
    Identity,
    Scene,
    all_identities,
    all_scenes,
    caption,
    prompt,
    render,
    subject_box,
)
from squeeze_core.train.data import read_manifest

TINY = WorldConfig(seed=3, train_identities=10, heldout_identities=3, renders_per_identity=4, pairs_per_identity=3,
                   references_per_heldout=2, prompts_per_heldout=5)


def test_render_is_deterministic_and_the_seed_only_jitters():
    identity, scene = Identity("toy", 1, "red", "blue", "striped", "ring"), Scene("beach", "left", "small", "tree")
    first, again = np.asarray(render(identity, scene, seed=5)), np.asarray(render(identity, scene, seed=5))
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    jittered = np.asarray(render(identity, scene, seed=6)).astype(int)
    assert 0 < np.abs(jittered - first).mean() < 20  # a few pixels moved, not another picture


@pytest.mark.parametrize("attribute, other", [("mark", "cross"), ("pattern", "spotted"), ("primary", "green"), ("variant", 2)])
def test_every_identity_detail_changes_the_picture(attribute, other):
    base = Identity("toy", 1, "red", "blue", "striped", "ring")
    changed = Identity(**{**base.to_dict(), attribute: other})
    scene = Scene("snow", "center", "large", "none")
    assert np.abs(np.asarray(render(base, scene, 1)).astype(int) - np.asarray(render(changed, scene, 1))).sum() > 0


@pytest.mark.parametrize("scene", [Scene("snow", "center", "large", "none"), Scene("night", "left", "small", "tree"),
                                   Scene("beach", "right", "small", "ball")])
def test_subject_box_holds_every_pixel_the_identity_changes(scene):
    # same class and variant (same silhouette), every detail different: only the subject's pixels can change
    base, other = Identity("vase", 0, "red", "blue", "striped", "ring"), Identity("vase", 0, "green", "yellow", "spotted", "cross")
    for seed in range(4):
        changed = np.abs(np.asarray(render(base, scene, seed)).astype(int) - np.asarray(render(other, scene, seed))).sum(-1) > 0
        left, top, right, bottom = subject_box(base, scene, seed)
        assert subject_box(other, scene, seed) == (left, top, right, bottom)
        inside = np.zeros_like(changed)
        inside[top:bottom, left:right] = True
        assert changed.any() and not (changed & ~inside).any()
        assert inside.sum() < 3 * changed.sum()  # tight: the box is not the whole picture


def test_attribute_space_and_bad_values():
    assert len(all_identities()) == len(CLASS_VARIANTS) * 3 * len(COLOURS) * (len(COLOURS) - 1) * len(PATTERNS) * len(MARKS)
    with pytest.raises(ValueError, match="colours must differ"):
        Identity("box", 0, "red", "red", "split", "dot")
    with pytest.raises(ValueError, match="Scene.position='top'"):
        Scene("beach", "top", "small")


def test_prompt_names_the_class_and_scene_but_no_detail():
    rng = random.Random(0)
    for _ in range(50):
        identity, scene = rng.choice(all_identities()), rng.choice(all_scenes())
        text = prompt(identity.klass, scene)
        assert identity.klass in text.split() and scene.size in text.split()
        words = set(text.replace(",", " ").split())
        assert not words & (set(COLOURS) | set(PATTERNS) | set(MARKS) | {"mark"})
        assert identity.details() in caption(identity, scene)


def test_world_is_deterministic_and_heldout_is_disjoint(tmp_path):
    first = build_world(tmp_path / "a", TINY, progress=False)
    build_world(tmp_path / "b", TINY, progress=False)
    for name in ("world.json", "pairs.jsonl", "images/train/0003_02.png", "images/heldout/01_ref1.png"):
        digest = [hashlib.sha256((tmp_path / d / name).read_bytes()).hexdigest() for d in ("a", "b")]
        assert digest[0] == digest[1], name
    heldout, train = split_identities(TINY)
    assert not {i.key for i in heldout} & {i.key for i in train}
    world = load_world(tmp_path / "a")
    assert [t.identity for t in world.train] == [t.identity for t in first.train]
    assert len(world.heldout) == 3 and all(len(h.prompts) == 5 and len(h.references) == 2 for h in world.heldout)
    assert not world.heldout_keys & {t.identity.key for t in world.train}
    other_seed = build_world(tmp_path / "c", WorldConfig(**{**TINY.__dict__, "seed": 4}), progress=False)
    assert [t.identity for t in other_seed.train] != [t.identity for t in world.train]


def test_pairs_are_a_training_manifest_of_one_identity_in_two_scenes(tmp_path):
    world = build_world(tmp_path, TINY, progress=False)
    samples = read_manifest(world.pairs_manifest)
    assert len(samples) == TINY.train_identities * TINY.pairs_per_identity
    index = json.loads((tmp_path / "world.json").read_text())
    scene_of = {r["file"]: (t["identity"], r["scene"]) for t in index["train"] for r in t["renders"]}
    for sample in samples:
        reference, target = (str(p.relative_to(tmp_path)) for p in (sample.references[0], sample.target))
        assert reference != target and scene_of[reference][0] == scene_of[target][0]
        assert sample.prompt == prompt(scene_of[target][0]["klass"], Scene(**scene_of[target][1]))
        assert sample.target.is_file() and sample.size == (64, 64)


def test_load_world_without_index_says_what_to_run(tmp_path):
    with pytest.raises(SqueezeInputError, match="squeeze mini world"):
        load_world(tmp_path)


def test_cli_phase_without_its_inputs_exits_2_with_the_command_to_run(tmp_path, capsys):
    from squeeze_core.cli import main

    assert main(["mini", "pretrain", "--out", str(tmp_path / "nothing")]) == 2
    assert "squeeze mini world" in capsys.readouterr().err
    assert not (tmp_path / "nothing" / "stats").exists()
    (tmp_path / "a_file").write_text("")
    assert main(["mini", "world", "--out", str(tmp_path / "a_file")]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "a_file").read_text() == ""
