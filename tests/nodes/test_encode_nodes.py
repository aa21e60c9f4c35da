import numpy as np
import pytest
import torch
from helpers import random_image

from squeeze_core.conditioning import encode_for_phases
from squeeze_core.mllm import InternVL3Encoder
from squeeze_core.weights import load_dla


def as_image_batch(*images):
    return torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0) for im in images])


@pytest.fixture
def loaded_mllm(comfy, squeeze_models):
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    return SqueezeMLLMLoader.execute("tiny-internvl3", "float32", True).result[0]


def test_loader_lists_checkpoint_dirs_and_explains_missing_ones(comfy, squeeze_models):
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    schema = SqueezeMLLMLoader.define_schema()
    assert {"tiny-internvl3", "tiny-internvl3-4x48"} <= set(schema.inputs[0].options)
    assert "dla_tiny.safetensors" in SqueezeDLAEncode.define_schema().inputs[1].options
    assert SqueezeMLLMLoader.validate_inputs("tiny-internvl3") is True
    message = SqueezeMLLMLoader.validate_inputs("InternVL3-8B-hf")
    assert "MLLM 'InternVL3-8B-hf' not found" in message and "models/mllm/" in message
    message = SqueezeDLAEncode.validate_inputs("squeeze_dla.safetensors")
    assert "DLA weights 'squeeze_dla.safetensors' not found" in message and "models/squeeze/" in message


def test_no_model_name_reaches_outside_the_model_folders(comfy, squeeze_models, tmp_path):
    """A ComfyUI server is often reachable by others: a name with '..', a separator or an absolute path never loads
    a directory, even a valid checkpoint, from outside models/mllm and models/squeeze."""
    import shutil

    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    outside = shutil.copytree(squeeze_models / "mllm" / "tiny-internvl3", tmp_path / "elsewhere" / "InternVL3-8B-hf")
    relative = "../" * 12 + str(outside).lstrip("/")
    for name in (str(outside), relative, "../" + outside.parent.name + "/" + outside.name, "tiny-internvl3/../tiny-internvl3", ".."):
        message = SqueezeMLLMLoader.validate_inputs(name)
        assert isinstance(message, str) and f"MLLM '{name}' not found" in message, name
        with pytest.raises(FileNotFoundError):
            SqueezeMLLMLoader.execute(name, "float32", True)
    outside_dla = tmp_path / "elsewhere" / "outside_dla.safetensors"
    shutil.copyfile(squeeze_models / "squeeze" / "dla_tiny.safetensors", outside_dla)
    for name in (str(outside_dla), "../" * 12 + str(outside_dla).lstrip("/")):
        assert "not found" in SqueezeDLAEncode.validate_inputs(name), name
    # an entry of the folder that is a symlink, placed there by the machine's owner, is followed (as ComfyUI does)
    (squeeze_models / "mllm" / "linked-internvl3").symlink_to(outside, target_is_directory=True)
    assert SqueezeMLLMLoader.validate_inputs("linked-internvl3") is True


def test_bad_model_files_are_node_validation_errors_before_anything_runs(comfy, squeeze_models, tmp_path):
    """The CLI's up-front checks, as ComfyUI validation errors: a pickle named .safetensors, a safetensors file that
    is not a DLA, an MLLM folder without weights. Nothing is loaded to find out."""
    import shutil

    from squeeze_core.lora import flux_lora_config, save_comfyui_lora
    from squeeze_core.testing import tiny_flux_transformer
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    torch.save({"weight": torch.zeros(2)}, squeeze_models / "squeeze" / "pickled_dla.safetensors")
    assert "is a PyTorch pickle" in SqueezeDLAEncode.validate_inputs("pickled_dla.safetensors")
    lora = tiny_flux_transformer()
    lora.add_adapter(flux_lora_config(rank=4))
    save_comfyui_lora(lora, squeeze_models / "squeeze" / "a_lora.safetensors")
    assert "is not a Squeeze DLA file" in SqueezeDLAEncode.validate_inputs("a_lora.safetensors")
    assert SqueezeDLAEncode.validate_inputs("dla_tiny.safetensors") is True
    broken = shutil.copytree(squeeze_models / "mllm" / "tiny-internvl3", squeeze_models / "mllm" / "no-weights")
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    assert "has no .safetensors weights" in SqueezeMLLMLoader.validate_inputs("no-weights")


