"""The shipped presets are inside the wheel and load from an installed copy."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("hatchling", reason="the wheel is built with hatchling (the test extra)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("ds_wizard-*.whl")
    return built


def test_wheel_contains_every_builtin_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (ROOT / "presets").glob("*.toml"))
    assert shipped
    for name in shipped:
        assert f"ds_wizard/_builtin_presets/{name}" in names


def test_wheel_ships_the_deepspeed_schema(wheel):
    # check's fast path reads it; without it every check would fail in an installed copy
    assert "ds_wizard/core/check/data/deepspeed_schema.json" in zipfile.ZipFile(wheel).namelist()


def test_installed_copy_loads_presets_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import ds_wizard, sys\n"
        "from ds_wizard.core.presets.lookup import load_preset\n"
        "from ds_wizard.core.plan.params import count_params\n"
        "p = load_preset('7b_mamba')\n"
        "print(ds_wizard.__file__)\n"
        "print(p.source, p.path)\n"
        "print(count_params(p.spec.model))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "DS_WIZARD_PRESET_PATH": "",
           "DS_WIZARD_CONFIG_DIR": str(tmp_path / "config")}
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    module_file, source_line, count = run.stdout.splitlines()
    assert module_file.startswith(str(target))
    assert source_line.startswith("builtin ") and str(target) in source_line
    assert count == "6945935360"
