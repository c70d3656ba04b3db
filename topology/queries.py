"""Questions asked of the graph: an entity and its neighbours, the subgraph around it, paths between two entities,
the blast radius up or down the call graph, what changed between two graphs, and the graph as JSON, Graphviz DOT or
Cytoscape JSON.

Functions take the networkx graph (the live one held under :meth:`TopologyGraph.read`, or one rebuilt from history
by :meth:`History.graph_at`) and return JSON-ready data; they raise :class:`QueryError` (bad parameters, HTTP 400)
or :class:`UnknownEntity` (HTTP 404).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np

Direction = Literal["in", "out", "both"]
EDGE_KINDS = frozenset({"calls", "instance_of", "owned_by", "runs_on", "in", "backed_by"})


class QueryError(ValueError):
    """A bad query parameter; the message says which and why."""


class UnknownEntity(KeyError):
    """No entity with that id."""

    def __str__(self) -> str:
        return f"no entity {self.args[0]!r}"


if TYPE_CHECKING:
    Graph = nx.MultiDiGraph[str]
else:
    Graph = nx.MultiDiGraph


def _entity(g: Graph, entity_id: str) -> dict[str, Any]:
    if entity_id not in g:
        raise UnknownEntity(entity_id)
    return {"id": entity_id, **g.nodes[entity_id]}


def _edge(u: str, v: str, data: dict[str, Any]) -> dict[str, Any]:
    item = {"source": u, "target": v, **data}
    if "latency_buckets" in item:
        item["latency_buckets"] = np.asarray(item["latency_buckets"]).tolist()
    return item


def edge_kinds(raw: str | None) -> frozenset[str]:
    """Parse ``calls,owned_by``; all kinds when empty. Raises QueryError for an unknown kind."""
    if not raw:
        return EDGE_KINDS
    kinds = frozenset(k.strip() for k in raw.split(",") if k.strip())
    unknown = kinds - EDGE_KINDS
    if unknown:
        raise QueryError(f"unknown edge kind(s) {sorted(unknown)}; use {sorted(EDGE_KINDS)}")
    return kinds


def parse_time(raw: str, name: str = "at") -> float:
    """Unix seconds from an RFC 3339 time (``2024-05-01T12:00:00Z``, ``...+02:00``) or unix seconds
    (``1714564800.5``). Raises QueryError for anything else, a time without a UTC offset included."""
    text = raw.strip()
    problem = "an RFC 3339 time such as 2024-05-01T12:00:00Z, or unix seconds"
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise QueryError(f"{name} must be {problem}, not {raw!r}") from None
        if parsed.tzinfo is None:
            raise QueryError(f"{name} needs a UTC offset (Z or +hh:mm), not {raw!r}") from None
        return parsed.timestamp()
    if not math.isfinite(value):
        raise QueryError(f"{name} must be {problem}, not {raw!r}")
    return value


def format_time(t: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2024-05-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def whole(g: Graph, namespace: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """Every entity (optionally of one namespace and/or kind) and the edges among them."""
    keep = {
        n
        for n, d in g.nodes(data=True)
        if (namespace is None or d.get("namespace") == namespace) and (kind is None or d.get("kind") == kind)
    }
    return _payload(g, keep, EDGE_KINDS)


def _payload(g: Graph, nodes: Iterable[str], kinds: frozenset[str]) -> dict[str, Any]:
    keep = set(nodes)
    return {
        "entities": [{"id": n, **g.nodes[n]} for n in sorted(keep)],
        "edges": [
            _edge(u, v, d)
            for n in sorted(keep)
            for u, v, k, d in g.out_edges(n, keys=True, data=True)
            if v in keep and k in kinds
        ],
    }


def entity(g: Graph, entity_id: str) -> dict[str, Any]:
    """The entity with its incoming and outgoing edges."""
    out = _entity(g, entity_id)
    out["outgoing"] = [_edge(u, v, d) for u, v, d in g.out_edges(entity_id, data=True)]
    out["incoming"] = [_edge(u, v, d) for u, v, d in g.in_edges(entity_id, data=True)]
    return out


def subgraph(
    g: Graph, entity_id: str, depth: int = 2, direction: Direction = "both", kinds: frozenset[str] = EDGE_KINDS
) -> dict[str, Any]:
    """Entities within ``depth`` hops of ``entity_id`` along edges of ``kinds`` in ``direction``, and their edges."""
    _entity(g, entity_id)
    seen = _around(g, entity_id, depth, direction, kinds)
    return {"root": entity_id, "depth": depth, "direction": direction, **_payload(g, seen, kinds)}


#: The most entities an incident's subgraph holds: the incident's own first, then their neighbours by id.
MAX_INCIDENT_ENTITIES = 200


def incident_subgraph(
    g: Graph, entities: Iterable[str], depth: int = 1, limit: int = MAX_INCIDENT_ENTITIES
) -> dict[str, Any]:
    """The incident's entities that the graph knows and what lies within ``depth`` hops of them (either direction,
    every edge kind), at most ``limit`` entities: the nearest first, services before pods and the rest at each hop
    (a service's hundreds of pods must not push its callers out); ``truncated`` says when more were near.
    ``unknown`` lists the incident's entities the graph does not hold (aged out, or never seen in a trace)."""
    wanted = sorted(set(entities))
    hop = _hops(g, [e for e in wanted if e in g], depth, "both", EDGE_KINDS)
    ranked = sorted(hop, key=lambda n: (hop[n], g.nodes[n].get("kind") != "service", n))
    return {
        "depth": depth,
        **_payload(g, ranked[:limit], EDGE_KINDS),
        "unknown": [e for e in wanted if e not in g],
        "truncated": len(ranked) > limit,
    }


def _check_hops(depth: int, direction: str) -> None:
    if not 0 <= depth <= 10:
        raise QueryError(f"depth must be between 0 and 10, not {depth}")
    if direction not in ("in", "out", "both"):
        raise QueryError(f"direction must be in, out or both, not {direction!r}")


def _around(g: Graph, entity_id: str, depth: int, direction: Direction, kinds: frozenset[str]) -> set[str]:
    """The ids within ``depth`` hops of ``entity_id`` (which is in ``g``), itself included."""
    return set(_hops(g, [entity_id], depth, direction, kinds))


def _hops(g: Graph, sources: list[str], depth: int, direction: Direction, kinds: frozenset[str]) -> dict[str, int]:
    """Each id within ``depth`` hops of ``sources`` (which are in ``g``; 0 hops themselves) with its distance."""
    _check_hops(depth, direction)
    hop = dict.fromkeys(sources, 0)
    frontier = list(sources)
    for step in range(1, depth + 1):
        nxt = []
        for n in frontier:
            steps: list[str] = []
            if direction in ("out", "both"):
                steps += [v for _, v, k in g.out_edges(n, keys=True) if k in kinds]
            if direction in ("in", "both"):
                steps += [u for u, _, k in g.in_edges(n, keys=True) if k in kinds]
            for m in steps:
                if m not in hop:
                    hop[m] = step
                    nxt.append(m)
        frontier = nxt
    return hop


def paths(
    g: Graph, source: str, target: str, kinds: frozenset[str] = frozenset({"calls"}), limit: int = 20
) -> dict[str, Any]:
    """Simple paths from ``source`` to ``target`` along edges of ``kinds`` (shortest first, at most ``limit``)."""
    _entity(g, source)
    _entity(g, target)
    view: nx.DiGraph[str] = nx.DiGraph()
    view.add_edges_from((u, v) for u, v, k in g.edges(keys=True) if k in kinds)
    found: list[list[str]] = []
    if source in view and target in view:
        for path in nx.shortest_simple_paths(view, source, target):
            found.append(list(path))
            if len(found) >= limit:
                break
    return {"source": source, "target": target, "paths": found}


def blast_radius(g: Graph, entity_id: str, direction: Literal["upstream", "downstream"] = "upstream") -> dict[str, Any]:
    """Entities affected when ``entity_id`` fails: ``upstream`` = who depends on it, transitively (who feels it);
    ``downstream`` = what it depends on, transitively. A caller depends on what it calls, a service on its pods
    (``instance_of`` read backwards), a virtual peer on the pods behind its Service (``backed_by``): so a pod's
    upstream is its service's callers, and a database pod's is the services that query the database. ``pods`` adds
    the pods of every affected service."""
    _entity(g, entity_id)
    if direction not in ("upstream", "downstream"):
        raise QueryError(f"direction must be upstream or downstream, not {direction!r}")
    needs: nx.DiGraph[str] = nx.DiGraph()
    needs.add_nodes_from(g.nodes)
    for u, v, k in g.edges(keys=True):
        if k in ("calls", "backed_by"):
            needs.add_edge(u, v)
        elif k == "instance_of":
            needs.add_edge(v, u)
    reached = nx.ancestors(needs, entity_id) if direction == "upstream" else nx.descendants(needs, entity_id)
    pods = {n for n in reached if g.nodes[n]["kind"] == "pod"}
    pods |= {u for n in reached | {entity_id} for u, _, k in g.in_edges(n, keys=True) if k == "instance_of"}
    pods.discard(entity_id)
    return {"entity": entity_id, "direction": direction, "services": sorted(reached - pods), "pods": sorted(pods)}


def to_dot(data: dict[str, Any]) -> str:
    """Graphviz DOT of a payload from :func:`whole` or :func:`subgraph`."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph rootward {", "  rankdir=LR;"]
    for e in data["entities"]:
        style = ', style="dashed"' if e.get("virtual") else ""
        lines.append(f"  {q(e['id'])} [label={q(e.get('name') or e['id'])}, shape=box{style}];")
    for e in data["edges"]:
        label = e["kind"] if e["kind"] != "calls" else f"{e.get('requests', 0)} req / {e.get('errors', 0)} err"
        lines.append(f"  {q(e['source'])} -> {q(e['target'])} [label={q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_cytoscape(data: dict[str, Any]) -> dict[str, Any]:
    """Cytoscape.js elements JSON of a payload from :func:`whole` or :func:`subgraph`."""
    nodes = [{"data": e} for e in data["entities"]]
    edges = [{"data": {"id": f"{e['source']}->{e['target']}:{e['kind']}", **e}} for e in data["edges"]]
    return {"elements": {"nodes": nodes, "edges": edges}}


_TIMES = ("first_seen", "last_seen")


def diff(
    before: Graph,
    after: Graph,
    namespace: str | None = None,
    kind: str | None = None,
    around: str | None = None,
    depth: int = 2,
    direction: Direction = "both",
    kinds: frozenset[str] = EDGE_KINDS,
    seconds: float | None = None,
) -> dict[str, Any]:
    """What changed from ``before`` to ``after``: entities and edges added and removed, entities whose attributes
    changed (first/last seen aside), and for each call edge of ``after`` its RED over the interval (requests,
    errors, error ratio, mean latency; per second when ``seconds`` is the interval's length).

    The filters are those of :func:`whole` and :func:`subgraph`: entities of ``namespace`` / ``kind``, or within
    ``depth`` hops of ``around`` (in either graph), and the edges of ``kinds`` among them. A call edge that is new,
    or was aged out and came back (its first_seen differs), counts from zero. Raises UnknownEntity when ``around``
    is in neither graph, QueryError for a bad depth or direction.
    """
    _check_hops(depth, direction)
    if around is not None and around not in before and around not in after:
        raise UnknownEntity(around)
    keep_before = _kept(before, namespace, kind, around, depth, direction, kinds)
    keep_after = _kept(after, namespace, kind, around, depth, direction, kinds)
    edges_before = _edges_among(before, keep_before, kinds)
    edges_after = _edges_among(after, keep_after, kinds)
    changed = []
    for n in sorted(keep_before & keep_after):
        old = {k: v for k, v in before.nodes[n].items() if k not in _TIMES}
        new = {k: v for k, v in after.nodes[n].items() if k not in _TIMES}
        if old != new:
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            changed.append({"id": n, "before": {k: old.get(k) for k in keys}, "after": {k: new.get(k) for k in keys}})
    return {
        "entities": {
            "added": [{"id": n, **after.nodes[n]} for n in sorted(keep_after - keep_before)],
            "removed": [{"id": n, **before.nodes[n]} for n in sorted(keep_before - keep_after)],
            "changed": changed,
        },
        "edges": {
            "added": [_edge(u, v, edges_after[u, v, k]) for u, v, k in sorted(edges_after.keys() - edges_before)],
            "removed": [_edge(u, v, edges_before[u, v, k]) for u, v, k in sorted(edges_before.keys() - edges_after)],
        },
        "red": [
            _red(u, v, edges_before.get((u, v, k)), data, seconds)
            for (u, v, k), data in sorted(edges_after.items())
            if k == "calls"
        ],
    }


def _kept(
    g: Graph,
    namespace: str | None,
    kind: str | None,
    around: str | None,
    depth: int,
    direction: Direction,
    kinds: frozenset[str],
) -> set[str]:
    if around is None:
        ids: Iterable[str] = g.nodes
    else:
        ids = _around(g, around, depth, direction, kinds) if around in g else set()
    nodes = g.nodes
    return {
        n
        for n in ids
        if (namespace is None or nodes[n].get("namespace") == namespace)
        and (kind is None or nodes[n].get("kind") == kind)
    }


def _edges_among(g: Graph, keep: set[str], kinds: frozenset[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (u, v, k): d for u in keep for _, v, k, d in g.out_edges(u, keys=True, data=True) if v in keep and k in kinds
    }


def _red(
    source: str, target: str, old: dict[str, Any] | None, new: dict[str, Any], seconds: float | None
) -> dict[str, Any]:
    """RED of one call edge between two readings of its counters (from zero when it is new or was re-created)."""
    requests, errors, latency = (
        int(new.get("requests", 0)),
        int(new.get("errors", 0)),
        float(new.get("latency_sum_s", 0)),
    )
    fresh = old is None or old.get("first_seen") != new.get("first_seen") or int(old.get("requests", 0)) > requests
    if not fresh and old is not None:
        requests -= int(old.get("requests", 0))
        errors -= int(old.get("errors", 0))
        latency -= float(old.get("latency_sum_s", 0.0))
    return {
        "source": source,
        "target": target,
        "new": old is None,
        "requests": requests,
        "errors": errors,
        "error_ratio": errors / requests if requests else None,
        "mean_latency_s": latency / requests if requests else None,
        "requests_per_s": requests / seconds if seconds else None,
    }
