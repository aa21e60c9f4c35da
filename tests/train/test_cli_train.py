"""`squeeze train` and `squeeze convert-uno` from the command line."""

import subprocess
import sys


def squeeze(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "squeeze_core.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_embedded_default_trains_and_exports(tmp_path):
    done = squeeze("train", "--set", "max_steps=3", "--set", "checkpoint_every=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "embedded tiny models" in done.stdout and "trained       training stage 1, steps 1..3" in done.stdout
    out = tmp_path / "squeeze-train-demo"
    assert (out / "squeeze_dla.safetensors").is_file() and (out / "squeeze_flux_lora.safetensors").is_file()
    assert (out / "checkpoint-00000003" / "train_config.json").is_file()


def test_bad_settings_exit_2_with_the_reason(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("training_stage: 2\n")
    done = squeeze("train", "--config", str(config))
    assert done.returncode == 2 and "set init_from to the stage-1 output" in done.stderr
    done = squeeze("train", "--set", "lora_rank=zero")
    assert done.returncode == 2 and "lora_rank='zero' must be an integer" in done.stderr


def test_convert_uno_command(tmp_path):
    from test_data import write_uno

    write_uno(tmp_path / "UNO-1M")
    done = squeeze("convert-uno", str(tmp_path / "UNO-1M"), "--output", str(tmp_path / "m.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "wrote         1 samples" in done.stdout and "1 below score 4.0, 1 with a missing image, 1 malformed" in done.stdout
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 1
