"""The audit trail leaves the pod (rootward/audit_ship.py): records shipped as OTLP log records through a real
collector (rotel) to a log backend (a real gRPC OTLP server), in order, nothing lost while the backend is down or
refuses the credentials, resumed from the cursor after a restart; and checked from what the backend kept with
``rootward audit verify --from``, which finds an edited, missing or conflicting record."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rootward.audit_ship import AuditShipper, read_shipped
from rootward.cli import main
from rootward.config_acting import AuditShip
from rootward.policies import AuditLog
from rootward.testing import free_ports

from collectors import running_rotel, wait_until
from log_backend import LogBackend, running_log_backend


@pytest.fixture
def backend() -> Iterator[LogBackend]:
    with running_log_backend() as running:
        yield running


def audit_with(path: Path, n: int, start: int = 0) -> AuditLog:
    log = AuditLog(path).open()
    for k in range(start, start + n):
        log.append(
            "decision", {"n": k, "why": "cart out of memory"}, request_id=f"act-{k}", target="Deployment/shop/cart"
        )
    return log


def shipper(log: AuditLog, endpoint: str, **settings: object) -> AuditShipper:
    options = {"protocol": "grpc", "timeout_s": 2, **settings}
    return AuditShipper(log, AuditShip(endpoint=endpoint, **options), "rootward-0")  # type: ignore[arg-type]


def counting(ship: AuditShipper) -> Counter[str]:
    """What ``ship`` counts (records shipped and rejected, exports failed), as it counts them."""
    counts: Counter[str] = Counter()
    ship.counted = lambda outcome, n: counts.update({outcome: n})
    return counts


def attributes(record: object) -> dict[str, object]:
    return {a.key: a.value.string_value or a.value.int_value for a in record.attributes}  # type: ignore[attr-defined]


def verify_from(path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify", "--from", str(path), *args], env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_trail_reaches_the_backend_through_a_collector_and_verifies_there(
    backend: LogBackend, tmp_path: Path, protocol: str
) -> None:
    log = audit_with(tmp_path / "audit.db", 7)
    with running_rotel(tmp_path, f"http://127.0.0.1:{backend.port}") as rotel:
        endpoint = f"127.0.0.1:{rotel.grpc_port}" if protocol == "grpc" else f"http://127.0.0.1:{rotel.http_port}"
        ship = AuditShipper(log, AuditShip(endpoint=endpoint, protocol=protocol, batch=3), "rootward-0")  # type: ignore[arg-type]
        assert ship.unshipped() == 7
        assert ship.ship_all(10)
        assert wait_until(lambda: len(backend.records()) == 7, 10)
    assert ship.unshipped() == 0
    first = next(log.records(limit=1))
    shipped = sorted(backend.records(), key=lambda r: attributes(r)["rootward.audit.seq"])  # type: ignore[arg-type, return-value]
    assert [attributes(r)["rootward.audit.seq"] for r in shipped] == list(range(1, 8))
    assert {attributes(r)["rootward.audit.chain"] for r in shipped} == {first.hash}
    assert attributes(shipped[0])["rootward.audit.kind"] == "decision"
    assert attributes(shipped[0])["rootward.audit.target"] == "Deployment/shop/cart"
    assert json.loads(shipped[0].body.string_value) == first.as_json()
    assert shipped[0].time_unix_nano == first.time_us * 1000
    resource = {a.key: a.value.string_value for a in backend.requests[0].resource_logs[0].resource.attributes}
    assert resource["service.instance.id"] == "rootward-0"
    code, output = verify_from(backend.write_jsonl(tmp_path / "kept.jsonl"))
    assert code == 0, output
    assert f"log {first.hash[:16]} (rootward-0): ok, records 1-7" in output
    log.close()


def test_nothing_is_lost_while_the_backend_is_down_and_nothing_goes_twice(backend: LogBackend, tmp_path: Path) -> None:
    log = audit_with(tmp_path / "audit.db", 4)
    ship = shipper(log, f"127.0.0.1:{backend.port}")
    counts = counting(ship)
    backend.down = True
    assert not ship.ship_all(5)
    assert "UNAVAILABLE" in (ship.last_error or "")
    assert ship.unshipped() == 4
    assert counts == {"failed": 1}
    audit_with_more(log, 3)
    backend.down = False
    assert ship.ship_all(5)
    assert ship.last_error is None
    assert [attributes(r)["rootward.audit.seq"] for r in backend.records()] == list(range(1, 8))
    assert counts == {"failed": 1, "shipped": 7}
    assert ship.ship_all(5)  # nothing waits: nothing sent again
    assert len(backend.records()) == 7
    log.close()


def audit_with_more(log: AuditLog, n: int) -> None:
    for k in range(n):
        log.append("outcome", {"status": "dry_run", "k": k}, request_id=f"act-more-{k}")


def test_a_backend_refusing_the_credentials_gets_everything_once_they_are_right(
    backend: LogBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend.token = "s3cret"
    log = audit_with(tmp_path / "audit.db", 3)
    caplog.set_level(logging.DEBUG)
    wrong = shipper(log, f"127.0.0.1:{backend.port}", headers={"Authorization": "Bearer wr0ng"})
    assert not wrong.ship_all(5)
    assert "UNAUTHENTICATED" in (wrong.last_error or "")
    assert wrong.unshipped() == 3
    right = shipper(log, f"127.0.0.1:{backend.port}", headers={"Authorization": "Bearer s3cret"})
    assert right.ship_all(5)
    assert len(backend.records()) == 3
    assert "s3cret" not in caplog.text
    assert "wr0ng" not in caplog.text
    log.close()


def test_a_restart_resumes_after_the_last_shipped_record_and_a_replaced_log_starts_again(
    backend: LogBackend, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    log = audit_with(path, 5)
    assert shipper(log, f"127.0.0.1:{backend.port}").ship_all(5)
    audit_with_more(log, 2)
    again = shipper(log, f"127.0.0.1:{backend.port}")  # a new process: the cursor from its file
    assert again.unshipped() == 2
    assert again.ship_all(5)
    assert [attributes(r)["rootward.audit.seq"] for r in backend.records()] == [1, 2, 3, 4, 5, 6, 7]
    log.close()
    for leftover in tmp_path.glob("audit.db*"):
        if not leftover.name.endswith(".shipped"):
            leftover.unlink()
    fresh = audit_with(path, 2)  # the volume lost its log but not the cursor: a new chain
    replaced = shipper(fresh, f"127.0.0.1:{backend.port}")
    assert replaced.unshipped() == 2
    assert replaced.ship_all(5)
    chains = read_shipped(backend.write_jsonl(tmp_path / "kept.jsonl").read_text().splitlines())
    assert sorted(len(c.copies) for c in chains) == [2, 7]
    assert all(c.verify().ok for c in chains)
    fresh.close()


def test_records_the_backend_rejects_are_counted_and_not_sent_forever(backend: LogBackend, tmp_path: Path) -> None:
    log = audit_with(tmp_path / "audit.db", 5)
    ship = shipper(log, f"127.0.0.1:{backend.port}")
    counts = counting(ship)
    backend.reject = 2
    assert ship.ship_all(5)
    assert counts == {"rejected": 2, "shipped": 3}
    assert ship.unshipped() == 0
    log.close()


def test_an_unreachable_endpoint_over_http_is_a_clear_error(tmp_path: Path) -> None:
    log = audit_with(tmp_path / "audit.db", 1)
    (port,) = free_ports(1)
    ship = AuditShipper(log, AuditShip(endpoint=f"http://127.0.0.1:{port}", timeout_s=1), "rootward-0")
    assert not ship.ship_all(5)
    assert f"http://127.0.0.1:{port}/v1/logs" in (ship.last_error or "")
    assert ship.unshipped() == 1
    log.close()


@pytest.fixture
def kept(backend: LogBackend, tmp_path: Path) -> list[dict[str, object]]:
    """Five records as the backend kept them: one OTLP JSON request a line, a record a request."""
    log = audit_with(tmp_path / "audit.db", 5)
    assert shipper(log, f"127.0.0.1:{backend.port}", batch=1).ship_all(5)
    log.close()
    return [json.loads(line) for line in backend.write_jsonl(tmp_path / "all.jsonl").read_text().splitlines()]


def body_of(request: dict[str, object]) -> dict[str, object]:
    entry = request["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]  # type: ignore[index]
    return json.loads(entry["body"]["stringValue"])  # type: ignore[no-any-return]


def with_body(request: dict[str, object], body: dict[str, object]) -> dict[str, object]:
    copy = json.loads(json.dumps(request))
    copy["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"]["stringValue"] = json.dumps(body)
    return copy  # type: ignore[no-any-return]


def lines(path: Path, requests: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def test_verify_from_finds_an_edited_a_missing_and_a_conflicting_record(
    kept: list[dict[str, object]], tmp_path: Path
) -> None:
    edited = body_of(kept[2])
    edited["data"] = {"n": 2, "why": "nothing happened"}
    code, output = verify_from(lines(tmp_path / "edited.jsonl", [*kept[:2], with_body(kept[2], edited), *kept[3:]]))
    assert code == 1
    assert "BROKEN at record 3: record 3: its content does not match its hash" in output
    code, output = verify_from(lines(tmp_path / "gap.jsonl", [*kept[:2], *kept[3:]]))
    assert code == 1
    assert "record 3 is missing (found 4 next)" in output
    code, output = verify_from(lines(tmp_path / "twice.jsonl", [*kept, kept[1]]))  # at least once: a copy is fine
    assert code == 0, output
    code, output = verify_from(
        lines(tmp_path / "conflict.jsonl", [*kept, with_body(kept[1], {**body_of(kept[1]), "actor": "eve"})])
    )
    assert code == 1
    assert "record 2 was kept twice with different contents" in output


def test_verify_from_checks_what_retention_left_and_reads_audit_export_lines(
    kept: list[dict[str, object]], tmp_path: Path
) -> None:
    code, output = verify_from(lines(tmp_path / "tail.jsonl", kept[2:]))
    assert code == 1
    assert "records 1-2 are not in the file (--partial checks from the first one kept)" in output
    code, output = verify_from(lines(tmp_path / "tail.jsonl", kept[2:]), "--partial")
    assert code == 0, output
    assert "ok, records 3-5" in output
    assert "records before 3 are not in the file" in output
    exported = lines(tmp_path / "export.jsonl", [body_of(r) for r in kept])  # rootward audit export's form
    code, output = verify_from(exported)
    assert code == 0, output
    assert "ok, records 1-5" in output


def test_verify_from_a_file_without_records_or_not_json_is_a_clear_error(tmp_path: Path) -> None:
    code, output = verify_from(lines(tmp_path / "other.jsonl", [{"resourceLogs": []}]))
    assert code == 1
    assert "no audit records in it" in output
    (tmp_path / "bad.jsonl").write_text('{"resourceLogs": []}\nnot json\n')
    code, output = verify_from(tmp_path / "bad.jsonl")
    assert code == 1
    assert "line 2" in output


def relabelled(request: dict[str, object], chain: str) -> dict[str, object]:
    copy = json.loads(json.dumps(request))
    for attribute in copy["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"]:
        if attribute["key"] == "rootward.audit.chain":
            attribute["value"]["stringValue"] = chain
    return copy  # type: ignore[no-any-return]


def test_verify_from_is_not_fooled_by_an_export_line_a_relabelled_tail_or_a_chain_id(
    kept: list[dict[str, object]], tmp_path: Path
) -> None:
    edited = body_of(kept[2])
    edited["data"] = {"n": 2, "why": "nothing happened"}
    forged = [*kept[:2], with_body(kept[2], edited), *kept[3:], body_of(kept[0])]  # + an export line of record 1
    code, output = verify_from(lines(tmp_path / "mixed.jsonl", forged))
    assert code == 1
    assert "BROKEN at record 3" in output
    assert "exported records: ok, records 1-1" in output  # its own chain, never merged with the shipped one
    omitted = [*kept[:2], *(relabelled(r, "f" * 64) for r in kept[3:])]  # record 3 gone, the rest under a new id
    code, output = verify_from(lines(tmp_path / "relabelled.jsonl", omitted))
    assert code == 1
    assert "records 1-3 are not in the file" in output
    renamed = [relabelled(r, "e" * 64) for r in kept]
    code, output = verify_from(lines(tmp_path / "renamed.jsonl", renamed))
    assert code == 1
    assert "shipped under a chain id that is not its first record's hash" in output


def test_with_the_mac_key_an_injected_copy_cannot_break_a_genuine_trail(backend: LogBackend, tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", hmac_key=b"k" * 32).open()
    for k in range(3):
        log.append("decision", {"n": k}, request_id=f"act-{k}")
    assert shipper(log, f"127.0.0.1:{backend.port}", batch=1).ship_all(5)
    log.close()
    kept = [json.loads(line) for line in backend.write_jsonl(tmp_path / "all.jsonl").read_text().splitlines()]
    injected = with_body(kept[1], {**body_of(kept[1]), "actor": "eve"})  # no valid MAC: anyone could send it
    path = lines(tmp_path / "injected.jsonl", [*kept, injected])
    code, output = verify_from(path)
    assert code == 1  # without the key, which copy is genuine cannot be told
    code, output = verify_from(path, env={"ROOTWARD_POLICIES__AUDIT__HMAC_KEY": "k" * 32})
    assert code == 0, output
    assert "ok, records 1-3, MACs checked" in output


def test_an_oversized_export_goes_again_in_halves_and_a_lone_record_too_large_is_passed(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db").open()
    for k in range(12):
        log.append("dry_run", {"prior": "x" * 20_000, "k": k}, request_id=f"act-{k}")
    log.append("dry_run", {"prior": "y" * 200_000}, request_id="act-huge")
    log.append("outcome", {"status": "dry_run"}, request_id="act-huge")
    with running_log_backend(max_bytes=100_000) as small:
        ship = shipper(log, f"127.0.0.1:{small.port}")
        counts = counting(ship)
        for _ in range(20):
            if ship.ship_all(5):
                break
        assert ship.unshipped() == 0
        shipped = sorted(int(attributes(r)["rootward.audit.seq"]) for r in small.records())  # type: ignore[call-overload]
    assert shipped == [*range(1, 13), 14]  # record 13 alone is too large for this backend
    assert counts["rejected"] == 1
    assert counts["shipped"] == 13
    assert counts["failed"] >= 1
    log.close()


def test_over_http_a_redirect_is_not_followed_and_the_token_stays_home(
    tmp_path: Path, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str | None] = []

    def elsewhere(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return Response("<html>a login page</html>", 200, content_type="text/html")

    httpserver.expect_request("/v1/logs").respond_with_response(
        Response("", 302, headers={"Location": httpserver.url_for("/elsewhere")})
    )
    httpserver.expect_request("/elsewhere").respond_with_handler(elsewhere)
    httpserver.expect_request("/html/v1/logs").respond_with_handler(elsewhere)
    log = audit_with(tmp_path / "audit.db", 2)
    caplog.set_level(logging.DEBUG)
    settings = {"headers": {"Authorization": "Bearer s3cret"}, "timeout_s": 2}
    redirected = AuditShipper(log, AuditShip(endpoint=httpserver.url_for("/"), **settings), "rootward-0")  # type: ignore[arg-type]
    assert not redirected.ship_all(5)
    assert "HTTP 302: a redirect (not followed)" in (redirected.last_error or "")
    assert seen == []
    not_otlp = AuditShipper(log, AuditShip(endpoint=httpserver.url_for("/html"), **settings), "rootward-0")  # type: ignore[arg-type]
    assert not not_otlp.ship_all(5)
    assert "not an OTLP logs response" in (not_otlp.last_error or "")
    assert not_otlp.unshipped() == 2
    assert "s3cret" not in caplog.text
    log.close()


def test_a_malformed_endpoint_is_a_failed_export_and_shutdown_is_prompt(tmp_path: Path) -> None:
    log = audit_with(tmp_path / "audit.db", 1)
    bad = AuditShipper(log, AuditShip(endpoint="http://127.0.0.1:notaport", timeout_s=1), "rootward-0")
    counts = counting(bad)
    assert not bad.ship_all(5)
    assert bad.last_error is not None
    assert counts == {"failed": 1}
    (port,) = free_ports(1)
    down = shipper(log, f"127.0.0.1:{port}", interval_s=0.05, timeout_s=0.5)
    down.start()
    assert wait_until(lambda: down.last_error is not None, 5)
    started = time.monotonic()
    down.shutdown(timeout_s=1)
    assert time.monotonic() - started < 3
    assert down.waiting == 1  # what health and the gauge read: the shipper's last look, not the log
    log.close()
