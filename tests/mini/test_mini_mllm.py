"""The miniature InternVL3: its tokenizer, deterministic pretraining on training renders only, the real loader, and
the caption parser that scores it."""

import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from squeeze_core.mini.data import WorldConfig, build_world
from squeeze_core.mini.mllm import (
    QUESTIONS,
    MiniMLLMConfig,
    _ChatBatches,
    build_encoder,
    build_mini_tokenizer,
    describe,
    heldout_cases,
    layer_probe,
    parse_caption,
    pretrain_mllm,
    ridge_probe_accuracy,
    tokenizer_corpus,
    truth,
    validate_mllm,
)
from squeeze_core.mini.world import Identity, Scene, all_identities, all_scenes, caption, render
from squeeze_core.mllm import InternVL3Encoder, TokenType
from squeeze_core.testing import SPECIAL_TOKENS

TINY_WORLD = WorldConfig(train_identities=12, heldout_identities=2, renders_per_identity=4, pairs_per_identity=2,
                         prompts_per_heldout=3)
QUICK = dict(steps=25, batch_size=8, warmup_steps=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("mini") / "world", TINY_WORLD, progress=False)
    # pretraining must read training renders only: without the held-out images it still has to work
    shutil.rmtree(world.root / "images" / "heldout")
    return world


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("mini") / "mllm"
    return out, pretrain_mllm(world, out, MiniMLLMConfig.quick(**QUICK), progress=False)


@pytest.fixture(scope="module")
def encoder(trained):
    return InternVL3Encoder.from_pretrained(trained[0], dtype=torch.float32, with_lm_head=True)  # describe() generates


def test_tokenizer_has_internvl_tokens_and_round_trips_captions_in_few_tokens(world):
    texts = tokenizer_corpus(world)
    tokenizer = build_mini_tokenizer(texts)
    for token in SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    identity, item = world.train_renders()[0]
    text = caption(identity, item.scene)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) <= 2 * len(text.split())  # words are merged, not spelled byte by byte
    assert len(tokenizer) <= 600
    # deterministic: the same texts give the same tokenizer
    assert build_mini_tokenizer(texts).backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    # held-out identities never reach the tokenizer's training texts
    assert not any(h.identity.details() in text for h in world.heldout for text in texts)


def test_training_turns_are_the_encoders_chat_turn_then_the_answer(world):
    tokenizer = build_mini_tokenizer(tokenizer_corpus(world))
    encoder = build_encoder(MiniMLLMConfig.quick(), tokenizer)
    data = _ChatBatches(encoder, world.train_renders()[:4], progress=False)
    questions = list(QUESTIONS)
    batch = data.batch([0, 1, 2], [0, 1, 2])
    image = render(world.train_renders()[0][0], Scene("beach", "left", "small"))  # the turn's ids do not depend on it
    for row, (identity, item) in enumerate(world.train_renders()[:3]):
        expected = encoder.build_inputs([questions[row]], [[image]])["input_ids"][0]
        assert torch.equal(batch["input_ids"][row, : len(expected)], expected)  # the encoder's user turn, exactly
        labels = batch["labels"][row][batch["labels"][row] != -100]
        answer = QUESTIONS[questions[row]](identity, item.scene)
        assert tokenizer.decode(labels) == answer + "<|im_end|>"  # the loss is on the answer and its end only
        assert torch.equal(batch["input_ids"][row, len(expected) : len(expected) + len(labels)], labels)
    assert int((batch["input_ids"][0] == encoder.image_context_id).sum()) == 16


def test_quick_pretraining_is_deterministic_and_learns(world, trained, tmp_path):
    out, metrics = trained
    curve = metrics["loss_curve"]
    assert len(curve) == QUICK["steps"] and metrics["parameters"] > 0
    assert sum(curve[-5:]) / 5 < curve[0] - 1.0  # from ~ln(vocab) down by over a nat
    again = pretrain_mllm(world, tmp_path / "again", MiniMLLMConfig.quick(**QUICK), progress=False)
    assert again["loss_curve"] == curve
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    other = pretrain_mllm(world, tmp_path / "seed1", MiniMLLMConfig.quick(seed=1, steps=2, batch_size=4), progress=False)
    first, second = load_file(out / "model.safetensors"), load_file(tmp_path / "seed1" / "model.safetensors")
    assert other["loss_curve"] != curve[:2] and not all(torch.equal(first[k], second[k]) for k in first)


