"""The shipped presets work from an installed wheel, not only from a checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_builtin_presets_load_from_a_built_wheel(tmp_path: Path) -> None:
    builders = pytest.importorskip("hatchling.builders.wheel")
    wheel = next(iter(builders.WheelBuilder(str(REPO)).build(
        directory=str(tmp_path / "dist"), versions=["standard"])))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    shipped = sorted(p.name for p in (REPO / "presets").glob("*.toml"))
    assert sorted(n.rsplit("/", 1)[1] for n in names
                  if n.startswith("ds_wizard/_builtin_presets/")) == shipped

    # run from an empty directory, so no ./presets and no checkout is on the path
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "DS_WIZARD_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("DS_WIZARD_PRESET_PATH", None)
    out = subprocess.run(
        [sys.executable, "-m", "ds_wizard.cli", "presets", "list", "--json"],
        cwd=empty, env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    rows = json.loads(out)["presets"]
    assert sorted(f"{r['name']}.toml" for r in rows) == shipped
    for row in rows:
        assert row["source"] == "builtin" and row["error"] is None
        assert Path(row["path"]).is_relative_to(site / "ds_wizard" / "_builtin_presets")