def test_encode_node_matches_the_headless_path(comfy, squeeze_models, loaded_mllm):
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode

    ref_a, ref_b = random_image(120, 90, seed=1), random_image(64, 100, seed=2)
    positive, prompt_only, chart = SqueezeDLAEncode.execute(
        loaded_mllm, "dla_tiny.safetensors", "a red toy on the beach", "pad", 4,
        image_1=as_image_batch(ref_a), image_2=as_image_batch(ref_b),
    ).result
    # ComfyUI conditioning: [[context, {"pooled_output": y}]]
    (context, extras), = positive
    assert context.shape[0] == 1 and context.shape[2] == 4096 and extras["pooled_output"].shape == (1, 768)

    # the headless path, from the files on disk, with the same images as the node received them
    encoder = InternVL3Encoder.from_pretrained(squeeze_models / "mllm" / "tiny-internvl3", dtype=torch.float32)
    dla = load_dla(squeeze_models / "squeeze" / "dla_tiny.safetensors", mllm=encoder.info)
    refs = [as_image_batch(ref_a)[0], as_image_batch(ref_b)[0]]
    staged = encode_for_phases(encoder, dla, "a red toy on the beach", refs)
    with_refs, only_prompt = staged.first, staged.late
    assert staged.middle is staged.first  # the middle stage adds latents to the same MLLM encoding
    assert torch.equal(context, with_refs.context) and torch.equal(extras["pooled_output"], with_refs.pooled)
    assert torch.equal(prompt_only[0][0], only_prompt.context)
    assert (context.shape[1] - prompt_only[0][0].shape[1]
            == 2 * (encoder.tokens_per_image + 3) + 2 * len("Image-1: "))  # byte-level tiny tokenizer
    assert chart.shape == (1, 420, 960, 3) and 0.0 <= float(chart.min()) and float(chart.max()) <= 1.0


def test_batch_input_gives_one_reference_per_image(comfy, squeeze_models, loaded_mllm):
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode

    one = SqueezeDLAEncode.execute(loaded_mllm, "dla_tiny.safetensors", "toy", "pad", 4, image_1=as_image_batch(random_image())).result[0]
    two = SqueezeDLAEncode.execute(loaded_mllm, "dla_tiny.safetensors", "toy", "pad", 4,
                                   image_1=as_image_batch(random_image(), random_image(seed=3))).result[0]
    assert two[0][0].shape[1] > one[0][0].shape[1]


def test_mllm_is_offloaded_after_encoding(comfy, squeeze_models):
    import comfy.model_management

    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    for offload in (True, False):
        mllm = SqueezeMLLMLoader.execute("tiny-internvl3", "float32", offload).result[0]
        SqueezeDLAEncode.execute(mllm, "dla_tiny.safetensors", "toy", "pad", 4)
        assert (mllm.patcher in comfy.model_management.loaded_models()) is (not offload)
        mllm.offload_after_encode = True
        mllm.offload()
        assert mllm.patcher not in comfy.model_management.loaded_models()


def test_a_resident_mllm_moves_nothing_on_the_second_encode_and_holds_no_lm_head(comfy, squeeze_models):
    """The default: the MLLM stays loaded between encodes (the workflow's prompt and its negative), so only the first
    encode moves weights; with offload_after_encode every encode moves them in and out. The language-model head,
    which encoding never reads, is not part of what is loaded or moved."""
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    moved = {}
    for offload in (False, True):
        mllm = SqueezeMLLMLoader.execute("tiny-internvl3", "float32", offload).result[0]
        assert not any("lm_head" in name for name, _ in mllm.patcher.model.named_parameters())
        SqueezeDLAEncode.execute(mllm, "dla_tiny.safetensors", "a red toy", "pad", 4)
        first = mllm.bytes_moved
        SqueezeDLAEncode.execute(mllm, "dla_tiny.safetensors", "", "pad", 4)  # the negative
        moved[offload] = (first, mllm.bytes_moved - first)
        mllm.offload_after_encode = True
        mllm.offload()
    size = SqueezeMLLMLoader.execute("tiny-internvl3", "float32", False).result[0].patcher.model_size()
    assert moved[False][0] >= 0.9 * size and moved[False][1] == 0
    assert moved[True] == (2 * moved[False][0], 2 * moved[False][0])


