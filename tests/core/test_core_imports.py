"""The core, the CLI and the commands must not import the heavy frameworks at import time
(CONVENTIONS: pure core). One fresh interpreter imports every module and says which one
brought a heavy framework in; modules are discovered with pkgutil so new ones are covered
without editing this file."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import ds_wizard.commands
import ds_wizard.core

FORBIDDEN = ("torch", "deepspeed", "transformers", "textual")


def discover() -> list[str]:
    names = ["ds_wizard.cli"]
    for package in (ds_wizard.core, ds_wizard.commands):
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            names.append(info.name)
    return sorted(names)


PROBE = """
import json, sys
{body}
print("LOADED=" + json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def loaded_after(body: str, cwd=None, forbidden: tuple[str, ...] = FORBIDDEN,
                 env: dict[str, str] | None = None) -> list[str]:
    code = PROBE.format(body=body, forbidden=forbidden)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("LOADED=")]
    assert marker, proc.stdout + proc.stderr
    return json.loads(marker[-1][len("LOADED="):])


def test_discovery_finds_the_modules():
    names = discover()
    assert {"ds_wizard.cli", "ds_wizard.core.batch.batchmath", "ds_wizard.core.check.checker",
            "ds_wizard.commands.check"} <= set(names)


BLAME = """
import importlib, json, sys
blame = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    for heavy in {forbidden!r}:
        if heavy in sys.modules and heavy not in blame:
            blame[heavy] = name
print("BLAME=" + json.dumps(blame))
"""


def test_every_module_import_is_light():
    """One interpreter imports every core and command module in turn; a heavy framework in
    ``sys.modules`` afterwards is blamed on the first module whose import brought it."""
    code = BLAME.format(modules=discover(), forbidden=FORBIDDEN)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("BLAME=")]
    assert marker, proc.stdout + proc.stderr
    assert json.loads(marker[-1][len("BLAME="):]) == {}


def test_the_blame_probe_names_a_heavy_import(tmp_path):
    """The probe above can fail: a module that imports a forbidden package is named."""
    (tmp_path / "heavy_mod.py").write_text("import textual\n")
    code = BLAME.format(modules=["ds_wizard.core", "heavy_mod"], forbidden=FORBIDDEN)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    marker = [line for line in proc.stdout.splitlines() if line.startswith("BLAME=")]
    assert json.loads(marker[-1][len("BLAME="):]) == {"textual": "heavy_mod"}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--auto", "--num-gpus", "4", "--preset", "7b_mamba", "--dry-run"],
     ["check", "--help"], ["generate", "--gpus", "1,2", "--out-dir", "."]],
    ids=["help", "auto-dry-run", "check-help", "generate"],
)
def test_cli_runs_without_heavy_imports(argv, tmp_path):
    body = (
        "from ds_wizard.cli import main\n"
        f"sys.argv = ['ds-wizard', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
    )
    assert loaded_after(body, cwd=tmp_path) == []


CHECK_INPUTS = {
    "plain": '{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4, '
             '"gradient_accumulation_steps": 8, "zero_optimization": {"stage": 2}}',
    "hjson": '{\n  // comment\n  "train_batch_size": 128,\n  "train_micro_batch_size_per_gpu": 4,'
             '\n  "zero_optimization": {"stage": "3", "overlapp_comm": true,},\n}\n',
    "hf": '{"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", '
          '"fp16": {"enabled": "auto"}}',
}


@pytest.mark.parametrize(("name", "extra"), [("plain", []), ("hjson", ["--strict"]),
                                             ("hf", ["--hf", "per_device_train_batch_size=4"]),
                                             ("plain", ["--json", "--sp", "2"])])
def test_check_fast_path_imports_neither_deepspeed_nor_torch(name, extra, tmp_path):
    """check (without --deep) answers from the shipped schema: no DeepSpeed, no torch,
    not even pydantic, whatever the verdict."""
    path = tmp_path / "ds.json"
    path.write_text(CHECK_INPUTS[name])
    argv = ["check", str(path), "--num-gpus", "8", *extra]
    body = (
        "from ds_wizard.cli import main\n"
        f"sys.argv = ['ds-wizard', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, 1), exc.code\n"
    )
    assert loaded_after(body, cwd=tmp_path, forbidden=(*FORBIDDEN, "pydantic")) == []


def test_auto_does_not_import_other_commands(tmp_path):
    """Subcommands are registered lazily: ``--auto`` must not pay for their imports."""
    code = (
        "import sys\n"
        "from ds_wizard.cli import main\n"
        "sys.argv = ['ds-wizard', '--auto', '--num-gpus', '4', '--dry-run']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "print('COMMANDS=' + ','.join(sorted(m for m in sys.modules\n"
        "      if m.startswith('ds_wizard.commands.'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("COMMANDS=")]
    assert lines, proc.stdout + proc.stderr
    loaded = set(lines[-1][len("COMMANDS="):].split(","))
    assert "ds_wizard.commands.auto" in loaded
    # common and numbers are the shared option helpers, not commands
    assert loaded <= {"ds_wizard.commands.auto", "ds_wizard.commands.common",
                      "ds_wizard.commands.numbers"}, loaded


# The one core module allowed to import pydantic: it runs only when data must be checked.
VALIDATOR = "ds_wizard.core.presets.validation"


@pytest.mark.parametrize("module", [m for m in discover()
                                    if m.startswith("ds_wizard.core.") and m != VALIDATOR])
def test_core_module_does_not_import_the_validator(module):
    assert loaded_after(f"import {module}", forbidden=("pydantic", VALIDATOR)) == []


def _nvml_loadable() -> bool:
    from ds_wizard.core.plan.gpus import _nvml_library_loadable

    return _nvml_library_loadable()


def test_a_known_preset_is_not_validated_again(tmp_path):
    """The start-up path: the first --auto run validates the preset (pydantic), every later
    run of the same file rebuilds it from the validation cache without importing pydantic,
    nor pynvml where the NVIDIA driver is absent."""
    body = (
        "from ds_wizard.cli import main\n"
        "sys.argv = ['ds-wizard', '--auto', '--num-gpus', '4', '--preset', '7b_mamba',"
        " '--dry-run']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None)\n"
    )
    watched = ("pydantic", VALIDATOR, "pynvml")
    env = {"DS_WIZARD_CACHE_DIR": str(tmp_path / "cache")}
    first = loaded_after(body, cwd=tmp_path, forbidden=watched, env=env)
    second = loaded_after(body, cwd=tmp_path, forbidden=watched, env=env)
    assert {"pydantic", VALIDATOR} <= set(first)
    expected = [] if not _nvml_loadable() else ["pynvml"]
    assert second == expected
    assert list((tmp_path / "cache" / "validated").glob("*.json"))
