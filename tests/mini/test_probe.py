"""The VAE-branch probe (squeeze_core/mini/probe.py): the attention it reads is the attention FLUX computes, the loss
difference is taken on the right tensors, and a FLUX trained to copy its reference shows a positive difference."""

import pytest
import torch
import torch.nn.functional as F

from squeeze_core.flux import flux_velocity
from squeeze_core.mini.probe import ProbeConfig, ProbeItem, attention_layers, recording_attention, reference_probe


def tiny_flux(seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
                                  num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
                                  guidance_embeds=False, axes_dims_rope=(8, 12, 12)).eval()


def flat_latents(count: int, generator) -> torch.Tensor:
    """(count, 16, 8, 8) latents with one random colour each: a reference tells the answer whatever token reads it."""
    return torch.randn(count, 16, 1, 1, generator=generator).expand(-1, -1, 8, 8)


def items(count: int, seed: int = 0, copy: bool = False) -> list[ProbeItem]:
    """Random pairs; with `copy` the right reference is the target itself (what an oracle-trained model reads)."""
    generator = torch.Generator().manual_seed(seed)
    latents = list(flat_latents(2 * count, generator)[:, None])
    context, pooled = torch.randn(1, 3, 16, generator=generator), torch.randn(1, 16, generator=generator)
    return [ProbeItem(latents[k], latents[k] if copy else latents[count + k], latents[count + (k + 1) % count], context, pooled)
            for k in range(count)]


def test_recording_gives_flux_its_own_output_and_a_share_per_layer():
    transformer = tiny_flux()
    x, reference = torch.randn(2, 16, 8, 8), torch.randn(1, 16, 8, 8)
    context, pooled, times = torch.randn(2, 3, 16), torch.randn(2, 16), torch.tensor([0.4, 0.8])
    plain = flux_velocity(transformer, x, times, context, pooled, 1.0, [reference])
    record = {}
    with recording_attention(transformer, record, target=16, references=16):
        recorded = flux_velocity(transformer, x, times, context, pooled, 1.0, [reference])
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert list(record) == [name for name, _ in attention_layers(transformer)] == ["double 0", "single 0"]
    assert all(0.0 < v[0] < 1.0 for v in record.values())
    # the default processors are back
    torch.testing.assert_close(flux_velocity(transformer, x, times, context, pooled, 1.0, [reference]), plain)


def test_difference_is_wrong_minus_right_at_the_same_noise():
    transformer, config = tiny_flux(), ProbeConfig(pairs=3, times=(0.5, 0.9), noise_seeds=2)
    pairs = items(3)
    probe = reference_probe(transformer, pairs, config)
    assert len(probe["per_pair"]) == 3 and probe["stderr"] > 0
    assert probe["difference"] == pytest.approx(probe["loss_wrong"] - probe["loss_right"], abs=1e-6)
    swapped = reference_probe(transformer, [ProbeItem(i.target, i.wrong, i.right, i.context, i.pooled) for i in pairs], config)
    assert swapped["per_pair"] == pytest.approx([-v for v in probe["per_pair"]], abs=1e-6)
    same = reference_probe(transformer, [ProbeItem(i.target, i.right, i.right, i.context, i.pooled) for i in pairs], config)
    assert same["difference"] == 0.0 and same["stderr"] == 0.0
    assert set(probe["attention_to_references"]) == {"double 0", "single 0"}
    with pytest.raises(ValueError, match="at least 2"):
        reference_probe(transformer, pairs[:1], config)


def test_a_flux_trained_to_copy_its_reference_reads_it():
    """150 steps of teaching a tiny FLUX that the reference is the answer (one colour per latent, so no token has to be
    found): the right reference then lowers the loss, and it did not before training."""
    transformer = tiny_flux(seed=1).train()
    optimiser = torch.optim.AdamW(transformer.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    context, pooled = torch.zeros(8, 3, 16), torch.zeros(8, 16)
    for _ in range(150):
        x0, noise = flat_latents(8, generator), torch.randn(8, 16, 8, 8, generator=generator)
        t = torch.rand(8, generator=generator)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        velocity = torch.cat([flux_velocity(transformer, xt[i : i + 1], t[i : i + 1], context[:1], pooled[:1], 1.0, [x0[i : i + 1]])
                              for i in range(8)])
        loss = F.mse_loss(velocity, noise - x0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    transformer.eval()
    pairs = [ProbeItem(i.target, i.right, i.wrong, torch.zeros(1, 3, 16), torch.zeros(1, 16)) for i in items(8, seed=5, copy=True)]
    probe = reference_probe(transformer, pairs, ProbeConfig(pairs=8, times=(0.5, 0.9), noise_seeds=2))
    untrained = reference_probe(tiny_flux(seed=1), pairs, ProbeConfig(pairs=8, times=(0.5, 0.9), noise_seeds=2))
    assert probe["difference"] > 3 * probe["stderr"] > 0
    assert probe["difference"] > 0.5 > abs(untrained["difference"])  # measured: 2.3 and 0.003
