"""The command line: help that teaches, config check/show, version, and `rootward serve` as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

import rootward.policies
from rootward import __version__
from rootward.cli import main


def test_help_names_every_command_and_where_configuration_comes_from() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for word in ("serve", "config", "demo", "version", "ROOTWARD_", "--set", ":4317", ":4318"):
        assert word in result.output


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(main, ["version"])
    assert result.output.strip() == f"rootward {__version__}"


def test_config_check_accepts_a_good_file_and_names_the_bad_key_of_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("receiver:\n  grpc: {port: 14317}\n")
    result = CliRunner().invoke(main, ["config", "check", str(good)], env={})
    assert result.exit_code == 0
    assert "ok" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("receiver:\n  grpc: {prot: 14317}\n")
    result = CliRunner().invoke(main, ["config", "check", str(bad)], env={})
    assert result.exit_code == 1
    assert f"{bad}: receiver.grpc.prot: unknown key" in result.output


def check(tmp_path: Path, text: str, *args: str) -> Result:
    """`rootward config check` of ``text`` written to ``tmp_path/rootward.yaml``."""
    config = tmp_path / "rootward.yaml"
    config.write_text(text)
    return CliRunner().invoke(main, ["config", "check", str(config), *args], env={})


def test_config_check_compiles_the_policy_bundle_and_serve_refuses_one_that_does_not(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "mine.rego").write_text(
        "package rootward.policy\nimport rego.v1\ndeny contains msg if {\n  msg :=\n}\n"
    )
    config = tmp_path / "rootward.yaml"
    config.write_text(f"policies:\n  bundle_dirs: [{policies}]\n")
    result = CliRunner().invoke(main, ["config", "check", str(config)], env={})
    assert result.exit_code == 1
    assert f"{config}: policies: " in result.output
    assert "mine.rego" in result.output
    settings = ["--set", "actions.enabled=true", "--set", "actions.kubernetes.host=http://127.0.0.1:9",
                "--set", f"storage.data_dir={tmp_path / 'data'}"]  # fmt: skip
    result = CliRunner().invoke(main, ["serve", "--config", str(config), *settings], env={})
    assert result.exit_code == 1
    assert "Error: the policy bundle does not compile: " in result.output
    assert "Traceback" not in result.output
    (policies / "mine.rego").unlink()
    result = CliRunner().invoke(main, ["config", "check", str(config)], env={})
    assert result.exit_code == 0, result.output
    assert "policy files compile" in result.output


def test_config_show_prints_every_default_and_masks_tokens() -> None:
    result = CliRunner().invoke(main, ["config", "show", "--set", "receiver.auth.tokens=[hunter2]"])
    assert result.exit_code == 0
    assert "max_decompressed_bytes: 33554432" in result.output
    assert "hunter2" not in result.output
    assert "**********" in result.output


def test_serve_runs_until_sigterm_serving_health_and_metrics(tmp_path: Path) -> None:
    args = ["receiver.grpc.port=0", "receiver.http.port=0", "api.listen.port=0", f"storage.data_dir={tmp_path}"]
    args += ["receiver.grpc.host=127.0.0.1", "receiver.http.host=127.0.0.1", "api.listen.host=127.0.0.1"]
    cmd = [sys.executable, "-m", "rootward.cli", "serve", *[a for s in args for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTWARD_")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = ""
        while "API :" not in line:
            line = proc.stderr.readline()
            assert line, "rootward serve exited before it was ready"
        api = int(re.search(r"API :(\d+)", line).group(1))  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{api}"
        health = httpx.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200
        assert health.json()["alive"] is True
        assert httpx.get(f"{base}/readyz", timeout=5).json()["ready"] is True
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'rootward_build_info{version="' in metrics
        assert "rootward_queue_capacity_items 200000.0" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "draining" in proc.stderr.read()
        assert (tmp_path / "topology.db").exists()  # the final checkpoint
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_on_a_port_in_use_exits_with_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        sets = ["receiver.grpc.port=0", "receiver.http.port=0", f"api.listen.port={port}", "api.listen.host=127.0.0.1"]
        sets += [f"storage.data_dir={tmp_path}"]
        cmd = [sys.executable, "-m", "rootward.cli", "serve", *[a for s in sets for a in ("--set", s)]]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"API cannot listen on 127.0.0.1:{port}" in result.stderr


def test_config_check_refuses_a_bundle_that_defines_no_decision(tmp_path: Path) -> None:
    """It compiled, and every action was then denied as "decision is undefined": the shipped rootward.yaml sets
    default_bundle: false (its copy is mounted), so pointing bundle_dirs at one's own rules alone did this."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "extra.rego").write_text('package rootward.policy\nimport rego.v1\ndeny contains "x" if input.x == 1\n')
    result = check(tmp_path, f"policies:\n  default_bundle: false\n  bundle_dirs: [{mine}]\n")
    assert result.exit_code == 1
    assert "no policy file defines data.rootward.policy.decision" in result.output
    assert check(tmp_path, f"policies:\n  bundle_dirs: [{mine}]\n").exit_code == 0  # beside the shipped bundle
    commented = tmp_path / "commented"  # a comment after the package line, an indented rule: still a decision
    commented.mkdir()
    decision = (Path(rootward.policies.__file__).parent / "bundle" / "decision.rego").read_text()
    decision = decision.replace("package rootward.policy\n", "package rootward.policy # the decision\n")
    (commented / "decision.rego").write_text(decision.replace("\ndecision := {", "\n  decision := {"))
    assert check(tmp_path, f"policies:\n  default_bundle: false\n  bundle_dirs: [{commented}]\n").exit_code == 0


def test_config_check_names_missing_tls_files_and_warns_when_nobody_can_approve(tmp_path: Path) -> None:
    result = check(tmp_path, f"receiver:\n  tls: {{cert_file: {tmp_path}/tls.crt, key_file: {tmp_path}/tls.key}}\n")
    assert result.exit_code == 1
    assert f"receiver.tls.cert_file: {tmp_path}/tls.crt" in result.output
    assert "no such file" in result.output
    approve_all = "actions: {enabled: true, mode: approve-all}\n"
    result = check(tmp_path, approve_all)
    assert result.exit_code == 0, result.output
    assert "nobody can approve" in result.output
    result = check(tmp_path, approve_all, "--set", "policies.approvals.tokens.alice=alice-s3cret")
    assert "nobody can approve" not in result.output
