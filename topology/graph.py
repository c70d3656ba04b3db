"""The live dependency graph: entities from resources, call edges with RED from paired spans.

Pairing follows the Collector's servicegraph connector: a CLIENT (or PRODUCER) span of service A and its child
SERVER (or CONSUMER) span of service B give the edge A -> B, whichever arrives first; the other waits in a bounded
store keyed by trace id + span id until it comes or ``pending_ttl_s`` passes. A client span whose server never
comes, but that names its peer (peer.service, db.system, messaging.system, server.address), gives an edge to a
virtual entity when it expires. Spans without kinds (such as the Nezha data set) pair with their parent, and a
change of service between them is a call.

Per batch, spans are reduced to per-edge counters first and the networkx graph is touched once per edge, never per
span. Past ``max_entities`` / ``max_edges``, new items are refused and counted; past ``max_pending``, the oldest
pending span is evicted (and counted) to make room for the newest.

Kubernetes objects from the Collector's k8sobjects receiver (log records) add ownership, placement and the
indexes that resolve a virtual peer to a real entity: a client span whose ``server.address`` is a Service DNS name
or cluster IP, or whose peer IP is a pod's, gets its edge to the service behind it (see topology/k8s.py).

Not yet here (issue 4 continues): time travel and restart (SQLite), and vectorised pairing (r_graph is 3.7).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from rootward.clock import Clock, SystemClock
from rootward.model import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    KIND_UNSPECIFIED,
    STATUS_ERROR,
    LogBatch,
    MetricBatch,
    Resource,
    SpanBatch,
)
from rootward.topology.entities import Entity, peer, service, view
from rootward.topology.k8s import WORKLOAD_KINDS, ClusterIndex, k8s_object, workload_id
from rootward.topology.queries import whole

#: The caller of root server spans: whoever is not instrumented (users, browsers, jobs), as the connector's "user".
USER = service("user", virtual=True)

#: Latency histogram bounds in seconds: the servicegraph connector's defaults, so its Grafana panels apply.
LATENCY_BUCKETS_S = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0)


@dataclass(frozen=True, slots=True)
class TopologyLimits:
    """Bounds on what senders can make the graph hold."""

    max_entities: int = 50_000
    max_edges: int = 200_000
    max_pending: int = 200_000
    pending_ttl_s: float = 10.0
    ttl_s: float = 900.0


@dataclass(slots=True)
class _Pending:
    service: str
    start: int
    end: int
    error: bool
    peer: Entity | None
    seen: float
    address: str | None = None  # server.address, for resolution through the cluster index
    peer_ip: str | None = None


@dataclass
class _EdgeDelta:
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))

    def add(self, seconds: float, error: bool) -> None:
        self.requests += 1
        self.errors += error
        self.latency_sum += seconds
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1


class _PeerColumns:
    """A batch's peer attribute columns as Python lists of str | None, read once per batch."""

    def __init__(self, batch: SpanBatch) -> None:
        strings = batch.strings

        def column(name: str) -> list[str | None]:
            return [strings[i] if i >= 0 else None for i in batch.str_attrs[name].tolist()]

        self.service = column("peer.service")
        self.address = column("server.address")
        self.ip = column("peer.ip")
        self.db = column("db.system")
        self.messaging = column("messaging.system")
        self.destination = column("messaging.destination")

    def peer(self, i: int) -> Entity | None:
        return peer(self.service[i], self.address[i], self.db[i], self.messaging[i], self.destination[i])


