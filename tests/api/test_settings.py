"""Service settings: embedded defaults, CHECKPOINT_* variables over them, flags over both."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest

from api.runtime.serve import prepare
from api.runtime.settings import RedisAddress, Settings, settings_from_env
from checkpoint.errors import PolicyError
from checkpoint.policy_file import default_policy
from issuer.keystore import FileKeys
from tests.conftest import ROOT

DEFAULT_POLICY_FILE = ROOT / "checkpoint" / "data" / "policy.toml"


def test_defaults() -> None:
    settings = settings_from_env({})
    assert settings == Settings()
    assert settings.data_dir == Path("var")
    assert settings.database_url is None
    assert settings.policy is None
    assert settings.key_passphrase is None
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.redis_url is None
    assert settings.keys_dir == Path("var") / "keys"


def test_environment_overrides_defaults(tmp_path: Path) -> None:
    settings = settings_from_env(
        {
            "CHECKPOINT_DATA_DIR": str(tmp_path),
            "CHECKPOINT_DATABASE_URL": "postgresql+asyncpg://db/permits",
            "CHECKPOINT_POLICY": str(tmp_path / "policy.toml"),
            "CHECKPOINT_KEY_PASSPHRASE": "secret",
            "CHECKPOINT_HOST": "0.0.0.0",
            "CHECKPOINT_PORT": "9000",
            "CHECKPOINT_WORKERS": "4",
            "CHECKPOINT_REDIS_URL": "redis://cache:6379/0",
        }
    )
    assert settings.data_dir == tmp_path
    assert settings.database_url == "postgresql+asyncpg://db/permits"
    assert settings.registry_url == "postgresql+asyncpg://db/permits"
    assert settings.policy == tmp_path / "policy.toml"
    assert settings.key_passphrase == "secret"
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9000, 4)
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.keys_dir == tmp_path / "keys"
    keys = settings.private_keys()
    assert isinstance(keys, FileKeys)
    assert keys.directory == tmp_path / "keys"
    assert keys.passphrase == b"secret"


def test_variables_without_the_prefix_or_unknown_are_ignored() -> None:
    settings = settings_from_env({"PORT": "9000", "CHECKPOINT_COLOUR": "red", "DATA_DIR": "x"})
    assert settings == Settings()


def test_flags_override_environment(tmp_path: Path) -> None:
    env = {"CHECKPOINT_DATA_DIR": str(tmp_path / "env"), "CHECKPOINT_PORT": "9000"}
    settings = settings_from_env(env, data_dir=tmp_path / "flag", port=9100)
    assert settings.data_dir == tmp_path / "flag"
    assert settings.port == 9100


def test_flags_that_are_none_leave_the_environment(tmp_path: Path) -> None:
    env = {"CHECKPOINT_DATA_DIR": str(tmp_path), "CHECKPOINT_POLICY": "p.toml"}
    settings = settings_from_env(env, data_dir=None, policy=None)
    assert settings.data_dir == tmp_path
    assert settings.policy == Path("p.toml")


def test_flags_given_as_text_become_paths(tmp_path: Path) -> None:
    assert settings_from_env({}, data_dir=str(tmp_path)).data_dir == tmp_path


def test_empty_variables_are_ignored() -> None:
    env = dict.fromkeys(("CHECKPOINT_PORT", "CHECKPOINT_DATA_DIR", "CHECKPOINT_POLICY"), "")
    assert settings_from_env(env) == Settings()


def test_process_environment_is_the_default_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHECKPOINT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CHECKPOINT_WORKERS", "3")
    settings = settings_from_env()
    assert settings.data_dir == tmp_path
    assert settings.workers == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHECKPOINT_PORT", "abc"),
        ("CHECKPOINT_PORT", "0"),
        ("CHECKPOINT_PORT", "65536"),
        ("CHECKPOINT_PORT", "80.5"),
        ("CHECKPOINT_WORKERS", "0"),
        ("CHECKPOINT_WORKERS", "65"),
    ],
)
def test_invalid_variables_raise(name: str, value: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        settings_from_env({name: value})


@pytest.mark.parametrize("overrides", [{"port": 0}, {"workers": 100}, {"colour": "red"}])
def test_invalid_flags_raise(overrides: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        settings_from_env({}, **overrides)


def test_port_bounds_are_accepted() -> None:
    assert settings_from_env({"CHECKPOINT_PORT": "1"}).port == 1
    assert settings_from_env({"CHECKPOINT_PORT": "65535"}).port == 65535
    assert settings_from_env({"CHECKPOINT_WORKERS": "64"}).workers == 64


def test_registry_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = settings_from_env({}, data_dir=tmp_path)
    assert settings.registry_url == f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}"
    assert settings_from_env({}).registry_url == "sqlite+aiosqlite:///var/registry.sqlite3"


def test_keystore_without_passphrase() -> None:
    keys = settings_from_env({"CHECKPOINT_KEY_PASSPHRASE": ""}).private_keys()
    assert isinstance(keys, FileKeys)
    assert keys.passphrase is None


def test_load_policy_default() -> None:
    assert settings_from_env({}).load_policy() == default_policy()


def test_load_policy_from_a_file(tmp_path: Path) -> None:
    text = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    assert 'version = "1448.2"' in text
    custom = tmp_path / "policy.toml"
    custom.write_text(text.replace('version = "1448.2"', 'version = "test-7"'), encoding="utf-8")
    policy = settings_from_env({"CHECKPOINT_POLICY": str(custom)}).load_policy()
    assert policy.version == "test-7"
    assert policy.version != default_policy().version
    assert set(policy.gates) == set(default_policy().gates)


def test_load_policy_from_a_missing_file(tmp_path: Path) -> None:
    settings = settings_from_env({}, policy=tmp_path / "missing.toml")
    with pytest.raises(PolicyError) as info:
        settings.load_policy()
    assert info.value.code == "invalid_policy"


def test_redis_sentinels_and_master() -> None:
    settings = settings_from_env(
        {
            "CHECKPOINT_REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
            "CHECKPOINT_REDIS_MASTER": "permits",
        }
    )
    assert settings.redis == RedisAddress(
        sentinels=(("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)), master="permits"
    )
    assert settings_from_env({"CHECKPOINT_REDIS_SENTINELS": "s:1"}).redis_master == "mymaster"


def test_redis_address_from_the_url_or_none() -> None:
    assert settings_from_env({}).redis is None
    url = "redis://cache:6379/0"
    assert settings_from_env({"CHECKPOINT_REDIS_URL": url}).redis == RedisAddress(url=url)


@pytest.mark.parametrize(
    "value", ["s1", "s1:", ":26379", "s1:26379,,s2:1", "s1:port", "s1:0", "s:70000"]
)
def test_a_bad_sentinel_entry_names_the_variable(value: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="CHECKPOINT_REDIS_SENTINELS"):
        settings_from_env({"CHECKPOINT_REDIS_SENTINELS": value})


def test_a_redis_url_and_sentinels_together_are_refused() -> None:
    env = {"CHECKPOINT_REDIS_URL": "redis://x:6379/0", "CHECKPOINT_REDIS_SENTINELS": "s:26379"}
    with pytest.raises(msgspec.ValidationError, match="CHECKPOINT_REDIS_URL and CHECKPOINT_REDIS"):
        settings_from_env(env)


def test_first_run_set_up_keeps_the_data_directory_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    line = prepare(Settings(data_dir=data))
    assert line.startswith("created signing key")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "registry.sqlite3").stat().st_mode) == 0o600
    assert "trust-list key" in line
    pems = list((data / "keys").glob("*.pem"))
    assert len(pems) == 2  # the signing key and the trust-list key
    for pem in pems:
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(pem.parent.stat().st_mode) == 0o700
    again = prepare(Settings(data_dir=data))
    assert again.startswith("using signing key")
    assert "using trust-list key" in again
