import json
import shutil

import pytest
import torch
from helpers import random_image

from squeeze_core.errors import SqueezeInputError, SqueezeModelError
from squeeze_core.mllm import EncoderConfig, InternVL3Encoder, TokenType, check_mllm_dir


def test_hidden_states_of_every_layer_with_masks(encoder, images):
    out = encoder.encode(["a red toy", "a dog in the snow on a sunny day"], [[images[0]], []])
    num_layers, batch, seq, hidden = out.hidden_states.shape
    assert (num_layers, batch, hidden) == (6, 2, 64)
    assert out.attention_mask.shape == out.token_types.shape == out.input_ids.shape == (2, seq)
    assert encoder.info.num_layers == 6 and encoder.info.hidden_size == 64
    # right padding: mask is 1 then 0, and PAD type exactly where the mask is 0
    assert torch.equal(out.token_types == TokenType.PAD, out.attention_mask == 0)
    lengths = out.attention_mask.sum(1)
    assert torch.equal(out.attention_mask, (torch.arange(seq)[None] < lengths[:, None]).long())
    # the layers are distinct (not one layer repeated)
    assert not torch.allclose(out.hidden_states[0], out.hidden_states[-1])


@pytest.mark.parametrize("num_refs", [0, 1, 2, 4])
def test_image_token_count_per_reference(encoder, images, num_refs):
    out = encoder.encode(["a toy"], [images[:num_refs]])
    assert encoder.tokens_per_image == 16  # (112 / 14)^2 / 4
    assert int((out.token_types == TokenType.IMAGE).sum()) == num_refs * encoder.tokens_per_image
    assert int((out.input_ids == encoder.image_context_id).sum()) == num_refs * encoder.tokens_per_image


def test_text_tokens_are_exactly_the_prompt(encoder, images):
    prompt = "a plush bear, riding a bike!"
    out = encoder.encode([f"  {prompt} \n"], [[images[0], images[1]]])
    text_ids = out.input_ids[0][out.token_types[0] == TokenType.TEXT]
    assert encoder.tokenizer.decode(text_ids) == prompt  # stripped, and nothing else counted as text
    template = encoder.tokenizer.decode(out.input_ids[0][out.token_types[0] == TokenType.TEMPLATE])
    assert "Image-1: " in template and "Image-2: " in template and template.endswith("<|im_start|>assistant\n")


def test_prompt_only_mode_has_no_image_tokens(encoder, images):
    with_refs = encoder.encode(["a toy"], [[images[0]]])
    prompt_only = encoder.encode(["a toy"])
    assert int((prompt_only.token_types == TokenType.IMAGE).sum()) == 0
    assert with_refs.hidden_states.shape[2] == prompt_only.hidden_states.shape[2] + encoder.tokens_per_image + 3  # <img> </img> \n


def test_batch_equals_items_one_by_one(encoder, images):
    prompts = ["a red toy on the beach", "", "two dogs playing chess in a very long and detailed prompt"]
    refs = [[images[0]], [images[1], images[2]], []]
    batch = encoder.encode(prompts, refs)
    for i, (prompt, ref) in enumerate(zip(prompts, refs)):
        single = encoder.encode([prompt], [ref])
        length = single.hidden_states.shape[2]
        assert int(batch.attention_mask[i].sum()) == length
        assert torch.equal(batch.input_ids[i, :length], single.input_ids[0])
        assert torch.equal(batch.token_types[i, :length], single.token_types[0])
        torch.testing.assert_close(batch.hidden_states[:, i, :length], single.hidden_states[:, 0], atol=1e-5, rtol=1e-5)


def test_references_change_the_text_tokens_too(encoder, images):
    """Joint encoding: the prompt's hidden states depend on the reference (cross-modal flow inside the MLLM)."""
    a = encoder.encode(["a toy"], [[images[0]]])
    b = encoder.encode(["a toy"], [[images[1]]])
    text_a = a.hidden_states[:, 0][:, a.token_types[0] == TokenType.TEXT]
    text_b = b.hidden_states[:, 0][:, b.token_types[0] == TokenType.TEXT]
    assert not torch.allclose(text_a[-1], text_b[-1])


def test_empty_prompt_is_template_only(encoder, images):
    empty = encoder.encode([""], [[images[0]]])
    blank = encoder.encode(["   "], [[images[0]]])
    assert int((empty.token_types == TokenType.TEXT).sum()) == 0
    assert int((empty.token_types == TokenType.TEMPLATE).sum()) > 0
    assert torch.equal(empty.input_ids, blank.input_ids)


def test_mllm_is_frozen_and_outputs_carry_no_graph(encoder, images):
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert not encoder.encode(["a toy"], [[images[0]]]).hidden_states.requires_grad


