import pytest
import torch

from squeeze_core.conditioning import encode_conditioning
from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.errors import SqueezeInputError, SqueezeWeightsError
from squeeze_core.mllm import InternVL3Encoder, TokenType


def test_output_shapes_match_flux(encoder, dla, images):
    cond = encode_conditioning(encoder, dla, ["a toy", "a dog on a long walk"], [[images[0], images[1]], []])
    batch, length, width = cond.context.shape
    assert (batch, width) == (2, 4096)
    assert cond.pooled.shape == (2, 768)
    assert cond.attention_mask.shape == cond.token_types.shape == (2, length)
    assert cond.layer_weights.shape == (2, length, 6)
    # the longer item defines the length; the other is zero-padded after its mask ends
    lengths = cond.attention_mask.sum(1)
    assert int(lengths.max()) == length
    short = int(lengths.argmin())
    assert cond.context[short, int(lengths[short]):].abs().sum() == 0


def test_layer_weights_sum_to_one_and_start_near_uniform(encoder, dla, images):
    cond = encode_conditioning(encoder, dla, ["a toy"], [[images[0]]])
    weights = cond.layer_weights[0]
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))
    # an untrained DLA is a sensible mix (all layers, evenly) rather than noise
    assert (weights - 1 / 6).abs().max() < 0.01


def test_layer_weights_sum_to_one_after_training_changes_them(encoder, dla, images):
    with torch.no_grad():
        dla.text_lap.score.weight.normal_(std=1.0)
    weights = encode_conditioning(encoder, dla, ["a toy"], [[images[0]]]).layer_weights[0]
    assert (weights - 1 / 6).abs().max() > 0.05  # clearly non-uniform now
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))


def test_tokens_keep_their_order_and_types(encoder, dla, images):
    hidden = encoder.encode(["a toy"], [[images[0]]])
    cond = dla(hidden)
    kept = hidden.token_types[0][hidden.token_types[0] != TokenType.PAD]
    assert torch.equal(cond.token_types[0], kept)  # template tokens go through the text LAP by default

    dropping = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, template_tokens="drop"))
    cond = dropping(hidden)
    assert torch.equal(cond.token_types[0], kept[kept != TokenType.TEMPLATE])


def test_each_lap_only_touches_its_own_tokens(encoder, dla, images):
    hidden = encoder.encode(["a toy"], [[images[0]]])
    before = dla(hidden)
    with torch.no_grad():
        dla.image_lap.proj.weight.mul_(2.0)
    after = dla(hidden)
    image = before.token_types[0] == TokenType.IMAGE
    assert torch.equal(before.context[0, ~image], after.context[0, ~image])
    assert not torch.allclose(before.context[0, image], after.context[0, image])
    assert torch.equal(before.pooled, after.pooled)  # pooled comes from the text side only


def test_batch_equals_items_one_by_one(encoder, dla, images):
    prompts = ["a red toy", "", "a much longer prompt about two dogs playing chess"]
    refs = [[images[0]], [images[1], images[2]], []]
    batch = encode_conditioning(encoder, dla, prompts, refs)
    for i, (prompt, ref) in enumerate(zip(prompts, refs)):
        single = encode_conditioning(encoder, dla, [prompt], [ref])
        item = batch.item(i)
        assert item.context.shape == single.context.shape
        torch.testing.assert_close(item.context, single.context, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(item.pooled, single.pooled, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(item.layer_weights, single.layer_weights, atol=1e-6, rtol=1e-5)


def test_gradients_reach_both_laps_and_never_the_mllm(encoder, dla, images):
    hidden = encoder.encode(["a toy", "a dog"], [[images[0]], [images[1]]])
    cond = dla(hidden)
    (cond.context.square().mean() + cond.pooled.square().mean()).backward()
    for name, parameter in dla.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in encoder.model.parameters())


def test_mismatched_mllm_is_an_error_naming_both(encoder, other_mllm_dir, images):
    other = InternVL3Encoder.from_pretrained(other_mllm_dir, dtype=torch.float32)
    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info))
    with pytest.raises(SqueezeWeightsError, match=r"6 layers x 64.*tiny-internvl3-4x48 \(internvl, 4 layers x 48"):
        encode_conditioning(other, dla, ["a toy"], [[images[0]]])
    with pytest.raises(SqueezeWeightsError, match=r"expects 6 MLLM layers x 64.*4 layers x 48"):
        dla(other.encode(["a toy"]))


