"""Who depends on an action's target, from the topology graph: the blast radius beyond the object itself.

For a workload, the callers of the services its pods are instances of, transitively
(:func:`rootward.topology.queries.blast_radius` upstream of each pod, without the workload's own services); for a
pod, the same from the pod; for a node, every service with a pod on it and their callers. Entities the graph has
never seen give none (the graph only knows what reported).
"""

from __future__ import annotations

from collections.abc import Callable

from rootward.actions.requests import Target
from rootward.topology import TopologyGraph, queries

#: At most this many dependents are named (the policy input stays small).
MAX_DEPENDENTS = 50


def topology_dependents(topology: TopologyGraph) -> Callable[[Target], list[str]]:
    """A ``dependents`` function for :class:`~rootward.actions.Executor` over the live graph."""

    def dependents(target: Target) -> list[str]:
        if target.kind == "FeatureFlag":  # flag evaluations are not in the graph: no one is known to depend on it
            return []
        with topology.read() as g:
            if target.kind == "Node":
                node = f"node:{target.name}"
                pods = [u for u, _, k in g.in_edges(node, keys=True) if k == "runs_on"] if node in g else []
            elif target.kind == "Pod":
                pods = [f"pod:{target.namespace}/{target.name}"]
            else:
                workload = f"workload:{target.namespace}/{target.kind.lower()}/{target.name}"
                pods = [u for u, _, k in g.in_edges(workload, keys=True) if k == "owned_by"] if workload in g else []
            found: set[str] = set()
            own: set[str] = set()
            for pod in pods:
                if pod in g:
                    found.update(queries.blast_radius(g, pod, "upstream")["services"])
                    own.update(v for _, v, k in g.out_edges(pod, keys=True) if k == "instance_of")
            if target.kind != "Node":  # a workload's own service is the target itself; a node's are hit too
                found -= own
        return sorted(found)[:MAX_DEPENDENTS]

    return dependents
