"""Preset lookup order, shadowing, shipped presets and schema migration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.base.errors import PresetError
from ds_wizard.core.plan.params import count_params
from ds_wizard.core.presets.lookup import (
    ENV_CONFIG_DIR,
    ENV_PRESET_PATH,
    builtin_dir,
    list_presets,
    load_preset,
    read_preset_file,
    search_dirs,
    user_dir,
)
from ds_wizard.core.presets.migrations import MIGRATIONS, migrate
from ds_wizard.core.presets.schema import SCHEMA_VERSION

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = sorted(p.stem for p in builtin_dir().glob("*.toml"))


def preset_text(n_layer: int, version: int | None = SCHEMA_VERSION, extra: str = "") -> str:
    head = f"schema_version = {version}\n" if version is not None else ""
    return (
        f'{head}description = "n_layer {n_layer}"\n{extra}'
        f"[model]\nd_model = 64\nn_layer = {n_layer}\nvocab_size = 256\n"
        "[batch]\nglobal_batch = 8\nmicro_batch = 2\n"
    )


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Temporary stand-ins for the local, two team and the user directories."""
    work = tmp_path / "work"
    d = {
        "local": work / "presets",
        "team1": tmp_path / "team1",
        "team2": tmp_path / "team2",
        "user": tmp_path / "config" / "presets",
    }
    for p in d.values():
        p.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv(ENV_PRESET_PATH, f"{d['team1']}:{d['team2']}")
    monkeypatch.setenv(ENV_CONFIG_DIR, str(tmp_path / "config"))
    return d


def test_search_dirs_order(dirs: dict[str, Path]) -> None:
    got = [(d.source, d.path) for d in search_dirs()]
    assert got == [
        ("local", Path.cwd() / "presets"),
        ("team", dirs["team1"]),
        ("team", dirs["team2"]),
        ("user", dirs["user"]),
        ("builtin", builtin_dir()),
    ]
    assert user_dir() == dirs["user"]


def test_first_match_wins_in_lookup_order(dirs: dict[str, Path]) -> None:
    order = ["local", "team1", "team2", "user"]
    for i, key in enumerate(order):
        (dirs[key] / "shared.toml").write_text(preset_text(10 + i))
    for i, key in enumerate(order):
        preset = load_preset("shared")
        assert preset.spec.model.n_layer == 10 + i
        assert preset.path == dirs[key] / "shared.toml"
        assert preset.source == ("team" if key.startswith("team") else key)
        (dirs[key] / "shared.toml").unlink()
    with pytest.raises(PresetError, match="unknown preset 'shared'"):
        load_preset("shared")


def test_a_user_preset_shadows_a_builtin_one(dirs: dict[str, Path]) -> None:
    (dirs["user"] / "tiny_mamba.toml").write_text(preset_text(3))
    assert load_preset("tiny_mamba").source == "user"
    entry = next(e for e in list_presets() if e.name == "tiny_mamba")
    assert (entry.source, entry.shadows) == ("user", ("builtin",))
    assert entry.shadowed_paths == (builtin_dir() / "tiny_mamba.toml",)


