"""Stage 4, the agent: the incident context, and reasoners that rank root-cause hypotheses (the deterministic graph
reasoner by default; an LLM ReAct loop when configured, issue 7). :class:`Diagnoser` plugs into the incidents as a
sink and stores each incident's latest :class:`Diagnosis` on it."""

from rootward.agent.context import ContextBuilder, IncidentContext, SeriesWindow
from rootward.agent.diagnoser import Diagnoser, Reasoner
from rootward.agent.graph_reasoner import GraphReasoner, GraphReasonerSettings
from rootward.agent.schema import Diagnosis, Evidence, Hypothesis

__all__ = [
    "ContextBuilder",
    "Diagnoser",
    "Diagnosis",
    "Evidence",
    "GraphReasoner",
    "GraphReasonerSettings",
    "Hypothesis",
    "IncidentContext",
    "Reasoner",
    "SeriesWindow",
]
