"""The import-linter contracts in pyproject.toml hold, and a forbidden import breaks them.

The contracts are the static half of the layering rule (docs/architecture.md); the runtime
half is tests/test_core_imports.py. Running lint-imports on a copy of the package with one
forbidden import added proves the contracts are live, not decoration.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c",
        "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # cwd first on sys.path: the copy under test, never the installed package
    return subprocess.run([*LINT, "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "ds_wizard", tmp_path / "ds_wizard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_contracts_hold_on_the_real_tree(tree: Path) -> None:
    proc = lint(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "statement", "contract"), [
    ("train/loop.py", "from ds_wizard.launch import plan", "train (the code inside each rank)"),
    ("core/batch/batchmath.py", "import torch", "core is pure"),
    ("core/config/auto.py", "from ds_wizard.screens import base", "core is pure"),
    ("screens/review.py", "from ds_wizard.commands import check", "screens and commands"),
    ("launch/plan.py", "import textual", "the launch package"),
    ("screens/runs.py", "from ds_wizard.app import WizardApp", "screens never import the app"),
])
def test_a_forbidden_import_breaks_its_contract(tree: Path, module: str, statement: str,
                                                contract: str) -> None:
    path = tree / "ds_wizard" / module
    # inside a function, as lazy imports are written here: the contract must still see it
    path.write_text(path.read_text() + f"\n\ndef _sneaky() -> None:\n    {statement}\n")
    proc = lint(tree)
    assert proc.returncode != 0
    broken = [line for line in proc.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken), proc.stdout


def test_a_type_only_import_of_the_app_breaks_the_screens_contract(tree: Path) -> None:
    """The circle that used to be allowed (a screen casting ``self.app`` to ``WizardApp``
    under ``TYPE_CHECKING``) is refused too: the screens get a context, not the app."""
    path = tree / "ds_wizard" / "screens" / "base.py"
    path.write_text(path.read_text() + "\n\nif TYPE_CHECKING:\n"
                    "    from ds_wizard.app import WizardApp\n")
    proc = lint(tree)
    assert proc.returncode != 0
    assert "screens never import the app BROKEN" in proc.stdout, proc.stdout
