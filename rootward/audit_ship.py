"""The audit log's records shipped to a log backend over OTLP (``policies.audit.ship``), and read back from what
the backend kept (``rootward audit verify --from``).

Why: the audit log is a SQLite file on the pod's volume (an emptyDir on the DaemonSet), so a pod deleted (every
upgrade of Rootward) took its trail with it. Shipped, the trail is where the team keeps its logs, and still
verifiable there: each record goes whole (its JSON with hash, MAC and signature) as one log record's body.

How: the log file is the queue. A thread reads the records after a cursor (``<audit path>.shipped``: the last
shipped record's sequence number and hash), sends up to ``batch`` of them in one export, and moves the cursor only
when the backend took them; an export that fails is tried again ``interval_s`` later from the same record, so a
backend that is down or refuses the credentials gets every record once it takes them (at least once: a cursor
write lost to a crash sends a batch twice; ``verify --from`` skips identical copies). Nothing is dropped; what
waits is visible (``rootward_audit_unshipped``, ``/healthz``, as of the shipper's last look: neither reads the
log). A cursor whose hash does not match the log (the log was replaced) starts again from the first record. An
export stays under ``MAX_BYTES``; one the backend refuses as too large is sent again in halves. Records a backend
answers as rejected (OTLP partial success, or a lone record too large for it) are counted and logged as an error,
and the cursor moves on: sending them again would be refused again (``verify --from`` then names them missing;
``rootward audit export`` has them). OTLP/HTTP follows no redirect (a redirect would carry the credentials to
another host and turn the POST into a GET): it is an error, and the records wait.

Each log record: body the record's JSON; time the record's; attributes ``rootward.audit.chain`` (the hash of the
log's first record: one id per log file, whatever the pod's name), ``rootward.audit.seq``, ``.kind``,
``.request_id``, ``.target``, ``.actor``, ``.hash``; scope ``rootward.audit``; resource ``service.name``
(``ship.service_name``), ``service.version``, ``service.instance.id`` (this Rootward: the Lease identity or host).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO

from rootward._version import __version__
from rootward.config_acting import AuditShip
from rootward.policies.audit import GENESIS, AuditLog, Record, Verification, authentic, from_json, verify_chain
from rootward.policies.errors import AuditError
from rootward.policies.signing import Verifier
from rootward.storage import replace_file

logger = logging.getLogger(__name__)

SCOPE = "rootward.audit"
_EXPORT_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
#: An export's records' JSON at most (gRPC's default message limit is 4 MiB).
MAX_BYTES = 3 << 20


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is raised as an HTTPError


#: An opener that follows no redirect (a redirect would carry the credentials elsewhere and turn a POST into a GET).
OPENER = urllib.request.build_opener(_NoRedirect)


class ShipError(Exception):
    """An export the backend did not take (the records are sent again later)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large  # refused for its size: sent again in halves


