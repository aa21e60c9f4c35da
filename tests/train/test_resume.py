"""Checkpoints: a run killed mid-way and resumed follows the uninterrupted run's loss curve exactly; writes are
atomic, only the newest N are kept, and a stage mismatch is refused."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from train_settings import TINY

STEPS, EVERY, KILL_AFTER = 30, 5, 12


def write_config(folder: Path, mllm, manifest, **extra) -> Path:
    settings = dict(TINY, mllm=str(mllm), manifest=str(manifest), max_steps=STEPS, checkpoint_every=EVERY, keep_checkpoints=2,
                    output_dir=str(folder / "run"), **extra)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def train_command(config: Path):
    return [sys.executable, "-m", "squeeze_core.cli", "train", "--config", str(config)]


def losses(run: Path) -> list[tuple[int, float]]:
    return [(line["step"], line["loss"]) for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_a_killed_and_resumed_run_follows_the_same_loss_curve(tmp_path, tiny_mllm_dir, demo_manifest):
    straight = write_config(tmp_path / "straight", tiny_mllm_dir, demo_manifest)
    subprocess.run(train_command(straight), check=True, capture_output=True, timeout=300)

    killed = write_config(tmp_path / "killed", tiny_mllm_dir, demo_manifest)
    run = tmp_path / "killed" / "run"
    process = subprocess.Popen(train_command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= KILL_AFTER:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    assert checkpoints and checkpoints[-1] < f"checkpoint-{STEPS:08d}" and not (run / "squeeze_flux_lora.safetensors").exists()
    assert len(losses(run)) >= KILL_AFTER  # steps past the last checkpoint were logged and will be redone
    (run / ".checkpoint-00000099.tmp").mkdir()  # what a kill during a checkpoint write leaves behind

    subprocess.run(train_command(killed), check=True, capture_output=True, timeout=300)
    resumed, reference = losses(run), losses(tmp_path / "straight" / "run")
    assert [s for s, _ in resumed] == list(range(1, STEPS + 1))
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in reference], abs=1e-6)
    assert not (run / ".checkpoint-00000099.tmp").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{STEPS - EVERY:08d}", f"checkpoint-{STEPS:08d}"]
    for name in ("squeeze_flux_lora.safetensors", "squeeze_dla.safetensors"):
        a, b = load_file(str(run / name)), load_file(str(tmp_path / "straight" / "run" / name))
        assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    saved = json.loads((run / f"checkpoint-{STEPS:08d}" / "train_config.json").read_text())
    assert saved["max_steps"] == STEPS and saved["lora_rank"] == TINY["lora_rank"]


def test_a_checkpoint_of_another_stage_is_refused(tmp_path, tiny_config):
    from squeeze_core.errors import SqueezeError
    from squeeze_core.train.trainer import train

    train(tiny_config(max_steps=2, checkpoint_every=2))
    stage1 = tmp_path / "run"
    with pytest.raises(SqueezeError, match="is from training stage 1 but this run is training stage 2"):
        train(tiny_config(training_stage=2, init_from=str(stage1), max_steps=2))  # same output_dir: would resume stage 1
