"""The training config: files, overrides, validation with messages that name the setting."""

import json

import pytest

from squeeze_core.errors import SqueezeInputError
from squeeze_core.train.config import PAPER_STEPS, TrainConfig


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "stage1.yaml"
    path.write_text("training_stage: 1\nlora_rank: 64\nmixed_precision: no\nmanifest: data/pairs.jsonl\n")
    config = TrainConfig.from_file(path, ["batch_size=4", "learning_rate=2e-5", "output_dir=runs/1", "resume=never"])
    assert (config.lora_rank, config.batch_size, config.learning_rate) == (64, 4, 2e-5)
    assert config.mixed_precision == "no" and config.manifest == "data/pairs.jsonl" and config.output_dir == "runs/1"
    assert config.total_steps == PAPER_STEPS[1] == 25_000


def test_json_round_trip(tmp_path):
    config = TrainConfig(training_stage=2, init_from="stage1", max_steps=7, vae_reference_drop=0.5)
    config.save(tmp_path / "c.json")
    assert TrainConfig.from_file(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["init_from"] == "stage1"


@pytest.mark.parametrize("settings, message", [
    ({"lora_rnk": 8}, "unknown settings ['lora_rnk']"),
    ({"training_stage": 2}, "set init_from to the stage-1 output"),
    ({"training_stage": 3}, "training_stage=3"),
    ({"dla_aggregation": "mean"}, "dla_aggregation=.mean. must be one of dual, joint, last_layer"),
    ({"mllm_reference_drop": 1.5}, "mllm_reference_drop=1.5 is a probability"),
    ({"bucket_step": 24}, "bucket_step=24 must be a multiple of 16"),
    ({"mixed_precision": "fp16"}, "mixed_precision='fp16'"),
    ({"distributed": "zero3"}, "distributed='zero3'"),
    ({"max_steps": 0}, "max_steps=0"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(SqueezeInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig.from_dict(settings)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(SqueezeInputError, match="key=value"):
        TrainConfig.from_file(None, ["max_steps"])
    with pytest.raises(SqueezeInputError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "nope.yaml")


def test_the_shipped_example_configs_parse():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    stage1, stage2 = (TrainConfig.from_file(docs / f"train_stage{n}.yaml") for n in (1, 2))
    assert (stage1.training_stage, stage1.total_steps, stage1.lora_rank, stage1.learning_rate) == (1, 25_000, 512, 1e-4)
    assert (stage2.training_stage, stage2.total_steps, stage2.init_from) == (2, 10_000, "runs/stage1")
