"""The mini VAE and FLUX: trained by our code, saved in the real layouts, loaded by the real loaders."""

import numpy as np
import pytest
import torch

from squeeze_core.flux import FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT, load_flux_transformer
from squeeze_core.mini.flux_base import MiniFluxConfig, MiniTextEncoder, pretrain_flux, sample_base, save_mini_flux
from squeeze_core.mini.vae import (
    MiniVAEConfig,
    box_weights,
    build_vae,
    fold_latent_statistics,
    pretrain_vae,
    reconstruct,
    reconstruction_loss,
)
from squeeze_core.mini.world import Scene, all_identities, caption, render, subject_box
from squeeze_core.vae import load_flux_vae


@pytest.fixture(scope="module")
def renders():
    rng = np.random.default_rng(0)
    identities, scenes = all_identities(), [Scene("beach", "left", "small", "ball"), Scene("night", "right", "large", "none")]
    rows = [(identities[int(rng.integers(len(identities)))], scenes[i % 2]) for i in range(24)]
    images = torch.from_numpy(np.stack([np.asarray(render(i, s, k)) for k, (i, s) in enumerate(rows)]))
    return images, [caption(i, s) for i, s in rows], torch.tensor([subject_box(i, s, k) for k, (i, s) in enumerate(rows)])


def test_fold_moves_latents_to_flux_statistics_and_keeps_the_decoder_inside_the_border(renders):
    images, *_ = renders
    vae = build_vae(MiniVAEConfig(seed=1)).eval().requires_grad_(False)
    x = images.float().movedim(-1, 1) / 127.5 - 1
    with torch.no_grad():
        inner_before = vae.decoder.conv_in(vae.encode(x).latent_dist.mode())[..., 1:-1, 1:-1]
    fold_latent_statistics(vae, images)
    with torch.no_grad():
        inner_after = vae.decoder.conv_in(vae.encode(x).latent_dist.mode())[..., 1:-1, 1:-1]
    torch.testing.assert_close(inner_after, inner_before, atol=1e-4, rtol=1e-4)  # only the zero padding differs
    with torch.no_grad():
        z = vae.encode(images.float().movedim(-1, 1) / 127.5 - 1).latent_dist.mode()
    normalised = (z - FLUX_LATENT_SHIFT) * FLUX_LATENT_SCALE
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3)), torch.ones(16), atol=1e-3, rtol=0)