def test_system_prompt_is_template(tiny_mllm_dir):
    encoder = InternVL3Encoder.from_pretrained(tiny_mllm_dir, dtype=torch.float32,
                                               config=EncoderConfig(system_prompt="Describe the subject."))
    out = encoder.encode(["a toy"])
    text = encoder.tokenizer.decode(out.input_ids[0][out.token_types[0] == TokenType.TEXT])
    assert text == "a toy"
    assert encoder.tokenizer.decode(out.input_ids[0]).startswith("<|im_start|>system\nDescribe the subject.<|im_end|>")


def test_references_of_any_mode_and_size_encode(encoder):
    refs = [random_image(300, 60, mode="L"), random_image(64, 64, mode="RGBA"), random_image(2000, 1500, mode="P")]
    out = encoder.encode(["x"], [refs[:3]])
    assert int((out.token_types == TokenType.IMAGE).sum()) == 3 * encoder.tokens_per_image


def test_bad_inputs_name_the_input(encoder, images):
    with pytest.raises(SqueezeInputError, match=r"prompt 1 has 5 reference images; the limit is 4"):
        encoder.encode(["a", "b"], [[], images + images[:1]])
    with pytest.raises(SqueezeInputError, match=r"2 prompts but 1 reference lists"):
        encoder.encode(["a", "b"], [[images[0]]])
    with pytest.raises(SqueezeInputError, match=r"prompt 0 contains the MLLM's reserved token '<IMG_CONTEXT>'"):
        encoder.encode(["look <IMG_CONTEXT>"])
    with pytest.raises(SqueezeInputError, match=r"prompt 0 is a int"):
        encoder.encode([3])
    with pytest.raises(SqueezeInputError, match="no prompts"):
        encoder.encode([])
    with pytest.raises(SqueezeInputError, match=r"reference image 0 of prompt 0 is 8x8 px"):
        encoder.encode(["a"], [[random_image(8, 8)]])


def test_missing_and_wrong_checkpoints_are_explained(tmp_path, tiny_mllm_dir):
    with pytest.raises(SqueezeModelError, match=r"does not exist\. Put an InternVL3 checkpoint"):
        InternVL3Encoder.from_pretrained(tmp_path / "nowhere")
    weights = next(tiny_mllm_dir.glob("*.safetensors"))
    with pytest.raises(SqueezeModelError, match="is a file"):
        check_mllm_dir(weights)
    with pytest.raises(SqueezeModelError, match="no config.json"):
        check_mllm_dir(tmp_path)

    def variant(name, **config_changes):
        target = tmp_path / name
        shutil.copytree(tiny_mllm_dir, target)
        config = json.loads((target / "config.json").read_text())
        config.update(config_changes)
        (target / "config.json").write_text(json.dumps(config))
        return target

    with pytest.raises(SqueezeModelError, match=r"holds a 'qwen2' checkpoint, not InternVL3"):
        check_mllm_dir(variant("qwen", model_type="qwen2"))
    with pytest.raises(SqueezeModelError, match=r"original remote-code layout.*-hf"):
        check_mllm_dir(variant("chat", model_type="internvl_chat"))
    no_weights = variant("noweights")
    for file in no_weights.glob("*.safetensors"):
        file.unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(SqueezeModelError, match=r"no \.safetensors weights.*never pickled"):
        check_mllm_dir(no_weights)
    no_processor = variant("noprocessor")
    (no_processor / "preprocessor_config.json").unlink()
    with pytest.raises(SqueezeModelError, match="neither preprocessor_config.json nor processor_config.json"):
        check_mllm_dir(no_processor)
    with pytest.raises(SqueezeModelError, match=r"image_token_id \(7\)"):
        InternVL3Encoder.from_pretrained(variant("badid", image_token_id=7), dtype=torch.float32)


def test_damaged_checkpoints_are_errors_not_random_weights(tmp_path, tiny_mllm_dir):
    from safetensors.torch import load_file, save_file

    def copy(name):
        target = tmp_path / name
        shutil.copytree(tiny_mllm_dir, target)
        return target, next(target.glob("*.safetensors"))

    truncated, weights = copy("truncated")
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(SqueezeModelError, match="could not be loaded as InternVL3"):
        InternVL3Encoder.from_pretrained(truncated)

    incomplete, weights = copy("incomplete")
    tensors = load_file(weights)
    removed = next(k for k in tensors if "layers.3.mlp.down_proj.weight" in k)
    del tensors[removed]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(SqueezeModelError, match=r"lacks 1 weight tensors \(.*layers\.3\.mlp\.down_proj\.weight\)"):
        InternVL3Encoder.from_pretrained(incomplete)

    reshaped, _ = copy("reshaped")
    config = json.loads((reshaped / "config.json").read_text())
    config["text_config"]["hidden_size"] = 96
    (reshaped / "config.json").write_text(json.dumps(config))
    with pytest.raises(SqueezeModelError, match="could not be loaded as InternVL3"):
        InternVL3Encoder.from_pretrained(reshaped)
