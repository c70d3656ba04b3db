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
waits is visible (``rootward_audit_unshipped``, ``/healthz``). A cursor whose hash does not match the log (the
log was replaced) starts again from the first record. Records a backend answers as rejected (OTLP partial success)
are counted and logged, and the cursor moves on: sending them again would be refused again.

Each log record: body the record's JSON; time the record's; attributes ``rootward.audit.chain`` (the hash of the
log's first record: one id per log file, whatever the pod's name), ``rootward.audit.seq``, ``.kind``,
``.request_id``, ``.target``, ``.actor``, ``.hash``; scope ``rootward.audit``; resource ``service.name``
(``ship.service_name``), ``service.version``, ``service.instance.id`` (this Rootward: the Lease identity or host).
"""

from __future__ import annotations

import json
import logging
import os
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
from rootward.policies.audit import GENESIS, AuditLog, Record, Verification, from_json, verify_chain
from rootward.policies.signing import Verifier

logger = logging.getLogger(__name__)

SCOPE = "rootward.audit"
_EXPORT_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


class ShipError(Exception):
    """An export the backend did not take (the records are sent again later)."""


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
        temporary = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        temporary.write_text(json.dumps({"seq": seq, "hash": digest}))
        os.replace(temporary, self.cursor_path)
        self._cursor = (seq, digest)

    # Shipping

    def ship_once(self) -> int:
        """Send the next batch after the cursor; return how many records went (0: none waiting).

        Raises:
            ShipError: the backend did not take them (the cursor stays).
        """
        with self._lock:
            seq, _ = self.cursor()
            batch = list(self.audit.records(after_seq=seq, limit=self.settings.batch))
            if not batch:
                return 0
            try:
                rejected = self._send(to_request(batch, self._chain_id(batch), self._resource()))
            except ShipError as e:
                self.last_error = str(e)
                self.counted("failed", 1)
                raise
            self.last_error = None
            if rejected:
                logger.error("the log backend rejected %d of %d audit records (%d-%d)", rejected, len(batch),
                             batch[0].seq, batch[-1].seq)  # fmt: skip
                self.counted("rejected", rejected)
            self.counted("shipped", len(batch) - rejected)
            try:
                self._write_cursor(batch[-1].seq, batch[-1].hash)
            except OSError as e:  # they went; they will go again after a restart (at least once)
                logger.warning("%s cannot be written (%s): records may be shipped twice", self.cursor_path, e)
                self._cursor = (batch[-1].seq, batch[-1].hash)
            return len(batch)

    def ship_all(self, deadline_s: float | None = None) -> bool:
        """Ship until nothing waits (True) or an export fails or the deadline passes (False)."""
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        while deadline is None or time.monotonic() < deadline:
            try:
                if self.ship_once() == 0:
                    return True
            except ShipError as e:
                logger.warning("audit records not shipped yet (%d waiting): %s", self.unshipped(), e)
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
        """Export ``request``; return how many records the backend rejected."""
        if self.settings.protocol == "grpc":
            return self._send_grpc(request)
        return self._send_http(request)

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
            raise ShipError(f"{self.settings.endpoint}: {e.code().name}: {e.details()}") from e
        return int(response.partial_success.rejected_log_records)

    def _send_http(self, request: ExportLogsServiceRequest) -> int:
        url = str(self.settings.endpoint).rstrip("/")
        url = url if url.endswith("/v1/logs") else f"{url}/v1/logs"
        headers = {"Content-Type": "application/x-protobuf", **dict(self._headers())}
        post = urllib.request.Request(url, request.SerializeToString(), headers, method="POST")
        try:
            with urllib.request.urlopen(post, timeout=self.settings.timeout_s) as answer:
                body = answer.read()
        except urllib.error.HTTPError as e:
            raise ShipError(f"{url}: HTTP {e.code}: {e.read(200).decode(errors='replace')}") from e
        except (urllib.error.URLError, OSError) as e:
            raise ShipError(f"{url}: {e}") from e
        response = ExportLogsServiceResponse()
        try:
            response.ParseFromString(body)
        except DecodeError:  # a backend answering 200 with something else took the records
            return 0
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
                self.ship_all(deadline_s=self.settings.interval_s * 10)
            except Exception:  # the log unreadable a moment (closing): never let the thread die
                logger.exception("shipping the audit log failed")
            self._stop.wait(self.settings.interval_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then ship what is left (up to ``timeout_s``): the records of the last moments, the
        executor's stop among them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.ship_all(deadline_s=timeout_s)
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _value(value: str | int | None) -> AnyValue:
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value="" if value is None else value)


def to_request(records: Sequence[Record], chain: str, resource: dict[str, str]) -> ExportLogsServiceRequest:
    """One OTLP logs request holding ``records`` (module docstring: what each log record carries)."""
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add()
    logs.resource.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in resource.items())
    scoped = logs.scope_logs.add()
    scoped.scope.name, scoped.scope.version = SCOPE, __version__
    now = time.time_ns()
    for record in records:
        entry = scoped.log_records.add()
        entry.time_unix_nano = record.time_us * 1000
        entry.observed_time_unix_nano = now
        entry.severity_number, entry.severity_text = SEVERITY_NUMBER_INFO, "INFO"
        entry.event_name = SCOPE
        entry.body.string_value = json.dumps(record.as_json(), ensure_ascii=False, sort_keys=True)
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
    """One log's records as read back: its chain id, who sent it, its records by sequence number, and the numbers
    of records found twice with different contents (tampering, or two logs under one id)."""

    chain: str
    instance: str = ""
    records: dict[int, Record] = field(default_factory=dict)
    conflicts: list[int] = field(default_factory=list)

    def add(self, record: Record) -> None:
        kept = self.records.setdefault(record.seq, record)
        if kept != record:
            self.conflicts.append(record.seq)

    def verify(self, key: bytes | None = None, public_key: Verifier | None = None) -> Verification:
        """Check the chain from the first record kept (the backend's retention may have cut earlier ones: then
        from that record's ``prev``); identical copies count once, differing ones are a break."""
        if self.conflicts:
            seq = min(self.conflicts)
            return Verification(False, 0, GENESIS, seq, f"record {seq} was kept twice with different contents")
        ordered = [self.records[seq] for seq in sorted(self.records)]
        if not ordered:
            return Verification(True, 0, GENESIS)
        first = ordered[0]
        return verify_chain(ordered, key, public_key, first.seq, GENESIS if first.seq == 1 else first.prev)


def read_shipped(lines: Iterable[str]) -> dict[str, Shipped]:
    """The audit records in ``lines``, by chain: JSON lines of OTLP logs requests (``{"resourceLogs": ...}``, what
    the Collector's file exporter writes) holding shipped records, or of records as ``rootward audit export``
    writes them (one chain, named by its first record's hash, or ``local``).

    Raises:
        ValueError: a line is not JSON, or a record in it is not an audit record (the message names the line).
    """
    chains: dict[str, Shipped] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            found = list(_records_in(value)) if "resourceLogs" in value else [("", "", from_json(value))]
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"line {number}: {e}") from e
        for chain, instance, record in found:
            shipped = chains.setdefault(chain, Shipped(chain, instance))
            shipped.add(record)
    if "" in chains:  # rootward audit export's lines: the chain is the first record's hash
        local = chains.pop("")
        first = (local.records or {}).get(1)
        local.chain = first.hash if first is not None else "local"
        chains[local.chain] = local
    return chains


def _records_in(request: dict[str, Any]) -> Iterator[tuple[str, str, Record]]:
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
