"""Hostile and broken preset files: each gives a clear one-line error and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.base.errors import PresetError
from ds_wizard.core.presets.lookup import MAX_PRESET_BYTES, load_preset
from ds_wizard.core.presets.schema import PresetSpec
from ds_wizard.core.presets.store import import_preset, save_user_preset

GOOD = (
    "schema_version = 2\n"
    'description = "ok"\n'
    "[model]\nd_model = 64\nn_layer = 2\nvocab_size = 256\n"
    "[train]\nseq_len = 128\nlr = 3e-4\n"
    "[batch]\nglobal_batch = 8\nmicro_batch = 2\n"
)


@pytest.fixture
def home(home: Path) -> Path:
    """The shared isolated home, already holding one preset of the user's own."""
    (home / "config" / "presets").mkdir(parents=True)
    (home / "config" / "presets" / "mine.toml").write_text(GOOD.replace('"ok"', '"mine"'))
    return home


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def import_fails(home: Path, file: Path, *args: str) -> str:
    """Run `presets import`; check exit 1, one clean error line, nothing written."""
    before = snapshot(home)
    result = CliRunner().invoke(main, ["presets", "import", str(file), *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert snapshot(home) == before
    return lines[0]


def validate_fails(file: Path) -> str:
    result = CliRunner().invoke(main, ["presets", "validate", str(file)])
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"FAIL  {file}")
    return result.stdout


def write(home: Path, name: str, text: str | bytes) -> Path:
    path = home / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# ------------------------------------------------------------ broken content


def test_invalid_toml_names_file_line_and_column(home: Path) -> None:
    f = write(home, "broken.toml", GOOD.replace("[train]", "[train"))
    err = import_fails(home, f)
    assert str(f) in err and "invalid TOML at line 7, column 7" in err
    assert "line 7, column 7" in validate_fails(f)


def test_wrong_type_names_field_value_and_allowed(home: Path) -> None:
    f = write(home, "wrongtype.toml", GOOD.replace("n_layer = 2", 'n_layer = "48"'))
    err = import_fails(home, f)
    assert "model.n_layer = '48': should be a valid integer" in err
    validate_fails(f)


def test_wrong_type_bool(home: Path) -> None:
    f = write(home, "wrongbool.toml",
              GOOD.replace("[train]", '[train]\nactivation_checkpointing = "yes"'))
    err = import_fails(home, f)
    assert "train.activation_checkpointing = 'yes': should be a valid boolean" in err


def test_wrong_choice_lists_what_is_allowed(home: Path) -> None:
    f = write(home, "choice.toml", GOOD.replace("[train]", '[train]\nprecision = "bf17"'))
    err = import_fails(home, f)
    assert "train.precision = 'bf17'" in err and "'bf16'" in err and "'fp32'" in err


def test_unknown_key_suggests_the_right_one(home: Path) -> None:
    f = write(home, "unknown.toml", GOOD.replace("n_layer", "n_layers"))
    err = import_fails(home, f)
    assert "unknown key model.n_layers (did you mean model.n_layer?) (+1 more)" in err


def test_unknown_table(home: Path) -> None:
    f = write(home, "table.toml", GOOD + "[trainer]\nlr = 1e-3\n")
    assert "unknown key trainer (did you mean train?)" in import_fails(home, f)


def test_missing_required_field(home: Path) -> None:
    f = write(home, "missing.toml", GOOD.replace("d_model = 64\n", ""))
    assert "missing required field model.d_model" in import_fails(home, f)


def test_missing_required_table(home: Path) -> None:
    f = write(home, "nobatch.toml", GOOD.split("[batch]")[0])
    assert "missing required field batch" in import_fails(home, f)


def test_empty_file(home: Path) -> None:
    f = write(home, "empty.toml", "")
    assert "missing required field model" in import_fails(home, f)


def test_huge_file_is_refused_before_parsing(home: Path) -> None:
    f = write(home, "huge.toml", GOOD + "# " + "x" * MAX_PRESET_BYTES + "\n")
    assert "larger than the 64 KiB limit" in import_fails(home, f)
    validate_fails(f)


def test_deep_nesting_is_refused(home: Path) -> None:
    depth = 20_000
    f = write(home, "deep.toml", GOOD + "[extra]\nx = " + "[" * depth + "]" * depth + "\n")
    assert "nested too deeply" in import_fails(home, f)


def test_non_utf8_bytes(home: Path) -> None:
    f = write(home, "latin1.toml", GOOD.replace('"ok"', '"caf\xe9"').encode("latin-1"))
    assert "not UTF-8" in import_fails(home, f)


def test_a_directory_is_not_a_preset(home: Path) -> None:
    d = home / "adir.toml"
    d.mkdir()
    assert "is a directory" in import_fails(home, d)


def test_a_missing_file(home: Path) -> None:
    assert "does not exist" in import_fails(home, home / "nope.toml")


def test_newer_schema_version_is_refused(home: Path) -> None:
    f = write(home, "future.toml", GOOD.replace("schema_version = 2", "schema_version = 99"))
    err = import_fails(home, f)
    assert "schema_version 99 is newer than this ds-wizard understands" in err
    assert "upgrade ds-wizard" in err
    validate_fails(f)


# ------------------------------------------------------------ nonsense values


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("n_layer = 2", "n_layer = 0", "model.n_layer = 0: should be greater than 0"),
        ("lr = 3e-4", "lr = -3e-4", "train.lr = -0.0003: should be greater than 0"),
        ("seq_len = 128", "seq_len = 0", "train.seq_len = 0: should be greater than 0"),
        ("lr = 3e-4", "lr = nan", "train.lr = nan: should be a finite number"),
        ("micro_batch = 2", "micro_batch = -4", "batch.micro_batch = -4"),
        ("d_model = 64", "d_model = 99999999999", "model.d_model = 99999999999"),
        ("lr = 3e-4", "lr = 3e-4\nmin_lr = 1e-2", "min_lr 0.01 is above lr 0.0003"),
    ],
    ids=["zero-layers", "negative-lr", "zero-seq-len", "nan-lr", "negative-micro",
         "huge-d-model", "min-lr-above-lr"],
)
def test_nonsense_values(home: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    f = write(home, "nonsense.toml", GOOD.replace(old, new))
    assert message in import_fails(home, f)
    validate_fails(f)


def test_a_pinned_plan_deepspeed_could_not_reproduce(home: Path) -> None:
    f = write(home, "pinned.toml", GOOD + "[batch.by_world_size.4]\nglobal_batch = 10\n"
                                          "micro_batch = 2\n")
    assert "by_world_size.4: global_batch 10 is not a multiple" in import_fails(home, f)


def test_mamba2_head_dim_must_divide(home: Path) -> None:
    f = write(home, "m2.toml", GOOD.replace("d_model = 64", 'arch = "mamba2"\nd_model = 40'))
    assert "must be a multiple of headdim" in import_fails(home, f)


def test_code_in_a_preset_is_only_data(home: Path) -> None:
    canary = home / "pwned"
    payload = f"__import__('os').system('touch {canary}')"
    f = write(home, "data.toml", GOOD.replace('"ok"', f'"{payload}"'))
    result = CliRunner().invoke(main, ["presets", "import", str(f), "--name", "data_only"])
    assert result.exit_code == 0, result.output
    assert load_preset("data_only").spec.description == payload
    assert not canary.exists()


# ------------------------------------------------------------ names and overwrites


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil", "path separator"),
        ("a/b", "path separator"),
        ("/etc/passwd", "path separator"),
        ("..", "'..'"),
        ("x..y", "'..'"),
        (".hidden", "starts with a dot"),
        ("", "empty"),
        ("evil.toml", "ends with .toml"),
        ("n" * 65, "longer than 64"),
        ("with space", "only letters"),
        ("-flag", "only letters"),
        ("nul\x00byte", "only letters"),
    ],
    ids=["dotdot-slash", "slash", "absolute", "dotdot", "inner-dotdot", "leading-dot", "empty",
         "toml-suffix", "too-long", "space", "leading-dash", "nul"],
)
def test_bad_names_are_refused(home: Path, name: str, why: str) -> None:
    f = write(home, "fine.toml", GOOD)
    err = import_fails(home, f, "--name", name)
    assert "invalid preset name" in err and why in err
    assert not (home / "evil.toml").exists() and not (home / "config" / "evil.toml").exists()