def test_prompt_only_encodings_are_kept_per_mllm_and_dla(comfy, squeeze_models, tmp_path):
    """The empty negative is encoded once per MLLM and DLA: encoding it again (the next queue of the workflow) runs
    no MLLM pass and moves no weights, even with offload_after_encode. A prompt whose references change reuses its
    prompt-only side (one MLLM pass instead of two). Another DLA file, or the same file rewritten, is encoded anew."""
    import shutil

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.mllm import MLLMInfo
    from squeeze_core.weights import save_dla
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    mllm = SqueezeMLLMLoader.execute("tiny-internvl3", "float32", True).result[0]
    passes = []
    mllm.encoder.backbone.register_forward_hook(lambda module, args, output: passes.append(1))

    def encode(prompt, dla="dla_tiny.safetensors", **images):
        before, moved = len(passes), mllm.bytes_moved
        conditioning, prompt_only, _ = SqueezeDLAEncode.execute(mllm, dla, prompt, "pad", 4, **images).result
        return conditioning[0][0], prompt_only[0][0], len(passes) - before, mllm.bytes_moved - moved

    negative, negative_late, runs, moved = encode("")
    assert runs == 1 and moved > 0  # no references: one pass serves every phase
    assert torch.equal(negative, negative_late)
    again, _, runs, moved = encode("")
    assert (runs, moved) == (0, 0) and torch.equal(again, negative)

    first, first_late, runs, _ = encode("a red toy", image_1=as_image_batch(random_image(seed=1)))
    assert runs == 2
    second, second_late, runs, _ = encode("a red toy", image_1=as_image_batch(random_image(seed=2)))
    assert runs == 1 and torch.equal(second_late, first_late) and not torch.equal(second, first)

    other = squeeze_models / "squeeze" / "dla_tiny_other.safetensors"
    shutil.copyfile(squeeze_models / "squeeze" / "dla_tiny.safetensors", other)
    assert encode("", dla=other.name)[2] == 1  # another file: its own entries, although the bytes are the same
    torch.manual_seed(11)
    save_dla(DualLayerAggregator(DLAConfig(num_layers=6, hidden_size=64)), other, MLLMInfo("internvl", 6, 64, "tiny-internvl3"))
    rewritten, _, runs, _ = encode("", dla=other.name)
    assert runs == 1 and not torch.allclose(rewritten, negative)
    other.unlink()


def test_dla_for_another_mllm_is_an_error_naming_both(comfy, squeeze_models, loaded_mllm):
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.squeeze_core.errors import SqueezeWeightsError

    with pytest.raises(SqueezeWeightsError, match=r"dla_4x48.safetensors' was made for an MLLM with internvl, 4 layers x 48"
                                                  r".*tiny-internvl3 \(internvl, 6 layers x 64, qwen2"):
        SqueezeDLAEncode.execute(loaded_mllm, "dla_4x48.safetensors", "toy", "pad", 4)


def test_too_many_references_and_bad_images_are_node_errors(comfy, squeeze_models, loaded_mllm):
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.squeeze_core.errors import SqueezeInputError

    batch = as_image_batch(*[random_image(seed=i) for i in range(3)])
    with pytest.raises(SqueezeInputError, match="has 3 reference images; the limit is 2"):
        SqueezeDLAEncode.execute(loaded_mllm, "dla_tiny.safetensors", "toy", "pad", 2, image_1=batch)
    mixed = [torch.rand(1, 64, 64, 3), torch.rand(1, 80, 48, 3)]
    with pytest.raises(SqueezeInputError,
                       match=r"image_1 is a list of 2 images \(sizes \[\(64, 64\), \(80, 48\)\]\).*separate image inputs"):
        SqueezeDLAEncode.execute(loaded_mllm, "dla_tiny.safetensors", "toy", "pad", 4, image_1=mixed)
    with pytest.raises(SqueezeInputError, match="image_2 has 2 channels"):
        SqueezeDLAEncode.execute(loaded_mllm, "dla_tiny.safetensors", "toy", "pad", 4, image_1=batch[:1], image_2=torch.rand(1, 64, 64, 2))


