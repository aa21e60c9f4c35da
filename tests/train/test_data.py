"""Manifest, aspect buckets, deterministic sharded batches, bad images skipped and counted, the UNO-1M converter."""

import json

import pytest
from PIL import Image

from squeeze_core.errors import SqueezeInputError
from squeeze_core.train.data import (
    BucketBatches,
    PairDataset,
    SkipCounter,
    assign_buckets,
    collate,
    make_buckets,
    nearest_bucket,
    read_manifest,
)
from squeeze_core.train.uno import convert_uno


def write_manifest(folder, lines):
    path = folder / "manifest.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_manifest_paths_are_relative_to_it(demo_manifest):
    samples = read_manifest(demo_manifest)
    assert len(samples) == 8
    assert all(s.target.is_file() and all(r.is_file() for r in s.references) for s in samples)
    assert samples[0].prompt.startswith("a photo of the red toy")


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2 is not valid JSON"),
    ({"references": ["a.png"], "prompt": "x"}, r"line 2 lacks \['target'\]"),
    ({"references": [], "target": "t.png", "prompt": "x"}, "non-empty list"),
    ({"references": ["a.png"] * 5, "target": "t.png", "prompt": "x"}, "5 references; max_references is 4"),
])
def test_malformed_manifest_lines_are_errors_naming_the_line(tmp_path, line, message):
    good = {"references": ["a.png"], "target": "t.png", "prompt": "x"}
    with pytest.raises(SqueezeInputError, match=message):
        read_manifest(write_manifest(tmp_path, [good, line]))


def test_buckets_cover_the_aspect_range_at_constant_area():
    buckets = make_buckets(512, 64, 2.0)
    assert (512, 512) in buckets
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert max(width / height, height / width) <= 2.0 + 1e-9
        assert abs(width * height / 512**2 - 1) < 0.15
    assert buckets[nearest_bucket((2000, 1000), buckets)] == max(buckets, key=lambda b: b[0] / b[1])
    assert buckets[nearest_bucket((800, 800), buckets)] == (512, 512)


def test_batches_are_deterministic_single_bucket_and_disjoint_across_processes():
    bucket_of = [i % 3 for i in range(60)]
    ranks = [BucketBatches(bucket_of, 4, seed=7, rank=r, world_size=2) for r in range(2)]
    first = ranks[0].epoch(0)
    assert first == BucketBatches(bucket_of, 4, seed=7, rank=0, world_size=2).epoch(0)  # same seed, same order
    assert first != ranks[0].epoch(1)  # reshuffled per epoch
    assert len(first) == len(ranks[1].epoch(0)) > 0
    seen = [i for r in ranks for batch in r.epoch(0) for i in batch]
    assert len(seen) == len(set(seen))
    assert all(len({bucket_of[i] for i in batch}) == 1 and len(batch) == 4 for batch in first)
    with pytest.raises(SqueezeInputError, match="no complete batch"):
        BucketBatches([0, 1, 2], 2)


def test_missing_corrupt_and_tiny_images_are_skipped_and_counted(tmp_path, demo_manifest):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.new("RGB", (20, 20)).save(tmp_path / "tiny.png")
    good = json.loads(demo_manifest.read_text().splitlines()[0])
    root = demo_manifest.parent
    lines = [
        {"references": [str(root / good["references"][0])], "target": str(root / good["target"]), "prompt": "ok"},
        {"references": [str(root / good["references"][0])], "target": "missing.png", "prompt": "missing target"},
        {"references": ["corrupt.png"], "target": str(root / good["target"]), "prompt": "corrupt reference"},
        {"references": [str(root / good["references"][0])], "target": "tiny.png", "prompt": "tiny target"},
        {"references": ["gone.png"], "target": str(root / good["target"]), "prompt": "missing reference"},
    ]
    samples = read_manifest(write_manifest(tmp_path, lines))
    buckets = make_buckets(64, 16)
    skips = SkipCounter()
    kept, bucket_of = assign_buckets(samples, buckets, skips)  # target sizes: the missing and the tiny one go
    assert [s.prompt for s in kept] == ["ok", "corrupt reference", "missing reference"]
    assert skips.counts == {"is missing": 1, "is too small (20x20 px, need 32)": 1}
    batch = collate([PairDataset(kept, bucket_of, buckets)[i] for i in range(3)])
    assert batch["prompt"] == ["ok"] and batch["target"].shape[0] == 1
    assert batch["target"].shape[1:3] == buckets[bucket_of[0]][::-1]
    reasons = dict((path.split("/")[-1], reason) for path, reason in batch["skipped"])
    assert reasons["gone.png"] == "is missing" and reasons["corrupt.png"].startswith("is unreadable")