def test_a_hidden_file_is_not_imported_under_its_own_name(home: Path) -> None:
    f = write(home, ".sneaky.toml", GOOD)
    assert "starts with a dot" in import_fails(home, f)


def test_an_existing_user_preset_is_not_overwritten_without_force(home: Path) -> None:
    f = write(home, "other.toml", GOOD.replace('"ok"', '"other"'))
    err = import_fails(home, f, "--name", "mine")
    assert "already exists" in err and "--force" in err
    result = CliRunner().invoke(main, ["presets", "import", str(f), "--name", "mine", "--force"])
    assert result.exit_code == 0, result.output
    assert load_preset("mine").spec.description == "other"


def test_force_replaces_a_symlink_not_its_target(home: Path) -> None:
    outside = home / "outside.toml"
    outside.write_text("precious\n")
    link = home / "config" / "presets" / "linked.toml"
    link.symlink_to(outside)
    f = write(home, "new.toml", GOOD)
    import_preset(f, "linked", force=True)
    assert outside.read_text() == "precious\n"
    assert not link.is_symlink() and link.read_text() == GOOD


def test_save_user_preset_api_refuses_bad_names_and_overwrites(home: Path) -> None:
    spec = load_preset("tiny_mamba").spec
    before = snapshot(home)
    for bad in ("../x", "a/b", ".x"):
        with pytest.raises(PresetError, match="invalid preset name"):
            save_user_preset(bad, spec)
    with pytest.raises(PresetError, match="already exists"):
        save_user_preset("mine", spec)
    assert snapshot(home) == before
    path = save_user_preset("saved", spec)
    assert path == home / "config" / "presets" / "saved.toml"
    assert load_preset("saved").spec == spec
    assert isinstance(load_preset("saved").spec, PresetSpec)


def test_a_nul_byte_in_a_reference_is_refused(home: Path) -> None:
    for ref in ("a/\x00b.toml", "tiny\x00mamba"):
        with pytest.raises(PresetError, match="NUL byte"):
            load_preset(ref)
