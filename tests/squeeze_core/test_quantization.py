"""Weight-only quantization (torchao) of the frozen models: what it does to the weights' bytes and to the outputs, and
the errors before anything loads."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_core.cli import main
from squeeze_core.errors import SqueezeInputError
from squeeze_core.quantization import check_scheme, quantize_weights, weight_bytes
from squeeze_core.testing import tiny_flux_transformer


def test_int8_flux_halves_its_linear_weights_and_keeps_its_output(tmp_path):
    torch.manual_seed(0)
    transformer = tiny_flux_transformer(0)
    reference = tiny_flux_transformer(0)
    linear = sum(m.weight.numel() * 4 for m in reference.modules() if isinstance(m, torch.nn.Linear))
    before = weight_bytes(transformer)
    assert quantize_weights(transformer, "int8") == sum(isinstance(m, torch.nn.Linear) for m in reference.modules()) > 0
    after = weight_bytes(transformer)
    assert before - after > 0.7 * linear  # float32 -> int8 (+ one scale per output channel): about 3/4 of those bytes go
    inputs = dict(hidden_states=torch.randn(1, 16, 64), encoder_hidden_states=torch.randn(1, 8, reference.config.joint_attention_dim),
                  pooled_projections=torch.randn(1, reference.config.pooled_projection_dim), timestep=torch.tensor([0.5]),
                  img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), return_dict=False)
    if reference.config.guidance_embeds:
        inputs["guidance"] = torch.tensor([3.5])
    with torch.no_grad():
        exact, quantized = reference(**inputs)[0], transformer(**inputs)[0]
    error = (quantized - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.05  # changed, and only by the rounding of the weights
    assert quantize_weights(reference, "none") == 0 and weight_bytes(reference) == before


def test_generate_with_both_quantized_draws_nearly_the_same_image(tmp_path, capsys):
    """The embedded default end to end: int8 MLLM and FLUX against the unquantized run, same seed."""
    for name, extra in (("exact", []), ("int8", ["--mllm-quantization", "int8", "--flux-quantization", "int8"])):
        assert main(["generate", "--output", str(tmp_path / f"{name}.png"), "--sheet", str(tmp_path / f"{name}_sheet.png"), *extra]) == 0
    exact = torch.from_numpy(np.asarray(Image.open(tmp_path / "exact.png"), dtype=np.float32))
    int8 = torch.from_numpy(np.asarray(Image.open(tmp_path / "int8.png"), dtype=np.float32))
    difference = (exact - int8).abs().mean()
    assert 0 < difference < 2  # mean absolute difference in 0-255 levels (0.17 measured): the same picture


def test_bad_schemes_are_errors_that_say_what_to_do(monkeypatch):
    with pytest.raises(SqueezeInputError, match="is not one of"):
        check_scheme("int4", "cpu", "--flux-quantization")
    with pytest.raises(SqueezeInputError, match="fp8 needs a CUDA GPU with fp8 support"):
        check_scheme("fp8", "cpu", "--flux-quantization")
    check_scheme("int8", "cpu", "--mllm-quantization")
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if it were not installed
    with pytest.raises(SqueezeInputError, match=r"needs torchao: pip install torchao \(in a clone of the pack: pip install \"\.\[quant"):
        check_scheme("int8", "cpu", "--mllm-quantization")
    check_scheme("none", "cpu", "--mllm-quantization")


def test_the_cli_refuses_fp8_on_the_cpu_before_loading(tmp_path, capsys):
    assert main(["generate", "--flux-quantization", "fp8", "--output", str(tmp_path / "x.png")]) == 2
    assert "--flux-quantization=fp8 needs a CUDA GPU" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