def test_listing_flags_every_shadowed_source(dirs: dict[str, Path]) -> None:
    for key in ("local", "team2", "user"):
        (dirs[key] / "7b_mamba.toml").write_text(preset_text(2))
    (dirs["team1"] / "only_team.toml").write_text(preset_text(2))
    (dirs["team1"] / ".hidden.toml").write_text(preset_text(2))
    entries = {e.name: e for e in list_presets()}
    assert entries["7b_mamba"].source == "local"
    assert entries["7b_mamba"].shadows == ("team", "user", "builtin")
    assert entries["only_team"].source == "team"
    assert entries["only_team"].shadows == ()
    assert ".hidden" not in entries
    assert set(SHIPPED) <= set(entries)

    result = CliRunner().invoke(main, ["presets", "list"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("7b_mamba "))
    assert "local" in line and "[shadows team, user, builtin]" in line


def test_explicit_path_beats_names(dirs: dict[str, Path], tmp_path: Path) -> None:
    (dirs["local"] / "tiny_mamba.toml").write_text(preset_text(5))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tiny_mamba.toml").write_text(preset_text(7))
    preset = load_preset(str(elsewhere / "tiny_mamba.toml"))
    assert (preset.source, preset.spec.model.n_layer) == ("path", 7)
    assert load_preset("presets/tiny_mamba.toml").spec.model.n_layer == 5


def test_relative_team_path_is_taken_from_the_cwd(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rel = Path.cwd() / "team-presets"
    rel.mkdir()
    (rel / "rel_one.toml").write_text(preset_text(4))
    monkeypatch.setenv(ENV_PRESET_PATH, "team-presets")
    assert load_preset("rel_one").source == "team"


def test_an_invalid_first_match_does_not_fall_through(dirs: dict[str, Path]) -> None:
    # silently training the built-in instead of the team's broken file would be worse
    (dirs["team1"] / "tiny_mamba.toml").write_text("[model]\nd_model = 0\n")
    with pytest.raises(PresetError) as err:
        load_preset("tiny_mamba")
    assert f"{dirs['team1']}/tiny_mamba.toml: model.d_model = 0" in err.value.message


def test_a_misspelt_name_gets_a_suggestion(dirs: dict[str, Path]) -> None:
    with pytest.raises(PresetError) as err:
        load_preset("tiny_mambo")
    assert err.value.hint == "did you mean 'tiny_mamba'?"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_loads_and_is_current(name: str) -> None:
    preset = read_preset_file(builtin_dir() / f"{name}.toml")
    assert preset.notices == ()
    raw = tomllib.loads((builtin_dir() / f"{name}.toml").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert count_params(preset.spec.model) > 1_000_000


def test_the_shipped_set_is_complete() -> None:
    assert {
        "tiny_mamba", "mamba_130m", "mamba_370m", "mamba_790m", "mamba_1.4b", "mamba_2.8b",
        "7b_mamba", "mamba2_130m", "mamba2_1.3b", "mamba2_2.7b",
    } <= set(SHIPPED)


# ------------------------------------------------------------------- migration


def test_every_older_version_has_a_migration_step() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_a_v1_file_is_migrated_on_load_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text(preset_text(3, version=1))
    preset = read_preset_file(path)
    assert preset.spec.schema_version == SCHEMA_VERSION
    assert preset.spec.model.n_layer == 3
    assert len(preset.notices) == 1
    assert "migrated from schema_version 1" in preset.notices[0]
    assert str(path) in preset.notices[0]


def test_an_unversioned_file_is_read_as_v1_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "legacy.toml"
    path.write_text(preset_text(3, version=None))
    preset = read_preset_file(path)
    assert preset.spec.schema_version == SCHEMA_VERSION
    assert "no schema_version" in preset.notices[0]


def test_migration_keeps_every_v1_field() -> None:
    v1 = tomllib.loads(preset_text(3, version=1))
    data, notices = migrate(v1, "x")
    assert data == {**v1, "schema_version": SCHEMA_VERSION}
    assert notices and v1["schema_version"] == 1  # the input is not mutated


def test_the_cli_prints_the_migration_notice_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text(preset_text(3, version=1))
    result = CliRunner().invoke(main, ["presets", "show", str(path)])
    assert result.exit_code == 0, result.output
    assert "note:" in result.stderr and "migrated from schema_version 1" in result.stderr
    assert "migrated" not in result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99", "schema_version 99 is newer than this ds-wizard understands"),
        ('"2"', "schema_version = '2': must be an integer"),
        ("0", "versions start at 1"),
        ("true", "must be an integer"),
    ],
)
def test_bad_schema_versions_are_refused(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "v.toml"
    path.write_text(preset_text(3, version=None).replace("description", f"schema_version = "
                                                         f"{value}\ndescription", 1))
    with pytest.raises(PresetError, match=message):
        read_preset_file(path)
