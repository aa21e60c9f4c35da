"""The metrics judge only after they are validated: with the shipped (published) judge, on held-out identities,
ground truth ranks above a wrong identity, a near identity and a wrong scene, and a copy-pasted layout is caught."""

import pytest
import torch

from squeeze_core.embedded import PACKAGED
from squeeze_core.mini.data import BenchmarkPrompt, HeldoutIdentity, Render, WorldConfig, split_identities
from squeeze_core.mini.judge import (
    copy_paste,
    identified,
    identity_score,
    load_judge,
    prompt_score,
    read_images,
    save_judge,
    to_tensor,
    validate_judge,
)
from squeeze_core.mini.world import Scene, render


@pytest.fixture(scope="module")
def judge():
    return load_judge(PACKAGED / "judge.safetensors")


@pytest.fixture(scope="module")
def heldout():
    """The published world's held-out identities (seed 0), each with 4 benchmark scenes."""
    identities, _ = split_identities(WorldConfig(seed=0))
    scenes = [Scene("beach", "left", "small", "tree"), Scene("night", "right", "large", "none"),
              Scene("room", "center", "small", "ball"), Scene("snow", "left", "large", "cone")]
    reference = Scene("grass", "right", "large", "none")
    return [HeldoutIdentity(i, [Render(None, reference, 0)], [BenchmarkPrompt("", s) for s in scenes]) for i in identities[:12]]


def test_ground_truth_scores_high_and_every_wrong_case_scores_lower(judge, heldout):
    results = validate_judge(judge, heldout, seed=1)
    truth = results["ground truth"]
    assert truth["identity"] > 0.95 and truth["identified"] > 0.95 and truth["prompt"] > 0.95 and truth["copy_paste"] < 0.05
    assert results["wrong identity"]["identity"] < 0.5 and results["wrong identity"]["identified"] < 0.1
    assert 0.7 < results["near identity"]["identity"] < 0.9  # five of six details agree ...
    assert results["near identity"]["identified"] < 0.1  # ... and still it is told apart from its twin
    assert results["wrong scene"]["prompt"] < 0.6 and results["wrong scene"]["identity"] > 0.9
    assert results["copy-paste"]["copy_paste"] > 0.9
    assert results["blurred truth"]["identity"] > 0.85 and results["blurred truth"]["prompt"] > 0.9


def test_scores_follow_the_pixels_not_the_labels(judge, heldout):
    item = heldout[0]
    asked = item.prompts[0].scene
    image = render(item.identity, asked, 3)
    reading = read_images(judge, [image, image.transpose(0)])  # 0 = FLIP_LEFT_RIGHT: position left -> right
    assert float(prompt_score(reading, asked)[0]) == 1.0
    assert reading.value("position", 1) == "right" and float(prompt_score(reading, asked)[1]) == 0.75
    assert float(identity_score(reading, item.identity)[0]) == 1.0
    assert float(identified(reading, [h.identity for h in heldout], item.identity)[0]) == 1.0
    assert copy_paste(reading, [asked, asked], [Scene("grass", "right", "small"), Scene("grass", "right", "small")]) == (1, 2)


def test_judge_file_round_trip_and_refuses_other_files(tmp_path, judge):
    save_judge(judge, tmp_path / "judge.safetensors")
    again = load_judge(tmp_path / "judge.safetensors")
    x = to_tensor(torch.rand(2, 64, 64, 3))
    torch.testing.assert_close(again(x)["mark"], judge(x)["mark"])
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a mini-world judge file"):
        load_judge(tmp_path / "other.safetensors")
