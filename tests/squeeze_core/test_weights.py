import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from squeeze_core import weights as weights_module
from squeeze_core.conditioning import encode_conditioning
from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.errors import SqueezeWeightsError
from squeeze_core.mllm import MLLMInfo
from squeeze_core.weights import load_dla, read_dla_metadata, save_dla


@pytest.fixture
def trained_dla(encoder):
    torch.manual_seed(3)
    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, attn_dim=32, num_heads=4))
    with torch.no_grad():
        for parameter in dla.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)  # not the init any more
    return dla


def saved_file(path, dla, mllm_info):
    """Save a DLA and read the file back raw: (metadata, tensors), for tests that edit it."""
    save_dla(dla, path, mllm_info)
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


def test_round_trip_is_exact(tmp_path, encoder, trained_dla, images):
    path = tmp_path / "dla.safetensors"
    save_dla(trained_dla, path, encoder.info)
    loaded = load_dla(path, mllm=encoder.info)
    assert loaded.config == trained_dla.config
    original, restored = trained_dla.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    a = encode_conditioning(encoder, trained_dla.eval(), ["a toy"], [[images[0]]])
    b = encode_conditioning(encoder, loaded, ["a toy"], [[images[0]]])
    assert torch.equal(a.context, b.context) and torch.equal(a.pooled, b.pooled)


def test_metadata_records_config_and_mllm(tmp_path, encoder, trained_dla):
    path = tmp_path / "dla.safetensors"
    save_dla(trained_dla, path, encoder.info)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["squeeze.format"] == "dla"
    assert json.loads(metadata["squeeze.mllm"]) == {"model_type": "internvl", "num_layers": 6, "hidden_size": 64,
                                                    "name": "tiny-internvl3", "text_model_type": "qwen2", "vocab_size": 263}
    assert json.loads(metadata["squeeze.dla_config"])["attn_dim"] == 32
    config, info = read_dla_metadata(path)
    assert config == trained_dla.config and info == encoder.info


def test_loading_for_another_mllm_names_both(tmp_path, encoder, trained_dla):
    path = tmp_path / "dla.safetensors"
    save_dla(trained_dla, path, encoder.info)
    other = MLLMInfo("internvl", 28, 3584, "InternVL3-8B-hf")
    with pytest.raises(SqueezeWeightsError,
                       match=r"made for tiny-internvl3 \(internvl, 6 layers x 64, qwen2.*InternVL3-8B-hf \(internvl, 28 layers x 3584"):
        load_dla(path, mllm=other)


def test_missing_file_says_where_it_goes(tmp_path):
    with pytest.raises(SqueezeWeightsError, match=r"does not exist.*models/squeeze/"):
        load_dla(tmp_path / "absent.safetensors")


def test_files_that_are_not_a_dla_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(SqueezeWeightsError, match="not a readable safetensors file"):
        load_dla(garbage)
    lora = tmp_path / "lora.safetensors"
    save_file({"transformer.x.lora_A.weight": torch.zeros(2, 2)}, lora)
    with pytest.raises(SqueezeWeightsError, match="not a Squeeze DLA file"):
        load_dla(lora)


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path, encoder, trained_dla):
    path = tmp_path / "dla.safetensors"
    metadata, tensors = saved_file(path, trained_dla, encoder.info)
    edited = dict(tensors)
    del edited["image_lap.proj.weight"]
    edited["extra.bias"] = torch.zeros(3)
    save_file(edited, path, metadata=metadata)
    with pytest.raises(SqueezeWeightsError, match=r"missing \['image_lap.proj.weight'\], unexpected \['extra.bias'\]"):
        load_dla(path)
    reshaped = dict(tensors)
    reshaped["pooled_proj.bias"] = torch.zeros(5)
    save_file(reshaped, path, metadata=metadata)
    with pytest.raises(SqueezeWeightsError, match=r"'pooled_proj.bias' has shape \(5,\), expected \(768,\)"):
        load_dla(path)


def test_broken_metadata_is_reported(tmp_path, encoder, trained_dla):
    path = tmp_path / "dla.safetensors"
    metadata, tensors = saved_file(path, trained_dla, encoder.info)
    save_file(tensors, path, metadata={**metadata, "squeeze.dla_config": json.dumps({"num_layers": 6, "colour": "red"})})
    with pytest.raises(SqueezeWeightsError, match=r"unknown fields \['colour'\]"):
        load_dla(path)
    save_file(tensors, path, metadata={**metadata, "squeeze.version": "9"})
    with pytest.raises(SqueezeWeightsError, match="format version '9'"):
        load_dla(path)


def test_a_failed_save_leaves_no_file(tmp_path, monkeypatch, encoder, trained_dla):
    path = tmp_path / "dla.safetensors"

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(weights_module, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_dla(trained_dla, path, encoder.info)
    assert list(tmp_path.iterdir()) == []


def test_saving_under_the_wrong_mllm_is_refused(tmp_path, trained_dla):
    with pytest.raises(SqueezeWeightsError, match="refusing to save"):
        save_dla(trained_dla, tmp_path / "dla.safetensors", MLLMInfo("internvl", 28, 3584))


def test_equal_weights_give_equal_bytes(tmp_path):
    """safetensors writes its metadata map in hash order (20 saves, 20 different files without the sort); Squeeze's
    saves sort the header, so a rerun that trains the same tensors writes the same sha256."""
    from safetensors.torch import save

    from squeeze_core.weights import atomic_save_safetensors

    tensors = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(4, dtype=torch.bfloat16)}
    metadata = {f"squeeze.key{i}": f"value {i}" for i in range(5)} | {"squeeze.prompt": "un café, s'il vous plaît"}
    assert len({save(tensors, metadata=metadata) for _ in range(10)}) > 1  # the library alone: not reproducible
    files = [tmp_path / f"{i}.safetensors" for i in range(10)]
    for path in files:
        atomic_save_safetensors(tensors, path, metadata)
    assert len({path.read_bytes() for path in files}) == 1
    with safe_open(str(files[0]), framework="pt") as handle:
        assert handle.metadata() == metadata
        assert all(torch.equal(handle.get_tensor(name), tensor) for name, tensor in tensors.items())
