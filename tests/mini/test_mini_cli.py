"""`squeeze mini all --quick`: the whole path (world, judge, VAE, FLUX + T5, InternVL3, report) through the installed
console script, and every model it writes loads through the loaders real checkpoints go through."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from squeeze_core.flux import load_flux_transformer
from squeeze_core.mini.flux_base import MiniTextEncoder
from squeeze_core.mllm import InternVL3Encoder, TokenType
from squeeze_core.vae import load_flux_vae


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    squeeze = shutil.which("squeeze", path=str(Path(sys.executable).parent))
    assert squeeze, "the `squeeze` console script is not installed beside this Python"
    result = subprocess.run([squeeze, "mini", "all", "--quick", "--out", str(root / "run"), "--docs", str(root / "docs")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_quick_run_writes_every_phase_and_its_timings(quick_run):
    root, result = quick_run
    world = json.loads((root / "run/stats/world.json").read_text())
    pretrain = json.loads((root / "run/stats/pretrain.json").read_text())
    assert world["quick"] and world["world"]["heldout_identities"] == 4
    assert set(world["judge"]["validation"]) >= {"ground truth", "wrong identity", "wrong scene", "copy-paste"}
    for model in ("vae", "flux", "mllm"):
        assert pretrain[model].get("losses") or pretrain[model].get("loss_curve"), model
    assert {"vae: training", "flux: training", "mllm: training"} <= set(pretrain["seconds"])
    for phase in ("world", "pretrain", "report"):
        assert re.search(rf"^{phase}: \d+ s$", result.stdout, re.M), result.stdout


def test_quick_models_load_through_the_real_loaders(quick_run):
    root, _ = quick_run
    models = root / "run/models"
    vae = load_flux_vae(models / "vae", dtype=torch.float32)
    transformer = load_flux_transformer(models / "flux/transformer", dtype=torch.float32)
    assert vae.config.latent_channels == 16 and transformer.config.in_channels == 64
    text = MiniTextEncoder.from_pretrained(models / "flux")
    context, mask, pooled = text.encode(["a small toy on the beach, on the left"])
    assert context.shape[-1] == transformer.config.joint_attention_dim and pooled.shape[-1] == transformer.config.pooled_projection_dim
    encoder = InternVL3Encoder.from_pretrained(models / "mllm", dtype=torch.float32)
    from PIL import Image

    image = Image.open(next((root / "run/world/images/heldout").glob("*.png")))
    out = encoder.encode(["a small toy on the beach"], [[image]])
    assert out.hidden_states.shape[0] == encoder.info.num_layers
    assert int((out.token_types == TokenType.IMAGE).sum()) == encoder.tokens_per_image


def test_quick_report_shows_only_pictures_it_wrote(quick_run):
    root, _ = quick_run
    text = (root / "docs/README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 8
    for picture in pictures:
        assert (root / "docs" / picture).is_file(), picture
    assert "| ground truth |" in text and "| total |" in text
