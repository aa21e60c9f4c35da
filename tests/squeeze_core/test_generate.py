import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_core.cli import main
from squeeze_core.errors import SqueezeInputError, SqueezeModelError, SqueezeWeightsError
from squeeze_core.flux import load_flux_transformer
from squeeze_core.lora import flux_lora_config, load_comfyui_lora, save_comfyui_lora
from squeeze_core.pipeline import GenerateConfig
from squeeze_core.sampling import flux_resolution_shift
from squeeze_core.testing import tiny_flux_transformer, tiny_flux_vae
from squeeze_core.vae import load_flux_vae


def test_generate_on_the_embedded_default_writes_an_image(tmp_path, capsys):
    output = tmp_path / "out" / "image.png"
    assert main(["generate", "--steps", "3", "--width", "64", "--height", "48", "--output", str(output)]) == 0
    with Image.open(output) as image:
        assert image.size == (64, 48) and image.mode == "RGB"
    assert "1 reference(s)" in capsys.readouterr().out
    assert not list(output.parent.glob(".*partial"))


def test_generate_from_files_on_disk_with_a_lora(tmp_path, tiny_mllm_dir, capsys):
    tiny_flux_transformer(1).save_pretrained(tmp_path / "transformer")
    tiny_flux_vae(1).save_pretrained(tmp_path / "vae")
    adapted = tiny_flux_transformer(1)
    adapted.add_adapter(flux_lora_config(rank=4, alpha=4, init_lora_weights=False))
    save_comfyui_lora(adapted, tmp_path / "lora.safetensors")
    reference = tmp_path / "ref.png"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(reference)
    common = ["generate", "--mllm", str(tiny_mllm_dir), "--transformer", str(tmp_path / "transformer"), "--vae", str(tmp_path / "vae"),
              "--flux-dtype", "float32", "--reference", str(reference), "--steps", "3", "--width", "32", "--height", "32",
              "--long-side", "64"]
    assert main(common + ["--output", str(tmp_path / "plain.png")]) == 0
    assert main(common + ["--lora", str(tmp_path / "lora.safetensors"), "--output", str(tmp_path / "lora.png")]) == 0
    plain, with_lora = (np.asarray(Image.open(tmp_path / n)) for n in ("plain.png", "lora.png"))
    assert not np.array_equal(plain, with_lora)  # the LoRA changes the result


def test_lora_round_trip_is_exact(tmp_path):
    adapted = tiny_flux_transformer(0)
    adapted.add_adapter(flux_lora_config(rank=4, alpha=2, init_lora_weights=False))
    save_comfyui_lora(adapted, tmp_path / "lora.safetensors")
    loaded = load_comfyui_lora(tiny_flux_transformer(0), tmp_path / "lora.safetensors")
    original = {k: v for k, v in adapted.state_dict().items() if "lora_" in k}
    restored = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert original.keys() == restored.keys() and len(original) == 22
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert loaded.peft_config["default"].lora_alpha == 2.0 and loaded.peft_config["default"].r == 4
    with pytest.raises(SqueezeWeightsError, match="does not exist.*models/loras/"):
        load_comfyui_lora(tiny_flux_transformer(0), tmp_path / "missing.safetensors")


def test_bad_generate_input_is_an_error_before_anything_loads(tmp_path, capsys):
    assert main(["generate", "--tau1", "0.2", "--tau2", "0.5"]) == 2
    assert "--tau1=0.2 must be greater than --tau2=0.5" in capsys.readouterr().err
    assert main(["generate", "--width", "100"]) == 2
    assert "--width=100 must be a multiple of 16" in capsys.readouterr().err
    assert main(["generate", "--transformer", str(tmp_path)]) == 2
    assert "--transformer and --vae together" in capsys.readouterr().err
    with pytest.raises(SqueezeModelError, match=r"has no config.json.*'transformer/' folder"):
        load_flux_transformer(tmp_path)
    with pytest.raises(SqueezeModelError, match=r"has no config.json.*'vae/' folder"):
        load_flux_vae(tmp_path)
    with pytest.raises(SqueezeInputError, match="steps=0"):
        GenerateConfig(prompt="x", steps=0)
    with pytest.raises(SqueezeInputError, match="long_side=32 must be a multiple of 16 between 64 and 4096"):
        GenerateConfig(prompt="x", long_side=32)
    output = tmp_path / "small.png"
    assert main(["generate", "--long-side", "32", "--output", str(output)]) == 2
    assert "--long-side=32 must be a multiple of 16 between 64" in capsys.readouterr().err and not output.exists()


