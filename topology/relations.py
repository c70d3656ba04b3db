"""What incidents and actions ask of the graph about two entities or one: the services an entity stands for, whether
two are related or one depends on the other, an entity's neighbourhood, a service's pods and the workload running
them. Functions of the networkx graph; :class:`~rootward.topology.graph.TopologyGraph` answers them under its lock
(the detector's ``Topology`` protocol, the actions' target lookups)."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

#: ``backed_by`` edges a virtual peer gets at most (the pods of its Service, in name order); a workload's pods read
#: as its services are as many.
MAX_BACKING_PODS = 50


def services_of(g: nx.MultiDiGraph[str], entity: str) -> set[str]:
    """The entity itself, and for a pod (or a workload's pods) the services it is an instance of."""
    found = {entity}
    if entity not in g:
        return found
    pods = [entity] if g.nodes[entity]["kind"] == "pod" else []
    if g.nodes[entity]["kind"] == "workload":  # its pods, directly or through its ReplicaSets
        owned = [u for u, _, k in g.in_edges(entity, keys=True) if k == "owned_by"]
        owned += [u for o in owned for u, _, k in g.in_edges(o, keys=True) if k == "owned_by"]
        pods = [o for o in owned if g.nodes[o]["kind"] == "pod"][:MAX_BACKING_PODS]
        found |= set(pods)
    for pod in pods:
        found |= {v for _, v, k in g.out_edges(pod, keys=True) if k == "instance_of"}
    return found


def calls_among(g: nx.MultiDiGraph[str], entities: Iterable[str]) -> list[tuple[str, str]]:
    """The call edges (caller, callee) between the services the entities stand for (pods read as their services),
    sorted: how an incident's entities connect."""
    services: set[str] = set()
    for entity in entities:
        services |= services_of(g, entity)
    return sorted(
        (u, v)
        for u in services
        if u in g
        for _, v, k in g.out_edges(u, keys=True)
        if k == "calls" and v in services and v != u
    )


def related(g: nx.MultiDiGraph[str], a: str, b: str) -> bool:
    """Whether two entities are the same, a pod and its service, or one hop apart over ``calls``, ``instance_of`` or
    ``backed_by`` (either direction, pods read as their services)."""
    if a == b:
        return True
    mine, theirs = services_of(g, a), services_of(g, b)
    if mine & theirs:
        return True
    return any(g.has_edge(x, y) or g.has_edge(y, x) for x in mine if x in g for y in theirs if y in g)


def neighbourhood(g: nx.MultiDiGraph[str], entity: str) -> tuple[frozenset[str], frozenset[str]]:
    """(the entity and, for a pod or workload, its pods' services; those and every node one hop from them, in either
    direction): :func:`related` is ``b``'s first set meeting ``a``'s second, answered from two lookups."""
    own = services_of(g, entity)
    near = set(own)
    for x in own:
        if x in g:
            near.update(g.predecessors(x))
            near.update(g.successors(x))
    return frozenset(own), frozenset(near)


def depends_on(g: nx.MultiDiGraph[str], a: str, b: str) -> bool:
    """Whether ``a`` needs ``b`` directly: calls it (or its service, for a pod), is the service of pod ``b``, or is a
    peer backed by pod ``b``."""
    if a not in g:
        return False
    for target in services_of(g, b):
        if target in g and any(k in ("calls", "backed_by") for k in g.get_edge_data(a, target, default={})):
            return True
    return b in g and g.has_edge(b, a, "instance_of")


def pods(g: nx.MultiDiGraph[str], entity: str) -> list[str]:
    """The pod itself, or a service's pods by name."""
    if entity not in g:
        return []
    if g.nodes[entity]["kind"] == "pod":
        return [entity]
    return sorted(u for u, _, k in g.in_edges(entity, keys=True) if k == "instance_of")


def workload_of(g: nx.MultiDiGraph[str], entity: str) -> tuple[str, str, str] | None:
    """(namespace, Deployment | StatefulSet, name) running a service's or a pod's pods (through ReplicaSets), or None
    when the graph does not know one."""
    for pod in pods(g, entity):
        owners = [v for _, v, k in g.out_edges(pod, keys=True) if k == "owned_by"]
        owners += [v for o in owners for _, v, k in g.out_edges(o, keys=True) if k == "owned_by"]
        for owner in owners:
            ns, kind, name = owner.removeprefix("workload:").split("/", 2)
            if kind in ("deployment", "statefulset"):
                return ns, "Deployment" if kind == "deployment" else "StatefulSet", name
    return None
