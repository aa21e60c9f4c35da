"""Data-parallel training through accelerate: 2 processes on the CPU (gloo), gradients synchronised."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from train_settings import TINY


def rank_state(checkpoint, rank):
    with safe_open(str(checkpoint / f"rank-{rank}.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["data_state"])


ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_train_in_lock_step(tmp_path, tiny_mllm_dir, demo_manifest, tiny_config):
    """Launched with the shipped 8-GPU accelerate config, scaled down to what a CPU runs: 2 processes (gloo), no
    autocast (the command line overrides the file, as it would for a smaller machine)."""
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(dict(TINY, mllm=str(tiny_mllm_dir), manifest=str(demo_manifest), max_steps=4,
                                          checkpoint_every=4, output_dir=str(tmp_path / "run"))))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "docs/accelerate/one_node_8_gpus.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0",
               "-m", "squeeze_core.cli", "train", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained       training stage 1") == 1  # only the main process reports

    checkpoint = tmp_path / "run" / "checkpoint-00000004"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
    states = [rank_state(checkpoint, rank) for rank in (0, 1)]
    # each process drew its own samples and conditions, yet both hold the very same weights: gradients were averaged
    assert states[0]["trainable_checksum"] == states[1]["trainable_checksum"]
    assert [line["step"] for line in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4]

    from squeeze_core.errors import SqueezeError
    from squeeze_core.train.trainer import train

    with pytest.raises(SqueezeError, match="written by 2 process"):
        train(tiny_config(max_steps=6))  # one process cannot take over a 2-process run's data shards


@pytest.mark.parametrize("name", ["one_node_8_gpus.yaml", "two_nodes_16_gpus.yaml"])
def test_the_shipped_accelerate_configs_are_what_accelerate_reads(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "docs/accelerate" / name))
    assert config.distributed_type == "MULTI_GPU" and config.mixed_precision == "bf16"
    assert config.num_processes == 8 * config.num_machines
