"""`squeeze train` and `squeeze convert-uno` from the command line."""

import json
import subprocess
import sys


def squeeze(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "squeeze_core.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_embedded_default_trains_and_exports(tmp_path):
    done = squeeze("train", "--set", "max_steps=3", "--set", "checkpoint_every=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "embedded mini models" in done.stdout and "trained       training stage 1, steps 1..3" in done.stdout
    out = tmp_path / "squeeze-train-demo"
    assert (out / "squeeze_dla.safetensors").is_file() and (out / "squeeze_flux_lora.safetensors").is_file()
    assert (out / "checkpoint-00000003" / "train_config.json").is_file()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-00000003"]  # nothing else written there


def test_the_embedded_default_trains_on_the_embedded_models_and_pairs(tmp_path):
    """No model or manifest given: the embedded mini InternVL3 (its layer count in the DLA), FLUX and the embedded
    benchmark's pairs, read where they are shipped."""
    from safetensors import safe_open

    from squeeze_core.embedded import EmbeddedModels
    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.trainer import Trainer

    embedded = EmbeddedModels.packaged()
    trainer = Trainer(TrainConfig(resolution=64, bucket_step=16, reference_long_side=64, lora_rank=4, dla_attn_dim=32,
                                  dla_num_heads=4, base_dtype="float32", mixed_precision="no", num_workers=0,
                                  output_dir=str(tmp_path / "run"), max_steps=1))
    trainer.setup()
    pairs = embedded.pairs.read_text(encoding="utf-8").splitlines()
    assert len(trainer.dataset) == len(pairs) == 30 * 3  # every held-out subject's three references, each a target once
    with safe_open(str(embedded.dla), "pt") as shipped:
        shipped_layers = json.loads(shipped.metadata()["squeeze.mllm"])["num_layers"]
    assert trainer.models.dla.config.num_layers == shipped_layers == 6
    assert trainer.models.transformer.config.joint_attention_dim == 64  # the mini FLUX, not a random stand-in


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
