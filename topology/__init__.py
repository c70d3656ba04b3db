"""Stage 2, topology: entity resolution from resource attributes, call edges from spans, the live dependency
graph and its queries (issue 4, in progress: see rootward.topology.graph for what is built).

Public names: :class:`TopologyGraph` (a Consumer), :class:`TopologyLimits`, :class:`Entity`.
"""

from rootward.topology.entities import Entity
from rootward.topology.graph import TopologyGraph, TopologyLimits

__all__ = ["Entity", "TopologyGraph", "TopologyLimits"]