class AuditShipper:
    """Ships ``audit``'s records to ``settings.endpoint``; ``start``/``shutdown`` are safe to repeat."""

    def __init__(
        self,
        audit: AuditLog,
        settings: AuditShip,
        instance: str,
        counted: Callable[[str, int], None] | None = None,
    ) -> None:
        """``counted(outcome, n)``: shipped and rejected records, failed exports (Rootward's metrics)."""
        if not settings.endpoint:
            raise ValueError("policies.audit.ship.endpoint is not set")
        self.audit, self.settings, self.instance = audit, settings, instance
        self.counted = counted or (lambda outcome, n: None)
        self.cursor_path = Path(f"{audit.path}.shipped")
        self.last_error: str | None = None
        self.waiting = 0  # records not shipped, as of the last look (health and metrics read this, not the log)
        self._limit = MAX_BYTES  # halved after an export refused as too large (kept: smaller exports cost little)
        self._cursor: tuple[int, str] | None = None  # read from its file on first use
        self._chain: str | None = None
        self._channel: grpc.Channel | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one export at a time (the thread, shutdown's last one)
        self._thread: threading.Thread | None = None

    # What waits

    def unshipped(self) -> int:
        """Records in the log not shipped yet."""
        return max(0, self.audit.head()[0] - self.cursor()[0])

    def cursor(self) -> tuple[int, str]:
        """The last shipped record's (sequence number, hash); (0, GENESIS) before the first."""
        if self._cursor is None:
            self._cursor = self._read_cursor()
        return self._cursor

    def _read_cursor(self) -> tuple[int, str]:
        try:
            value = json.loads(self.cursor_path.read_text())
            seq, digest = int(value["seq"]), str(value["hash"])
        except FileNotFoundError:
            return 0, GENESIS
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("%s is unreadable (%s): shipping the audit log from its first record", self.cursor_path, e)
            return 0, GENESIS
        if seq <= 0:
            return 0, GENESIS
        found = next(self.audit.records(after_seq=seq - 1, limit=1), None)
        if found is None or found.seq != seq or found.hash != digest:
            logger.warning(
                "%s names record %d, which the audit log does not hold as shipped (the log was replaced): "
                "shipping it from its first record", self.cursor_path, seq,
            )  # fmt: skip
            return 0, GENESIS
        return seq, digest

    def _write_cursor(self, seq: int, digest: str) -> None:
        replace_file(self.cursor_path, lambda out: out.write(json.dumps({"seq": seq, "hash": digest}).encode()))
        self._cursor = (seq, digest)

    # Shipping

    def ship_once(self) -> int:
        """Send the next batch after the cursor; return how many records went (0: none waiting).

        Raises:
            ShipError: the backend did not take them (the cursor stays), or the log cannot be read.
        """
        with self._lock:
            try:
                seq, _ = self.cursor()
                batch = list(self.audit.records(after_seq=seq, limit=self.settings.batch))
                self.waiting = self.audit.head()[0] - seq
            except (AuditError, sqlite3.Error) as e:
                raise self._failed(f"the audit log cannot be read: {e}") from e
            if not batch:
                return 0
            bodies = _within([_body(r) for r in batch], self._limit)
            batch = batch[: len(bodies)]
            try:
                rejected = self._send(to_request(batch, bodies, self._chain_id(batch), self._resource()))
            except ShipError as e:
                if not (e.too_large and len(batch) == 1):
                    if e.too_large:
                        self._limit = max(1, sum(map(len, bodies)) // 2)
                    raise self._failed(str(e)) from e
                rejected = 1  # one record the backend will never take: counted, logged, passed
            self.last_error = None
            if rejected:
                logger.error("the log backend rejected %d of %d audit records (%d-%d); rootward audit export has "
                             "them", rejected, len(batch), batch[0].seq, batch[-1].seq)  # fmt: skip
                self.counted("rejected", rejected)
            self.counted("shipped", len(batch) - rejected)
            try:
                self._write_cursor(batch[-1].seq, batch[-1].hash)
            except OSError as e:  # they went; they will go again after a restart (at least once)
                logger.warning("%s cannot be written (%s): records may be shipped twice", self.cursor_path, e)
                self._cursor = (batch[-1].seq, batch[-1].hash)
            self.waiting = max(0, self.waiting - len(batch))
            return len(batch)

    def _failed(self, message: str) -> ShipError:
        self.last_error = message
        self.counted("failed", 1)
        return ShipError(message)

    def ship_all(self, deadline_s: float | None = None, stop: threading.Event | None = None) -> bool:
        """Ship until nothing waits (True), or an export fails, the deadline passes or ``stop`` is set (False).
        Never raises."""
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        while (deadline is None or time.monotonic() < deadline) and not (stop is not None and stop.is_set()):
            try:
                if self.ship_once() == 0:
                    return True
            except ShipError as e:
                logger.warning("audit records not shipped yet (%d waiting): %s", self.waiting, e)
                return False
        return False

    def _chain_id(self, batch: Sequence[Record]) -> str:
        if self._chain is None:
            first = batch[0] if batch[0].seq == 1 else next(self.audit.records(limit=1), batch[0])
            self._chain = first.hash
        return self._chain

    def _resource(self) -> dict[str, str]:
        return {
            "service.name": self.settings.service_name,
            "service.version": __version__,
            "service.instance.id": self.instance,
        }

    def _headers(self) -> list[tuple[str, str]]:
        return [(name.lower(), value.get_secret_value()) for name, value in self.settings.headers.items()]

    def _send(self, request: ExportLogsServiceRequest) -> int:
        """Export ``request``; return how many records the backend rejected.

        Raises:
            ShipError: it was not taken, whatever the reason (a closed channel, a malformed URL included).
        """
        try:
            if self.settings.protocol == "grpc":
                return self._send_grpc(request)
            return self._send_http(request)
        except ShipError:
            raise
        except Exception as e:
            raise ShipError(f"{self.settings.endpoint}: {type(e).__name__}: {e}") from e

    def _send_grpc(self, request: ExportLogsServiceRequest) -> int:
        if self._channel is None:
            endpoint = str(self.settings.endpoint)
            self._channel = (
                grpc.insecure_channel(endpoint)
                if self.settings.insecure
                else grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
            )
        call = self._channel.unary_unary(
            _EXPORT_LOGS,
            request_serializer=ExportLogsServiceRequest.SerializeToString,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        try:
            response = call(request, timeout=self.settings.timeout_s, metadata=self._headers())
        except grpc.RpcError as e:
            code = e.code()
            large = code == grpc.StatusCode.RESOURCE_EXHAUSTED
            raise ShipError(f"{self.settings.endpoint}: {code.name}: {e.details()}", too_large=large) from e
        return int(response.partial_success.rejected_log_records)

    def _send_http(self, request: ExportLogsServiceRequest) -> int:
        url = str(self.settings.endpoint).rstrip("/")
        url = url if url.endswith("/v1/logs") else f"{url}/v1/logs"
        headers = {"Content-Type": "application/x-protobuf", **dict(self._headers())}
        post = urllib.request.Request(url, request.SerializeToString(), headers, method="POST")
        try:
            with OPENER.open(post, timeout=self.settings.timeout_s) as answer:
                body = answer.read()
        except urllib.error.HTTPError as e:
            why = "a redirect (not followed)" if 300 <= e.code < 400 else e.read(200).decode(errors="replace")
            raise ShipError(f"{url}: HTTP {e.code}: {why}", too_large=e.code == 413) from e
        except (urllib.error.URLError, OSError) as e:
            raise ShipError(f"{url}: {e}") from e
        response = ExportLogsServiceResponse()
        try:
            response.ParseFromString(body)
        except DecodeError as e:  # not an OTLP endpoint (a proxy's page): the records were not taken
            raise ShipError(f"{url}: the answer is not an OTLP logs response") from e
        return int(response.partial_success.rejected_log_records)

    # The thread

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rootward-audit-ship", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.ship_all(stop=self._stop)
            except Exception:  # never let the thread die
                logger.exception("shipping the audit log failed")
            self._stop.wait(self.settings.interval_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then ship what is left (up to ``timeout_s``): the records of the last moments, the
        executor's stop among them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.ship_all(deadline_s=timeout_s)
        except Exception:  # shutdown goes on: the records wait in the log for the next start
            logger.exception("shipping the last audit records failed")
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _body(record: Record) -> str:
    """A shipped record's body: its JSON with hash, MAC and signature."""
    return json.dumps(record.as_json(), ensure_ascii=False, sort_keys=True)


def _within(bodies: list[str], limit: int) -> list[str]:
    """The first of ``bodies`` that stay within ``limit`` characters together (one at least)."""
    total = 0
    for n, body in enumerate(bodies):
        total += len(body)
        if total > limit:
            return bodies[: max(1, n)]
    return bodies


def _value(value: str | int | None) -> AnyValue:
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value="" if value is None else value)


def to_request(
    records: Sequence[Record], bodies: Sequence[str], chain: str, resource: dict[str, str]
) -> ExportLogsServiceRequest:
    """One OTLP logs request holding ``records`` with their ``bodies`` (:func:`_body`; module docstring: what each
    log record carries)."""
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add()
    logs.resource.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in resource.items())
    scoped = logs.scope_logs.add()
    scoped.scope.name, scoped.scope.version = SCOPE, __version__
    now = time.time_ns()
    for record, body in zip(records, bodies, strict=True):
        entry = scoped.log_records.add()
        entry.time_unix_nano = record.time_us * 1000
        entry.observed_time_unix_nano = now
        entry.severity_number, entry.severity_text = SEVERITY_NUMBER_INFO, "INFO"
        entry.event_name = SCOPE
        entry.body.string_value = body
        attributes: dict[str, str | int | None] = {
            "rootward.audit.chain": chain,
            "rootward.audit.seq": record.seq,
            "rootward.audit.kind": record.kind,
            "rootward.audit.request_id": record.request_id,
            "rootward.audit.target": record.target,
            "rootward.audit.actor": record.actor,
            "rootward.audit.hash": record.hash,
        }
        entry.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attributes.items())
    return request


# Reading back what a backend kept


@dataclass
class Shipped:
    """One log's records as read back: the chain id they were shipped under (None: lines of ``rootward audit
    export``), who sent them, and every distinct copy of each record by sequence number (at least once delivery
    repeats identical ones; a copy that differs is tampering, or two logs under one id)."""

    chain: str | None
    instance: str = ""
    copies: dict[int, list[Record]] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        found = self.copies.setdefault(record.seq, [])
        if record not in found:
            found.append(record)

    def verify(
        self, key: bytes | None = None, public_key: Verifier | None = None, partial: bool = False
    ) -> Verification:
        """Check the chain: each record once (of differing copies, with a key or a public key, those that do not
        authenticate are set aside; more than one left is a break); from record 1 (with ``partial``, from the first
        record kept, trusting its ``prev``: what a backend's retention left), under the chain id of record 1's
        hash; then links, hashes, MACs and signatures as :func:`verify_chain`."""
        ordered = []
        for seq in sorted(self.copies):
            copies = self.copies[seq]
            if len(copies) > 1 and (key is not None or public_key is not None):
                copies = [c for c in copies if authentic(c, key, public_key)] or copies
            if len(copies) > 1:
                return Verification(False, 0, GENESIS, seq, f"record {seq} was kept twice with different contents")
            ordered.append(copies[0])
        if not ordered:
            return Verification(True, 0, GENESIS)
        first = ordered[0]
        if first.seq != 1 and not partial:
            problem = f"records 1-{first.seq - 1} are not in the file (--partial checks from the first one kept)"
            return Verification(False, 0, GENESIS, 1, problem)
        if first.seq == 1 and self.chain is not None and self.chain != first.hash:
            return Verification(False, 0, GENESIS, 1, "shipped under a chain id that is not its first record's hash")
        return verify_chain(ordered, key, public_key, first.seq, GENESIS if first.seq == 1 else first.prev)


def read_shipped(lines: Iterable[str]) -> list[Shipped]:
    """The audit records in ``lines``, one :class:`Shipped` a chain in the order first seen: JSON lines of OTLP
    logs requests (``{"resourceLogs": ...}``, what the Collector's file exporter writes) holding shipped records,
    and lines of ``rootward audit export`` (a chain of their own, never merged with a shipped one).

    Raises:
        ValueError: a line is not JSON, or a record in it is not an audit record (the message names the line).
    """
    chains: dict[tuple[bool, str], Shipped] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            found = list(_records_in(value)) if "resourceLogs" in value else [(None, "", from_json(value))]
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"line {number}: {e}") from e
        for chain, instance, record in found:
            shipped = chains.setdefault((chain is None, chain or ""), Shipped(chain, instance))
            shipped.add(record)
    return list(chains.values())


def _records_in(request: dict[str, Any]) -> Iterator[tuple[str | None, str, Record]]:
    for resource_logs in request.get("resourceLogs") or []:
        resource = _attributes((resource_logs.get("resource") or {}).get("attributes"))
        for scope_logs in resource_logs.get("scopeLogs") or []:
            for entry in scope_logs.get("logRecords") or []:
                attributes = _attributes(entry.get("attributes"))
                if "rootward.audit.chain" not in attributes:
                    continue  # some other log record in the same file
                body = (entry.get("body") or {}).get("stringValue")
                if not isinstance(body, str):
                    raise ValueError("a shipped audit record without its JSON body")
                chain = str(attributes["rootward.audit.chain"])
                yield chain, str(resource.get("service.instance.id", "")), from_json(json.loads(body))


def _attributes(values: Any) -> dict[str, Any]:
    """OTLP JSON attributes as a dict (string and int values; ints are strings in OTLP JSON)."""
    found: dict[str, Any] = {}
    for item in values or []:
        value = item.get("value") or {}
        found[item.get("key", "")] = value.get("stringValue", value.get("intValue"))
    return found
