"""`rootward policy test` and `rootward policy eval`: Rego unit tests, and the decision on one input file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from rootward.cli import main
from rootward.config import PolicyRules
from rootward.policies.engine import settings_data
from rootward.policies.regotest import run_tests

SETTINGS = settings_data(PolicyRules())


def test_the_shipped_bundles_own_tests_pass() -> None:
    results = run_tests([], SETTINGS)
    assert len(results) >= 15
    assert [r.name for r in results if not r.passed] == []


def test_a_users_tests_run_against_their_policies_and_the_shipped_rules(tmp_path: Path) -> None:
    (tmp_path / "mine.rego").write_text('package mine\nimport rego.v1\nlimit(inp) := {"too many" | inp.n > 3}\n')
    (tmp_path / "mine_test.rego").write_text(
        "package mine_test\nimport rego.v1\nimport data.mine\nimport data.rootward.policy\n"
        'test_four_is_too_many if { "too many" in mine.limit({"n": 4}) }\n'
        'test_three_is_too_many if { "too many" in mine.limit({"n": 3}) }\n'
        'test_shipped_rules_are_there if { "kube-system" in data.rootward.settings.protected_namespaces }\n'
    )
    results = {r.name.rsplit(".", 1)[1]: r for r in run_tests([tmp_path], SETTINGS)}
    assert results["test_four_is_too_many"].passed
    assert results["test_shipped_rules_are_there"].passed
    failed = results["test_three_is_too_many"]
    assert not failed.passed
    assert failed.error is not None
    assert "undefined" in failed.error
    assert failed.file.endswith("mine_test.rego")


def test_a_program_that_crashes_the_engine_fails_its_tests_without_killing_the_runner(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(
        'package p\nimport rego.v1\ndeny contains "one" if input.x == 1\nr := "deny" if count(deny) > 0\n'
    )
    (tmp_path / "p_test.rego").write_text(
        "package p_test\nimport rego.v1\nimport data.p\n"
        'test_with_input_over_a_complete_rule if { p.r == "deny" with input as {"x": 1} }\n'
        "test_a if { true }\ntest_b if { true }\ntest_c if { true }\n"
    )
    results = run_tests([tmp_path], SETTINGS)
    assert len(results) == 4
    assert all(not r.passed and r.error is not None and "crashed (signal 11)" in r.error for r in results)


def test_policy_test_exits_1_naming_the_failed_test(tmp_path: Path) -> None:
    (tmp_path / "t_test.rego").write_text(
        "package t\nimport rego.v1\ntest_false if { 1 == 2 }\ntest_true if { 1 == 1 }\n"
    )
    result = CliRunner().invoke(main, ["policy", "test", str(tmp_path)], env={})
    assert result.exit_code == 1
    assert "FAIL: data.t.test_false" in result.output
    assert "policy tests: 1/2 pass" in result.output


def test_policy_test_names_a_file_that_does_not_parse_and_passes_a_bundle_without_tests(tmp_path: Path) -> None:
    """Before, a syntax error showed only as "no test_ rules", and a bundle with no tests failed the CI step."""
    good = tmp_path / "good"
    good.mkdir()
    (good / "mine.rego").write_text('package rootward.policy\nimport rego.v1\ndeny contains "x" if input.x == 1\n')
    result = CliRunner().invoke(main, ["policy", "test", str(good)], env={})
    assert result.exit_code == 0, result.output
    assert "no test_ rules" in result.output
    assert "1 files parse; nothing was tested" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(main, ["policy", "test", str(empty)], env={})
    assert nothing.exit_code == 1
    assert "no .rego files in" in nothing.output
    (good / "broken.rego").write_text("package rootward.policy\nimport rego.v1\ndeny contains msg if {\n  msg :=\n}\n")
    result = CliRunner().invoke(main, ["policy", "test", str(good)], env={})
    assert result.exit_code == 1
    assert "broken.rego" in result.output
    assert "no test_ rules" not in result.output


def test_policy_eval_prints_the_decision_and_exits_1_on_deny(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(document))
    allowed = CliRunner().invoke(main, ["policy", "eval", "--input", str(path)], env={})
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["result"] == "allow"
    document["action"]["target"]["namespace"] = "kube-system"
    path.write_text(json.dumps(document))
    denied = CliRunner().invoke(main, ["policy", "eval", "--input", str(path)], env={})
    assert denied.exit_code == 1
    assert json.loads(denied.output)["deny"] == ["kube-system is never acted on"]


def test_policy_eval_reads_the_users_bundle_from_the_configuration(tmp_path: Path, document: dict[str, Any]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.rego").write_text(
        'package rootward.policy\nimport rego.v1\ndeny contains "no patches" if input.action.kind == "patch_resources"\n'
    )
    path = tmp_path / "input.yaml"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(
        main, ["policy", "eval", "--input", str(path), "--set", f"policies.bundle_dirs=[{rules}]"], env={}
    )
    assert result.exit_code == 1
    assert json.loads(result.output)["deny"] == ["no patches"]
