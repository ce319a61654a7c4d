"""cluster/node/config.py: where each setting comes from (defaults < TOML file < environment < flags) and the
one-line ConfigError for every configuration the node must refuse to start with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.config import RaftConfig
from cluster.node.config import ConfigError, NodeConfig, load_config, parse_initial_cluster
from cluster.node.server import main

CLUSTER = "n1=tcp://127.0.0.1:7101,n2=tcp://127.0.0.1:7102,n3=tcp://127.0.0.1:7103"


def flags(tmp_path: Path, **overrides: str | None) -> list[str]:
    """A valid command line for n1; an override of None leaves that flag out."""
    values: dict[str, str | None] = {
        "--name": "n1",
        "--data-dir": str(tmp_path / "n1"),
        "--peer-url": "tcp://127.0.0.1:7101",
        "--client-url": "tcp://127.0.0.1:7001",
        "--initial-cluster": CLUSTER,
    }
    values.update({"--" + k.replace("_", "-"): v for k, v in overrides.items()})
    out: list[str] = []
    for flag, value in values.items():
        if value is not None:
            out += [flag, value]
    return out


def refuse(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env or {})
    message = str(info.value)
    assert "\n" not in message
    return message


# --- sources and precedence ---------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = load_config(flags(tmp_path), {})
    assert config == NodeConfig(
        name="n1",
        data_dir=str(tmp_path / "n1"),
        peer_url="tcp://127.0.0.1:7101",
        client_url="tcp://127.0.0.1:7001",
        initial_cluster={
            "n1": "tcp://127.0.0.1:7101",
            "n2": "tcp://127.0.0.1:7102",
            "n3": "tcp://127.0.0.1:7103",
        },
    )
    assert (config.cluster_id, config.election_timeout_ms, config.heartbeat_ms) == ("zraft", 1000, 100)
    assert (config.snapshot_entries, config.log_level, config.log_json) == (100_000, "INFO", False)
    assert config.members == ("n1", "n2", "n3")
    assert config.peers == {"n2": "tcp://127.0.0.1:7102", "n3": "tcp://127.0.0.1:7103"}
    assert config.raft_config() == RaftConfig(
        election_timeout=1.0, heartbeat_interval=0.1, snapshot_threshold=100_000
    )
    assert os.path.isdir(tmp_path / "n1")  # created, and found writable


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


def test_file_overrides_defaults_env_overrides_file_flags_override_env(tmp_path: Path) -> None:
    config_file = write_toml(
        tmp_path,
        f"""
        name = "n2"
        data_dir = "{tmp_path / "from-file"}"
        client_url = "tcp://127.0.0.1:7002"
        cluster_id = "file-cluster"
        election_timeout_ms = 2000
        heartbeat_ms = 200
        snapshot_entries = 5
        log_level = "debug"
        log_json = true
        [initial_cluster]
        n1 = "tcp://127.0.0.1:7101"
        n2 = "tcp://127.0.0.1:7102"
        """,
    )
    only_file = load_config(["--config", config_file], {})
    assert only_file.name == "n2"
    assert only_file.peer_url == "tcp://127.0.0.1:7102"  # taken from the initial cluster
    assert only_file.initial_cluster == {"n1": "tcp://127.0.0.1:7101", "n2": "tcp://127.0.0.1:7102"}
    assert (only_file.cluster_id, only_file.election_timeout_ms, only_file.heartbeat_ms) == (
        "file-cluster",
        2000,
        200,
    )
    assert (only_file.snapshot_entries, only_file.log_level, only_file.log_json) == (5, "DEBUG", True)

    env = {
        "ZRAFT_NAME": "n1",
        "ZRAFT_CLUSTER_ID": "env-cluster",
        "ZRAFT_HEARTBEAT_MS": "150",
        "ZRAFT_LOG_LEVEL": "warning",
        "ZRAFT_LOG_JSON": "0",
        "ZRAFT_DATA_DIR": str(tmp_path / "from-env"),
    }
    with_env = load_config(["--config", config_file], env)
    assert with_env.name == "n1" and with_env.peer_url == "tcp://127.0.0.1:7101"
    assert (with_env.cluster_id, with_env.heartbeat_ms, with_env.log_level) == ("env-cluster", 150, "WARNING")
    assert with_env.election_timeout_ms == 2000  # still from the file
    assert with_env.log_json is False
    assert with_env.data_dir == str(tmp_path / "from-env")

    argv = ["--config", config_file, "--cluster-id", "flag-cluster", "--heartbeat-ms", "120", "--log-json"]
    argv += ["--data-dir", str(tmp_path / "from-flag"), "--election-timeout-ms", "900"]
    with_flags = load_config(argv, env)
    assert (with_flags.cluster_id, with_flags.heartbeat_ms, with_flags.election_timeout_ms) == (
        "flag-cluster",
        120,
        900,
    )
    assert with_flags.log_json is True
    assert with_flags.log_level == "WARNING"  # still from the environment
    assert with_flags.data_dir == str(tmp_path / "from-flag")


def test_environment_alone_is_enough(tmp_path: Path) -> None:
    env = {
        "ZRAFT_NAME": "n3",
        "ZRAFT_DATA_DIR": str(tmp_path / "d"),
        "ZRAFT_PEER_URL": "tcp://127.0.0.1:7103",
        "ZRAFT_CLIENT_URL": "tcp://127.0.0.1:7003",
        "ZRAFT_INITIAL_CLUSTER": CLUSTER,
        "ZRAFT_ELECTION_TIMEOUT_MS": "500",
        "ZRAFT_SNAPSHOT_ENTRIES": "0",
    }
    config = load_config([], env)
    assert (config.name, config.client_url, config.election_timeout_ms, config.snapshot_entries) == (
        "n3",
        "tcp://127.0.0.1:7003",
        500,
        0,
    )


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config_file = write_toml(tmp_path, 'cluster_id = "via-env-file"\n')
    assert load_config(flags(tmp_path), {"ZRAFT_CONFIG": config_file}).cluster_id == "via-env-file"


def test_initial_cluster_as_toml_string(tmp_path: Path) -> None:
    config_file = write_toml(tmp_path, f'initial_cluster = "{CLUSTER}"\n')
    config = load_config([*flags(tmp_path, initial_cluster=None), "--config", config_file], {})
    assert config.members == ("n1", "n2", "n3")


def test_relative_data_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(flags(tmp_path, data_dir="rel/n1"), {}).data_dir == str(tmp_path / "rel" / "n1")


# --- clear errors -------------------------------------------------------------------------------------


def test_missing_name(tmp_path: Path) -> None:
    message = refuse(flags(tmp_path, name=None))
    assert "missing the node name" in message and "--name" in message and "ZRAFT_NAME" in message


def test_name_not_in_initial_cluster(tmp_path: Path) -> None:
    message = refuse(flags(tmp_path, name="n4"))
    assert "'n4' is not in the initial cluster" in message and "n1, n2, n3" in message


def test_peer_url_must_match_initial_cluster_entry(tmp_path: Path) -> None:
    message = refuse(flags(tmp_path, peer_url="tcp://127.0.0.1:7999"))
    assert "tcp://127.0.0.1:7999" in message and "does not match tcp://127.0.0.1:7101" in message


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:7001", "http://127.0.0.1:7001", "tcp://127.0.0.1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:70000",
     "tcp://:7001", "tcp://*:7001", "tcp://127.0.0.1:7001/x"],
)  # fmt: skip
def test_bad_client_url(tmp_path: Path, url: str) -> None:
    message = refuse(flags(tmp_path, client_url=url))
    assert "bad URL" in message and "--client-url" in message


def test_bad_url_in_initial_cluster(tmp_path: Path) -> None:
    message = refuse(flags(tmp_path, initial_cluster="n1=tcp://127.0.0.1:7101,n2=localhost:7102"))
    assert "bad URL 'localhost:7102'" in message and "n2" in message


def test_client_url_must_differ_from_peer_urls(tmp_path: Path) -> None:
    assert "is also a peer URL" in refuse(flags(tmp_path, client_url="tcp://127.0.0.1:7102"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("n1=tcp://127.0.0.1:7101,n1=tcp://127.0.0.1:7102", "duplicate node name 'n1'"),
        ("n1=tcp://127.0.0.1:7101,n2=tcp://127.0.0.1:7101", "same URL"),
        ("n1=tcp://127.0.0.1:7101,,n2=tcp://127.0.0.1:7102", "empty entry"),
        ("n1=tcp://127.0.0.1:7101,n2", "is not NAME=URL"),
        ("n1=tcp://127.0.0.1:7101,bad name=tcp://127.0.0.1:7102", "bad node name"),
    ],
)
def test_bad_initial_cluster(tmp_path: Path, spec: str, expected: str) -> None:
    assert expected in refuse(flags(tmp_path, initial_cluster=spec))


def test_missing_initial_cluster_and_client_url_and_data_dir(tmp_path: Path) -> None:
    assert "--initial-cluster" in refuse(flags(tmp_path, initial_cluster=None))
    assert "missing the client URL" in refuse(flags(tmp_path, client_url=None))
    assert "missing the data directory" in refuse(flags(tmp_path, data_dir=None))


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert "exists but is not a directory" in refuse(flags(tmp_path, data_dir=str(blocker)))
    message = refuse(flags(tmp_path, data_dir=str(blocker / "n1")))
    assert "is not writable" in message and str(blocker / "n1") in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_data_dir(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert "is not writable" in refuse(flags(tmp_path, data_dir=str(ro)))


@pytest.mark.parametrize(
    ("election", "heartbeat"),
    [("1000", "500"), ("1000", "600"), ("300", "150")],
)
def test_heartbeat_must_be_below_half_the_election_timeout(
    tmp_path: Path, election: str, heartbeat: str
) -> None:
    message = refuse(flags(tmp_path, election_timeout_ms=election, heartbeat_ms=heartbeat))
    assert "must be below half the election timeout" in message


def test_heartbeat_just_below_half_is_fine(tmp_path: Path) -> None:
    assert (
        load_config(flags(tmp_path, election_timeout_ms="1000", heartbeat_ms="499"), {}).heartbeat_ms == 499
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("heartbeat_ms", "0"), ("election_timeout_ms", "x"), ("snapshot_entries", "-1")]
)
def test_bad_numbers(tmp_path: Path, flag: str, value: str) -> None:
    assert "must be an integer" in refuse(flags(tmp_path, **{flag: value}))


def test_bad_number_from_environment_names_the_variable(tmp_path: Path) -> None:
    assert "ZRAFT_HEARTBEAT_MS" in refuse(flags(tmp_path), {"ZRAFT_HEARTBEAT_MS": "soon"})


def test_bad_log_level(tmp_path: Path) -> None:
    assert "log level 'loud'" in refuse(flags(tmp_path, log_level="loud"))


def test_config_file_problems(tmp_path: Path) -> None:
    assert "cannot read config file" in refuse([*flags(tmp_path), "--config", str(tmp_path / "missing.toml")])
    broken = write_toml(tmp_path, "name = \n")
    assert "not valid TOML" in refuse([*flags(tmp_path), "--config", broken])
    unknown = write_toml(tmp_path, "nmae = 'n1'\n")
    assert "unknown key 'nmae'" in refuse([*flags(tmp_path), "--config", unknown])
    wrong_type = write_toml(tmp_path, "heartbeat_ms = true\n")
    assert "heartbeat ms" in refuse([*flags(tmp_path), "--config", wrong_type])


def test_parse_initial_cluster_keeps_names_and_urls() -> None:
    assert parse_initial_cluster(" a=tcp://h:1 , b=tcp://[::1]:2 ", "test") == {
        "a": "tcp://h:1",
        "b": "tcp://[::1]:2",
    }


def test_main_exits_2_with_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(flags(tmp_path, name="n9")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cluster-node: error: ") and "'n9' is not in the initial cluster" in err
    assert len(err.splitlines()) == 1


def test_bounds_on_uncommitted_work_and_intake_come_from_every_source(tmp_path: Path) -> None:
    default = load_config(flags(tmp_path), {})
    raft = default.raft_config()
    assert (raft.max_uncommitted_entries, raft.max_uncommitted_bytes) == (10_000, 64 << 20)
    assert default.intake_bytes == 8 << 20
    env = {"ZRAFT_MAX_UNCOMMITTED_BYTES": "4096", "ZRAFT_INTAKE_BYTES": "65536"}
    config = load_config(flags(tmp_path, max_uncommitted_entries="32"), env)
    assert (config.max_uncommitted_entries, config.max_uncommitted_bytes) == (32, 4096)
    assert config.intake_bytes == 65536
    assert config.raft_config().max_uncommitted_entries == 32
    assert "max uncommitted entries" in refuse(flags(tmp_path, max_uncommitted_entries="0"))
    assert "intake bytes" in refuse(flags(tmp_path, intake_bytes="-1"))


def test_help_lists_the_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_config(["--help"], {})
    out = capsys.readouterr().out
    assert "--max-uncommitted-entries" in out and "--max-uncommitted-bytes" in out and "--intake-bytes" in out


def test_session_ttl_defaults_to_five_minutes_and_is_bounded(tmp_path: Path) -> None:
    assert load_config(flags(tmp_path), {}).session_ttl_ms == 300_000
    assert load_config(flags(tmp_path, session_ttl_ms="2500"), {}).session_ttl_ms == 2500
    assert "above a day" in refuse(flags(tmp_path, session_ttl_ms=str(25 * 3600 * 1000)))
    assert "must be an integer" in refuse(flags(tmp_path, session_ttl_ms="0"))