def test_a_run_over_bad_images_finishes_and_reports_them(tmp_path, tiny_config, demo_manifest):
    from squeeze_core.train.trainer import train

    lines = demo_manifest.read_text().splitlines()
    root = demo_manifest.parent
    records = [json.loads(line) for line in lines]
    for record in records:
        record["references"] = [str(root / r) for r in record["references"]]
        record["target"] = str(root / record["target"])
    (tmp_path / "broken.png").write_bytes(b"garbage")
    records[1]["references"] = [str(tmp_path / "broken.png")]
    records[2]["target"] = str(tmp_path / "nowhere.png")
    manifest = write_manifest(tmp_path, records)
    result = train(tiny_config(manifest=str(manifest), max_steps=8, checkpoint_every=8, num_workers=2))  # worker processes
    assert result.steps == 8
    assert result.skipped >= 2  # the missing target at start-up, the broken reference each time it is drawn
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == result.skipped


def write_uno(root):
    images = root / "images" / "split1"
    images.mkdir(parents=True)
    for name in ("a1", "a2", "b1", "b2", "c1"):
        Image.new("RGB", (64, 48), (10, 20, 30)).save(images / f"{name}.png")
    records = [
        {"img_path1": "split1/a1.png", "img_path2": "split1/a2.png", "caption": {"img_path1": "cup on desk", "img_path2": "cup in snow"},
         "score_final": 4.0},
        {"img_path1": "split1/b1.png", "img_path2": "split1/b2.png", "caption": {"img_path1": "x", "img_path2": "y"}, "score_final": 3.5},
        {"img_path1": "split1/c1.png", "img_path2": "split1/c2.png", "caption": {"img_path1": "x", "img_path2": "y"}, "score_final": 4.0},
        {"img_path1": "split1/a1.png", "caption": "no second image", "score_final": 4.0},
    ]
    (root / "uno_1m_total_labels.json").write_text(json.dumps(records))


def test_uno_converter(tmp_path):
    write_uno(tmp_path / "UNO-1M")
    out = tmp_path / "data" / "uno.jsonl"
    counts = convert_uno(tmp_path / "UNO-1M", out, both_directions=True)
    assert dict(counts) == {"written": 2, "low_score": 1, "missing_image": 1, "malformed": 1}
    samples = read_manifest(out)
    assert [(s.references[0].name, s.target.name, s.prompt) for s in samples] == [
        ("a1.png", "a2.png", "cup in snow"), ("a2.png", "a1.png", "cup on desk")]
    assert all(s.target.is_file() for s in samples)
    assert dict(convert_uno(tmp_path / "UNO-1M", out, min_score=3.0))["written"] == 2  # a and b, one direction
    with pytest.raises(SqueezeInputError, match="no images/ folder"):
        convert_uno(tmp_path, out)


def test_a_manifest_whose_every_reference_is_gone_stops_with_a_clear_error(tmp_path, tiny_config, demo_manifest):
    from squeeze_core.errors import SqueezeError
    from squeeze_core.train.trainer import train

    root = demo_manifest.parent
    records = [json.loads(line) for line in demo_manifest.read_text().splitlines()]
    for record in records:
        record["references"] = ["vanished.png"]
        record["target"] = str(root / record["target"])
    with pytest.raises(SqueezeError, match="a whole epoch of batches had no usable sample"):
        train(tiny_config(manifest=str(write_manifest(tmp_path, records))))
