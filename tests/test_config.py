"""Configuration: YAML file, ROOTWARD_* environment, --set flags; errors name the key and where it came from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rootward.cli import main
from rootward.config import Config, load_config
from rootward.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rootward.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_the_documented_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.receiver.grpc.port == 4317
    assert cfg.receiver.http.port == 4318
    assert cfg.receiver.auth.tokens == []


def test_file_values_are_applied(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "receiver:\n  grpc: {port: 14317}\n  limits: {max_depth: 4}\n"), environ={})
    assert cfg.receiver.grpc.port == 14317
    assert cfg.receiver.limits.max_depth == 4
    assert cfg.receiver.http.port == 4318


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, "receiver:\n  grpc: {port: 14317}\n")
    cfg = load_config(path, environ={"ROOTWARD_RECEIVER__GRPC__PORT": "24317", "HOME": "/x"})
    assert cfg.receiver.grpc.port == 24317
    cfg = load_config(path, environ={"ROOTWARD_RECEIVER__GRPC__PORT": "24317"}, overrides=["receiver.grpc.port=34317"])
    assert cfg.receiver.grpc.port == 34317


def test_environment_takes_yaml_values_such_as_lists() -> None:
    cfg = load_config(environ={"ROOTWARD_RECEIVER__AUTH__TOKENS": "[a, b]"})
    assert [t.get_secret_value() for t in cfg.receiver.auth.tokens] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("receiver:\n  grcp: {port: 1}\n", "rootward.yaml: receiver.grcp: unknown key", id="unknown-key"),
        pytest.param(
            "receiver:\n  grpc: {port: 70000}\n",
            "rootward.yaml: receiver.grpc.port: Input should be less than or equal to 65535 (got 70000)",
            id="port-out-of-range",
        ),
        pytest.param(
            "detection:\n  learn_after_s: 5000\n",
            "detection.learn_after_s (5000) must be at most half of history x window_s (1200 s)",
            id="learning-later-than-half-the-history",
        ),
        pytest.param(
            "detection:\n  sampling_key: true\n",
            "rootward.yaml: detection.sampling_key: Input should be a valid integer (got True)",
            id="a-bool-is-no-sampling-seed",
        ),
        pytest.param(
            "receiver:\n  limits: {max_attributes: lots}\n",
            "rootward.yaml: receiver.limits.max_attributes: Input should be a valid integer",
            id="not-a-number",
        ),
        pytest.param(
            "receiver:\n  tls: {cert_file: /c.pem}\n",
            "rootward.yaml: receiver.tls: set both cert_file and key_file, or neither",
            id="tls-half-set",
        ),
        pytest.param("logging: {level: LOUD}\n", "rootward.yaml: logging.level: Input should be", id="bad-enum"),
        pytest.param(
            "traces: {endpoint: 'collector:4317', protocol: thrift}\n",
            "rootward.yaml: traces.protocol: Input should be 'http/protobuf' or 'grpc'",
            id="traces-protocol",
        ),
        pytest.param(
            "detection:\n  rules: {p95: {min_abs: -0.1}}\n",
            "rootward.yaml: detection.rules.p95.min_abs: Input should be greater than or equal to 0",
            id="rule-negative",
        ),
        pytest.param(
            "detection:\n  rules: {p95: {direction: sideways}}\n",
            "rootward.yaml: detection.rules.p95.direction: Input should be 'up', 'down' or 'both'",
            id="rule-direction",
        ),
        pytest.param(
            "detection:\n  rules: {p95: {min_abs: 0.1, max_abs: 1}}\n",
            "rootward.yaml: detection.rules.p95.max_abs: unknown key",
            id="rule-unknown-field",
        ),
        pytest.param("- a\n- b\n", "the top level must be a mapping, not list", id="not-a-mapping"),
        pytest.param("receiver: [\n", "not valid YAML", id="not-yaml"),
    ],
)
def test_bad_file_gives_an_error_naming_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert message in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment ROOTWARD_API__LISTEN__PORT: api.listen.port"):
        load_config(environ={"ROOTWARD_API__LISTEN__PORT": "-1"})


def test_a_flag_without_its_equals_sign_does_not_echo_what_follows_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={}, overrides=["policies.approvals.tokens.alice:hunter2"])
    assert "hunter2" not in str(info.value)
    assert "--set policies.approvals.tokens.alice...: expected KEY=VALUE" in str(info.value)


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--set receiver.queue.max_items: receiver.queue.max_items"):
        load_config(environ={}, overrides=["receiver.queue.max_items=0"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(environ={}, overrides=["receiver.queue.max_items"])


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("ROOTWARD_RECEIVER__AUTH__TOKENS", "{secret: hunter2}", "receiver.auth.tokens"),
        ("ROOTWARD_TRACES__HEADERS", "Bearer hunter2", "traces.headers"),
        ("ROOTWARD_NOTIFICATIONS__SLACK__WEBHOOK_URL", "{secret: hunter2}", "notifications.slack.webhook_url"),
        ("ROOTWARD_AGENT__LLM__API_KEY", "[hunter2]", "agent.llm.api_key"),
        ("ROOTWARD_POLICIES__AUDIT__SHIP__HEADERS", "Bearer hunter2", "policies.audit.ship.headers"),
        ("ROOTWARD_NOTIFICATIONS__SLACK", "xoxb-hunter2", "notifications.slack"),  # a string for a section
        ("ROOTWARD_AGENT__LLM", "sk-hunter2", "agent.llm"),
    ],
)
def test_errors_never_echo_a_secret(variable: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={variable: value})
    assert "hunter2" not in str(info.value)
    assert key in str(info.value)


def test_the_topology_section_holds_the_graph_limits_with_the_same_defaults() -> None:
    from rootward.topology import TopologyLimits

    section = load_config(environ={}).topology
    assert TopologyLimits(**section.model_dump(exclude={"history", "export"})) == TopologyLimits()
    assert load_config(environ={}).history_path == Path("rootward-data/topology.db")
    moved = load_config(environ={}, overrides=["storage.data_dir=/var/lib/rootward"])
    assert moved.history_path == Path("/var/lib/rootward/topology.db")


def test_kubernetes_service_link_variables_are_not_configuration() -> None:
    env = {
        "ROOTWARD_OTLP_SERVICE_HOST": "10.96.0.10",
        "ROOTWARD_OTLP_SERVICE_PORT": "4317",
        "ROOTWARD_OTLP_SERVICE_PORT_GRPC": "4317",
        "ROOTWARD_OTLP_PORT": "tcp://10.96.0.10:4317",
        "ROOTWARD_OTLP_PORT_4317_TCP": "tcp://10.96.0.10:4317",
        "ROOTWARD_OTLP_PORT_4317_TCP_ADDR": "10.96.0.10",
        "ROOTWARD_RECEIVER__GRPC__PORT": "14317",
    }
    assert load_config(environ=env).receiver.grpc.port == 14317
    with pytest.raises(ConfigError, match="ROOTWARD_BOGUS"):
        load_config(environ={"ROOTWARD_BOGUS": "1"})


def test_the_command_lines_own_token_variable_is_not_configuration(tmp_path: Path) -> None:
    """`rootward approvals` reads ROOTWARD_TOKEN: exported, it stopped every command that loads the configuration
    ("token: unknown key")."""
    assert load_config(environ={"ROOTWARD_TOKEN": "alice-s3cret"}) == load_config(environ={})
    checked = CliRunner().invoke(main, ["config", "check", str(write(tmp_path, "{}\n"))], env={"ROOTWARD_TOKEN": "x"})
    assert checked.exit_code == 0, checked.output


def test_a_key_given_twice_is_an_error_that_names_it_and_not_its_values(tmp_path: Path) -> None:
    """YAML keeps only one of them: a second `actions:` pasted lower silently replaced the first."""
    text = "actions:\n  mode: dry-run\nreceiver: {}\nactions:\n  mode: autonomous\n"
    with pytest.raises(ConfigError, match=r"key 'actions' given twice \(line 4\)") as caught:
        load_config(write(tmp_path, text), environ={})
    assert "autonomous" not in str(caught.value)
    nested = "receiver:\n  auth:\n    tokens: [a-secret-1]\n    tokens: [a-secret-2]\n"
    with pytest.raises(ConfigError, match="key 'tokens' given twice") as caught:
        load_config(write(tmp_path, nested), environ={})
    assert "secret" not in str(caught.value)
    merged = "api:\n  listen: &l {host: 127.0.0.1, port: 19002}\nreceiver:\n  http:\n    <<: *l\n    port: 19003\n"
    loaded = load_config(write(tmp_path, merged), environ={})  # overriding a merged key is what merge keys are for
    assert (loaded.receiver.http.host, loaded.receiver.http.port) == ("127.0.0.1", 19003)


@pytest.mark.parametrize("token", ["", "short", "\xa0"], ids=["empty", "short", "nbsp"])
def test_a_weak_or_empty_operator_token_is_a_config_error(token: str) -> None:
    with pytest.raises(ConfigError, match=r"policies\.approvals\.tokens\.alice"):
        load_config(environ={"ROOTWARD_POLICIES__APPROVALS__TOKENS__ALICE": token})


def test_detection_rules_reach_the_detector_as_it_reads_them(tmp_path: Path) -> None:
    from rootward.app import App
    from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK
    from rootward.detector.baseline import DOWN

    text = "detection:\n  rules:\n    p95: {min_abs: 0.05}\n    queue.depth: {direction: down}\n"  # a dotted name
    app = App(load_config(write(tmp_path, text), environ={}, overrides=[*LOCAL_PORTS, *NOTHING_ON_DISK]))
    try:
        assert app.detector.settings.rules == {"p95": {"min_abs": 0.05}, "queue.depth": {"direction": DOWN}}
    finally:
        app.shutdown()


def test_following_the_lease_without_the_export_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"follow_lease sends anomalies to the Lease holder: set topology\.export\.enabled"
    ):
        load_config(environ={}, overrides=["topology.export.follow_lease=true"])


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        (
            {
                "ROOTWARD_POLICIES__APPROVALS__TOKENS__ALICE": "hunter2",
                "ROOTWARD_POLICIES__APPROVALS__SLACK_SIGNING_SECRET": "hunter2-signing-secret",
            },
            "environment ROOTWARD_POLICIES__APPROVALS__TOKENS__ALICE",
        ),
        (
            {"ROOTWARD_NOTIFICATIONS__SLACK__BOT_TOKEN": "xoxb-hunter2"},
            "environment ROOTWARD_NOTIFICATIONS__SLACK__BOT_TOKEN",
        ),
    ],
    ids=["weak-token-beside-a-secret", "bot-token-without-channel"],
)
def test_a_sections_own_check_never_echoes_the_section_and_names_where_it_was_set(
    environ: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert "hunter2" not in str(info.value)
    assert names in str(info.value)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        pytest.param(["receiver.http.port=4317"], "receiver.http.port 4317 is receiver.grpc's too", id="same-port"),
        pytest.param(
            ["api.listen.port=4318", "api.listen.host=127.0.0.1"], "api.listen.port 4318 is receiver.http's", id="any"
        ),
        pytest.param(
            ["api.reads=token", "api.readers.bob=shared-token-1", "policies.approvals.tokens.alice=shared-token-1"],
            "api.readers.bob is policies.approvals.tokens.alice",
            id="reader-is-operator",
        ),
        pytest.param(["api.readers.bob=bobs-token-1"], "api.readers are set but api.reads is open", id="readers-open"),
        pytest.param(
            [
                "receiver.grpc.host=127.0.0.1",
                "receiver.grpc.port=9000",
                "receiver.http.host=127.0.0.2",
                "receiver.http.port=9000",
                "api.listen.host=127.0.0.1",
                "api.listen.port=9000",
            ],
            "api.listen.port 9000 is receiver.grpc's too",
            id="first-of-three",
        ),
        pytest.param(
            [
                "receiver.grpc.host=localhost",
                "receiver.grpc.port=9000",
                "api.listen.host=127.0.0.1",
                "api.listen.port=9000",
            ],
            "api.listen.port 9000 is receiver.grpc's too",
            id="localhost",
        ),
        pytest.param(
            ["receiver.grpc.host='::'", "receiver.grpc.port=9000", "api.listen.host=127.0.0.1", "api.listen.port=9000"],
            "api.listen.port 9000 is receiver.grpc's too",
            id="ipv6-any-takes-ipv4",
        ),
    ],
)
def test_settings_that_contradict_each_other_are_errors(sets: list[str], message: str) -> None:
    """Each would fail later or quietly: a port taken twice stops serve, a reader holding an operator's token
    decides as the operator, readers with open reads close nothing."""
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_config(environ={}, overrides=sets)
    assert "token-1" not in str(caught.value)


def test_listeners_on_different_addresses_may_share_a_port() -> None:
    sets = ["receiver.http.host=127.0.0.2", "api.listen.host=127.0.0.1", "api.listen.port=4318"]
    assert load_config(environ={}, overrides=sets).api.listen.port == 4318
    v4_any_and_v6_loopback = ["receiver.grpc.host=0.0.0.0", "api.listen.host=::1", "api.listen.port=4317"]
    assert load_config(environ={}, overrides=v4_any_and_v6_loopback).api.listen.port == 4317
