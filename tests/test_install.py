"""The install paths users take, each in a fresh venv from a copy of the repository, with the source tree never on
sys.path:

1. `pip install .` (a normal, non-editable install; the wheel it builds holds every subpackage and the package data):
   every module of squeeze_core imports from the venv, every verb's `--help` works through the installed `squeeze`
   console script, and the embedded default (`squeeze encode --plot`) runs.
2. ComfyUI-Manager's way: the repository copied into a ComfyUI's custom_nodes/, `pip install -r requirements.txt`,
   ComfyUI started with the venv's Python: every node of the pack registers, loaded from that copy.

No download: each venv is made `--without-pip` and reads third-party packages (torch, pip, setuptools, ComfyUI's own
requirements) from the dev venv's site-packages through a folder of links that leaves out this project's own files (its
dist-info and editable finder); pip runs with `--no-index`, so a missing dependency is an error, not a download.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from comfy_server import ComfyServer, PromptRejected, execution_error

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DIST = "comfyui-squeeze"
PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input"]
OFFLINE = ["--no-index", "--no-deps", "--no-build-isolation"]  # a dependency not already there is an error


# ---------------------------------------------------------------------------------------------- set-up
def repo_copy(destination: Path) -> Path:
    """What a clone holds: tracked and untracked-but-not-ignored files (no .venv, .cache, egg-info, build output)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def dependency_links(folder: Path) -> Path:
    """The dev venv's site-packages as links, less this project's own entries (dist-info, editable finder and .pth)."""
    folder.mkdir()
    for site in dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")):
        own = {Path(str(f)).parts[0] for d in importlib.metadata.distributions(path=[site])
               if d.metadata["Name"] == DIST for f in d.files or ()}
        for entry in Path(site).iterdir():
            if entry.name not in own | {"__pycache__"} and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def fresh_venv(root: Path) -> Path:
    """A new venv whose one addition is a .pth line naming the dependency links; returns its Python.

    A .pth line adds its folder to sys.path but .pth files inside that folder are not processed, so nothing of the dev
    venv's editable install is active."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip()
    Path(site, "dev-dependencies.pth").write_text(f"{dependency_links(root / 'dependencies')}\n")
    return python


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run(command: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], check=False, cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-3000:] + result.stderr[-3000:]


def module_names(root: Path) -> list[str]:
    """Every module of root/squeeze_core, by its dotted name; a package's __main__ (which runs the command when
    imported) is checked through `python -m` instead."""
    names = []
    for path in sorted((root / "squeeze_core").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def package_files(root: Path) -> set[str]:
    """Every file of root/squeeze_core (modules and package data), relative to root."""
    files = (root / "squeeze_core").rglob("*")
    return {p.relative_to(root).as_posix() for p in files if p.is_file() and "__pycache__" not in p.parts}


IMPORT_ALL = textwrap.dedent("""
    import importlib, json, sys
    import squeeze_core
    failed = {}
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except Exception as error:
            failed[name] = repr(error)
    files = [m.__file__ for n, m in list(sys.modules.items()) if n.partition(".")[0] == "squeeze_core" and m.__file__]
    print(json.dumps({"failed": failed, "files": files, "package": squeeze_core.__path__[0], "sys_path": sys.path}))
""")


# ---------------------------------------------------------------------------------------------- 1. pip install .
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install .` from a copy of the repository into a fresh venv; returns (venv Python, copy, empty work dir)."""
    root = tmp_path_factory.mktemp("pip-install")
    source = repo_copy(root / "comfyui-squeeze")
    python = fresh_venv(root)
    result = run([python, *PIP, "install", *OFFLINE, "."], cwd=source)
    assert result.returncode == 0, output(result)
    work = root / "work"
    work.mkdir()
    return python, source, work