def test_resolution_shift_is_comfyuis():
    assert flux_resolution_shift(1024, 1024) == pytest.approx(1.15)  # 4096 tokens: max_shift
    assert flux_resolution_shift(256, 256) == pytest.approx(0.5)  # 256 tokens: base_shift


def test_generate_batch_gives_what_single_calls_give_in_any_order(encoder, tmp_path):
    """Prompts of two token lengths, with and without a reference, staged and in one batch call: each image equals
    the one `pipe(config)` draws alone (up to float rounding), in the order asked for."""
    import dataclasses

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.pipeline import SqueezePipeline

    torch.manual_seed(0)
    pipe = SqueezePipeline(encoder, DualLayerAggregator(DLAConfig.for_mllm(encoder.info)), tiny_flux_transformer(0),
                           tiny_flux_vae(0), remember=8)
    red, blue = Image.new("RGB", (48, 40), (200, 30, 30)), Image.new("RGB", (40, 48), (30, 30, 200))
    base = GenerateConfig(prompt="", steps=3, width=32, height=32, long_side=64)
    jobs = [("a red toy", [red], 0), ("a blue toy on the grass", [blue], 1), ("a red toy", [blue], 2), ("a toy", [], 3),
            ("a blue toy on the grass", [red], 4)]
    configs = [dataclasses.replace(base, prompt=prompt, seed=seed) for prompt, _, seed in jobs]
    batched = pipe.generate_batch(configs, [refs for _, refs, _ in jobs], batch_size=2)
    single = torch.cat([pipe(config, refs, progress=False)[1] for config, (_, refs, _) in zip(configs, jobs)])
    assert batched.shape == (5, 32, 32, 3)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    assert not torch.allclose(batched[0], batched[2], atol=1e-3)  # another reference, another image
    with pytest.raises(SqueezeInputError, match="share all settings but prompt and seed"):
        pipe.generate_batch([base, dataclasses.replace(base, steps=4)], [[], []])


