"""The embedded-miniature nodes in-process: the mini VAE as ComfyUI's VAE agrees with the headless VAE, the mini
FLUX is ComfyUI's own Flux at the miniature's layout, a changed weight file is a validation error naming it, and
the comparison sheet lays the four images out in order."""

import shutil

import pytest
import torch
from comfy_helpers import run_node

from squeeze_core.embedded import EmbeddedModels
from squeeze_core.vae import load_flux_vae, vae_decode, vae_encode


@pytest.fixture(scope="module")
def mini(comfy):
    from squeeze_pack.nodes.mini import SqueezeMiniModels

    return SqueezeMiniModels.execute(1.0).result


def test_the_mini_vae_is_a_comfyui_vae_that_matches_the_headless_one(comfy, mini):
    import comfy.sd
    import nodes

    _, vae, _ = mini
    assert isinstance(vae, comfy.sd.VAE) and vae.spacial_compression_encode() == 8 and vae.latent_channels == 16
    headless = load_flux_vae(EmbeddedModels.packaged().vae, torch.float32)
    pixels = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    latent = run_node(nodes.VAEEncode, pixels=pixels, vae=vae)[0]["samples"]  # the stock nodes
    expected = vae_encode(headless, pixels)
    assert latent.shape == expected.shape == (1, 16, 6, 8)
    torch.testing.assert_close(latent.float(), expected, atol=1e-5, rtol=0)
    decoded = run_node(nodes.VAEDecode, samples={"samples": expected}, vae=vae)[0]
    assert decoded.shape == (1, 48, 64, 3)
    torch.testing.assert_close(decoded.float(), vae_decode(headless, expected), atol=1e-5, rtol=0)


def test_the_mini_flux_is_comfyuis_flux_at_the_miniatures_layout(comfy, mini):
    import comfy.ldm.flux.model

    model, _, _ = mini
    flux = model.model.diffusion_model
    assert isinstance(flux, comfy.ldm.flux.model.Flux)
    assert (flux.num_heads, flux.hidden_size, list(flux.params.axes_dim)) == (4, 128, [8, 12, 12])
    assert len(model.patches) > 0  # the embedded Squeeze LoRA, as LoraLoaderModelOnly attaches one


def test_the_lora_strength_changes_the_model(comfy):
    from squeeze_pack.nodes.mini import SqueezeMiniModels

    assert len(SqueezeMiniModels.execute(0.0).result[0].patches) == 0


def tampered_copy(tmp_path, relative: str):
    """The packaged weights copied, with one byte of one file flipped."""
    root = tmp_path / "weights"
    shutil.copytree(EmbeddedModels.packaged().root, root)
    data = bytearray((root / relative).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / relative).write_bytes(bytes(data))
    return root


@pytest.mark.parametrize("relative, node", [
    ("flux/transformer/diffusion_pytorch_model.safetensors", "models"),
    ("squeeze/squeeze_dla.safetensors", "dla"),
    ("benchmark/images/heldout/00_ref0.png", "reference"),
])
def test_a_changed_embedded_file_is_a_validation_error_naming_it(comfy, tmp_path, monkeypatch, relative, node):
    import squeeze_pack.squeeze_core.embedded as embedded
    from squeeze_pack.nodes.dla_encode import EMBEDDED_DLA, SqueezeDLAEncode
    from squeeze_pack.nodes.mini import SqueezeMiniModels, SqueezeMiniReference

    validate = {"models": lambda: SqueezeMiniModels.validate_inputs(1.0),
                "dla": lambda: SqueezeDLAEncode.validate_inputs(EMBEDDED_DLA),
                "reference": lambda: SqueezeMiniReference.validate_inputs(0, 0, 0)}[node]
    assert validate() is True
    monkeypatch.setattr(embedded, "PACKAGED", tampered_copy(tmp_path, relative))
    message = validate()
    assert isinstance(message, str) and relative in message and "no longer match MANIFEST.json" in message
    (embedded.PACKAGED / relative).unlink()  # a missing file: the same error
    assert relative in validate()


def test_the_reference_node_gives_the_benchmark_render_and_prompt(comfy):
    from squeeze_core.images import open_image
    from squeeze_core.mini.data import load_world
    from squeeze_core.pipeline import reference_pixels
    from squeeze_pack.nodes.mini import SqueezeMiniReference

    heldout = load_world(EmbeddedModels.packaged().world_dir).heldout[7]
    image, prompt, subject = SqueezeMiniReference.execute(7, 2, 4).result
    assert image.shape == (1, 64, 64, 3)
    torch.testing.assert_close(image, reference_pixels(open_image(heldout.references[2].path)))
    assert prompt == heldout.prompts[4].prompt and subject == heldout.identity.details()
    assert "identity=30 is out of range" in SqueezeMiniReference.validate_inputs(30, 0, 0)


def test_the_comparison_sheet_puts_each_image_in_its_labelled_column(comfy):
    from squeeze_pack.nodes.sheet import SqueezeComparisonSheet

    colours = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0)]
    images = [torch.tensor(c).expand(1, 64, 64, 3).clone() for c in colours]
    sheet = SqueezeComparisonSheet.execute(*images, tile=32).result[0]
    assert sheet.shape == (1, 14 + 32, 4 * 32, 3)
    for column, colour in enumerate(colours):
        torch.testing.assert_close(sheet[0, 14 + 16, column * 32 + 16], torch.tensor(colour))
    strip = sheet[0, :14]  # the label strip: white, with dark text
    assert strip.amax() == 1.0 and strip.amin() < 0.3 and (strip == 1.0).float().mean() > 0.5