def test_nothing_to_condition_on_is_an_error(encoder):
    dropping = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, template_tokens="drop"))
    with pytest.raises(SqueezeInputError, match="prompt 1 leaves no tokens"):
        dropping(encoder.encode(["a toy", ""]))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(template_tokens="keep"), "template_tokens='keep'"),
        (dict(num_layers=0), "num_layers=0"),
        (dict(attn_dim=100, num_heads=8), "divisible by num_heads"),
        (dict(aggregation="mean"), "aggregation=.mean. is not one of"),
    ],
)
def test_bad_config_values_are_rejected(changes, message):
    with pytest.raises(SqueezeInputError, match=message):
        DLAConfig(**changes)


def test_the_paper_ablation_aggregators_share_the_interface(tmp_path, encoder, images, tiny_mllm_dir):
    """"joint" (one LAP for every token) and "last_layer" (no layer weighting) give conditioning of the DLA's shapes,
    round-trip through the DLA file, and differ from the DLA exactly where they should."""
    from squeeze_core.weights import load_dla, save_dla

    prompts, refs = ["a toy on a beach"], [[images[0]]]
    outputs, sizes = {}, {}
    for aggregation in ("dual", "joint", "last_layer"):
        torch.manual_seed(3)
        dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, aggregation=aggregation))
        sizes[aggregation] = sum(p.numel() for p in dla.parameters())
        outputs[aggregation] = encode_conditioning(encoder, dla, prompts, refs)
        save_dla(dla, tmp_path / f"{aggregation}.safetensors", mllm=encoder.info)
        loaded = load_dla(tmp_path / f"{aggregation}.safetensors", mllm=encoder.info)
        assert loaded.config.aggregation == aggregation
        torch.testing.assert_close(encode_conditioning(encoder, loaded, prompts, refs).context, outputs[aggregation].context)
    from squeeze_core.cli import main

    assert main(["encode", "--mllm", str(tiny_mllm_dir), "--dla", str(tmp_path / "joint.safetensors")]) == 0  # as a user would
    for aggregation in ("joint", "last_layer"):
        assert outputs[aggregation].context.shape == outputs["dual"].context.shape
        assert torch.equal(outputs[aggregation].token_types, outputs["dual"].token_types)
    assert sizes["last_layer"] < sizes["joint"] < sizes["dual"]
    # last layer only: every token's weight is all on the last layer
    weights = outputs["last_layer"].layer_weights[0]
    assert torch.equal(weights, torch.nn.functional.one_hot(torch.full((weights.shape[0],), 5), 6).float())
    # one LAP: text and image tokens are scored by the same module (a change to it moves both kinds)
    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, aggregation="joint"))
    before = encode_conditioning(encoder, dla, prompts, refs).context
    with torch.no_grad():
        dla.joint_lap.proj.weight.mul_(2.0)
    after = encode_conditioning(encoder, dla, prompts, refs).context
    types = outputs["joint"].token_types[0]
    for kind in (TokenType.TEXT, TokenType.IMAGE):
        assert not torch.allclose(before[0, types == kind], after[0, types == kind])
    last_layer = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, aggregation="last_layer"))
    with pytest.raises(SqueezeInputError, match="no layer weights to restrict"):
        last_layer.restricted_to(range(3)).__enter__()
    with pytest.raises(SqueezeInputError, match="aggregation='triple'"):
        DLAConfig.for_mllm(encoder.info, aggregation="triple")
