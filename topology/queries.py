"""Questions asked of the graph: an entity and its neighbours, the subgraph around it, paths between two entities,
the blast radius up or down the call graph, and the graph as JSON, Graphviz DOT or Cytoscape JSON.

Functions take the networkx graph (held under :meth:`TopologyGraph.read`) and return JSON-ready data; they raise
:class:`QueryError` (bad parameters, HTTP 400) or :class:`UnknownEntity` (HTTP 404).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np

Direction = Literal["in", "out", "both"]
EDGE_KINDS = frozenset({"calls", "instance_of", "owned_by", "runs_on", "in"})


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
    if not 0 <= depth <= 10:
        raise QueryError(f"depth must be between 0 and 10, not {depth}")
    if direction not in ("in", "out", "both"):
        raise QueryError(f"direction must be in, out or both, not {direction!r}")
    seen = {entity_id}
    frontier = [entity_id]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            steps: list[str] = []
            if direction in ("out", "both"):
                steps += [v for _, v, k in g.out_edges(n, keys=True) if k in kinds]
            if direction in ("in", "both"):
                steps += [u for u, _, k in g.in_edges(n, keys=True) if k in kinds]
            for m in steps:
                if m not in seen:
                    seen.add(m)
                    nxt.append(m)
        frontier = nxt
    return {"root": entity_id, "depth": depth, "direction": direction, **_payload(g, seen, kinds)}


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
    """Entities affected when ``entity_id`` fails: ``upstream`` = its callers, transitively (who feels it);
    ``downstream`` = what it calls, transitively (what it depends on). Pods of an affected service count too."""
    _entity(g, entity_id)
    if direction not in ("upstream", "downstream"):
        raise QueryError(f"direction must be upstream or downstream, not {direction!r}")
    calls: nx.DiGraph[str] = nx.DiGraph()
    calls.add_nodes_from(g.nodes)
    calls.add_edges_from((u, v) for u, v, k in g.edges(keys=True) if k == "calls")
    reached = nx.ancestors(calls, entity_id) if direction == "upstream" else nx.descendants(calls, entity_id)
    pods = sorted({u for n in reached | {entity_id} for u, _, k in g.in_edges(n, keys=True) if k == "instance_of"})
    return {"entity": entity_id, "direction": direction, "services": sorted(reached), "pods": pods}


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
