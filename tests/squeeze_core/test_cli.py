import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from squeeze_core.cli import main


def test_encode_on_the_embedded_default_writes_plot_and_tensors(tmp_path, capsys):
    plot, saved = tmp_path / "layers.png", tmp_path / "cond.safetensors"
    assert main(["encode", "--plot", str(plot), "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "(internvl, 6 layers x 96, qwen2, vocabulary 480)" in out  # the embedded mini InternVL3
    assert "'image': 16" in out  # one held-out reference, 16 tokens at the mini tile size
    with Image.open(plot) as image:
        assert image.size == (960, 420) and image.mode == "RGB"
        assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 3  # drawn, not blank
    tensors = load_file(saved)
    assert tensors["context"].shape[1] == 64 and tensors["pooled"].shape == (64,)  # what the mini FLUX reads
    torch.testing.assert_close(tensors["layer_weights"].sum(-1), torch.ones(tensors["context"].shape[0]))


def test_encode_with_a_real_checkpoint_dir_and_references(tmp_path, tiny_mllm_dir, capsys):
    ref = tmp_path / "ref.png"
    Image.new("LA", (120, 90), (128, 255)).save(ref)  # grayscale + alpha: converted on the way
    args = ["encode", "--mllm", str(tiny_mllm_dir), "--prompt", "", "--reference", str(ref), "--reference", str(ref)]
    assert main(args) == 0
    assert "'text': 0, 'image': 32" in capsys.readouterr().out
    assert main(args + ["--prompt-only"]) == 0
    assert "'image': 0" in capsys.readouterr().out


def test_bad_paths_exit_2_with_a_message(tmp_path, tiny_mllm_dir, capsys):
    assert main(["encode", "--mllm", str(tmp_path / "missing")]) == 2
    assert "does not exist. Put an InternVL3 checkpoint" in capsys.readouterr().err
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    assert main(["encode", "--mllm", str(tiny_mllm_dir), "--reference", str(not_image)]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["encode", "--mllm", str(tiny_mllm_dir), "--dla", str(tmp_path / "dla.safetensors")]) == 2
    assert "models/squeeze/" in capsys.readouterr().err



def test_help_imports_no_torch():
    """`squeeze --help` and every `squeeze VERB --help` answer without importing torch (a few hundred ms, not seconds)."""
    import subprocess
    import sys

    from squeeze_core.cli import build_parser

    verbs = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"generate", "encode", "train", "eval", "score", "mini"} <= set(verbs)
    probe = ("import sys\nfrom squeeze_core.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "loaded = sorted(m for m in ('torch', 'transformers', 'diffusers', 'numpy') if m in sys.modules)\n"
             "print('LOADED', loaded)\n")
    for argv in ([], *([verb] for verb in verbs)):
        result = subprocess.run([sys.executable, "-c", probe, *argv, "--help"], capture_output=True, text=True, timeout=120)
        assert "usage: squeeze" in result.stdout and "LOADED []" in result.stdout, (argv, result.stdout[-500:], result.stderr[-500:])


def test_the_image_side_limit_is_raised_by_its_variable_and_a_bad_value_is_named(monkeypatch, capsys, tmp_path):
    from squeeze_core.cli import main
    from squeeze_core.limits import max_image_side

    monkeypatch.setenv("SQUEEZE_MAX_IMAGE_SIDE", "8192")
    assert max_image_side() == 8192
    monkeypatch.setenv("SQUEEZE_MAX_IMAGE_SIDE", "lots")
    assert main(["generate", "--width", "64", "--output", str(tmp_path / "a.png")]) == 2
    assert "$SQUEEZE_MAX_IMAGE_SIDE='lots'" in capsys.readouterr().err and not any(tmp_path.iterdir())
