"""The diagnosis schema: what every reasoner returns, the deterministic graph reasoner today and the LLM reasoner
later (its final answer must validate against :class:`Diagnosis`). Pydantic, so that an answer from outside the
process (an LLM's JSON) is checked at the boundary like any other untrusted input."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultClass = Literal[
    "resource_saturation", "network_delay", "code_error", "bad_rollout", "dependency_failure", "node_problem"
]
EntityKind = Literal["service", "pod", "node", "peer"]


class Evidence(BaseModel):
    """One observation a hypothesis rests on: a series out of line on an entity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str
    signal: str
    value: float
    expected: float
    score: float
    """Signed robust z-score of the observation (see detector/baseline.py)."""


class Hypothesis(BaseModel):
    """One candidate root cause."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str
    """Entity id (``service:<ns>/<name>``, ``pod:<ns>/<name>``, ``node:<name>``, or a peer)."""
    kind: EntityKind
    fault_class: FaultClass
    confidence: float = Field(ge=0.0, le=1.0)
    """Probability that this is the root cause, calibrated on replayed fault data (bench/README.md reports the
    reliability)."""
    evidence: list[Evidence] = Field(default_factory=list, max_length=20)
    falsified_by: list[str] = Field(default_factory=list, max_length=10)
    """What, if observed, would rule this hypothesis out."""


class SuggestedAction(BaseModel):
    """An action an LLM suggests: a kind of the actions registry and an entity of the incident's scope (checked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(max_length=40)
    target: str = Field(max_length=300)
    reason: str = Field(default="", max_length=1000)


class Diagnosis(BaseModel):
    """Ranked hypotheses for one incident, most likely first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    incident: str
    reasoner: str
    at: float
    """When the diagnosis was made (Unix seconds, the pipeline's clock)."""
    hypotheses: list[Hypothesis] = Field(default_factory=list, max_length=50)
    summary: str = ""
    suggested_action: SuggestedAction | None = None
    """The LLM reasoner's suggestion, for the humans who read the diagnosis: it is never executed as such (the
    responder derives the request from the top hypothesis through the registry, and policies judge it)."""
    fallback: str | None = None
    """Set when the LLM reasoner failed and this is the graph reasoner's answer: why (agent/llm.py)."""

    def services(self) -> list[str]:
        """The hypotheses' entities, most likely first."""
        return [h.entity for h in self.hypotheses]
