"""The house's one-way imports, read from the source (AST): the product (nodes/, squeeze_core/ but its lab and its
fixtures) never imports the miniature's research code (squeeze_core/mini) or the test fixtures (squeeze_core/testing);
the embedded default is reached through squeeze_core/embedded, which imports nothing of either. The `squeeze`
dispatcher names the verb modules as strings (squeeze_core/cli/__init__.py: VERB_MODULES), the one place that loads
the miniature's verbs."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB = ("squeeze_core.mini", "squeeze_core.testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module a file imports, relative imports resolved; `..squeeze_core.x` from nodes/ is
    the pack's package-relative spelling of `squeeze_core.x`."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if len(base) < len(package) - node.level + 1 or node.level > len(package):  # above the repository root
                    base = []
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def product_files() -> list[Path]:
    files = sorted((ROOT / "squeeze_core").rglob("*.py")) + sorted((ROOT / "nodes").rglob("*.py")) + [ROOT / "__init__.py"]
    return [p for p in files if not module_name(p).startswith(LAB)]


def lab_imports(path: Path) -> list[str]:
    return sorted(m for m in imported_modules(path) if m.startswith(LAB) and (m in LAB or m.startswith(tuple(x + "." for x in LAB))))


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_product_never_imports_the_lab_or_the_fixtures(path):
    assert lab_imports(path) == [], f"{path.relative_to(ROOT)} imports {lab_imports(path)}"


def test_the_check_sees_a_relative_import_of_the_lab(tmp_path, monkeypatch):
    """The check can fail: a product-style module that imports the miniature relatively is caught."""
    fake = ROOT / "squeeze_core" / "cli" / "__layout_probe__.py"
    fake.write_text("from ..mini.world import render\nfrom .. import testing\n", encoding="utf-8")
    try:
        assert lab_imports(fake) == ["squeeze_core.mini.world", "squeeze_core.mini.world.render", "squeeze_core.testing"]
    finally:
        fake.unlink()
    assert lab_imports(ROOT / "nodes" / "mini.py") == []  # nodes/ spells the core as ..squeeze_core


def test_eval_runs_the_embedded_benchmark_only_through_what_the_miniature_registers(monkeypatch):
    from squeeze_core.cli import build_parser
    from squeeze_core.errors import SqueezeError
    from squeeze_core.eval import cli as eval_cli

    monkeypatch.setattr(eval_cli, "EMBEDDED_BENCHMARK", {})
    with pytest.raises(SqueezeError, match="give --dreambench"):
        eval_cli.run_embedded_benchmark(None, "eval")
    build_parser()  # the dispatcher loads squeeze_core/mini/cli.py, which registers the mini benchmark's runners
    from squeeze_core.mini.verbs import run_mini, run_mini_score

    assert eval_cli.EMBEDDED_BENCHMARK == {"score": run_mini_score, "eval": run_mini, "ablate": run_mini}