class TopologyGraph:
    """A :class:`~rootward.model.Consumer` that keeps the graph. Thread-safe: the pipeline writes, queries read."""

    def __init__(self, limits: TopologyLimits | None = None, clock: Clock | None = None) -> None:
        self.limits = limits or TopologyLimits()
        self.clock = clock or SystemClock()
        self.graph: nx.MultiDiGraph[str] = nx.MultiDiGraph()
        self.refused: Counter[str] = Counter()  # entities, edges, pending
        self.expired_pending = 0
        self._clients: dict[tuple[int, int, int], _Pending] = {}
        self._servers: dict[tuple[int, int, int], list[_Pending]] = {}
        self._last_expiry = 0.0
        self._edges = 0
        self.cluster = ClusterIndex()
        self._lock = threading.RLock()

    # --- entities and structural edges --------------------------------------------------------------------------

    def _touch_entity(self, entity: Entity, now: float) -> bool:
        g = self.graph
        if entity.id in g:
            data = g.nodes[entity.id]
            data["last_seen"] = now
            if data["virtual"] and not entity.virtual:
                data["virtual"] = False  # a peer that turned out to report itself
            return True
        if g.number_of_nodes() >= self.limits.max_entities:
            self.refused["entities"] += 1
            return False
        g.add_node(
            entity.id,
            kind=entity.kind,
            name=entity.name,
            namespace=entity.namespace,
            virtual=entity.virtual,
            first_seen=now,
            last_seen=now,
        )
        return True

    def _touch_edge(self, src: str, dst: str, kind: str, now: float) -> dict[str, object] | None:
        g = self.graph
        if g.has_edge(src, dst, kind):
            data: dict[str, object] = g.edges[src, dst, kind]
            data["last_seen"] = now
            return data
        if src not in g or dst not in g:
            return None
        if self._edges >= self.limits.max_edges:  # networkx counts edges in O(nodes): keep our own count
            self.refused["edges"] += 1
            return None
        g.add_edge(src, dst, key=kind, kind=kind, first_seen=now, last_seen=now)
        self._edges += 1
        return g.edges[src, dst, kind]

    def _resources(self, resources: list[Resource] | tuple[Resource, ...], now: float) -> list[str | None]:
        """Record each resource's entities and structural edges; return each resource's service id."""
        services: list[str | None] = []
        for resource in resources:
            v = view(resource)
            for entity in v.entities:
                self._touch_entity(entity, now)
            for src, dst, kind in v.edges:
                self._touch_edge(src, dst, kind, now)
            services.append(v.service.id if v.service is not None else None)
        return services

    # --- Consumer ------------------------------------------------------------------------------------------------

    def consume_traces(self, batch: SpanBatch) -> None:
        now = self.clock.now()
        with self._lock:
            services = self._resources(list(batch.resources), now)
            deltas: dict[tuple[str, str], _EdgeDelta] = {}
            user = _Pending(USER.id, 0, 0, False, None, now)
            peers = _PeerColumns(batch)
            kinds = batch.kind.tolist()
            hi = batch.trace_id[:, 0].tolist()
            lo = batch.trace_id[:, 1].tolist()
            sids = batch.span_id.tolist()
            pids = batch.parent_id.tolist()
            starts = batch.start.tolist()
            ends = batch.end.tolist()
            errors = (batch.status == STATUS_ERROR).tolist()
            res = batch.resource.tolist()
            for i, kind in enumerate(kinds):
                svc = services[res[i]]
                if svc is None:
                    continue
                entry = _Pending(svc, starts[i], ends[i], errors[i], None, now)
                if kind in (KIND_CLIENT, KIND_PRODUCER):
                    entry.peer = peers.peer(i)
                    if entry.peer is not None:
                        entry.address = peers.address[i]
                        entry.peer_ip = peers.ip[i]
                    children = self._servers.pop((hi[i], lo[i], sids[i]), None)
                    if children:
                        for child in children:
                            self._pair(entry, child, deltas)
                    else:
                        self._hold_client((hi[i], lo[i], sids[i]), entry)
                elif kind in (KIND_SERVER, KIND_CONSUMER):
                    if pids[i]:
                        self._server(entry, (hi[i], lo[i], pids[i]), deltas, keep_parent=False)
                    else:
                        # A root server span: its caller is not instrumented (a browser, a job, a load balancer).
                        self._pair(user, entry, deltas)
                elif kind == KIND_UNSPECIFIED:
                    # No span kinds: every span may be a parent, and a child pairs with its parent.
                    if pids[i]:
                        self._server(entry, (hi[i], lo[i], pids[i]), deltas, keep_parent=True)
                    key = (hi[i], lo[i], sids[i])
                    for child in self._servers.pop(key, []):
                        self._pair(entry, child, deltas)
                    self._hold_client(key, entry)
            if any(src == USER.id for src, _ in deltas):
                self._touch_entity(USER, now)
            if now - self._last_expiry >= 1.0:  # a scan of the pending store at most once a second
                self._last_expiry = now
                for entry in self._expire(now):
                    self._virtual_edge(entry, deltas)
            self._merge(deltas, now)

    def consume_metrics(self, batch: MetricBatch) -> None:
        with self._lock:
            self._resources(list(batch.resources), self.clock.now())

    def consume_logs(self, batch: LogBatch) -> None:
        now = self.clock.now()
        with self._lock:
            self._resources(list(batch.resources), now)
            for body in batch.body:
                found = k8s_object(body)
                if found is not None:
                    self.cluster.apply(*found)
                    self._k8s_entities(found[1], now)

    def _k8s_entities(self, obj: dict[str, object], now: float) -> None:
        """Entities and structural edges a Kubernetes object adds: pod placement and ownership, workload chains."""
        meta = obj.get("metadata")
        ns = str(meta.get("namespace") or "") if isinstance(meta, dict) else ""
        name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
        kind = obj.get("kind")
        if kind == "Pod":
            pid = f"pod:{ns}/{name}"
            pod = self.cluster.pods.get(pid)
            if pod is None or not self._touch_entity(Entity(pid, "pod", name, ns), now):
                return
            if pod["node"]:
                node = str(pod["node"])
                self._touch_entity(Entity(node, "node", node.removeprefix("node:")), now)
                self._touch_edge(pid, node, "runs_on", now)
            self._owned_by(pid, pod["owner"], now)
        elif kind == "Node":
            self._touch_entity(Entity(f"node:{name}", "node", name), now)
        elif kind in WORKLOAD_KINDS:
            wid = workload_id(ns, str(kind), name)
            if self._touch_entity(Entity(wid, "workload", name, ns), now):
                if wid in self.cluster.revisions:
                    self.graph.nodes[wid]["revision"] = self.cluster.revisions[wid]
                self._owned_by(wid, self.cluster.owners.get(wid), now)

    def _owned_by(self, child: str, owner: str | None, now: float) -> None:
        if owner:
            ns, _, name = owner.removeprefix("workload:").split("/", 2)
            self._touch_entity(Entity(owner, "workload", name, ns), now)
            self._touch_edge(child, owner, "owned_by", now)

    def _resolve(self, address: str | None, ip: str | None) -> str | None:
        """A real entity that ``server.address`` or the peer IP names, through the cluster index: a pod IP gives
        the pod's service; a Service DNS name or cluster IP gives the service its pods are instances of."""
        g = self.graph
        for candidate in (ip, address):
            pod = self.cluster.pod_ips.get(candidate) if candidate else None
            if pod is not None and pod in g:
                of = [v for _, v, k in g.out_edges(pod, keys=True) if k == "instance_of"]
                return of[0] if of else pod
        key = self.cluster.dns.get(address.rstrip(".")) if address else None
        if key is None:
            return None
        services = {
            v
            for pod in self.cluster.backing_pods(key)
            if pod in g
            for _, v, k in g.out_edges(pod, keys=True)
            if k == "instance_of"
        }
        if len(services) == 1:
            return services.pop()
        ns, name = key.split("/", 1)
        for guess in (f"service:{ns}/{name}", f"service:/{name}"):
            if guess in g and not g.nodes[guess]["virtual"]:
                return guess
        return None

    # --- pairing -------------------------------------------------------------------------------------------------

    def _pending_count(self) -> int:
        return len(self._clients) + len(self._servers)

    def _make_room(self) -> None:
        """When the pending store is full, evict its oldest span (dicts keep insertion order): the newest spans are
        the likeliest to pair, and a full store that refused newcomers would stop pairing until its TTL passed."""
        if self._pending_count() < self.limits.max_pending:
            return
        self.refused["pending_evicted"] += 1
        store: dict[tuple[int, int, int], Any] = (
            self._clients if len(self._clients) >= len(self._servers) else self._servers
        )
        del store[next(iter(store))]

    def _hold_client(self, key: tuple[int, int, int], entry: _Pending) -> None:
        if key not in self._clients:
            self._make_room()
        self._clients[key] = entry

    def _server(
        self,
        entry: _Pending,
        parent: tuple[int, int, int],
        deltas: dict[tuple[str, str], _EdgeDelta],
        keep_parent: bool,
    ) -> None:
        client = self._clients.get(parent) if keep_parent else self._clients.pop(parent, None)
        if client is not None:
            self._pair(client, entry, deltas)
            return
        if parent not in self._servers:
            self._make_room()
        self._servers.setdefault(parent, []).append(entry)

    @staticmethod
    def _pair(client: _Pending, server: _Pending, deltas: dict[tuple[str, str], _EdgeDelta]) -> None:
        if client.service == server.service:
            return
        client.peer = None  # paired: no virtual edge when it expires
        delta = deltas.setdefault((client.service, server.service), _EdgeDelta())
        delta.add(max(0, server.end - server.start) / 1e9, client.error or server.error)

    def _virtual_edge(self, client: _Pending, deltas: dict[tuple[str, str], _EdgeDelta]) -> None:
        if client.peer is None:
            return
        target = self._resolve(client.address, client.peer_ip)
        if target is None:
            if not self._touch_entity(client.peer, client.seen):
                return
            target = client.peer.id
        if target == client.service:
            return
        delta = deltas.setdefault((client.service, target), _EdgeDelta())
        delta.add(max(0, client.end - client.start) / 1e9, client.error)

    def _expire(self, now: float, everything: bool = False) -> list[_Pending]:
        """Drop pending spans older than the pairing TTL; return the expired client spans (for virtual edges)."""
        cutoff = float("inf") if everything else now - self.limits.pending_ttl_s
        old = [k for k, v in self._clients.items() if v.seen <= cutoff]
        expired = [self._clients.pop(k) for k in old]
        old_servers = [k for k, v in self._servers.items() if v[0].seen <= cutoff]
        for k in old_servers:
            del self._servers[k]
        self.expired_pending += len(expired) + len(old_servers)
        return expired

    def flush(self) -> None:
        """Expire every pending span now (virtual edges included): at shutdown, and when a replay ends."""
        now = self.clock.now()
        with self._lock:
            deltas: dict[tuple[str, str], _EdgeDelta] = {}
            for entry in self._expire(now, everything=True):
                self._virtual_edge(entry, deltas)
            self._merge(deltas, now)

    def _merge(self, deltas: dict[tuple[str, str], _EdgeDelta], now: float) -> None:
        """Fold one batch's per-edge counters into the graph: one networkx update per edge."""
        for (src, dst), delta in deltas.items():
            data = self._touch_edge(src, dst, "calls", now)
            if data is None:
                if src not in self.graph or dst not in self.graph:
                    self.refused["edges"] += 1  # an endpoint was refused at the entity limit
                continue
            data["requests"] = int(data.get("requests", 0)) + delta.requests  # type: ignore[call-overload]
            data["errors"] = int(data.get("errors", 0)) + delta.errors  # type: ignore[call-overload]
            data["latency_sum_s"] = float(data.get("latency_sum_s", 0.0)) + delta.latency_sum  # type: ignore[arg-type]
            buckets = np.array(delta.buckets, np.int64)
            old = data.get("latency_buckets")
            data["latency_buckets"] = buckets if old is None else buckets + np.asarray(old)

    # --- reading -------------------------------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[nx.MultiDiGraph[str]]:
        """The graph, held still (the pipeline waits) for the duration of a query."""
        with self._lock:
            yield self.graph

    def age_out(self) -> int:
        """Remove entities and edges not seen for ``ttl_s``; return how many entities went."""
        cutoff = self.clock.now() - self.limits.ttl_s
        with self._lock:
            g = self.graph
            stale_edges = [(u, v, k) for u, v, k, d in g.edges(keys=True, data=True) if d["last_seen"] < cutoff]
            g.remove_edges_from(stale_edges)
            stale = [n for n, d in g.nodes(data=True) if d["last_seen"] < cutoff]
            g.remove_nodes_from(stale)
            self._edges = g.number_of_edges()
            return len(stale)

    def snapshot(self) -> dict[str, object]:
        """The graph as JSON-ready data: entities and edges with their attributes and RED counters."""
        with self._lock:
            return {**whole(self.graph), "pending_spans": self._pending_count(), "refused": dict(self.refused)}

    def calls(self) -> list[tuple[str, str, int, int]]:
        """(source, target, requests, errors) of every call edge, sorted."""
        with self._lock:
            return sorted(
                (u, v, int(d.get("requests", 0)), int(d.get("errors", 0)))
                for u, v, k, d in self.graph.edges(keys=True, data=True)
                if k == "calls"
            )