def test_vae_trains_saves_and_loads_as_the_flux_vae(renders, tmp_path):
    images, *_ = renders
    config = MiniVAEConfig(steps=20, batch_size=4, subject_weight=1.0)  # the plain loss needs no boxes
    vae, stats = pretrain_vae(images, config, progress=False)
    assert np.mean(stats["losses"][11:16]) < np.mean(stats["losses"][:5])  # before the fold at 80%
    assert stats["latent_statistics"]["channel_mean_abs_max"] < 0.5  # folded at 80%, then trained on
    assert 0.5 < stats["latent_statistics"]["channel_std_min"] <= stats["latent_statistics"]["channel_std_max"] < 2.0
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    loaded = load_flux_vae(tmp_path / "vae", dtype=torch.float32)
    assert loaded.config.latent_channels == 16 and loaded.config.scaling_factor == FLUX_LATENT_SCALE
    torch.testing.assert_close(reconstruct(loaded, images[:4]), reconstruct(vae, images[:4]))
    again, _ = pretrain_vae(images, config, progress=False)  # same seed, same weights
    for (name, a), b in zip(vae.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_subject_weighted_loss_weighs_the_box_and_needs_the_boxes(renders):
    images, _, boxes = renders
    maps = box_weights(torch.tensor([[2, 3, 5, 7]]), 8, 4.0)
    assert maps.shape == (1, 1, 8, 8) and maps.sum() == 64 + 3 * 3 * 4 and maps[0, 0, 3, 2] == 4 and maps[0, 0, 7, 5] == 1
    target, reconstruction = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    reconstruction[..., 3:7, 2:5] = 1.0  # wrong only inside the box
    plain = reconstruction_loss(reconstruction, target)
    torch.testing.assert_close(reconstruction_loss(reconstruction, target, torch.ones(1, 1, 8, 8)), plain)
    assert reconstruction_loss(reconstruction, target, maps) > 2 * plain

    config = MiniVAEConfig(steps=3, batch_size=4, subject_weight=4.0)
    with pytest.raises(ValueError, match=r"subject_weight=4.0 needs subject_boxes of shape \(24, 4\)"):
        pretrain_vae(images, config, progress=False)
    with pytest.raises(ValueError, match="MiniVAEConfig.subject_weight must be > 0"):
        MiniVAEConfig(subject_weight=0.0)
    with pytest.raises(ValueError, match="MiniFluxConfig.subject_weight must be > 0"):
        MiniFluxConfig(subject_weight=-1.0)
    weighted, stats = pretrain_vae(images, config, progress=False, subject_boxes=boxes)
    again, _ = pretrain_vae(images, config, progress=False, subject_boxes=boxes)
    _, plain_stats = pretrain_vae(images, MiniVAEConfig(steps=3, batch_size=4, subject_weight=1.0), progress=False,
                                  subject_boxes=boxes)
    assert all(torch.equal(a, b) for a, b in zip(weighted.state_dict().values(), again.state_dict().values()))
    assert stats["losses"][0] != plain_stats["losses"][0]  # same batch, another loss


def test_flux_trains_with_its_text_encoder_saves_loads_and_samples(renders, tmp_path):
    images, captions, _ = renders
    latents = torch.randn(len(captions), 16, 8, 8)
    config = MiniFluxConfig(steps=6, batch_size=4, double_blocks=1, single_blocks=1, subject_weight=1.0, panel_share=0.0)
    transformer, text, stats = pretrain_flux(latents, captions, config, progress=False)
    assert len(stats["losses"]) == 6 and all(np.isfinite(stats["losses"]))
    assert text.tokenizer.unk_token_id not in text.tokenizer(captions[0])["input_ids"]  # every world word is known
    save_mini_flux(tmp_path, transformer, text)
    loaded = load_flux_transformer(tmp_path / "transformer", dtype=torch.float32)
    assert loaded.config.joint_attention_dim == config.text_dim and not loaded.config.guidance_embeds
    text_loaded = MiniTextEncoder.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(text_loaded.encode(captions[:2])[0], text.encode(captions[:2])[0])
    vae = build_vae(MiniVAEConfig()).eval()
    samples = sample_base(loaded, text_loaded, vae, captions[:2], [0, 1], steps=3, progress=False)
    assert samples.shape == (2, 64, 64, 3) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    again = sample_base(loaded, text_loaded, vae, captions[:2], [0, 1], steps=3, progress=False)
    torch.testing.assert_close(samples, again)
    transformer2, _, _ = pretrain_flux(latents, captions, config, progress=False)
    for (name, a), b in zip(transformer.state_dict().items(), transformer2.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_vae_that_halves_twice_gives_flux_a_finer_grid_end_to_end(renders, tmp_path):
    """MiniVAEConfig(channels=3 entries): 16 x 16 latents for 64 px renders (4 px per cell); FLUX trains on them with
    the matching timestep shift and base sampling draws on that grid, back to 64 px images. A run's `overrides` is how
    a benchmark asks `squeeze mini pretrain`'s code for this variant."""
    from squeeze_core.flux import vae_downscale
    from squeeze_core.mini.build import MiniRun

    images, captions, boxes = renders
    config = MiniRun(tmp_path, seed=3, overrides={"MiniVAEConfig": {"channels": (16, 32, 32), "steps": 6}}).configured(MiniVAEConfig)
    assert config.channels == (16, 32, 32) and config.steps == 6 and config.seed == 3 and config.batch_size == MiniVAEConfig().batch_size
    vae, _ = pretrain_vae(images, config, progress=False, subject_boxes=boxes)
    assert vae_downscale(vae) == 4
    with torch.no_grad():
        latents = vae.encode(images.float().movedim(-1, 1) / 127.5 - 1).latent_dist.mode()
    assert latents.shape == (len(images), 16, 16, 16)
    config = MiniFluxConfig(steps=2, batch_size=4, double_blocks=1, single_blocks=1, panel_share=0.0)
    transformer, text, _ = pretrain_flux(latents, captions, config, progress=False, downscale=4, subject_boxes=boxes)
    samples = sample_base(transformer, text, vae, captions[:2], [0, 1], steps=2, progress=False)
    assert samples.shape == (2, 64, 64, 3)


def test_flux_subject_weight_changes_the_loss_and_needs_the_boxes(renders):
    images, captions, boxes = renders
    latents = torch.randn(len(images), 16, 8, 8, generator=torch.Generator().manual_seed(0))
    small = dict(steps=2, batch_size=4, double_blocks=1, single_blocks=1, panel_share=0.0)
    with pytest.raises(ValueError, match=r"subject_weight=4.0 needs subject_boxes of shape \(24, 4\)"):
        pretrain_flux(latents, captions, MiniFluxConfig(**small, subject_weight=4.0), progress=False)
    _, _, plain = pretrain_flux(latents, captions, MiniFluxConfig(**small, subject_weight=1.0), progress=False,
                                subject_boxes=boxes)
    _, _, weighted = pretrain_flux(latents, captions, MiniFluxConfig(**small, subject_weight=4.0), progress=False, subject_boxes=boxes)
    _, _, same = pretrain_flux(latents, captions, MiniFluxConfig(**small, subject_weight=4.0), progress=False, subject_boxes=boxes)
    assert weighted["losses"] == same["losses"] and weighted["losses"][0] != plain["losses"][0]  # same batch, another loss


def test_flux_two_panel_canvases_train_only_when_asked(renders):
    """MiniFluxConfig.panel_share: that share of steps trains on two renders of one identity (the second at the
    reference latents' place); 0 is the single-render training, bit for bit, whatever else is given. The default is
    the in-context prior: half of the steps, the second panel clean."""
    images, captions, boxes = renders
    latents = torch.randn(len(images), 16, 8, 8, generator=torch.Generator().manual_seed(0))
    identities = [k // 2 for k in range(len(images))]  # pairs of latents stand for one identity
    prompts = [c.split(" with a ")[0] for c in captions]
    assert (MiniFluxConfig().panel_share, MiniFluxConfig().panel_clean) == (0.5, 1.0)
    small = dict(steps=3, batch_size=4, double_blocks=1, single_blocks=1, subject_weight=4.0)
    single, _, single_stats = pretrain_flux(latents, captions, MiniFluxConfig(**small, panel_share=0.0), progress=False,
                                            subject_boxes=boxes)
    given, _, _ = pretrain_flux(latents, captions, MiniFluxConfig(**small, panel_share=0.0), progress=False, subject_boxes=boxes,
                                identities=identities, prompts=prompts)
    assert all(torch.equal(a, b) for a, b in zip(single.state_dict().values(), given.state_dict().values()))
    assert single_stats["panel_losses"] == []
    stats = {}
    for clean in (0.0, 1.0):
        config = MiniFluxConfig(**small, panel_share=1.0, panel_clean=clean)
        _, _, stats[clean] = pretrain_flux(latents, captions, config, progress=False, subject_boxes=boxes,
                                           identities=identities, prompts=prompts)
        assert stats[clean]["panel_losses"] == stats[clean]["losses"] and all(np.isfinite(stats[clean]["losses"]))
    assert stats[0.0]["losses"][0] != stats[1.0]["losses"][0] != single_stats["losses"][0]
    half, _, half_stats = pretrain_flux(latents, captions, MiniFluxConfig(**dict(small, steps=8), panel_share=0.5),
                                        progress=False, subject_boxes=boxes, identities=identities, prompts=prompts)
    assert 0 < len(half_stats["panel_losses"]) < 8
    with pytest.raises(ValueError, match="needs identities and prompts"):
        pretrain_flux(latents, captions, MiniFluxConfig(**small, panel_share=0.5), progress=False, subject_boxes=boxes)
    with pytest.raises(ValueError, match="at least two renders"):
        pretrain_flux(latents, captions, MiniFluxConfig(**small, panel_share=0.5), progress=False, subject_boxes=boxes,
                      identities=list(range(len(images))), prompts=prompts)
    with pytest.raises(ValueError, match="panel_share must be in"):
        MiniFluxConfig(panel_share=1.5)
