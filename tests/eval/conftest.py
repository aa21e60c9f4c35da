"""Evaluation tests: tiny random DINO and CLIP saved to disk, the real DreamBench folder from ../shared."""

from pathlib import Path

import pytest

from squeeze_core.testing import save_tiny_clip, save_tiny_dino

DREAMBENCH = Path(__file__).resolve().parents[3] / "shared" / "dreambench"


@pytest.fixture(scope="session")
def dreambench_dir():
    if not (DREAMBENCH / "prompts_and_classes.txt").is_file():
        pytest.fail(f"DreamBench is expected at {DREAMBENCH} (the shared folder beside the repository)")
    return DREAMBENCH


@pytest.fixture(scope="session")
def dino_dir(tmp_path_factory):
    return save_tiny_dino(tmp_path_factory.mktemp("eval") / "dino-vits16")


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("eval") / "clip-vit-base-patch32")  # cosines on both sides of 0


@pytest.fixture(scope="session")
def embedders(dino_dir, clip_dir):
    from squeeze_core.eval.metrics import ClipEmbedder, DinoEmbedder

    return DinoEmbedder.from_pretrained(dino_dir), ClipEmbedder.from_pretrained(clip_dir)
