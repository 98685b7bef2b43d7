"""The README is a front door: short, holding the two commands verbatim, linking every page
of docs/; no relative link in the README or docs/ points at a file or heading that is not
there; every repository path and ``ds_wizard`` module they name exists; and
docs/architecture.md names every package and core module."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300

# The README's two commands, exactly. `.ci/run` runs the second one, so changing either
# here means changing the README and CI together.
TRAIN_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
    ".venv/bin/pip install -e . && .venv/bin/ds-wizard launch --preset tiny_mamba --steps 40"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
    ".venv/bin/pip install -e '.[test]' && .venv/bin/pytest -m 'not slow' -n auto"
)

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    out, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            out.append((number, line))
    return out


def prose_lines(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code, with inline code spans removed (links there are text)."""
    return [(number, CODE_SPAN.sub("", line)) for number, line in outside_fences(text)]


def links(path: Path) -> list[tuple[int, str]]:
    return [(number, m.group(1)) for number, line in prose_lines(path.read_text("utf-8"))
            for m in LINK.finditer(line)]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in outside_fences(path.read_text("utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path, root: Path) -> list[str]:
    """Every relative link in ``path`` whose file (inside ``root``) or heading is missing."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading #{anchor} in {dest.name}")
    return problems


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_readme_is_short() -> None:
    lines = len(README.read_text("utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_holds_the_two_commands_verbatim() -> None:
    lines = README.read_text("utf-8").splitlines()
    assert TRAIN_COMMAND in lines
    assert TEST_COMMAND in lines
    assert lines.index(TRAIN_COMMAND) < lines.index(TEST_COMMAND)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
    assert TEST_COMMAND in [line.strip() for line in ci]


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README)}
    missing = [p.name for p in doc_pages() if p.resolve() not in linked]
    assert doc_pages(), "docs/ has no pages"
    assert not missing, f"README.md does not link docs/{', docs/'.join(missing)}"


@pytest.mark.parametrize("page", [README, *doc_pages()], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    assert not broken_links(page, ROOT)


def test_link_check_catches_a_broken_file_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## How `--auto` chooses, when\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#how---auto-chooses-when) [ok](#top)\n"
        "# Top\n"
        "[gone](docs/b.md)\n"
        "[bad anchor](docs/a.md#nowhere)\n"
        "`[in code](docs/c.md)`\n"
        "```\n[in a fence](docs/d.md)\n```\n"
        "[out](../elsewhere.md)\n"
    )
    problems = broken_links(page, tmp_path)
    assert [p.split(": ")[1] for p in problems] == [
        "docs/b.md does not exist",
        "docs/a.md#nowhere",
        "../elsewhere.md leaves the repository",
    ]


def test_screenshot_script_needs_no_path_hack() -> None:
    """docs/make_screenshots.py runs against the installed package, not the test tree."""
    tree = ast.parse((DOCS / "make_screenshots.py").read_text("utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.startswith("test")}, imported
    touches_path = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                    and node.attr == "path" and getattr(node.value, "id", None) == "sys"]
    assert not touches_path, f"sys.path used on line(s) {touches_path}"


def test_memory_model_quotes_the_measured_activation_table() -> None:
    """tests/test_memory_activations.py keeps the results file equal to the measurement;
    this keeps the table on the page equal to the results file."""
    table = (ROOT / "benchmarks" / "results" / "activation_table.md").read_text("utf-8").strip()
    assert table in (DOCS / "memory-model.md").read_text("utf-8"), (
        "docs/memory-model.md's activation table differs from "
        "benchmarks/results/activation_table.md; paste the file's table into the page")


# A repository path in a code span: it starts at a top-level folder of this repository, or
# at a package of ds_wizard (docs write `core/check/checker.py` for ds_wizard/core/...).
TOP = ("ds_wizard/", "tests/", "benchmarks/", "docs/", "presets/", ".ci/")
PACKAGE_DIRS = ("core/", "commands/", "screens/", "launch/", "train/")
PATH_TOKEN = re.compile(r"(?<![\w./-])((?:\.ci|[A-Za-z_][\w-]*)/[\w./-]*[\w/])")
MODULE_TOKEN = re.compile(r"(?<![\w/.-])ds_wizard(?:\.[A-Za-z_]\w*)+")


def code_spans(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every inline code span and fenced line."""
    out, in_fence = [], False
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif in_fence:
            out.append((number, line))
        else:
            out.extend((number, span.strip("`")) for span in CODE_SPAN.findall(line))
    return out


def named_paths(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, text in code_spans(path):
        for m in PATH_TOKEN.finditer(text):
            token = m.group(1)
            if "<" in token or "*" in token or "{" in token:
                continue
            if re.search(r"(--out|--out-dir|--report|--to|>)[ =]$", text[:m.start()]):
                continue  # a file a command writes, not one the repository holds
            if token.startswith(TOP) or token.startswith(PACKAGE_DIRS):
                found.append((number, token))
    return found


def resolve_named(token: str, root: Path) -> Path:
    if token.startswith(TOP):
        return root / token
    return root / "ds_wizard" / token


def missing_paths(page: Path, root: Path) -> list[str]:
    return [f"{page.name}:{number}: {token}" for number, token in named_paths(page)
            if not resolve_named(token, root).exists()]


def unimportable(page: Path) -> list[str]:
    """Every ``ds_wizard.x.y`` named on the page must be a module, or a module's attribute."""
    problems = []
    for number, text in code_spans(page):
        for name in MODULE_TOKEN.findall(text):
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                module = ".".join(parts[:cut])
                try:
                    found = importlib.util.find_spec(module) is not None
                except ModuleNotFoundError:
                    found = False
                if found:
                    break
            obj = importlib.import_module(module)
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                problems.append(f"{page.name}:{number}: {name}")
    return problems


@pytest.mark.parametrize("page", [README, *doc_pages()], ids=lambda p: p.name)
def test_named_repository_paths_exist(page: Path) -> None:
    assert not missing_paths(page, ROOT)


@pytest.mark.parametrize("page", [README, *doc_pages()], ids=lambda p: p.name)
def test_named_modules_import(page: Path) -> None:
    assert not unimportable(page)


def test_path_and_module_checks_catch_what_moved(tmp_path: Path) -> None:
    (tmp_path / "ds_wizard" / "core" / "batch").mkdir(parents=True)
    (tmp_path / "ds_wizard" / "core" / "batch" / "batchmath.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text("`core/batch/batchmath.py` `core/batch.py` `tests/test_gone.py`\n"
                    "`bench.py --out benchmarks/results/new.md`\n"
                    "`runs/<run>/train.log` `ds_wizard.core.batch.batchmath.resolve`\n"
                    "`ds_wizard.core.batchmath`\n")
    assert missing_paths(page, tmp_path) == ["page.md:1: core/batch.py",
                                             "page.md:1: tests/test_gone.py"]
    assert unimportable(page) == ["page.md:4: ds_wizard.core.batchmath"]


def every_module() -> list[str]:
    import ds_wizard

    return sorted(info.name for info in pkgutil.walk_packages(ds_wizard.__path__, "ds_wizard.")
                  if info.ispkg or info.name.startswith("ds_wizard.core."))


def test_architecture_names_every_package_and_core_module() -> None:
    """Named as a path (`core/check/checker.py`, `launch/`) or as a dotted module name."""
    text = (DOCS / "architecture.md").read_text("utf-8")
    missing = []
    for name in every_module():
        rel = name.removeprefix("ds_wizard.").replace(".", "/")
        is_pkg = importlib.util.find_spec(name).submodule_search_locations is not None
        forms = [name, f"{rel}/" if is_pkg else f"{rel}.py", f"ds_wizard/{rel}"]
        if not any(form in text for form in forms):
            missing.append(name)
    assert not missing, f"docs/architecture.md does not name {missing}"
