"""Metric oracles on tiny random DINO and CLIP checkpoints, and the errors on bad input."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_core.errors import SqueezeInputError, SqueezeModelError
from squeeze_core.eval.dreambench import DreamBench, collect_generated, generated_path
from squeeze_core.eval.metrics import ClipEmbedder, DinoEmbedder, clip_t, copy_paste, open_rgb, score_folder


def test_dreambench_protocol(dreambench_dir):
    bench = DreamBench.load(dreambench_dir)
    assert len(bench.subjects) == 30 and sum(len(s.images) for s in bench.subjects.values()) == 158
    dog, backpack = bench.subjects["dog"], bench.subjects["backpack"]
    assert dog.live and not backpack.live and len(dog.prompts) == len(backpack.prompts) == 25
    assert dog.prompts[0] == "a dog in the jungle" and "sks" not in " ".join(dog.prompts)
    assert "a dog wearing a red hat" in dog.prompts and "a backpack wearing a red hat" not in backpack.prompts
    assert backpack.prompts[-1] == "a cube shaped backpack" and dog.reference.name == "00.jpg"
    with pytest.raises(SqueezeInputError, match=r"unknown DreamBench subjects \['dragon'\]"):
        DreamBench.load(dreambench_dir, ["dog", "dragon"])


def one_photo_bench(tmp_path, dreambench_dir, subjects=("dog", "backpack")):
    """A DreamBench copy whose subjects have a single photo each."""
    root = tmp_path / "bench"
    root.mkdir()
    shutil.copy(dreambench_dir / "prompts_and_classes.txt", root)
    for name in subjects:
        (root / name).mkdir()
        shutil.copy(dreambench_dir / name / "00.jpg", root / name / "00.jpg")
    return DreamBench.load(root, list(subjects))


def test_identical_images_score_one(tmp_path, dreambench_dir, embedders):
    bench = one_photo_bench(tmp_path, dreambench_dir)
    generated = tmp_path / "generated"
    for name, subject in bench.subjects.items():
        for index in range(25):
            path = generated_path(generated, name, index, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(subject.reference, path.with_suffix(".jpg"))
    scores = score_folder(generated, bench, *embedders, progress=False)
    for row in list(scores["subjects"].values()) + [scores["overall"]]:
        assert row["dino_i"] == pytest.approx(1.0, abs=1e-5) and row["clip_i"] == pytest.approx(1.0, abs=1e-5)
        assert row["copy_paste"] is None  # no second photo to compare against
    assert scores["overall"]["images"] == 50 and scores["overall"]["subjects"] == 2


def test_clip_t_times_100_is_torchmetrics_clip_score(clip_dir, embedders, dreambench_dir):
    from torchmetrics.multimodal.clip_score import CLIPScore

    _, clip = embedders
    prompts = DreamBench.load(dreambench_dir, ["dog"]).subjects["dog"].prompts
    photos = [dreambench_dir / "dog" / f"0{i % 5}.jpg" for i in range(len(prompts))]
    pairs = clip_t(clip.images([open_rgb(p) for p in photos]), clip.texts(prompts))
    assert 0 < int((pairs == 0).sum()) < len(pairs)  # both sides of the max(cos, 0) clamp are exercised
    paths, texts, ours = photos, prompts, pairs.mean()
    from transformers import CLIPModel, CLIPProcessor

    class FeaturesAsTensors(torch.nn.Module):
        """torchmetrics 1.9 expects the transformers 4 return type of get_*_features (a tensor); transformers 5
        returns an output object with the same tensor as pooler_output. Same model, same numbers."""

        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            out = self.model.get_image_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *args, **kwargs):
            out = self.model.get_text_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    # torchmetrics loads its own copy of the same files (it takes a loader for models outside its list of names)
    metric = CLIPScore(model_name_or_path=lambda: (FeaturesAsTensors(CLIPModel.from_pretrained(clip_dir)),
                                                   CLIPProcessor.from_pretrained(clip_dir)))
    images = [torch.from_numpy(np.array(open_rgb(p))).permute(2, 0, 1) for p in paths]  # uint8 (3, H, W)
    # CLIPScore clamps its running mean, so per generated image (the protocol's unit) it is max(100 cos, 0)
    reference = []
    for image, text in zip(images, texts):
        metric.reset()
        reference.append(float(metric([image], [text]).detach()))
    assert [100 * float(p) for p in pairs] == pytest.approx(reference, abs=1e-3)
    assert 100 * float(ours) == pytest.approx(sum(reference) / len(reference), abs=1e-3)


def test_copy_paste_oracles(dreambench_dir, embedders):
    dino, _ = embedders
    photos = dino.images([open_rgb(dreambench_dir / "cat" / name) for name in ("00.jpg", "01.jpg", "02.jpg")])
    reference, other = photos[0], photos[1:2]
    assert float(copy_paste(reference[None], reference, other)[0]) == pytest.approx(1.0, abs=1e-4)  # g = r
    assert float(copy_paste(other, reference, other)[0]) == pytest.approx(-1.0, abs=1e-4)  # g = t
    middle = torch.nn.functional.normalize(reference + other[0], dim=-1)  # halfway along the arc
    assert abs(float(copy_paste(middle[None], reference, other)[0])) < 1e-3
    many = copy_paste(photos[2:], reference, photos[1:])  # averaged over every other photo
    assert many.shape == (1,) and -1.0 <= float(many) <= 1.0


def test_an_incomplete_folder_names_what_is_missing(tmp_path, dreambench_dir):
    bench = DreamBench.load(dreambench_dir, ["dog", "cat", "can"])
    folder = tmp_path / "generated"
    for index in range(25):
        if index not in (3, 17):
            path = generated_path(folder, "dog", index, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64)).save(path)
    path = generated_path(folder, "can", 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64)).save(path)
    with pytest.raises(SqueezeInputError) as error:
        collect_generated(folder, bench)
    message = str(error.value)
    assert "subject 'dog' lacks prompts [3, 17]" in message and "subject 'cat' has no images" in message
    assert "subject 'can' lacks prompts [1, 2," in message
    assert collect_generated(folder, bench.__class__.load(dreambench_dir, ["dog"]), prompt_indices=[0, 1])["dog"].keys() == {0, 1}


def test_an_unreadable_generated_image_is_named(tmp_path, dreambench_dir, embedders):
    bench = DreamBench.load(dreambench_dir, ["can"])
    folder = tmp_path / "generated"
    for index in (0, 1):
        path = generated_path(folder, "can", index, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64)).save(path)
    generated_path(folder, "can", 1, 0).write_bytes(b"not an image")
    with pytest.raises(SqueezeInputError, match="can/01_0.png' could not be read"):
        score_folder(folder, bench, *embedders, prompt_indices=[0, 1], progress=False)


def test_checkpoints_of_the_wrong_model_type_are_refused(dino_dir, clip_dir, tmp_path):
    with pytest.raises(SqueezeModelError, match="holds a 'clip' model, not 'vit'.*dino-vits16"):
        DinoEmbedder.from_pretrained(clip_dir)
    with pytest.raises(SqueezeModelError, match="holds a 'vit' model, not 'clip'.*clip-vit-base-patch32"):
        ClipEmbedder.from_pretrained(dino_dir)
    with pytest.raises(SqueezeModelError, match="has no config.json"):
        ClipEmbedder.from_pretrained(tmp_path)
