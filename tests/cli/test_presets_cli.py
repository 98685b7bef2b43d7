"""The `ds-wizard presets` commands and `--set` overrides, end to end through click."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.base.errors import PresetError
from ds_wizard.core.batch.choice import choose_batch
from ds_wizard.core.config.dsconfig import build_config, dumps
from ds_wizard.core.presets.lookup import builtin_dir, load_preset, parse_preset
from ds_wizard.core.presets.overrides import apply_overrides
from ds_wizard.core.presets.store import to_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in builtin_dir().glob("*.toml"))


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, list(args))


def ok(*args: str) -> click.testing.Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


# ---------------------------------------------------------------- round trip


def test_export_import_generate_round_trip_is_byte_identical(home: Path) -> None:
    exported = home / "shared.toml"
    ok("presets", "export", "7b_mamba", "-o", str(exported))
    ok("presets", "import", str(exported), "--name", "teammates_7b")
    assert load_preset("teammates_7b").source == "user"

    outputs = {}
    for ref in ("7b_mamba", "teammates_7b"):
        out = home / ref
        out.mkdir()
        ok("generate", "--preset", ref, "--gpus", "1,2,4,8", "--out-dir", str(out))
        outputs[ref] = {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))}
    assert len(outputs["7b_mamba"]) == 4
    assert outputs["7b_mamba"] == outputs["teammates_7b"]
    table = json.loads(outputs["teammates_7b"]["deepspeed_4gpu.json"])
    assert (table["train_batch_size"], table["train_micro_batch_size_per_gpu"],
            table["gradient_accumulation_steps"]) == (128, 4, 8)


@pytest.mark.parametrize("name", SHIPPED)
def test_to_toml_round_trips_every_shipped_preset(name: str) -> None:
    spec = load_preset(str(builtin_dir() / f"{name}.toml")).spec
    again = parse_preset(to_toml(spec), "exported")
    assert again.notices == ()
    assert again.spec == spec
    for n in (1, 2, 4, 8):
        assert dumps(build_config(again.spec, choose_batch(again.spec, n))) == dumps(
            build_config(spec, choose_batch(spec, n))
        )


def test_export_to_stdout_is_valid_current_toml(home: Path) -> None:
    text = ok("presets", "export", "mamba2_130m").stdout
    data = tomllib.loads(text)
    assert data["schema_version"] == 2
    assert data["model"]["arch"] == "mamba2"
    assert text.startswith("# ds-wizard preset 'mamba2_130m'")


def test_export_refuses_to_overwrite_a_file_without_force(home: Path) -> None:
    target = home / "out.toml"
    target.write_text("keep me\n")
    result = run("presets", "export", "tiny_mamba", "-o", str(target))
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert target.read_text() == "keep me\n"
    ok("presets", "export", "tiny_mamba", "-o", str(target), "--force")
    assert load_preset(str(target)).spec == load_preset("tiny_mamba").spec


def test_import_of_a_v1_file_writes_it_migrated(home: Path) -> None:
    v1 = (builtin_dir() / "tiny_mamba.toml").read_text().replace(
        "schema_version = 2", "schema_version = 1"
    )
    src = home / "old.toml"
    src.write_text(v1)
    result = ok("presets", "import", str(src), "--name", "old_tiny")
    assert "migrated from schema_version 1" in result.stderr
    written = (home / "config" / "presets" / "old_tiny.toml").read_text()
    assert tomllib.loads(written)["schema_version"] == 2
    assert load_preset("old_tiny").notices == ()
    assert load_preset("old_tiny").spec == load_preset("tiny_mamba").spec


def test_import_of_a_current_file_keeps_its_comments(home: Path) -> None:
    ok("presets", "import", str(builtin_dir() / "7b_mamba.toml"), "--name", "copy")
    assert (home / "config" / "presets" / "copy.toml").read_bytes() == (
        builtin_dir() / "7b_mamba.toml"
    ).read_bytes()


def test_new_says_when_it_hides_a_builtin(home: Path) -> None:
    result = ok("presets", "new", "tiny_mamba", "--from", "tiny_mamba", "--set",
                "train.lr=1e-3")
    assert "'tiny_mamba' now hides the builtin preset" in result.stderr
    assert load_preset("tiny_mamba").source == "user"


def test_import_warns_when_an_earlier_directory_shadows_the_name(home: Path) -> None:
    local = Path.cwd() / "presets"
    local.mkdir()
    (local / "dup.toml").write_bytes((builtin_dir() / "tiny_mamba.toml").read_bytes())
    result = ok("presets", "import", str(builtin_dir() / "tiny_mamba.toml"), "--name", "dup")
    assert "a local preset named 'dup' comes first" in result.stderr


# ---------------------------------------------------------------- validate


def test_validate_passes_on_the_shipped_presets() -> None:
    files = sorted(str(p) for p in (REPO / "presets").glob("*.toml"))
    assert len(files) >= 10
    result = ok("presets", "validate", "--strict", *files)
    assert f"{len(files)} valid, 0 invalid" in result.stdout
    assert "128 = 4 × 8 × 4" in result.stdout


def test_validate_fails_when_any_file_is_invalid(home: Path) -> None:
    bad = home / "bad.toml"
    bad.write_text("[model]\nd_model = 64\nn_layer = 0\n")
    result = run("presets", "validate", str(builtin_dir() / "tiny_mamba.toml"), str(bad))
    assert result.exit_code == 1
    assert "1 valid, 1 invalid" in result.stdout
    assert "model.n_layer = 0: should be greater than 0" in result.stdout
    assert "missing required field batch" in result.stdout  # every problem is listed


def test_validate_rejects_a_file_name_that_is_not_a_preset_name(home: Path) -> None:
    odd = home / "my preset.toml"
    odd.write_bytes((builtin_dir() / "tiny_mamba.toml").read_bytes())
    result = run("presets", "validate", str(odd))
    assert result.exit_code == 1 and "invalid preset name" in result.stdout


def test_validate_strict_fails_on_files_needing_migration(home: Path) -> None:
    old = home / "old.toml"
    old.write_text((builtin_dir() / "tiny_mamba.toml").read_text().replace(
        "schema_version = 2", "schema_version = 1"))
    assert run("presets", "validate", str(old)).exit_code == 0
    strict = run("presets", "validate", "--strict", str(old))
    assert strict.exit_code == 1 and "migrated from schema_version 1" in strict.stdout


def test_validate_needs_a_file() -> None:
    assert run("presets", "validate").exit_code == 2


# ---------------------------------------------------------------- list / show


def test_bare_presets_lists_with_exact_counts(home: Path) -> None:
    result = ok("presets")
    line = next(x for x in result.stdout.splitlines() if x.startswith("7b_mamba "))
    assert "builtin" in line and "mamba1" in line and "6,945,935,360" in line


def test_list_json(home: Path) -> None:
    data = json.loads(ok("presets", "list", "--json").stdout)
    rows = {r["name"]: r for r in data["presets"]}
    assert set(SHIPPED) <= set(rows)
    assert rows["7b_mamba"]["params"] == 6_945_935_360
    assert rows["mamba2_130m"]["params"] == 128_989_632
    assert rows["tiny_mamba"]["source"] == "builtin"
    assert [d["source"] for d in data["search_path"]] == ["local", "user", "builtin"]


def test_list_shows_a_broken_file_without_hiding_the_rest(home: Path) -> None:
    user = home / "config" / "presets"
    user.mkdir(parents=True)
    (user / "broken.toml").write_text("not = [valid\n")
    result = ok("presets", "list")
    line = next(x for x in result.stdout.splitlines() if x.startswith("broken "))
    assert "INVALID" in line and "invalid TOML at line 1" in line
    assert any(x.startswith("tiny_mamba ") for x in result.stdout.splitlines())


def test_show_prints_toml_params_and_batch_plan(home: Path) -> None:
    out = ok("presets", "show", "7b_mamba").stdout
    assert 'arch = "mamba1"' in out and "n_layer = 64" in out
    assert "parameters: 6,945,935,360 (6.95B)" in out
    for formula in ("32 = 2 × 16 × 1", "64 = 2 × 16 × 2", "128 = 4 × 8 × 4", "128 = 4 × 4 × 8"):
        assert formula in out


def test_show_applies_overrides(home: Path) -> None:
    data = json.loads(ok("presets", "show", "7b_mamba", "--set", "model.n_layer=48",
                         "--set", "train.lr=3e-4", "--json").stdout)
    assert data["preset"]["model"]["n_layer"] == 48
    assert data["preset"]["train"]["lr"] == 3e-4
    assert data["params"] == 5_260_939_264
    assert [b["gpus"] for b in data["batch"]] == [1, 2, 4, 8]


def test_show_rejects_bad_gpu_counts() -> None:
    assert run("presets", "show", "tiny_mamba", "--gpus", "0,x").exit_code == 2


# ---------------------------------------------------------------- new / diff


def test_new_from_base_with_overrides_then_diff(home: Path) -> None:
    ok("presets", "new", "my_7b", "--from", "7b_mamba", "--set", "model.n_layer=48")
    mine = load_preset("my_7b")
    assert (mine.source, mine.spec.based_on, mine.spec.model.n_layer) == ("user", "7b_mamba", 48)
    assert "model.n_layer=48" in mine.spec.description

    assert run("presets", "new", "my_7b", "--from", "7b_mamba").exit_code == 1
    ok("presets", "new", "my_7b", "--from", "7b_mamba", "--force")
    assert load_preset("my_7b").spec.model.n_layer == 64

    ok("presets", "new", "my_7b", "--from", "7b_mamba", "--force",
       "--set", "model.n_layer=48", "--set", "batch.micro_batch=2")
    out = ok("presets", "diff", "7b_mamba", "my_7b").stdout
    assert "model.n_layer" in out and "64  →  48" in out
    assert "batch.micro_batch" in out
    assert "6,945,935,360" in out and "5,260,939,264" in out
    assert "128 = 4 × 8 × 4" in out and "128 = 2 × 16 × 4" in out

    data = json.loads(ok("presets", "diff", "7b_mamba", "my_7b", "--json").stdout)
    fields = {f["path"]: (f["a"], f["b"]) for f in data["fields"]}
    assert fields["model.n_layer"] == (64, 48)
    assert data["b"]["params"] == 5_260_939_264
    assert data["batch"][2] == {"gpus": 4, "a": [4, 8, 128], "b": [2, 16, 128]}


def test_diff_of_identical_presets(home: Path) -> None:
    out = ok("presets", "diff", "tiny_mamba", str(builtin_dir() / "tiny_mamba.toml")).stdout
    assert "no field differs" in out


def test_new_refuses_bad_names(home: Path) -> None:
    result = run("presets", "new", "../escape", "--from", "tiny_mamba")
    assert result.exit_code == 1 and "invalid preset name" in result.stderr
    assert not (home / "config").exists()


# ---------------------------------------------------------------- overrides


def test_overrides_are_type_checked_against_the_schema() -> None:
    spec = load_preset("tiny_mamba").spec
    original_layers = spec.model.n_layer
    new = apply_overrides(spec, ["model.n_layer=48", "train.lr=3e-4", "train.precision=bf16",
                                 "train.betas=[0.9, 0.99]", "deepspeed.zero_stage=3"])
    assert (new.model.n_layer, new.train.lr, new.train.precision) == (48, 3e-4, "bf16")
    assert new.train.betas == [0.9, 0.99] and new.deepspeed.zero_stage == 3
    assert spec.model.n_layer == original_layers != 48  # the original is untouched


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("model.n_layers=48", "unknown key 'model.n_layers' (did you mean model.n_layer?)"),
        ("n_layer=48", "did you mean model.n_layer?"),
        ("model.n_layer=4.5", "model.n_layer = 4.5: should be a valid integer"),
        ("model.n_layer=48x", "model.n_layer = '48x': should be a valid integer"),
        ("model.n_layer=0", "model.n_layer = 0: should be greater than 0"),
        ("train.lr=-1e-3", "train.lr = -0.001: should be greater than 0"),
        ("train.precision=bf17", "should be 'auto', 'bf16'"),
        ("schema_version=1", "unknown key 'schema_version'"),
        ("train.lr", "is not key=value"),
        ("batch.by_world_size.4.micro_batch.x=1", "unknown key"),
    ],
)
def test_bad_overrides(assignment: str, message: str) -> None:
    with pytest.raises(PresetError) as err:
        apply_overrides(load_preset("tiny_mamba").spec, [assignment])
    assert message in err.value.one_line()


def test_override_can_pin_a_plan_for_a_world_size() -> None:
    spec = apply_overrides(load_preset("tiny_mamba").spec,
                           ["batch.by_world_size.2={global_batch = 32, micro_batch = 8}"])
    choice = choose_batch(spec, 2)
    assert (choice.micro_batch, choice.grad_accum, choice.global_batch) == (8, 2, 32)


def test_set_errors_through_the_cli_are_one_line(home: Path) -> None:
    result = run("presets", "show", "tiny_mamba", "--set", "model.n_layr=3")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: --set: unknown key 'model.n_layr' (did you mean model.n_layer?)\n"
    )


def test_validate_json(tmp_path):
    good = Path(__file__).resolve().parents[2] / "presets" / "tiny_mamba.toml"
    bad = tmp_path / "broken.toml"
    bad.write_text("schema_version = 2\n[model]\nn_layer = -1\n")
    result = CliRunner().invoke(main, ["presets", "validate", "--json", str(good), str(bad)])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["valid"], data["invalid"]) == (1, 1)
    assert [f["valid"] for f in data["files"]] == [True, False]
    assert data["files"][1]["problems"] and "×" in data["files"][0]["summary"]
