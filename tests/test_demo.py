"""`rootward demo`: the loop on synthetic telemetry through the real SDK exporters, self-contained."""

from __future__ import annotations

import re

import pytest

from rootward.demo import run_demo


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_demo_receives_everything_the_shop_sent(protocol: str) -> None:
    lines: list[str] = []
    assert run_demo(requests=96, protocol=protocol, echo=lines.append) == 0  # 16 windows of 6 requests
    text = "\n".join(lines)
    assert re.search(r"traces +960 items +\(0 refused\)", text)
    assert re.search(r"logs +192 items +\(0 refused\)", text)
    for service in ("cart", "checkout", "email", "frontend", "payment"):
        assert service in text
    assert "server 384, client 384, producer 96, consumer 96" in text
    assert "all received" in text
    # The dependency graph the shop's spans imply, with payment's failures on checkout -> payment.
    for src, dst, errors in [
        ("service:/user", "service:shop/frontend", 0),
        ("service:shop/frontend", "service:shop/cart", 0),
        ("service:shop/frontend", "service:shop/checkout", 0),
        ("service:shop/checkout", "service:shop/payment", 18),
        ("service:shop/checkout", "service:shop/email", 0),
        ("service:shop/cart", "database:redis/redis", 0),
    ]:
        assert re.search(rf"{re.escape(src)} +-> {re.escape(dst)} +96 requests +{errors} errors", text), (src, dst)
    # Payment failing for three windows opens one incident, payment first, that resolves; and its Slack message.
    assert re.search(r"incidents \(1;", text)
    assert "likely root cause, most likely first: service:shop/payment" in text
    assert "called by: service:shop/checkout" in text  # the calls around it (GET /api/v1/incidents/<id>)
    assert "resolved" in text
    assert "Slack message (notifications.slack not configured; as it would be sent):" in text
    # The diagnosis, the proposed action dry-run against the simulated cluster, and the verified audit trail.
    assert re.search(r"service:shop/payment +code_error", text)
    assert "proposed action: rollout_restart shop/payment" in text
    assert "outcome: dry_run" in text
    assert "`rootward audit verify`: chain intact" in text