def test_a_vae_that_halves_the_image_twice_sets_the_latent_grid(encoder, tmp_path):
    """The latent grid comes from the VAE (diffusers' 2 ** (blocks - 1)), not from the FLUX VAE's fixed 8: a 4x VAE
    gives 32 x 32 px images from 8 x 8 latents, alone and in batches, with its reference latents at 4x too."""
    import dataclasses

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.flux import latent_shape, vae_downscale
    from squeeze_core.pipeline import SqueezePipeline
    from squeeze_core.references import reference_size

    assert vae_downscale(tiny_flux_vae(0)) == 8 and vae_downscale(tiny_flux_vae(0, blocks=3)) == 4
    assert latent_shape(64, 32, 2, downscale=4) == (2, 16, 8, 16)
    torch.manual_seed(0)
    pipe = SqueezePipeline(encoder, DualLayerAggregator(DLAConfig.for_mllm(encoder.info)), tiny_flux_transformer(0),
                           tiny_flux_vae(0, blocks=3))
    config = GenerateConfig(prompt="a red toy", steps=2, width=32, height=48, long_side=64)
    reference = Image.new("RGB", (48, 32), (200, 30, 30))
    latent, image = pipe(config, [reference], progress=False)
    assert latent.shape == (1, 16, 12, 8) and image.shape == (1, 48, 32, 3)
    height, width = reference_size(32, 48, 64)
    assert pipe.prepare(config, [reference]).positive.at(2).references[0].shape == (1, 16, height // 4, width // 4)
    batched = pipe.generate_batch([config, dataclasses.replace(config, seed=1)], [[reference], [reference]])
    assert batched.shape == (2, 48, 32, 3)
    torch.testing.assert_close(batched[:1], image, atol=1e-4, rtol=0)


def test_offloading_the_mllm_swaps_it_with_flux_once_per_new_prompt_and_changes_no_image(encoder):
    """--offload-mllm: FLUX leaves the device while a prompt's encodes run and the MLLM once they are done; the same
    prompt again (another seed) moves nothing, a batch of new prompts swaps once, and every image equals the
    resident pipeline's."""
    import dataclasses

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.pipeline import SqueezePipeline

    torch.manual_seed(0)
    dla, vae = DualLayerAggregator(DLAConfig.for_mllm(encoder.info)), tiny_flux_vae(0)
    resident = SqueezePipeline(encoder, dla, tiny_flux_transformer(0), vae)
    offloaded = SqueezePipeline(encoder, dla, tiny_flux_transformer(0), vae, offload_mllm=True)
    mllm, flux = offloaded.mllm.mllm_bytes, offloaded.mllm.flux_bytes
    assert mllm == sum(p.numel() * p.element_size() for p in encoder.model.parameters()) > 0 and flux > 0
    red = Image.new("RGB", (48, 40), (200, 30, 30))
    config = GenerateConfig(prompt="a red toy", steps=3, width=32, height=32, long_side=64)
    torch.testing.assert_close(offloaded(config, [red], progress=False)[1], resident(config, [red], progress=False)[1])
    # the MLLM started on the device (a CPU run loads it there): FLUX off, then the MLLM off and FLUX back
    assert offloaded.mllm.bytes_moved == 2 * flux + mllm
    assert offloaded.mllm.flux_on_device and not offloaded.mllm.mllm_on_device
    offloaded(dataclasses.replace(config, seed=1), [red], progress=False)  # the same prompt: its encodings are kept
    assert offloaded.mllm.bytes_moved == 2 * flux + mllm
    offloaded(dataclasses.replace(config, prompt="a toy"), [red], progress=False)  # a new prompt: a swap each way
    assert offloaded.mllm.bytes_moved == 4 * flux + 3 * mllm
    configs = [dataclasses.replace(config, prompt=p) for p in ("one toy", "two toys", "three toys")]
    offloaded.generate_batch(configs, [[red]] * 3)  # three new prompts in a batch: one swap each way
    assert offloaded.mllm.bytes_moved == 6 * flux + 5 * mllm and resident.mllm.bytes_moved == 0


def test_a_compiled_transformer_draws_the_same_image(encoder):
    """--compile: the transformer is compiled in place (the same module, so offloading and its weights work as
    before) and the staged run, whose phases give it several shapes, draws what the eager one draws. aot_eager
    traces and runs the graphs torch.compile captures without generating code (inductor's code is torch's to test)."""
    from squeeze_core.compiling import compile_transformer
    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.pipeline import SqueezePipeline

    torch.manual_seed(0)
    dla, vae = DualLayerAggregator(DLAConfig.for_mllm(encoder.info)), tiny_flux_vae(0)
    eager = SqueezePipeline(encoder, dla, tiny_flux_transformer(0), vae)
    compiled = SqueezePipeline(encoder, dla, tiny_flux_transformer(0), vae)
    transformer = compiled.transformer
    assert compile_transformer(transformer, backend="aot_eager") is transformer and transformer._compiled_call_impl is not None
    red = Image.new("RGB", (48, 40), (200, 30, 30))
    config = GenerateConfig(prompt="a red toy", steps=6, width=32, height=32, long_side=64, tau1=0.7, tau2=0.3)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.testing.assert_close(compiled(config, [red], progress=False)[1], eager(config, [red], progress=False)[1],
                               atol=1e-5, rtol=0)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # graphs were captured and run


def test_compile_without_its_compiler_is_an_error_that_says_what_to_install(tmp_path, monkeypatch):
    from squeeze_core.compiling import check_compile

    check_compile("cpu")  # this machine has one
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-c++")
    message = r"--compile on the CPU needs a C\+\+ compiler \(no-such-c\+\+ or clang\+\+.*apt install g\+\+"
    with pytest.raises(SqueezeInputError, match=message):
        check_compile("cpu")
