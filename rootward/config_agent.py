"""The agent's configuration: the graph reasoner's weights, redaction, the optional LLM reasoner and its budgets.
Part of :class:`rootward.config.Config`, which re-exports these."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from rootward.config_section import _Section


class GraphReasoner(_Section):
    """The default reasoner's weights (agent/graph_reasoner.py explains each step)."""

    z0: float = Field(default=5.0, gt=0)
    """An anomaly weighs log1p(|z| / z0): the detector's threshold, so a just-anomalous series weighs ~0.7."""
    z_cap: float = Field(default=25.0, gt=0)
    """|z| beyond this weighs no more (a pod metric at z 1,000 says no more about the cause than at z 25)."""
    client_weight: float = Field(default=0.5, ge=0, le=1)
    """What a caller's own client-side latency counts for the caller itself (the rest goes to its callees)."""
    alpha: float = Field(default=0.85, gt=0, lt=1)
    """Personalised PageRank: the chance to follow a call rather than restart at the evidence."""
    first_bonus: float = Field(default=0.2, ge=0)
    """Extra score (fraction) for the candidate whose first anomaly came first."""
    late_s: float = Field(default=60.0, ge=0)
    """A candidate whose first anomaly came later than the first is discounted by exp(-lateness / late_s); 0: no
    discount."""
    change_bonus: float = Field(default=2.0, ge=1)
    """Score factor for a candidate with a rollout linked to the incident."""
    sharpness: float = Field(default=2.0, gt=0)
    """Confidence = score^sharpness over the sum of all candidates'."""
    max_hypotheses: int = Field(default=10, ge=1, le=50)


class Redaction(_Section):
    """What is removed from everything sent to the LLM endpoint, and from telemetry's words in Slack messages
    (agent/redact.py): each match becomes ``[REDACTED:<name>]``."""

    defaults: bool = True
    """The shipped patterns: bearer tokens, authorization headers, AWS keys, API keys and passwords in key=value
    form, OpenAI and GitHub tokens, JWTs, passwords in URLs, e-mail addresses."""
    optional: list[Literal["ipv4", "ipv6"]] = Field(default_factory=list)
    """Also IP addresses (off by default: a peer's address is often the evidence)."""
    patterns: dict[str, str] = Field(default_factory=dict)
    """Your own, name -> regular expression (a group named ``keep`` is kept, e.g. a key name before its value)."""

    @model_validator(mode="after")
    def _compiles(self) -> Redaction:
        for name, pattern in self.patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"redaction pattern {name!r} does not compile: {e}") from e
        return self


class LLM(_Section):
    """The LLM reasoner (agent/llm.py): a ReAct loop with read-only tools against any OpenAI-compatible endpoint.
    Its answer is checked against the diagnosis schema; whatever fails, the graph reasoner answers instead."""

    enabled: bool = False
    """Off: the graph reasoner alone (no network). On: the LLM diagnoses on a worker thread, the pipeline never
    waits for it."""
    base_url: str = "http://127.0.0.1:11434/v1"
    """The endpoint's base URL, e.g. https://api.openai.com/v1, or a local server (Ollama, vLLM, llama.cpp)."""
    model: str = "gpt-4o-mini"
    """The model name the endpoint knows."""
    api_key: SecretStr | None = None
    """The API key (a secret: set it from a Secret, ROOTWARD_AGENT__LLM__API_KEY). Never logged."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Else the environment variable that holds the key (read by load_config with the rest of the environment).
    Neither: no key (a local server)."""
    min_interval_s: float = Field(default=600.0, ge=0)
    """Least pipeline time between two LLM investigations of an open incident (each costs tokens); a new episode,
    opened or reopened, is investigated at once."""
    max_steps: int = Field(default=6, ge=1, le=30)
    """Model calls in one investigation; on the last no tools are offered, so the model must answer. An invalid
    answer gets one repair turn past these, while ``max_tokens`` has some left."""
    max_tokens: int = Field(default=60_000, ge=1000)
    """Input plus output tokens over one investigation; once spent, the next call is the last."""
    max_output_tokens: int = Field(default=2000, ge=100)
    """Output tokens of one model call."""
    deadline_s: float = Field(default=120.0, gt=0)
    """Wall-clock seconds for one investigation; past it, the graph reasoner's answer is used."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds one model call may take."""
    max_retries: int = Field(default=1, ge=0, le=5)
    """Retries of a failed call (connection errors, 429, 5xx; the client honours Retry-After) before falling back."""
    max_calls_per_tool: int = Field(default=3, ge=1)
    """Calls of any one tool in one investigation; past it the tool answers with an error envelope."""
    max_result_chars: int = Field(default=4000, ge=200)
    """A tool result's size in the conversation (longer results are cut and marked truncated)."""
    max_confidence: float = Field(default=0.79, ge=0, le=1)
    """Cap on the confidence the model may claim. 0.79: under the default policies.rules.medium_confidence (0.8), so
    every medium-risk action that follows an LLM diagnosis waits for a human: the model reads untrusted telemetry,
    and a log line that steers it must not be able to unlock an action by claiming certainty. Raise it (and lower
    the policy's gate) only deliberately."""
    price_per_1m_input: float = Field(default=0.0, ge=0)
    """Price of a million input tokens, for the trace's cost (0: not reported)."""
    price_per_1m_output: float = Field(default=0.0, ge=0)
    """Price of a million output tokens."""
    redaction: Redaction = Redaction()
    """What is removed from everything sent to the endpoint."""


class Agent(_Section):
    """Diagnosis of incidents (agent/): the incident context and the reasoner."""

    enabled: bool = True
    """Off: incidents carry the detector's candidates only."""
    min_action_confidence: float = Field(default=0.3, ge=0, le=1)
    """Below this confidence in the top hypothesis no action is proposed (policy gates by confidence too)."""
    max_anomalies: int = Field(default=50, gt=0)
    """Anomalies of an incident a context holds (the strongest)."""
    window: int = Field(default=30, gt=0)
    """Past values of each anomalous series in the context."""
    max_calls: int = Field(default=500, gt=0)
    """Call edges a context holds: those of the incident's services first, the busiest first (a hub's callers)."""
    lookback_s: float = Field(default=60.0, ge=0)
    """Anomalies this long before the incident's current episode (opened or reopened) still count."""
    min_interval_s: float = Field(default=10.0, ge=0)
    """Least pipeline time between two diagnoses of an open incident (a new episode is diagnosed at once)."""
    graph: GraphReasoner = GraphReasoner()
    llm: LLM = LLM()
    """The optional LLM reasoner (off by default; the graph reasoner is its fallback)."""
