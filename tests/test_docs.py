"""The documentation as a reader meets it: every relative link and picture resolves, the README stays a short front
door with the commands CI runs, and no project file speaks of the project's own history. Fast, no models."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")])
README_MAX_LINES = 200
SET_UP = ["python3 -m venv .venv", '.venv/bin/pip install -e ".[dev]"']
TEST_COMMAND = ".venv/bin/python -m pytest"
LINT_COMMAND = ".venv/bin/ruff check ."

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a page, numbered as GitHub numbers repeated headings (-1, -2, ...)."""
    found: set[str] = set()
    for _, line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = anchor = slug(match.group(1))
            count = 0
            while anchor in found:
                count += 1
                anchor = f"{base}-{count}"
            found.add(anchor)
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    return [(number, target) for number, line in prose_lines(path)
            for target in LINK.findall(INLINE_CODE.sub("", line))]


def test_the_pages_exist():
    assert (ROOT / "README.md").is_file() and (ROOT / "CONTRIBUTING.md").is_file()
    assert len(PAGES) >= 10, PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where} (no heading with that anchor in {destination.name})")
    assert broken == [], "\n".join(broken)


def test_slugs_follow_github():
    assert slug("`squeeze generate`") == "squeeze-generate"
    assert slug("First image: the mini template (runs as shipped)") == "first-image-the-mini-template-runs-as-shipped"
    assert slug("How it works (and the choices the paper leaves open)") == "how-it-works-and-the-choices-the-paper-leaves-open"
    assert slug("Weighting the subject in the base models' losses") == "weighting-the-subject-in-the-base-models-losses"
    assert slug("stage_2 -- long") == "stage_2----long"


def test_the_readme_is_short_and_keeps_the_set_up_and_test_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, len(text.splitlines())
    code = [line.strip() for line in text.splitlines()]
    for command in [*SET_UP, TEST_COMMAND]:
        assert command in code, f"README lost the command line {command!r}"
    assert SET_UP[0] in code and code.index(SET_UP[1]) == code.index(SET_UP[0]) + 1  # one block, in order
    assert f"`{LINT_COMMAND}`" in text
    # CI runs exactly what the README says, in that order
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    steps = [*SET_UP, LINT_COMMAND, TEST_COMMAND]
    assert [line for line in ci if line in steps] == steps, ci


# Words about the project's own history ("the third s-ession", "the earlier m-achine"): a page states what is true now,
# and an experiment by what was varied. The pattern is built from pieces so this file does not match itself.
_ORDINALS = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|this|that|earlier|previous|next|later|last|another"
HISTORY = re.compile(rf"\b(?:{_ORDINALS})\s+{'sess' + 'ions?'}\b|\b{'earl' + 'ier'}(?:\s+\S+)?\s+{'mach' + 'ines?'}\b"
                     rf"|\b(?:until|before)\s+this\s+{'chan' + 'ge'}\b|\bshipped\s+{'bef' + 'ore'}\b|\bour\s+{'co' + 'py'}\b",
                     re.IGNORECASE)
TEXT_SUFFIXES = {".md", ".py", ".json", ".yaml", ".yml", ".txt", ".toml"}


def tracked_text_files() -> list[Path]:
    """The project's text files: git's list in a checkout, else every file outside what .gitignore and git leave out."""
    if shutil.which("git") is not None and (ROOT / ".git").exists():
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
        return [ROOT / name.decode() for name in names if name and Path(name.decode()).suffix in TEXT_SUFFIXES]
    ignored = {".git", ".venv", ".cache", "runs", "__pycache__", ".pytest_cache", "build", "dist"}
    return [path for path in ROOT.rglob("*") if path.is_file() and path.suffix in TEXT_SUFFIXES
            and not ignored & set(path.relative_to(ROOT).parts) and not any(p.endswith(".egg-info") for p in path.parts)]


def test_the_history_pattern_finds_what_it_should():
    assert HISTORY.search("measured in the Fourth  " + "sess" + "ion")
    assert HISTORY.search("on the " + "earl" + "ier" + " sessions' " + "mach" + "ine")
    assert HISTORY.search("the " + "earl" + "ier" + " " + "mach" + "ine")
    assert HISTORY.search("as it was until this " + "chan" + "ge") and HISTORY.search("the models shipped " + "bef" + "ore")
    assert HISTORY.search("the values were lost from our " + "co" + "py")
    assert not HISTORY.search('@pytest.fixture(scope="' + "sess" + 'ion")')
    assert not HISTORY.search("aiohttp.Client" + "Sess" + "ion()")


def test_no_project_file_speaks_of_its_own_history():
    offending = []
    files = tracked_text_files()
    assert any(f.name == "findings.md" for f in files)
    for path in files:
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if HISTORY.search(line):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:160]}")
    assert offending == [], "history words (state what was varied and the result instead):\n" + "\n".join(offending)
