"""The live dependency graph: entities from resources, call edges with RED from paired spans.

Pairing follows the Collector's servicegraph connector: a CLIENT (or PRODUCER) span of service A and its child
SERVER (or CONSUMER) span of service B give the edge A -> B, whichever arrives first; the other waits in a bounded
store keyed by trace id + span id until it comes or ``pending_ttl_s`` passes. A client span whose server never
comes, but that names its peer (peer.service, db.system, messaging.system, server.address), gives an edge to a
virtual entity when it expires. Spans without kinds (such as the Nezha data set) pair with their parent, and a
change of service between them is a call.

Per batch, pairing and the reduction to per-edge RED counters are whole-array numpy work over the batch's columns
and the pending stores (topology/pairing.py: numpy columns in ring buffers, a Cython index from key to row; the
reduction in topology/red.py, the peers of client spans in topology/entities.py); the networkx
graph is then touched once per edge, never per span. Past ``max_entities`` / ``max_edges``, new items are refused
and counted; past ``max_pending``, the oldest pending spans are evicted (and counted) to make room for the newest.

Kubernetes objects from the Collector's k8sobjects receiver (log records) add ownership, placement and the
indexes that resolve a virtual peer to a real entity: a client span whose ``server.address`` is a Service DNS name
or cluster IP, or whose peer IP is a pod's, gets its edge to the service behind it (see topology/k8s.py). A peer that
stays virtual (an uninstrumented database behind a Service) gets ``backed_by`` edges to the Service's pods.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
from rootward.topology import relations
from rootward.topology.entities import MAX_ID, Entity, Peer, ResourceView, service, span_peers, view
from rootward.topology.k8s import WORKLOAD_KINDS, ClusterIndex, k8s_object, workload_id
from rootward.topology.pairing import Pending, span_keys
from rootward.topology.queries import whole
from rootward.topology.red import Calls, EdgeDelta
from rootward.topology.relations import MAX_BACKING_PODS

#: The caller of root server spans: whoever is not instrumented (users, browsers, jobs), as the connector's "user".
USER = service("user", virtual=True)

#: Container names a pod entity keeps (senders choose them).
MAX_CONTAINERS = 32


@dataclass(frozen=True, slots=True)
class TopologyLimits:
    """Bounds on what senders can make the graph hold."""

    max_entities: int = 50_000
    max_edges: int = 200_000
    max_pending: int = 200_000
    pending_ttl_s: float = 10.0
    ttl_s: float = 900.0


#: What each span kind does in pairing, indexed by the kind column (int8; -1, a value out of range, reads the last).
_OTHER, _CLIENT, _SERVER, _KINDLESS = 0, 1, 2, 3
_ROLE = np.zeros(129, np.int8)
_ROLE[[KIND_CLIENT, KIND_PRODUCER]] = _CLIENT
_ROLE[[KIND_SERVER, KIND_CONSUMER]] = _SERVER
_ROLE[KIND_UNSPECIFIED] = _KINDLESS


class TopologyGraph:
    """A :class:`~rootward.model.Consumer` that keeps the graph. Thread-safe: the pipeline writes, queries read."""

    def __init__(self, limits: TopologyLimits | None = None, clock: Clock | None = None) -> None:
        self.limits = limits or TopologyLimits()
        self.clock = clock or SystemClock()
        self.graph: nx.MultiDiGraph[str] = nx.MultiDiGraph()
        self.refused: Counter[str] = Counter()  # entities, edges, pending_evicted
        self.expired_pending = 0
        # Client and kind-less spans (possible parents), kept after pairing for retried children until the TTL.
        # role: 1 for CLIENT/PRODUCER (expected to pair; may give a virtual edge), 0 for spans without a kind.
        self._clients = Pending(
            {"svc": np.int32, "error": np.bool_, "seconds": np.float64, "role": np.int8, "peer": object}
        )
        # Server spans whose parent has not come yet, chained per parent.
        self._servers = Pending({"svc": np.int32, "error": np.bool_, "seconds": np.float64}, chained=True)
        # Entity ids that calls refer to by index (the stores and per-batch arrays hold indexes, not strings).
        self._names: list[str] = [USER.id]
        self._name_index: dict[str, int] = {USER.id: 0}
        # Each resource's view and service name index, by identity (the decoder reuses Resource objects).
        self._views: dict[int, tuple[Resource, ResourceView, int, float]] = {}
        self._known_peers: dict[tuple[str | None, ...], Peer | None] = {}
        self._last_expiry = 0.0
        self._edges = 0
        self.cluster = ClusterIndex()
        self._lock = threading.RLock()
        #: Told each batch's per-edge deltas (caller, callee) after they are merged, outside the graph's lock (the
        #: app hands the network gaps to the detector this way: topology and detector stay independent).
        self.on_calls: Callable[[dict[tuple[str, str], EdgeDelta]], None] | None = None

    # --- entities and structural edges --------------------------------------------------------------------------
    def _touch_entity(self, entity: Entity, now: float) -> bool:
        g = self.graph
        if entity.id in g:
            data = g.nodes[entity.id]
            data["last_seen"] = now
            if data["virtual"] and not entity.virtual:
                data["virtual"] = False  # a peer that turned out to report itself
            return True
        if g.number_of_nodes() >= self.limits.max_entities or len(entity.id) > MAX_ID:
            self.refused["entities"] += 1  # past the limit, or named by a sender past any real name (MAX_ID)
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

    def _name(self, entity_id: str) -> int:
        index = self._name_index.get(entity_id)
        if index is None:
            index = self._name_index[entity_id] = len(self._names)
            self._names.append(entity_id)
        return index

    def _resources(self, resources: list[Resource] | tuple[Resource, ...], now: float) -> list[int]:
        """Record each resource's entities and structural edges (at most once a second per resource); return each
        resource's service as a name index, -1 when it names none or its service was refused."""
        services = []
        for resource in resources:
            cached = self._views.get(id(resource))
            if cached is not None and cached[0] is resource and now - cached[3] < 1.0:
                services.append(cached[2])
                continue
            v = view(resource)
            for entity in v.entities:
                self._touch_entity(entity, now)
            for src, dst, kind in v.edges:
                self._touch_edge(src, dst, kind, now)
            self._container(resource)
            svc = self._name(v.service.id) if v.service is not None and v.service.id in self.graph else -1
            if len(self._views) >= 4096:
                self._views.clear()
            self._views[id(resource)] = (resource, v, svc, now)
            services.append(svc)
        return services

    def _container(self, resource: Resource) -> None:
        """A container is an attribute of its pod (``containers``: the names seen, at most MAX_CONTAINERS)."""
        container, pod = resource.get("k8s.container.name"), resource.pod_id
        if container and pod is not None and pod in self.graph:
            names: list[str] = self.graph.nodes[pod].setdefault("containers", [])
            if container not in names and len(names) < MAX_CONTAINERS:
                names.append(container)

    # --- Consumer ------------------------------------------------------------------------------------------------

    def consume_traces(self, batch: SpanBatch) -> None:
        now = self.clock.now()
        with self._lock:
            services = np.array(self._resources(list(batch.resources), now), np.int32)
            calls = Calls()
            if len(batch) and len(services):
                self._pair(batch, services[batch.resource], calls, now)
            deltas = self._settle(calls, now)
        self._tell(deltas)

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

    # --- pairing -------------------------------------------------------------------------------------------------

    def _pair(self, batch: SpanBatch, svc: np.ndarray, calls: Calls, now: float) -> None:
        """Pair a batch's spans with each other and with the pending stores; hold what is left.

        1. client (and kind-less) spans take the server spans waiting for them;
        2. they are held, paired or not (a retried server child may still come);
        3. server (and kind-less) spans with a parent look their parent up among the held clients, this batch's
           included; the unpaired ones wait. Root server spans are called by USER.
        """
        parent = batch.parent_id
        role = _ROLE[batch.kind]  # int8 indexes: -1 (a kind out of range) is the last entry, "other"
        role[svc < 0] = _OTHER
        client = role == _CLIENT
        server = role == _SERVER
        kindless = role == _KINDLESS
        hi, lo = batch.trace_id[:, 0], batch.trace_id[:, 1]
        seconds = np.maximum(batch.end - batch.start, 0) / 1e9
        error = batch.status == STATUS_ERROR

        ci = np.flatnonzero(client | kindless)
        c_hi, c_lo, c_id = hi[ci], lo[ci], batch.span_id[ci]
        c_key = span_keys(c_hi, c_lo, c_id)
        paired = np.zeros(len(ci), np.bool_)
        if len(ci) and len(self._servers):
            at, taken = self._servers.take(self._servers.lookup(c_key, c_hi, c_lo, c_id))
            paired[at] = True
            s = self._servers.columns
            calls.add(
                svc[ci[at]], s["svc"][taken], s["seconds"][taken], error[ci[at]] | s["error"][taken], seconds[ci[at]]
            )
        role = client[ci].view(np.int8)
        values = {
            "key": c_key,
            "hi": c_hi,
            "lo": c_lo,
            "id": c_id,
            "done": paired,
            "svc": svc[ci],
            "error": error[ci],
            "seconds": seconds[ci],
            "role": role,
            "peer": span_peers(batch, ci, role & ~paired, self._known_peers),
        }
        self._hold(self._clients, values, now)

        si = np.flatnonzero((server | kindless) & (parent != 0))
        s_hi, s_lo, s_parent = hi[si], lo[si], parent[si]
        s_key = span_keys(s_hi, s_lo, s_parent)
        rows = self._clients.lookup(s_key, s_hi, s_lo, s_parent) if len(si) else np.zeros(0, np.int64)
        found = rows >= 0
        hit, matched = rows[found], si[found]
        c = self._clients.columns
        c["done"][hit] = True
        calls.add(c["svc"][hit], svc[matched], seconds[matched], c["error"][hit] | error[matched], c["seconds"][hit])
        rest = ~found
        waiting = si[rest]
        self._hold(
            self._servers,
            {
                "key": s_key[rest],
                "hi": s_hi[rest],
                "lo": s_lo[rest],
                "id": s_parent[rest],
                "done": np.zeros(len(waiting), np.bool_),
                "svc": svc[waiting],
                "error": error[waiting],
                "seconds": seconds[waiting],
            },
            now,
        )

        roots = np.flatnonzero(server & (parent == 0))
        if len(roots):  # their callers are not instrumented: browsers, jobs, load balancers
            self._touch_entity(USER, now)
            calls.add(np.zeros(len(roots), np.int32), svc[roots], seconds[roots], error[roots])

    def _pending_count(self) -> int:
        """Spans still waiting for their partner (paired client spans held for retries do not count)."""
        c, rows = self._clients.columns, self._clients.live()
        clients = int((~c["done"][rows] & (c["role"][rows] == 1)).sum())
        return clients + int((~self._servers.columns["done"][self._servers.live()]).sum())

    def _hold(self, store: Pending, values: dict[str, np.ndarray], now: float) -> None:
        """Add rows to a store. When both stores together would pass ``max_pending``, the oldest rows go first
        (from the fuller store, counted): the newest spans are the likeliest to pair, and a full store that refused
        newcomers would stop pairing until its TTL passed."""
        limit = self.limits.max_pending
        n = len(values["key"])
        if n > limit:
            self.refused["pending_evicted"] += n - limit
            values = {name: column[n - limit :] for name, column in values.items()}
            n = limit
        excess = len(self._clients) + len(self._servers) + n - limit
        if excess > 0:
            fuller, other = sorted((self._clients, self._servers), key=len, reverse=True)
            first = min(excess, len(fuller))
            fuller.drop(first)
            other.drop(excess - first)
            self.refused["pending_evicted"] += excess
        store.append(values, now)

    def _expire(self, cutoff: float, calls: Calls, now: float) -> None:
        """Drop pending spans that arrived at or before ``cutoff``. An expired client span that never paired but
        names its peer gives an edge to that peer: a real entity when the cluster index resolves it, else virtual."""
        gone = self._clients.expire(cutoff)
        c = self._clients.columns
        unpaired = gone[~c["done"][gone] & (c["role"][gone] == 1)]
        self.expired_pending += len(unpaired)
        peers = c["peer"][unpaired]
        named = peers != None  # noqa: E711 (elementwise, on an object array)
        rows, peers = unpaired[named], peers[named]
        if len(rows):  # resolved once per distinct peer object (the rows of a batch share theirs)
            _, first, inverse = np.unique(
                np.fromiter(map(id, peers), np.int64, len(peers)), return_index=True, return_inverse=True
            )
            targets = np.array([self._target(p, now) for p in peers[first].tolist()], np.int32)
            calls.add(c["svc"][rows], targets[inverse], c["seconds"][rows], c["error"][rows])
        servers = self._servers.expire(cutoff)
        self.expired_pending += int((~self._servers.columns["done"][servers]).sum())

    def _target(self, p: Peer, now: float) -> int:
        """The name index of the entity a client span's peer is (-1: refused at the entity limit)."""
        entity, address, ip = p
        target = self.cluster.resolve(self.graph, address, ip)
        if target is not None:
            return self._name(target)
        if not self._touch_entity(entity, now):
            return -1
        # A peer that does not report itself behind a Service (a database, a broker): link it to the pods that back
        # the Service, so their node and workload are one hop away for diagnosis.
        key = self.cluster.dns.get(address.rstrip(".")) if address else None
        if key is not None:
            for pod in sorted(self.cluster.backing_pods(key))[:MAX_BACKING_PODS]:
                self._touch_edge(entity.id, pod, "backed_by", now)
        return self._name(entity.id)

    def expire_pending(self) -> None:
        """Expire the pending spans older than ``pending_ttl_s``, now: the App's ticker calls it every window, so a
        caller that went quiet still gets the edges of its unpaired calls (before, only the next trace batch expired
        them, and a quiet node's graph stayed as it was)."""
        with self._lock:
            deltas = self._settle(Calls(), self.clock.now())
        self._tell(deltas)

    def _settle(self, calls: Calls, now: float) -> dict[tuple[str, str], EdgeDelta]:
        """Add the expired pending spans' calls (expiry at most once a second), merge ``calls`` into the graph, and
        return what was merged (under the lock)."""
        if now - self._last_expiry >= 1.0:
            self._last_expiry = now
            self._expire(now - self.limits.pending_ttl_s, calls, now)
        deltas = calls.reduce(self._names)
        self._merge(deltas, now)
        return deltas

    def _tell(self, deltas: dict[tuple[str, str], EdgeDelta]) -> None:
        """Hand merged calls to ``on_calls`` (the detector's edges), outside the lock."""
        if deltas and self.on_calls is not None:
            self.on_calls(deltas)

    def flush(self) -> None:
        """Expire every pending span now (virtual edges included): at shutdown, and when a replay ends."""
        now = self.clock.now()
        with self._lock:
            calls = Calls()
            self._expire(float("inf"), calls, now)
            self._merge(calls.reduce(self._names), now)

    def learn_instance(self, pod: Entity, service: Entity) -> str | None:
        """Another replica says ``pod`` is an instance of ``service`` (rootward/forwarded.py): recorded when the
        graph knows no service of the pod; an entity already in the graph is left as it is (a virtual service stays
        virtual). Return the pod's service as the graph has it now (None: the graph's limits refused it)."""
        now = self.clock.now()
        with self._lock:
            g = self.graph
            if pod.id in g:
                known = [v for _, v, k in g.out_edges(pod.id, keys=True) if k == "instance_of"]
                if known:
                    return min(known)
            for entity in (pod, service):
                if entity.id not in g and not self._touch_entity(entity, now):
                    return None
            return service.id if self._touch_edge(pod.id, service.id, "instance_of", now) is not None else None

    def calls_around(self, entities: Iterable[str], limit: int) -> list[tuple[Entity, Entity]]:
        """The call edges (caller, callee) into and out of ``entities``, at most ``limit``, with their ends."""
        found: dict[tuple[str, str], None] = {}
        with self._lock:
            g = self.graph
            for entity in entities:
                if entity not in g:
                    continue
                for u, v, k in [*g.in_edges(entity, keys=True), *g.out_edges(entity, keys=True)]:
                    if k == "calls" and len(found) < limit:
                        found[(u, v)] = None
            return [(self._entity(u), self._entity(v)) for u, v in found]

    def _entity(self, entity: str) -> Entity:
        data = self.graph.nodes[entity]
        return Entity(entity, data["kind"], data["name"], data["namespace"], bool(data["virtual"]))

    def _learn_end(self, end: Entity, now: float) -> bool:
        """Keep a known end alive as it is; make an unknown one as the sender had it, virtual unless it is a service
        or a pod that reports itself, and never the user (USER is virtual wherever it is)."""
        if end.id in self.graph:
            self.graph.nodes[end.id]["last_seen"] = now
            return True
        virtual = end.virtual or end.kind not in ("service", "pod") or end.id == USER.id
        return self._touch_entity(Entity(end.id, end.kind, end.name, end.namespace, virtual), now)

    def learn_calls(self, edges: Iterable[tuple[Entity, Entity]]) -> int:
        """Call edges another Rootward saw (rootward/forwarded.py: a sidecar's calls around what it found), as
        structure only: no count is added (this graph's counts, and the servicegraph metrics built from them, stay
        its own), an end this graph knows keeps its attributes and is only kept alive, an end it does not know is
        made from the sender's. Return how many edges were recorded."""
        now = self.clock.now()
        done = 0
        with self._lock:
            for src, dst in edges:
                if self._learn_end(src, now) and self._learn_end(dst, now):  # a refused caller makes no callee
                    done += self._touch_edge(src.id, dst.id, "calls", now) is not None
        return done

    def merge_calls(
        self,
        deltas: dict[tuple[str, str], EdgeDelta],
        entities: Iterable[Entity],
        edges: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """Fold what another replica saw (topology/merge.py) into the graph as seen now: ``entities``, then the
        structural ``edges`` (source, target, kind) between them, then the call edges' RED ``deltas``."""
        now = self.clock.now()
        with self._lock:
            for entity in entities:
                self._touch_entity(entity, now)
            for src, dst, kind in edges:
                self._touch_edge(src, dst, kind, now)
            self._merge(deltas, now)

    def _merge(self, deltas: dict[tuple[str, str], EdgeDelta], now: float) -> None:
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
            old = data.get("latency_buckets")
            data["latency_buckets"] = delta.buckets.copy() if old is None else delta.buckets + np.asarray(old)

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
            if len(self._names) > 2 * g.number_of_nodes() + 1024:
                self._compact_names()
            return len(stale)

    def _compact_names(self) -> None:
        """Forget the name indexes of entities that are gone (the table would otherwise grow with every name ever
        seen); renumber the pending stores' columns. Rows of gone services get -1 and pair into nothing."""
        keep = [name for name in self._names if name == USER.id or name in self.graph]
        index = {name: i for i, name in enumerate(keep)}
        renumber = np.array([index.get(name, -1) for name in self._names] + [-1], np.int32)  # -1 reads the last
        for store in (self._clients, self._servers):
            store.columns["svc"][:] = renumber[store.columns["svc"]]
        self._names, self._name_index = keep, index
        self._views.clear()

    def snapshot(self) -> dict[str, object]:
        """The graph as JSON-ready data: entities and edges with their attributes and RED counters."""
        with self._lock:
            return {**whole(self.graph), "pending_spans": self._pending_count(), "refused": dict(self.refused)}

    # --- what incidents and actions ask (topology/relations.py; the detector's Topology protocol) -----------------

    def related(self, a: str, b: str) -> bool:
        with self._lock:
            return relations.related(self.graph, a, b)

    def neighbourhood(self, entity: str) -> tuple[frozenset[str], frozenset[str]]:
        with self._lock:
            return relations.neighbourhood(self.graph, entity)

    def depends_on(self, a: str, b: str) -> bool:
        with self._lock:
            return relations.depends_on(self.graph, a, b)

    def calls_among(self, entities: Iterable[str]) -> list[tuple[str, str]]:
        with self._lock:
            return relations.calls_among(self.graph, entities)

    def a_pod_of(self, entity: str) -> str | None:
        """A pod entity id of a service (the first by name), or the pod itself."""
        with self._lock:
            pods = relations.pods(self.graph, entity)
            return pods[0] if pods else None

    def workload_of(self, entity: str) -> tuple[str, str, str] | None:
        with self._lock:
            return relations.workload_of(self.graph, entity)

    def calls(self) -> list[tuple[str, str, int, int]]:
        """(source, target, requests, errors) of every call edge, sorted."""
        with self._lock:
            return sorted(
                (u, v, int(d.get("requests", 0)), int(d.get("errors", 0)))
                for u, v, k, d in self.graph.edges(keys=True, data=True)
                if k == "calls"
            )

    # --- restart -------------------------------------------------------------------------------------------------

    def restore(self, graph: nx.MultiDiGraph[str]) -> None:
        """Replace the entities and edges with ``graph``'s (a checkpoint read back at start, see
        topology/history.py), attributes and RED counters included. Everything is loaded even past the limits;
        new items are then refused until ageing brings the graph back under them. Pending spans are kept."""
        with self._lock:
            g = self.graph
            g.clear()
            g.add_nodes_from(graph.nodes(data=True))
            for u, v, k, d in graph.edges(keys=True, data=True):
                g.add_edge(u, v, key=k, **d)
            self._edges = g.number_of_edges()
