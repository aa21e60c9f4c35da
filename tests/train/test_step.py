"""The training step: condition drops at their rates, flow times, loss going down, frozen parts frozen."""

import math

import pytest
import torch
from accelerate.state import AcceleratorState

from squeeze_core.train.data import collate
from squeeze_core.train.step import ConditionUse, draw_condition_use, noisy_latent, sample_timesteps
from squeeze_core.train.trainer import Trainer


def test_each_condition_combination_is_drawn_at_its_rate():
    generator = torch.Generator().manual_seed(0)
    p_mllm, p_vae, p_prompt, draws = 0.25, 0.4, 0.1, 40_000
    counts = {}
    for _ in range(draws):
        use = draw_condition_use(generator, 2, p_mllm, p_vae, p_prompt)
        counts[use] = counts.get(use, 0) + 1
    kept = 1 - p_prompt
    expected = {
        ConditionUse(False, False, False): p_prompt,  # the CFG negative
        ConditionUse(True, True, True): kept * (1 - p_mllm) * (1 - p_vae),  # sampling stage 2
        ConditionUse(True, True, False): kept * (1 - p_mllm) * p_vae,  # sampling stage 1
        ConditionUse(True, False, True): kept * p_mllm * (1 - p_vae),  # sampling stage 3
        ConditionUse(True, False, False): kept * p_mllm * p_vae,  # prompt only
    }
    assert set(counts) == set(expected)
    for use, rate in expected.items():
        assert abs(counts[use] / draws - rate) < 4 * math.sqrt(rate * (1 - rate) / draws), use
    stage1 = [draw_condition_use(generator, 1, 0.5, 0.0, 0.0) for _ in range(2000)]
    assert not any(u.vae_references for u in stage1)  # stage 1 never gives FLUX reference latents
    assert 0.45 < sum(u.mllm_references for u in stage1) / 2000 < 0.55


def test_timesteps_follow_the_samplers_resolution_shift():
    generator = torch.Generator().manual_seed(0)
    small = sample_timesteps(generator, 20_000, 256, 256)
    large = sample_timesteps(generator, 20_000, 1024, 1024)
    plain = sample_timesteps(generator, 20_000, 1024, 1024, resolution_shift=False)
    assert 0 < float(small.min()) and float(large.max()) < 1
    assert abs(float(plain.median()) - 0.5) < 0.02  # logit-normal(0, 1) is centred on t = 0.5
    # FLUX's shift at 1024 px is 1.15: the median moves to e^1.15 / (e^1.15 + 1)
    assert abs(float(large.median()) - math.exp(1.15) / (math.exp(1.15) + 1)) < 0.02
    assert float(small.median()) < float(large.median())
    uniform = sample_timesteps(generator, 20_000, 256, 256, "uniform", resolution_shift=False)
    assert abs(float(uniform.mean()) - 0.5) < 0.01


