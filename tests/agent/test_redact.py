"""Redaction of what is sent to the LLM endpoint: the shipped patterns, the optional ones, the user's own."""

from __future__ import annotations

import pytest

from rootward.agent.redact import Redactor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Authorization: Bearer abcdef123456789", "Authorization: Bearer [REDACTED:bearer_token]", id="bearer"
        ),
        pytest.param(
            '{"authorization": "Basic dXNlcjpwYXNz"}',
            '{"authorization": "Basic [REDACTED:authorization]"}',
            id="basic-header",
        ),
        pytest.param("key AKIAABCDEFGHIJKLMNOP here", "key [REDACTED:aws_access_key] here", id="aws-access-key"),
        pytest.param(
            "aws_secret_access_key=" + "a" * 40, "aws_secret_access_key=[REDACTED:aws_secret_key]", id="aws-secret"
        ),
        pytest.param(
            "postgres://app:hunter2@db.shop:5432/x",
            "postgres://app:[REDACTED:url_password]@db.shop:5432/x",
            id="url-password",
        ),
        pytest.param("mail bob.smith+x@example.co.uk failed", "mail [REDACTED:email] failed", id="email"),
        pytest.param("api_key=live_0123abcd&x=1", "api_key=[REDACTED:api_key]&x=1", id="api-key"),
        pytest.param("password: s3cret!", "password: [REDACTED:api_key]", id="password"),
        pytest.param("using sk-proj-abcdefghijklmnop1234", "using [REDACTED:openai_key]", id="openai-key"),
        pytest.param("ghp_" + "A" * 36, "[REDACTED:github_token]", id="github-token"),
        pytest.param("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "jwt [REDACTED:jwt]", id="jwt"),
        pytest.param("connect 10.0.0.12:5432 refused", "connect 10.0.0.12:5432 refused", id="ip-kept-by-default"),
        pytest.param(
            "max_tokens: 2000, p95 latency 0.4 s", "max_tokens: 2000, p95 latency 0.4 s", id="no-false-positive"
        ),
    ],
)
def test_the_default_patterns_redact_secrets_and_keep_the_evidence(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


def test_ips_are_redacted_when_asked_and_user_patterns_apply_after_the_defaults() -> None:
    redactor = Redactor.build(True, {"customer": r"cust-\d{6}"}, ["ipv4"])
    assert redactor.text("cust-123456 from 10.0.0.12") == "[REDACTED:customer] from [REDACTED:ipv4]"
    assert redactor.counts == {"customer": 1, "ipv4": 1}


def test_redaction_is_idempotent_and_reaches_into_json_data() -> None:
    redactor = Redactor()
    once = redactor.data({"who": "bob@example.com", "lines": ["token=abcd1234", 3], "n": 1.5})
    assert once == {"who": "[REDACTED:email]", "lines": ["token=[REDACTED:api_key]", 3], "n": 1.5}
    assert redactor.data(once) == once
    assert redactor.counts == {"email": 1, "api_key": 1}


def test_the_defaults_can_be_turned_off() -> None:
    assert Redactor.build(False, {}, []).text("bob@example.com") == "bob@example.com"