def test_the_wheel_holds_every_file_of_the_package(tmp_path):
    """The wheel `pip install .` builds: every subpackage (train/, eval/, mini/, embedded/) and the embedded weights."""
    source = repo_copy(tmp_path / "src")
    result = run([sys.executable, *PIP, "wheel", *OFFLINE, "-w", tmp_path / "dist", "."], cwd=source)
    assert result.returncode == 0, output(result)
    (wheel,) = (tmp_path / "dist").glob("comfyui_squeeze-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    in_wheel = {n for n in names if n.startswith("squeeze_core/")}
    expected = package_files(source)
    assert {f"squeeze_core/{sub}/__init__.py" for sub in ("train", "eval", "mini")} <= expected
    assert any(n.startswith("squeeze_core/embedded/weights/") and n.endswith(".safetensors") for n in expected)
    assert sorted(expected - in_wheel) == [], "missing from the wheel"
    assert sorted(in_wheel - expected) == [], "in the wheel but not in the repository"
    assert not [n for n in names if n.split("/")[0] in ("nodes", "tests", "workflows", "benchmarks", "tools")]
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)


def test_every_module_imports_from_the_installed_package(installed):
    python, source, work = installed
    venv = python.parent.parent.resolve()
    names = module_names(source)
    result = run([python, "-c", IMPORT_ALL, json.dumps(names)], cwd=work)
    assert result.returncode == 0, output(result)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["failed"] == {}
    assert len(report["files"]) >= len(names)
    assert [f for f in report["files"] if not Path(f).resolve().is_relative_to(venv)] == [], "imported from outside"
    assert [p for p in report["sys_path"] if p and Path(p).resolve().is_relative_to(REPO)] == []
    package = Path(report["package"]).resolve()
    assert package.is_relative_to(venv)
    assert package_files(package.parent) >= package_files(source), "a file of the package was not installed"


def test_every_verb_helps_through_the_installed_console_script(installed):
    python, _, work = installed
    squeeze = python.parent / "squeeze"
    assert squeeze.is_file() and str(python) in squeeze.read_text().splitlines()[0], "no console script for this venv"
    top = run([squeeze, "--help"], cwd=work)
    assert top.returncode == 0, output(top)
    verbs = re.search(r"\{([a-z,-]+)\}", top.stdout).group(1).split(",")
    assert {"encode", "generate", "train", "score", "eval", "ablate", "convert-uno", "mini"} <= set(verbs)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(verbs, pool.map(lambda verb: run([squeeze, verb, "--help"], cwd=work), verbs)))
    failed = {verb: output(r) for verb, r in results.items()
              if r.returncode != 0 or f"usage: squeeze {verb}" not in r.stdout}
    assert failed == {}
    # what `accelerate launch -m squeeze_core.cli` runs: the package's __main__, from the venv
    module = run([python, "-m", "squeeze_core.cli", "train", "--help"], cwd=work)
    assert module.returncode == 0 and "--config" in module.stdout, output(module)