def test_reference_latents_are_attached_uno_style(comfy, flux_vae):
    from squeeze_pack.nodes.reference_latents import SqueezeReferenceLatents

    base = [[torch.randn(1, 5, 4096), {"pooled_output": torch.randn(1, 768)}]]
    wide, tall = as_image_batch(random_image(100, 60, seed=1)), as_image_batch(random_image(40, 90, seed=2), random_image(40, 90, seed=3))
    with torch.no_grad():
        out = SqueezeReferenceLatents.execute(base, flux_vae, 128, wide, image_2=tall).result[0]
    extras = out[0][1]
    assert extras["reference_latents_method"] == "uxo"
    shapes = [tuple(latent.shape) for latent in extras["reference_latents"]]
    # 100x60 -> 128x80 px (multiples of 16) -> 16x10 latents; 40x90 -> 64x128 px -> 8x16 latents (twice, a batch of 2)
    assert shapes == [(1, 16, 10, 16), (1, 16, 16, 8), (1, 16, 16, 8)]
    assert torch.equal(out[0][0], base[0][0]) and "reference_latents" not in base[0][1]  # input left untouched
    with torch.no_grad():
        chained = SqueezeReferenceLatents.execute(out, flux_vae, 128, wide).result[0]
    assert len(chained[0][1]["reference_latents"]) == 4


def test_reference_sizes_snap_to_multiples_of_16():
    from squeeze_core.errors import SqueezeInputError
    from squeeze_core.references import reference_size, resize_reference

    assert reference_size(1000, 600, 512) == (512, 304)
    assert reference_size(600, 1000, 512) == (304, 512)
    assert reference_size(4000, 30, 512) == (512, 16)
    resized = resize_reference(torch.rand(1, 77, 133, 4), 256)
    assert resized.shape == (1, 144, 256, 3) and float(resized.min()) >= 0.0 and float(resized.max()) <= 1.0
    for bad in (500, 32, 8192):
        with pytest.raises(SqueezeInputError, match=f"long_side={bad}"):
            reference_size(100, 100, bad)


def test_a_kept_host_copy_makes_comfyuis_evictions_copy_nothing(comfy, squeeze_models):
    """keep_host_copy, through the calls ComfyUI's memory manager makes (LoadedModel.model_load, model_unload whole
    and partial), with 'meta' standing in for the GPU: a load is a real copy call onto it, and copying anything back
    off it fails (no data), so an eviction that succeeds and leaves the original values copied nothing. A plain
    ModelPatcher, which copies the weights off, fails at the same step."""
    import comfy.model_management
    import comfy.model_patcher

    from squeeze_pack.nodes.mllm import MLLMModule, SqueezeMLLMLoader, mllm_patcher

    meta, cpu = torch.device("meta"), torch.device("cpu")
    path = squeeze_models / "mllm" / "tiny-internvl3"
    model = InternVL3Encoder.from_pretrained(str(path), dtype=torch.float32, device="cpu").model
    values = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    lazy = mllm_patcher(model, meta, cpu, keep_host_copy=True, offload_after_encode=False)
    assert lazy.host_copy.kept_bytes == 0  # resident by default: no host memory spent until the first eviction
    patcher = mllm_patcher(model, meta, cpu, keep_host_copy=True, offload_after_encode=True)
    size = patcher.model_size()
    assert patcher.host_copy.kept_bytes >= size > 0
    kept = [slot.kept.data_ptr() for slot in patcher.host_copy.slots()]
    loaded = comfy.model_management.LoadedModel(patcher)
    loaded.model_load()  # a full load, as SqueezeMLLM.load asks for
    assert {p.device for p in model.parameters()} == {meta} and patcher.loaded_size() == size
    assert loaded.model_unload(memory_to_free=1) is False  # sampling needs room: the whole MLLM goes, listed as unloaded
    assert {p.device for p in model.parameters()} == {cpu} and patcher.loaded_size() == 0
    loaded.model_load()
    assert patcher.loaded_size() == size
    assert loaded.model_unload() is True  # evicted whole (offload_after_encode)
    assert [slot.tensor().data_ptr() for slot in patcher.host_copy.slots()] == kept
    assert all(torch.equal(values[name], tensor) for name, tensor in model.state_dict().items())
    assert patcher.host_copy.bytes_to_host == 0 and patcher.host_copy.bytes_to_device >= 2 * size

    clone = patcher.clone()  # ComfyUI's clone() builds the same class; a clone shares the model and so the copy
    assert type(clone) is type(patcher) and clone.host_copy is patcher.host_copy and clone.model is patcher.model

    plain = comfy.model_patcher.ModelPatcher(MLLMModule(model, cpu), load_device=meta, offload_device=cpu)
    plain_loaded = comfy.model_management.LoadedModel(plain)
    plain_loaded.model_load()
    with pytest.raises(NotImplementedError, match="meta"):
        plain_loaded.model_unload()
    # ComfyUI on the CPU (these tests): nothing to copy, so no host copy is made
    assert SqueezeMLLMLoader.execute("tiny-internvl3", "float32", True).result[0].patcher.host_copy is None