def test_checkpoint_loads_through_the_squeeze_encoder(encoder, world):
    assert encoder.info.num_layers == 6 and encoder.info.hidden_size == 96
    identity, item = world.train_renders()[0]
    out = encoder.encode([""], [[render(identity, item.scene)]])
    layers, batch, tokens, hidden = out.hidden_states.shape
    assert (layers, batch, hidden) == (6, 1, 96)
    assert int((out.token_types == TokenType.IMAGE).sum()) == 16
    assert not torch.allclose(out.hidden_states[0], out.hidden_states[-1])
    with_prompt = encoder.encode(["a small toy on the beach"], [[render(identity, item.scene)]])
    assert with_prompt.hidden_states.shape[2] > tokens


def test_describe_is_greedy_and_deterministic(encoder, world):
    images = [render(identity, item.scene) for identity, item in world.train_renders()[:3]]
    first = describe(encoder, images, max_new_tokens=12)
    assert len(first) == 3 and all(isinstance(text, str) and "<|im_end|>" not in text for text in first)
    assert describe(encoder, images, max_new_tokens=12) == first


def test_validation_and_probe_run_on_held_out_renders(trained, world, tmp_path):
    result = validate_mllm(trained[0], world, example_dir=tmp_path, examples=3, progress=False)
    cases = heldout_cases(world)
    assert result["n"] == len(cases) == 2 * 3
    assert set(result["accuracy"]) == set(truth(cases[0][1], cases[0][2]))
    assert all(0 <= value <= 1 for value in result["accuracy"].values())
    assert [e["image"] for e in result["examples"]] == [c[0] for c in cases[:3]]
    assert all((tmp_path / e["image"]).is_file() for e in result["examples"])
    probe = layer_probe(trained[0], world, n_train=24, n_test=6, batch_size=12, progress=False)
    assert probe["n_train"] == 24 and probe["n_test"] == 6
    assert all(len(probe[feature][name]) == 6 for feature in ("image_mean", "last_token") for name in probe["attributes"])


def test_ridge_probe_reads_a_linear_code_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    labels = [random.Random(i).choice("abc") for i in range(300)]
    codes = torch.eye(3)[[("abc").index(label) for label in labels]]
    features = codes @ torch.randn(3, 16, generator=generator) + 0.1 * torch.randn(300, 16, generator=generator)
    assert ridge_probe_accuracy(features[:200], labels[:200], features[200:], labels[200:]) == 1.0
    noise = torch.randn(300, 16, generator=generator)
    assert ridge_probe_accuracy(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.6


def test_parse_caption_inverts_caption():
    rng = random.Random(0)
    identities, scenes = all_identities(), all_scenes()
    for _ in range(300):
        identity, scene = rng.choice(identities), rng.choice(scenes)
        assert parse_caption(caption(identity, scene)) == truth(identity, scene)


def test_parse_caption_scores_attributes_separately():
    identity, scene = Identity("vase", 2, "green", "purple", "spotted", "cross"), Scene("night", "right", "large", "none")
    wrong_mark = caption(identity, scene).replace("cross mark", "star mark")
    parsed = parse_caption(wrong_mark)
    assert parsed["mark"] is None and {k: v for k, v in parsed.items() if k != "mark"} == {
        k: v for k, v in truth(identity, scene).items() if k != "mark"
    }
    # a variant word of another class does not describe this one
    assert parse_caption(caption(identity, scene).replace("handled", "tall"))["variant"] is None
    assert set(parse_caption("").values()) == {None}
    assert parse_caption("a small subject in the snow, on the left")["companion"] == "none"


def test_the_encoder_loads_without_the_head_and_describe_says_it_needs_one(trained, world):
    """Encoding never reads the language-model head, so the loader leaves it out by default; generating text is the
    one use that needs it, and asks for it by name."""
    bare = InternVL3Encoder.from_pretrained(trained[0], dtype=torch.float32)
    assert not hasattr(bare.model, "lm_head") and not any("lm_head" in name for name, _ in bare.model.named_parameters())
    image = render(*[(identity, item.scene) for identity, item in world.train_renders()[:1]][0])
    with pytest.raises(ValueError, match="with_lm_head=True"):
        describe(bare, [image], max_new_tokens=2)