def test_noisy_latent_is_the_rectified_flow_interpolation():
    clean, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    x_t, velocity = noisy_latent(clean, noise, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(x_t[0], clean[0])
    torch.testing.assert_close(x_t[1], noise[1])
    torch.testing.assert_close(velocity, noise - clean)
    x_half, _ = noisy_latent(clean, noise, torch.tensor([0.3, 0.3]))
    torch.testing.assert_close(x_half - 0.3 * velocity, clean)  # x_0 = x_t - t * v, ComfyUI's denoised


def fixed_samples(trainer, indices):
    """One batch, encoded once: the same noise, times and drops at every step (a fixed batch)."""
    bucket = trainer.dataset.bucket_of[indices[0]]
    indices = [i for i in indices if trainer.dataset.bucket_of[i] == bucket]
    return trainer.prepare_batch(collate([trainer.dataset[i] for i in indices]))


def parameters(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("stage", [1, 2])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(stage, tiny_config, tmp_path):
    if stage == 2:
        from squeeze_core.train.trainer import train

        train(tiny_config(output_dir=str(tmp_path / "stage1"), max_steps=2, checkpoint_every=2))
    trainer = Trainer(tiny_config(training_stage=stage, init_from=str(tmp_path / "stage1") if stage == 2 else None,
                                  vae_reference_drop=0.0, mllm_reference_drop=0.0, prompt_drop=0.0, learning_rate=3e-3))
    trainer.setup()
    samples = fixed_samples(trainer, [0, 4])
    assert all(s["use"].vae_references == (stage == 2) for s in samples)
    assert all(len(s["references"]) == (1 if stage == 2 else 0) for s in samples)
    losses = [trainer.train_step(samples) for _ in range(6)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.98 * losses[0], losses


def test_overfitting_one_pair_drives_the_loss_well_down(tiny_config):
    trainer = Trainer(tiny_config(learning_rate=1e-2, lora_rank=16, mllm_reference_drop=0.0, prompt_drop=0.0))
    trainer.setup()
    samples = fixed_samples(trainer, [0])
    losses = [trainer.train_step(samples) for _ in range(200)]
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


def test_frozen_parts_do_not_change_and_trained_parts_do(tiny_config):
    trainer = Trainer(tiny_config(max_steps=3, checkpoint_every=3))
    trainer.setup()
    models = trainer.models
    mllm, vae = parameters(models.encoder.model), parameters(models.vae)
    flux = parameters(models.transformer)
    dla = parameters(models.dla)
    trainer.run()
    assert all(torch.equal(p, mllm[n]) for n, p in models.encoder.model.named_parameters())
    assert all(torch.equal(p, vae[n]) for n, p in models.vae.named_parameters())
    changed = {n for n, p in models.transformer.named_parameters() if not torch.equal(p, flux[n])}
    assert changed and all(".lora_" in n for n in changed)  # only LoRA weights move
    assert not any(p.requires_grad for n, p in models.transformer.named_parameters() if ".lora_" not in n)
    assert any(not torch.equal(p, dla[n]) for n, p in models.dla.named_parameters())


def gradients(trainer, samples):
    trainer.optimizer.zero_grad(set_to_none=True)
    for sample in samples:
        prediction = trainer.model(sample["hidden_states"], sample["attention_mask"], sample["token_types"],
                                   sample["noisy"], sample["t"], sample["references"])
        torch.mean((prediction - sample["velocity"]) ** 2).backward()
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    trainer = Trainer(tiny_config(prompt_drop=0.0))
    trainer.setup()
    samples = fixed_samples(trainer, [0, 4])
    plain = gradients(trainer, samples)
    trainer.models.transformer.enable_gradient_checkpointing()
    checkpointed = gradients(trainer, samples)
    assert plain.keys() == checkpointed.keys() and any("lora_A" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_step_tracks_the_float32_loss(tiny_config):
    losses = {}
    for precision in ("no", "bf16"):
        AcceleratorState._reset_state(reset_partial_state=True)
        trainer = Trainer(tiny_config(mixed_precision=precision, gradient_checkpointing=True, prompt_drop=0.0))
        trainer.setup()
        losses[precision] = trainer.train_step(fixed_samples(trainer, [0]))
    assert math.isfinite(losses["bf16"])
    assert abs(losses["bf16"] - losses["no"]) < 0.05 * losses["no"], losses


def test_warm_up_is_linear_then_constant():
    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.trainer import learning_rate_factor

    config = TrainConfig(warmup_steps=4)
    assert [learning_rate_factor(config, step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert learning_rate_factor(TrainConfig(), 0) == 1.0


def test_the_scheduler_continues_a_resumed_warm_up_at_the_config_rates():
    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.trainer import build_scheduler

    config = TrainConfig(warmup_steps=4, learning_rate=1e-3, dla_learning_rate=4e-3)
    groups = [{"name": "dla", "params": [torch.nn.Parameter(torch.zeros(1))], "lr": 9.0},  # a checkpoint's stale rates
              {"name": "lora", "params": [torch.nn.Parameter(torch.zeros(1))], "lr": 9.0}]
    optimizer = torch.optim.AdamW(groups)
    scheduler = build_scheduler(config, optimizer, step=2)  # two steps done: the third runs at 3/4
    assert scheduler.get_last_lr() == pytest.approx([3e-3, 0.75e-3])
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([4e-3, 1e-3])


def test_the_default_precision_settings_train_every_condition(tiny_config):
    """bf16 frozen weights, bf16 autocast and gradient checkpointing (the defaults for real runs), with samples that
    have no reference tokens at all (their image LAP does not run) mixed into the same steps."""
    from squeeze_core.train.trainer import train

    result = train(tiny_config(base_dtype="bfloat16", mixed_precision="bf16", gradient_checkpointing=True, batch_size=2,
                               prompt_drop=0.4, mllm_reference_drop=0.4, max_steps=6, checkpoint_every=6))
    assert len(result.losses) == 6 and all(math.isfinite(loss) for loss in result.losses)
    assert {"unconditional", "prompt", "mllm_refs"} <= set(result.condition_counts)


def test_grouped_samples_give_the_gradients_of_one_by_one(tiny_config, tmp_path):
    """Stage 2 with references dropped for some samples: groups of equal shapes share a FLUX forward (prompts of
    different lengths padded and masked) and give what per-sample forwards give."""
    from squeeze_core.testing import write_demo_dataset
    from squeeze_core.train.step import group_samples
    from squeeze_core.train.trainer import train

    train(tiny_config(output_dir=str(tmp_path / "stage1"), max_steps=1, checkpoint_every=1))
    AcceleratorState._reset_state(reset_partial_state=True)
    manifest = str(write_demo_dataset(tmp_path / "pairs", pairs=24))  # 6 targets of each size
    trainer = Trainer(tiny_config(training_stage=2, init_from=str(tmp_path / "stage1"), manifest=manifest, batch_size=4,
                                  vae_reference_drop=0.5, mllm_reference_drop=0.3, prompt_drop=0.2, seed=3))
    trainer.setup()
    bucket = trainer.dataset.bucket_of[0]
    samples = fixed_samples(trainer, [i for i, b in enumerate(trainer.dataset.bucket_of) if b == bucket])
    groups = group_samples(samples)
    assert len(samples) >= 3 and len(groups) < len(samples)  # something was merged
    assert any(g["count"] > 1 and not bool(g["attention_mask"].all()) for g in groups)  # padded, masked prompts

    def step_gradients(batched):
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for group in (group_samples(samples) if batched else [group_samples([s])[0] for s in samples]):
            prediction = trainer.model(group["hidden_states"], group["attention_mask"], group["token_types"],
                                       group["noisy"], group["t"], group["references"])
            group_loss = torch.mean((prediction - group["velocity"]) ** 2) * group["count"] / len(samples)
            group_loss.backward()
            loss += float(group_loss.detach())
        return loss, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    one_by_one, batched = step_gradients(False), step_gradients(True)
    assert batched[0] == pytest.approx(one_by_one[0], rel=1e-5)
    assert batched[1].keys() == one_by_one[1].keys()
    for name, grad in one_by_one[1].items():
        torch.testing.assert_close(batched[1][name], grad, atol=1e-6, rtol=1e-4)


def test_the_dla_aggregation_setting_trains_and_is_recorded(tiny_config, tmp_path):
    """The paper's aggregator ablations train through the same loop; the DLA file says which one it holds, and training
    stage 2 refuses to continue a stage-1 DLA of another kind."""
    from squeeze_core.errors import SqueezeWeightsError
    from squeeze_core.train.trainer import train
    from squeeze_core.weights import load_dla

    stage1 = tmp_path / "run"
    result = train(tiny_config(dla_aggregation="last_layer", max_steps=2, checkpoint_every=2))
    assert result.steps == 2 and all(math.isfinite(loss) for loss in result.losses)
    assert load_dla(stage1 / "squeeze_dla.safetensors").config.aggregation == "last_layer"
    with pytest.raises(SqueezeWeightsError, match="set dla_aggregation=last_layer"):
        train(tiny_config(training_stage=2, init_from=str(stage1), output_dir=str(tmp_path / "stage2"), max_steps=1))


def test_a_vae_with_a_finer_latent_grid_trains(tiny_config, tmp_path):
    """A VAE that halves the image twice (4 px per latent cell, as a miniature's may): the trainer draws its noise on
    that VAE's grid, so the target, the noise and the reference latents line up and a stage-2 step runs."""
    from squeeze_core.testing import tiny_flux_vae
    from squeeze_core.train.trainer import train

    vae = str(tmp_path / "vae4x")
    tiny_flux_vae(0, blocks=3).save_pretrained(vae)
    train(tiny_config(vae=vae, output_dir=str(tmp_path / "stage1"), max_steps=2, checkpoint_every=2))
    trainer = Trainer(tiny_config(vae=vae, training_stage=2, init_from=str(tmp_path / "stage1"), vae_reference_drop=0.0,
                                  prompt_drop=0.0))
    trainer.setup()
    samples = fixed_samples(trainer, [0, 4])
    assert samples[0]["noisy"].shape[-2:] == (16, 16)  # 64 px / 4
    assert samples[0]["references"][0].shape[-1] == 16  # the reference's 64 px long side at 4x
    loss = trainer.train_step(samples)
    assert math.isfinite(loss)
