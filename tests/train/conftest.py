"""Training tests: tiny random models, the synthetic pair set, real files on disk."""

import pytest
from train_settings import TINY

from squeeze_core.testing import write_demo_dataset
from squeeze_core.train.config import TrainConfig


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state (mixed precision included); each test starts its own run."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture(scope="session")
def demo_manifest(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("pairs"), pairs=8)


@pytest.fixture
def tiny_config(tmp_path, tiny_mllm_dir, demo_manifest):
    """TrainConfig factory: tiny models and data, output in tmp_path; keyword overrides."""

    def make(**overrides) -> TrainConfig:
        settings = dict(TINY, mllm=str(tiny_mllm_dir), manifest=str(demo_manifest), output_dir=str(tmp_path / "run"))
        settings.update(overrides)
        return TrainConfig(**settings)

    return make
