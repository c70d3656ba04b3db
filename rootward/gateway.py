"""The replica's side of gateway mode: every ``interval_s``, this replica's call edges with RED go to the
aggregating replica as OTLP metrics (topology/export.py builds them, topology/merge.py merges them there).

Why here and not in topology/: sending is I/O with a schedule, configured from ``topology.export`` and counted in
Rootward's own telemetry; topology/ only turns a graph into a request and a request back into edges.

Entities and structural edges go as sightings: those seen since the last export that got through, so a failed
export's sightings go with the next one. Call edges go whole every time.

Sending is deliberately simple. Each export carries whole (cumulative) counts, so an export that fails (the
aggregator restarting, a network blip) is not retried: the next one, ``interval_s`` later, says everything it would
have said. Failures are logged and counted in ``rootward_gateway_exports_total{outcome}``, and the loop goes on.
At shutdown one last export sends what was paired since the previous one.

Anomalies (rootward/forwarded.py) go as soon as the detectors hand them over, not on the interval: the exporter's
thread wakes for them. They are not cumulative, so a failed send keeps them queued for the next try, at most
``MAX_QUEUED`` (the oldest past it are dropped and counted): an aggregator that is down for long gets what is
current when it is back, not an hour of backlog.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from rootward.clock import Clock, SystemClock
from rootward.config import Config
from rootward.detector.detector import Anomaly
from rootward.forwarded import MAX_CALLS, MAX_TEMPLATE, PER_REQUEST, anomalies_request
from rootward.telemetry import Telemetry
from rootward.topology import Entity, TopologyGraph
from rootward.topology.export import Sightings, edge_aggregates, sightings, sightings_request, to_request

logger = logging.getLogger(__name__)

_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
_EXPORT_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
#: Anomalies waiting for the aggregator at most (a few minutes of a busy cluster's).
MAX_QUEUED = 10_000
#: Reconnect within seconds once the aggregator is back (gRPC's default backoff grows to two minutes).
_OPTIONS = [("grpc.max_reconnect_backoff_ms", 5000)]
#: Following the Lease, a connection is made anew this often: one that reached a pod no longer holding it (the
#: Service's endpoints lag the label) is lost for at most this long.
RECONNECT_S = 30.0
#: Call edges per request: three points each of ~0.5 KiB with their labels, so ~3 MiB a request, under the
#: receiver's default 8 MiB and 50,000 points (receiver.limits) however large the graph.
EDGES_PER_REQUEST = 2000
#: Entity or edge sightings per request (~0.2 KiB each).
SIGHTINGS_PER_REQUEST = 10_000


def replica_name(config: Config) -> str:
    """This replica's name: ``topology.export.replica``, else the host name (the pod's name in a StatefulSet)."""
    return config.topology.export.replica or socket.gethostname()


class AggregateExporter:
    """Sends ``topology``'s call edges to the aggregator every interval. ``start``/``shutdown`` are safe to repeat."""

    def __init__(
        self,
        config: Config,
        topology: TopologyGraph,
        telemetry: Telemetry,
        clock: Clock | None = None,
        service_of: Mapping[str, str] | None = None,
        edges: bool = True,
        holder: Callable[[], str | None] | None = None,
    ) -> None:
        """``edges``: send the call edges and sightings every interval (gateway mode), else anomalies only (the
        DaemonSet's follow_lease). ``holder``: who holds the Lease as last read (follow_lease): when it changes the
        connection is made anew, so that the Service routes it to the new holder (an open connection stays with
        the pod it reached)."""
        settings = config.topology.export
        self.topology = topology
        self.telemetry = telemetry
        self.clock = clock or SystemClock()
        self.replica = replica_name(config)
        self.endpoint = settings.endpoint
        self.interval_s = settings.interval_s
        self.timeout_s = settings.timeout_s
        tokens = config.receiver.auth.tokens
        self._metadata = (("authorization", f"Bearer {tokens[0].get_secret_value()}"),) if tokens else ()
        self._ca_file = settings.ca_file
        self._channel: grpc.Channel | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._since = float("-inf")  # sightings from then on go in the next export
        self.edges = edges
        self.service_of = service_of if service_of is not None else {}  # pod -> service, sent with its anomalies
        # each with its series' recent values and the text of the template it names
        self._queued: deque[tuple[Anomaly, tuple[float, ...], str]] = deque()
        self._calls: dict[tuple[Entity, Entity], None] = {}  # call edges around them, sent with the next request
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self.holder = holder
        self._holder_seen: str | None = None
        self._connected_at = time.monotonic()

    def _open(self) -> grpc.Channel:
        if self._channel is None:
            if self._ca_file is not None:
                credentials = grpc.ssl_channel_credentials(self._ca_file.read_bytes())
                self._channel = grpc.secure_channel(
                    self.endpoint, credentials, _OPTIONS, compression=grpc.Compression.Gzip
                )
            else:
                self._channel = grpc.insecure_channel(self.endpoint, _OPTIONS, compression=grpc.Compression.Gzip)
        return self._channel

    def _reconnect(self) -> None:
        """Drop the connection: the next send makes a new one, which a Service routes anew."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _call(self) -> grpc.UnaryUnaryMultiCallable:
        return self._open().unary_unary(_EXPORT, response_deserializer=ExportMetricsServiceResponse.FromString)

    @property
    def queued(self) -> int:
        """Anomalies waiting to be sent."""
        return len(self._queued)

    def forward(
        self,
        anomalies: list[Anomaly],
        windows: Mapping[tuple[str, str], tuple[float, ...]] | None = None,
        calls: Sequence[tuple[Entity, Entity]] = (),
        texts: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a window's anomalies (with their series' recent values from ``windows``, the ``calls`` around them
        and the ``texts`` of the templates they name, by signal) for the aggregator and wake the sender (the
        detectors' sink; never blocks on the network)."""
        if not anomalies:
            return
        windows, texts = windows or {}, texts or {}
        with self._queue_lock:
            for edge in calls:
                self._calls.pop(edge, None)
                self._calls[edge] = None
            while len(self._calls) > MAX_CALLS:
                del self._calls[next(iter(self._calls))]
            self._queued.extend(
                (a, windows.get((a.entity, a.signal), ()), texts.get(a.signal, "")[:MAX_TEMPLATE]) for a in anomalies
            )
            self._bound()
        self._wake.set()

    def send_anomalies(self) -> bool:
        """Send what is queued, in requests of ``PER_REQUEST``; what a failed request held stays queued, first.
        Return whether the queue was emptied. Never raises."""
        if self.holder is not None:
            holder, now = self.holder(), time.monotonic()
            if holder != self._holder_seen or now - self._connected_at > RECONNECT_S:
                self._holder_seen, self._connected_at = holder, now
                self._reconnect()
        while True:
            with self._queue_lock:
                chunk = [self._queued.popleft() for _ in range(min(PER_REQUEST, len(self._queued)))]
                calls, self._calls = list(self._calls), {}
            if not chunk:
                return True
            try:
                windows = {(a.entity, a.signal): recent for a, recent, _ in chunk if recent}
                texts = {a.signal: text for a, _, text in chunk if text}
                anomalies = [a for a, _, _ in chunk]
                request = anomalies_request(anomalies, self.replica, self.service_of, windows, calls, texts)
                send = self._open().unary_unary(
                    _EXPORT_LOGS, response_deserializer=ExportLogsServiceResponse.FromString
                )
                response = send(request.SerializeToString(), metadata=self._metadata, timeout=self.timeout_s)
            except grpc.RpcError as e:  # keep them, count, and try again when woken or due, on a new connection
                self._requeue(chunk)
                self._reconnect()
                logger.warning("anomalies to %s failed: %s: %s", self.endpoint, e.code().name, e.details())
                return False
            except Exception:  # the loop's boundary, as for the edges
                self._requeue(chunk)
                logger.exception("anomalies to %s failed", self.endpoint)
                return False
            refused = int(response.partial_success.rejected_log_records)
            if refused:
                logger.warning("anomalies to %s: %d refused: %s", self.endpoint, refused,
                               response.partial_success.error_message)  # fmt: skip
                self.telemetry.gateway_anomalies.labels("refused").inc(refused)
            self.telemetry.gateway_anomalies.labels("sent").inc(len(chunk) - refused)

    def export_once(self) -> bool:
        """Send what the graph saw since the last export that got through (entities, structural edges), then its
        call edges, in requests of bounded size; return whether the aggregator took them all. Never raises."""
        try:
            with self.topology.read() as g:
                now = self.clock.now()
                seen = sightings(g, self._since)
                edges = edge_aggregates(g)
            n = SIGHTINGS_PER_REQUEST
            requests = [
                sightings_request(Sightings(seen.entities[i : i + n], []), self.replica, now)
                for i in range(0, len(seen.entities), n)
            ]
            requests += [
                sightings_request(Sightings([], seen.edges[i : i + n]), self.replica, now)
                for i in range(0, len(seen.edges), n)
            ]
            requests += [
                to_request(edges[i : i + EDGES_PER_REQUEST], self.replica, now)
                for i in range(0, len(edges), EDGES_PER_REQUEST)
            ]
            rejected, message = 0, ""
            for request in requests:
                response = self._call()(request.SerializeToString(), metadata=self._metadata, timeout=self.timeout_s)
                rejected += int(response.partial_success.rejected_data_points)
                message = response.partial_success.error_message or message
        except grpc.RpcError as e:
            self.telemetry.gateway_exports.labels("failed").inc()
            logger.warning("aggregates to %s failed: %s: %s", self.endpoint, e.code().name, e.details())
            return False
        except Exception:  # the loop's boundary: log with the traceback, count, and try again next interval
            self.telemetry.gateway_exports.labels("failed").inc()
            logger.exception("aggregates to %s failed", self.endpoint)
            return False
        if rejected:
            self.telemetry.gateway_exports.labels("partial").inc()
            logger.warning("aggregates to %s: %d points refused: %s", self.endpoint, rejected, message)
            return False
        self.telemetry.gateway_exports.labels("sent").inc()
        self._since = now
        return True

    def _requeue(self, chunk: list[tuple[Anomaly, tuple[float, ...], str]]) -> None:
        with self._queue_lock:
            self._queued.extendleft(reversed(chunk))
            self._bound()
        self.telemetry.gateway_anomalies.labels("failed").inc(len(chunk))

    def _bound(self) -> None:
        """Drop the oldest past MAX_QUEUED, counted (the queue's lock held)."""
        over = max(0, len(self._queued) - MAX_QUEUED)
        for _ in range(over):
            self._queued.popleft()
        if over:
            self.telemetry.gateway_anomalies.labels("dropped").inc(over)

    def start(self) -> None:
        if self._thread is not None or self._finished:
            return
        if self.edges:
            logger.info("exporting call edges as replica %s to %s every %gs", self.replica, self.endpoint,
                        self.interval_s)  # fmt: skip
        logger.info("forwarding anomalies as %s to %s", self.replica, self.endpoint)
        self._thread = threading.Thread(target=self._run, name="rootward-gateway-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            self.send_anomalies()  # never raises, nor does export_once: the thread lives as long as Rootward
            if time.monotonic() >= due:
                due = time.monotonic() + self.interval_s
                if self.edges:
                    self.export_once()

    def shutdown(self) -> None:
        """Stop the loop, send a last export (once, when it was started) and close the channel."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
            self.send_anomalies()
            if self.edges:
                self.export_once()
        self._finished = True
        if self._channel is not None:
            self._channel.close()
            self._channel = None