def test_the_embedded_default_runs_from_the_installed_console_script(installed):
    """The README's main job, `squeeze generate`, as a user runs it after `pip install .`: the shipped mini models
    and benchmark references come from the installed package; then `squeeze encode --plot`."""
    python, _, work = installed
    result = run([python.parent / "squeeze", "generate"], cwd=work)
    assert result.returncode == 0, output(result)
    assert "1 reference(s)" in result.stdout and "squeeze_sheet.png" in result.stdout
    assert (work / "squeeze.png").stat().st_size > 0 and (work / "squeeze_sheet.png").stat().st_size > 0
    result = run([python.parent / "squeeze", "encode", "--plot", "layer_weights.png"], cwd=work)
    assert result.returncode == 0, output(result)
    assert "context       (1, 42, 64)" in result.stdout  # the mini InternVL3 + DLA on a held-out reference and prompt
    assert (work / "layer_weights.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- 2. ComfyUI-Manager
NOT_INSTALLED = textwrap.dedent("""
    import importlib.metadata, importlib.util
    assert importlib.util.find_spec("squeeze_core") is None, importlib.util.find_spec("squeeze_core").origin
    names = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert "comfyui-squeeze" not in names, "comfyui-squeeze is installed"
""")


def test_comfyui_manager_install_registers_every_node_and_runs_the_mini_template(comfyui_dir, tmp_path):
    """Copied into custom_nodes/ as a clone is, `pip install -r requirements.txt`, ComfyUI started: every node of the
    pack is served, imported from that copy (squeeze_core is not installed in the venv). With every model folder
    empty, the mini template runs as shipped and saves its image and sheet; a changed embedded weight file is then a
    node error that names it, and the server keeps serving."""
    base = tmp_path / "comfyui"
    pack = repo_copy(base / "custom_nodes" / "comfyui-squeeze")
    python = fresh_venv(tmp_path)
    requirements = run([python, *PIP, "install", "--no-index", "-r", "requirements.txt"], cwd=pack)
    assert requirements.returncode == 0, output(requirements)
    needed = [line for line in (pack / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    unmet = [r for r in needed if f"Requirement already satisfied: {r} in " not in requirements.stdout]
    assert len(needed) >= 10 and unmet == [], output(requirements)
    check = run([python, "-c", NOT_INSTALLED], cwd=tmp_path)
    assert check.returncode == 0, output(check)
    sources = "".join(p.read_text() for p in (pack / "nodes").glob("*.py"))
    node_ids = sorted(set(re.findall(r'node_id="(\w+)"', sources)))
    assert len(node_ids) >= 6

    server = ComfyServer.launch(comfyui_dir, base, python=python, env=clean_env())  # the venv's Python, not this one
    try:
        log = server.log_tail(200_000)
        assert re.search(rf"^\s*\d+\.\d seconds: {re.escape(str(pack))}$", log, re.MULTILINE), log[-4000:]
        missing = [n for n in node_ids if n not in server.object_info]
        assert missing == [], f"not registered: {missing}\n{log[-4000:]}"
        assert {server.object_info[n]["python_module"] for n in node_ids} == {"custom_nodes.comfyui-squeeze"}

        assert [p for p in (base / "models").rglob("*") if p.is_file()] == []  # no model file placed by hand
        template = json.loads((pack / "workflows" / "api" / "Squeeze mini, subject from one reference.json").read_text())
        entry = server.wait(server.queue(template))
        assert entry["status"]["status_str"] == "success", execution_error(entry)
        saved = sorted(p.name for p in (base / "output").glob("*.png"))
        assert saved == ["squeeze_mini_00001_.png", "squeeze_mini_sheet_00001_.png"], saved

        weights = pack / "squeeze_core" / "embedded" / "weights" / "vae" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64])  # truncated, as an interrupted copy leaves a file
        with pytest.raises(PromptRejected, match=r"vae/diffusion_pytorch_model.safetensors no longer match"):
            server.queue(template)
        assert "SqueezeMiniModels" in server.get("/object_info")
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- metadata
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_build_requirement_admits_only_setuptools_that_reads_the_spdx_license():
    """`license = "Apache-2.0"` (PEP 639) needs setuptools 77 (77.0.1 is the first on PyPI); 76.1 rejects it."""
    from packaging.requirements import Requirement

    project = pyproject()
    assert isinstance(project["project"]["license"], str)
    requirements = [Requirement(r) for r in project["build-system"]["requires"]]
    (setuptools,) = [r for r in requirements if r.name == "setuptools"]
    assert not setuptools.specifier.contains("76.1.0") and setuptools.specifier.contains("77.0.1")


def test_comfy_registry_fields():
    """What the Comfy Registry reads (https://docs.comfy.org/registry/specifications)."""
    project = pyproject()
    comfy, meta = project["tool"]["comfy"], project["project"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", meta["name"]) and len(meta["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["description"] and meta["requires-python"]
    repository = meta["urls"]["Repository"]
    assert repository.startswith("https://github.com/")
    assert "Operating System :: OS Independent" in meta["classifiers"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert isinstance(comfy["includes"], list)
    # the icon is a file of this repository, served raw from its main branch: PNG, square, at most 400 px
    raw = repository.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert comfy["Icon"].startswith(raw)
    path = comfy["Icon"][len(raw):]
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path], check=False).returncode == 0
    assert not ignored, f"{path} is ignored by git, so a clone and the registry's archive lack it"
    from PIL import Image

    with Image.open(REPO / path) as icon:
        assert icon.format == "PNG" and icon.width == icon.height <= 400
