"""Settings: defaults < TOML < environment < flags, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from output_service.config import Config, ConfigError, load_config


def test_defaults_match_the_go_service() -> None:
    config = load_config([], {})
    assert (config.port, config.health_port, config.input_url) == (
        8081,
        8091,
        "http://localhost:8080/hops",
    )
    assert (config.db_dir, config.max_size_mb, config.rotation_days, config.keep_files) == (
        Path("./output_data"),
        100.0,
        7.0,
        5,
    )
    assert config.verbose is False
    assert config.synchronous == "FULL"


def test_both_flag_spellings_and_short_verbose() -> None:
    config = load_config(["--port=8082", "--health-port", "8092", "-v", "--db-dir", "/data"], {})
    assert (config.port, config.health_port, config.verbose, config.db_dir) == (
        8082,
        8092,
        True,
        Path("/data"),
    )


def test_precedence_flag_over_env_over_toml_over_default(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('port = 9001\nkeep_files = 9\nmax_size_mb = 1.5\ninput_url = ""\n')
    env = {"OUTPUT_SERVICE_PORT": "9002", "OUTPUT_SERVICE_CONFIG": str(toml)}
    config = load_config(["--max-size-mb", "2"], env)
    assert (config.port, config.keep_files, config.max_size_mb, config.input_url) == (
        9002,
        9,
        2.0,
        "",
    )
    assert load_config(["--port", "9003", "--config", str(toml)], env).port == 9003


def test_env_booleans() -> None:
    assert load_config([], {"OUTPUT_SERVICE_VERBOSE": "true"}).verbose is True
    assert load_config([], {"OUTPUT_SERVICE_VERBOSE": "0"}).verbose is False


@pytest.mark.parametrize(
    ("argv", "env", "setting"),
    [
        (["--max-size-mb", "-1"], {}, "max_size_mb"),
        (["--keep-files", "0"], {}, "keep_files"),
        (["--port", "70000"], {}, "port"),
        (["--port", "abc"], {}, "port"),
        ([], {"OUTPUT_SERVICE_KEEP_FILES": "many"}, "keep_files"),
        ([], {"OUTPUT_SERVICE_VERBOSE": "maybe"}, "verbose"),
        (["--synchronous", "sometimes"], {}, "synchronous"),
        (["--input-url", "ftp://x"], {}, "input_url"),
        (["--port", "8091"], {}, "health_port"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env)
    assert info.value.setting == setting


def test_toml_unknown_key_wrong_type_and_unreadable_file(tmp_path: Path) -> None:
    unknown = tmp_path / "u.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot: unknown key"):
        load_config(["--config", str(unknown)], {})
    wrong = tmp_path / "w.toml"
    wrong.write_text('keep_files = "5"\n')
    with pytest.raises(ConfigError, match="keep_files"):
        load_config(["--config", str(wrong)], {})
    with pytest.raises(ConfigError, match="config: cannot read"):
        load_config(["--config", str(tmp_path / "missing.toml")], {})
    broken = tmp_path / "b.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(["--config", str(broken)], {})


def test_example_config_documents_every_setting_and_loads() -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    text = example.read_text()
    for name in Config.__dataclass_fields__:
        assert f"\n{name} = " in text or f"\n# {name} = " in text, name
    assert load_config(["--config", str(example)], {}) == load_config([], {})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--hops-exclude-private"], True),
        (["--hops-exclude-private=true"], True),
        (["--hops-exclude-private=false"], False),
        (["--hops-exclude-private", "false"], False),
        (["--no-hops-exclude-private"], False),
        ([], True),  # the TOML file's value stands when no flag is given
    ],
)
def test_boolean_flags_can_turn_a_toml_true_off(
    tmp_path: Path, argv: list[str], expected: bool
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("hops_exclude_private = true\n")
    config = load_config(["--config", str(toml), *argv], {})
    assert config.hops_exclude_private is expected


def test_verbose_flag_spellings() -> None:
    assert load_config(["--verbose=true"], {}).verbose is True
    assert load_config(["-v"], {}).verbose is True
    assert load_config(["--verbose=false"], {"OUTPUT_SERVICE_VERBOSE": "1"}).verbose is False


def test_misspelt_environment_variable_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        load_config([], {"OUTPUT_SERVICE_KEEPFILES": "3"})
    assert info.value.setting == "OUTPUT_SERVICE_KEEPFILES"
    assert "did you mean keep_files?" in str(info.value)
    # variables outside the prefix are none of our business
    assert load_config([], {"OUTPUT_SERVICEX": "1", "HOME": "/"}).keep_files == 5


def test_unknown_toml_key_names_the_closest_setting(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("keep_file = 3\n")
    with pytest.raises(ConfigError, match=r"did you mean keep_files\?"):
        load_config(["--config", str(toml)], {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rotation-days", "0"], "rotation_days: must be greater than 0, got 0"),
        (["--keep-files", "0"], "keep_files: must be at least 1, got 0"),
        (["--max-size-mb", "-1"], "max_size_mb: must be greater than 0, got -1"),
        (["--shutdown-grace-s", "nan"], "shutdown_grace_s: must be a number, got nan"),
        (["--port", "70000"], "port: must be at most 65535, got 70000"),
    ],
)
def test_limit_messages_read_as_sentences(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, {})
    assert str(info.value) == message
