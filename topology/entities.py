"""Entity identity from OpenTelemetry resource attributes (semantic conventions), as in ../shared/DESIGN.md.

The same pod seen in traces, metrics and logs gets the same id, because ids are built from the resource attributes
that the Collector's k8sattributes processor sets on all three signals:

    service:<service.namespace>/<service.name>      pod:<k8s.namespace.name>/<k8s.pod.name>
    workload:<namespace>/<kind>/<name>              node:<k8s.node.name or host.name>
    namespace:<k8s.namespace.name>
    database:<db.system>/<server.address>           queue:<messaging.system>/<destination>
    host:<server.address>                           (peers that never report themselves: "virtual")
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rootward.model import MAX_NAME, Resource, SpanBatch

#: Workload kinds and the resource attribute naming each, most specific owner last (a pod's deployment wins over
#: its replicaset as the workload it belongs to, as users think of it).
WORKLOAD_KEYS = (
    ("replicaset", "k8s.replicaset.name"),
    ("job", "k8s.job.name"),
    ("cronjob", "k8s.cronjob.name"),
    ("daemonset", "k8s.daemonset.name"),
    ("statefulset", "k8s.statefulset.name"),
    ("deployment", "k8s.deployment.name"),
)


@dataclass(frozen=True, slots=True)
class Entity:
    """A node of the graph. ``virtual`` entities are peers known only from other services' client spans."""

    id: str
    kind: str
    name: str
    namespace: str = ""
    virtual: bool = False


@dataclass(frozen=True, slots=True)
class ResourceView:
    """What one resource says: the entities it names and the structural edges between them (src, dst, kind)."""

    service: Entity | None
    entities: tuple[Entity, ...]
    edges: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)


#: The longest entity id taken: a workload's (namespace, kind and name, each at most MAX_NAME) and its prefix. Ids
#: from telemetry are cut before (rootward.model.Resource.name); a Kubernetes object's names in a forged log body
#: are not, and stop at the graph (TopologyGraph refuses longer ones).
MAX_ID = 3 * MAX_NAME + 32


def service(name: str, namespace: str = "", virtual: bool = False) -> Entity:
    return Entity(f"service:{namespace}/{name}", "service", name, namespace, virtual)


def view(resource: Resource) -> ResourceView:
    """The entities and structural edges (instance_of, owned_by, runs_on, in) of ``resource``."""
    attrs = resource.attributes
    ns = resource.name("k8s.namespace.name")
    entities: list[Entity] = []
    edges: list[tuple[str, str, str]] = []
    svc = None
    if attrs.get("service.name") is not None:
        svc = service(resource.name("service.name"), resource.name("service.namespace"))
        entities.append(svc)
    namespace = Entity(f"namespace:{ns}", "namespace", ns) if ns else None
    if namespace:
        entities.append(namespace)
    pod_name = resource.name("k8s.pod.name")
    pod = Entity(f"pod:{ns}/{pod_name}", "pod", pod_name, ns) if pod_name else None
    node_name = resource.name("k8s.node.name") or resource.name("host.name")
    node = Entity(f"node:{node_name}", "node", node_name) if node_name else None
    workload = None
    for kind, key in WORKLOAD_KEYS:
        name = resource.name(key)
        if name:
            workload = Entity(f"workload:{ns}/{kind}/{name}", "workload", name, ns)
    for entity in (pod, node, workload):
        if entity is not None:
            entities.append(entity)
    if pod is not None:
        if svc is not None:
            edges.append((pod.id, svc.id, "instance_of"))
        if workload is not None:
            edges.append((pod.id, workload.id, "owned_by"))
        if node is not None and pod_name:
            edges.append((pod.id, node.id, "runs_on"))
        if namespace is not None:
            edges.append((pod.id, namespace.id, "in"))
    elif svc is not None and node is not None:
        edges.append((svc.id, node.id, "runs_on"))
    if workload is not None and namespace is not None:
        edges.append((workload.id, namespace.id, "in"))
    return ResourceView(svc, tuple(entities), tuple(edges))


def peer(
    peer_service: str | None,
    server_address: str | None,
    db_system: str | None,
    messaging_system: str | None,
    destination: str | None,
) -> Entity | None:
    """The virtual entity a client span without a server span calls, from its peer attributes, or None.

    Preference follows the servicegraph connector's ``virtual_node_peer_attributes`` (peer.service, then
    db.name-like identities, then server.address), with kinds of our own: a database, a queue or a host.
    """
    peer_service, server_address, db_system, messaging_system, destination = (
        None if v is None else v[:MAX_NAME]
        for v in (peer_service, server_address, db_system, messaging_system, destination)
    )  # a span's words, cut as a resource's are (rootward.model.Resource.name)
    if peer_service:
        return service(peer_service, virtual=True)
    if db_system:
        address = server_address or "unknown"
        return Entity(f"database:{db_system}/{address}", "database", address, virtual=True)
    if messaging_system:
        dest = destination or "unknown"
        return Entity(f"queue:{messaging_system}/{dest}", "queue", dest, virtual=True)
    if server_address:
        return Entity(f"host:{server_address}", "host", server_address, virtual=True)
    return None


#: The span attributes that name a client span's peer, in the order :func:`span_peers` reads them.
PEER_ATTRIBUTES = (
    "peer.service",
    "server.address",
    "peer.ip",
    "db.system",
    "messaging.system",
    "messaging.destination",
)

_MIX = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0x27D4EB2F165667C5,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
    ],
    np.uint64,
)

#: A client span's peer: the virtual entity, and server.address and the peer IP to resolve it through the cluster.
Peer = tuple[Entity, str | None, str | None]


def span_peers(
    batch: SpanBatch, rows: np.ndarray, wanted: np.ndarray, known: dict[tuple[str | None, ...], Peer | None]
) -> np.ndarray:
    """The peer of each of ``rows`` where ``wanted`` (unpaired client spans) as an object array of Peer or None,
    looked up once per distinct combination of peer attributes in the batch, in ``known`` (kept across batches:
    the same peers recur)."""
    out = np.empty(len(rows), object)
    wanted = np.flatnonzero(wanted)
    if not len(wanted):
        return out
    stacked = np.stack([batch.str_attrs[name][rows[wanted]] for name in PEER_ATTRIBUTES], axis=1)
    has = (stacked >= 0).any(axis=1)
    named = wanted[has]
    if len(named):
        rows_named = stacked[has]
        # Distinct attribute combinations: unique over one hash per row (a 1-d sort), checked exactly; a collision
        # (never seen, but the ids come from senders) falls back to the slower row-wise unique.
        _, first, inverse = np.unique((rows_named + 1).astype(np.uint64) @ _MIX, return_index=True, return_inverse=True)
        combos = rows_named[first]
        if not (combos[inverse] == rows_named).all():
            combos, inverse = np.unique(rows_named, axis=0, return_inverse=True)
        strings = batch.strings
        found = np.empty(len(combos), object)
        for j, combo in enumerate(combos.tolist()):
            values = tuple([strings[i] if i >= 0 else None for i in combo])
            if values not in known:
                if len(known) >= 10_000:  # bounded: senders choose addresses
                    known.clear()
                service_, address, ip, db, messaging, destination = values
                entity = peer(service_, address, db, messaging, destination)
                known[values] = (entity, address, ip) if entity is not None else None
            found[j] = known[values]
        out[named] = found[inverse.reshape(-1)]
    return out
