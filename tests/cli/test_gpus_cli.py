"""``ds-wizard gpus``: plain words with no GPU, a table or JSON with some."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from fakes import FOUR_A100, NO_GPU, TWO_V100, patch_gpus

from ds_wizard.cli import main


def test_no_gpu_says_so_and_exits_0(monkeypatch):
    patch_gpus(monkeypatch, NO_GPU)
    result = CliRunner().invoke(main, ["gpus"])
    assert result.exit_code == 0
    assert result.output.startswith("No NVIDIA GPU found")
    data = json.loads(CliRunner().invoke(main, ["gpus", "--json"]).output)
    assert data["count"] == 0 and data["reason"]


def test_gpus_listed_with_bf16(monkeypatch):
    patch_gpus(monkeypatch, FOUR_A100)
    result = CliRunner().invoke(main, ["gpus"])
    assert result.exit_code == 0
    assert "4 GPU(s) visible" in result.output and "bf16 yes" in result.output
    patch_gpus(monkeypatch, TWO_V100)
    data = json.loads(CliRunner().invoke(main, ["gpus", "--json"]).output)
    assert [g["bf16"] for g in data["gpus"]] == [False, False]
    assert data["gpus"][0]["compute_capability"] == "7.0"


def test_real_detection_never_fails():
    # whatever this machine has, the command answers and exits 0
    result = CliRunner().invoke(main, ["gpus"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert re.match(r"No NVIDIA GPU found: .+\.$|[1-9]\d* GPU\(s\) visible", first), first
