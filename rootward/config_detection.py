"""The detection sections of the configuration (rootward/config.py loads them): the detector, its log and span
flows, the opt-in multivariate model, and how anomalies become incidents."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt, model_validator

from rootward.config_section import _Section


class Incidents(_Section):
    """How anomalies become incidents."""

    hold_s: float = Field(default=120.0, gt=0)
    """An incident with no anomaly for this long resolves."""
    reopen_s: float = Field(default=120.0, ge=0)
    """Related anomalies within this long of the resolution reopen the incident (flap damping) once they are
    corroborated as a new incident's would be (``min_families``, or a signal that opens alone). 120 s: a fault that
    flaps stays one incident, but a new fault minutes later on a related service is a new one (600 s merged faults
    8 minutes apart on the shared Nezha days)."""
    min_families: int = Field(default=2, ge=1)
    """A new incident opens once its anomalies span this many signal families (``client.latency.p90`` and
    ``.p99`` are one family, CPU and latency two); until then it is pending and told to no one. Known failure
    signals (OOMKilled, CrashLoopBackOff, ...) open at once. 2: one series' spike (or its quantile siblings) is
    not an incident; on the shared Nezha days 1 gave 3-9x the false incidents."""
    missing_alone: float = Field(default=4.5, gt=0, le=20)
    """A log line that stopped coming (``log_missing``, detector/logflow.py) opens an incident on its own when the
    chance of its absence is below ``10 ** -missing_alone``: its score is that chance, not a distance from a
    baseline, so one family can be enough. At most 20 (scores are capped there). 4.5 (one in 30,000): on the shared
    TrainTicket day 6 found 2 faults fewer and opened no fewer false incidents."""
    gap_alone: float = Field(default=12.0, gt=0)
    """A callee's ``net_in`` (its callers' client spans minus its server spans: a network delay into it, or a caller
    too starved to read the answers) this far out (robust z) opens an incident on its own: a network delay shows in
    nothing else. On the shared Nezha days 12 found 3 faults more and 35-50 s sooner, opened no more false incidents,
    and ranked one fault fewer first (a starved caller's one slow callee is named before its other callees show it).
    Set it high to need corroboration."""
    grow_s: float = Field(default=300.0, gt=0)
    """An open incident takes new entities (related ones whose anomalies start) for this long after it opened; later
    its own entities (seen within ``hold_s + reopen_s``) still update it, and a neighbour that fails makes an
    incident of its own. An incident kept open
    by a lasting anomaly (a pod's memory near its limit, errors that never stop) otherwise swallows the next fault
    next to it: on the shared Nezha days 300 found 4 faults more, with no more false incidents."""
    store: bool = True
    """Keep incidents in ``<storage.data_dir>/incidents.db`` (SQLite): open ones survive a restart."""


class SpanFlow(_Section):
    """Missing spans (detector/spanflow.py): the log flow's tests over the spans of sampled traces, each told under
    the service that should have made it (its parent's): a caller that stopped calling, a step that no longer runs,
    in code that logs nothing. Judged with the log flow's default thresholds (a trace may hold 64 span names); only
    whole traces are told (their root came)."""

    enabled: bool = True
    max_spans_per_window: int = Field(default=5000, ge=1)
    """Spans taken a window; past it, traces are sampled by id to fit (a kept trace keeps all its spans)."""


class LogFlow(_Section):
    """The log flow (detector/logflow.py): a log template that stopped coming while its service, and the traces it
    used to be part of, go on: the line after a failing statement. Reads every line that names a trace (sampled by
    trace past half of the miner's budget), not only WARN and above."""

    enabled: bool = True
    """Off: only WARN-and-above lines are mined, and nothing is ``log_missing``."""
    trail_s: float = Field(default=60.0, gt=0)
    """Lines and finished traces are judged over this many trailing seconds (at least one window)."""
    half_life: float = Field(default=3000.0, ge=1)
    """Lines of a service (share test), or traces through it (trace test), after which what was learned from them
    counts half: per service, so a busy one does not wash out a quiet one's, nor an idle hour forget them."""
    min_expected: float = Field(default=8.0, gt=0)
    """Share test: lines of a template expected in the trailing window (its share x its service's lines) before
    none of them is news."""
    min_evidence: float = Field(default=6.0, gt=0)
    """Trace test: ``-log10`` of the chance that the template's anchor came in this many traces without it (6: one
    in a million)."""
    min_q: float = Field(default=0.9, ge=0.5, le=1)
    """Trace test: an anchor is a template the other followed in at least this share of its traces (kept while the
    share stays within 0.2 of this)."""
    min_anchor: float = Field(default=30.0, ge=1)
    """Trace test: traces an anchor must have been seen in."""
    warmup_lines: float = Field(default=200.0, ge=0)
    """Share test: lines of a service learned before its shares are judged."""


class Multivariate(_Section):
    """The per-entity IsolationForest (detector/multivariate.py): several sub-threshold deviations of one entity that
    together are unlike anything it did before."""

    enabled: bool = False
    """Off by default: scikit-learn adds ~110 MB of resident memory to the sidecar once the first model is fitted
    (bench/README.md), more than the rest of Rootward at 10k spans/s."""
    refit_windows: int = Field(default=30, ge=1)
    """Windows between two background refits (30: every 5 minutes at 10 s windows)."""
    history_rows: int = Field(default=20_000, ge=100)
    """Entity vectors (one per entity per window) the model is fitted on, the newest."""
    min_rows: int = Field(default=500, ge=10)
    """Rows kept before the first fit."""
    n_estimators: int = Field(default=50, ge=1, le=1000)
    """Trees per forest: 50 score a window's 1,000 entities in ~5 ms (bench/README.md)."""
    quantile: float = Field(default=0.001, gt=0, lt=0.5)
    """Rows scoring below this quantile of the training rows' scores are unusual."""
    min_z: float = Field(default=3.0, ge=0)
    """An unusual row is reported only when one of its families is at least this far out (robust z): a new mix of
    quiet signals is not an anomaly."""


class Rule(_Section):
    """How one signal is judged; what is left out keeps its default (detector/baseline.py)."""

    direction: Literal["up", "down", "both"] | None = None
    """Which way is trouble."""
    min_rel: float | None = Field(default=None, ge=0)
    """The smallest change that matters, as a fraction of the series' median."""
    min_abs: float | None = Field(default=None, ge=0)
    """The smallest change that matters, in the signal's unit (seconds, a ratio, cores, lines a window)."""


class Detection(_Section):
    """Streaming anomaly detection (see detector/)."""

    enabled: bool = True
    window_s: float = Field(default=10.0, gt=0)
    """Telemetry folds into windows of this length; each closed window is judged."""
    history: int = Field(default=240, ge=4)
    """Past values per series the baseline (median/MAD and tail quantiles) is computed from, in the series' own
    cadence: 40 minutes of 10 s span windows, 4 hours of per-minute metrics. 240: a rare but recurring spike (a pod's
    occasional slow call) is then part of the baseline's tail, not news (60 gave 3-4x the false incidents on the
    shared Nezha days). Memory: 9 bytes a value (the value and whether it counts, see ``learn_after_s``), 2.2 KB a
    series at 240: 21 MB per 10,000 series."""
    warmup: int = Field(default=12, ge=2)
    """Values a series needs before it is judged."""
    z: float = Field(default=5.0, gt=0)
    """Robust z-score past which a value is anomalous: |value - median| / scale, where scale is the largest of
    1.4826 MAD, the series' own tail (see ``tail_q``) and the signal's minimum change."""
    tail_q: float = Field(default=0.95, ge=0, lt=1)
    """Quantile of the series' history whose distance from the median, read as that of a normal distribution,
    also bounds the scale in the bad direction (0.95: 1.645 sigma). Heavy-tailed series (p99 latency of a pod with
    little traffic) then need a jump beyond their own usual excursions; for well-behaved series it equals MAD.
    0 turns it off."""
    confirm: int = Field(default=2, ge=1)
    """Consecutive anomalous values of a series before it is reported."""
    max_series: int = Field(default=100_000, gt=0)
    """Series kept; past it new series are refused and counted."""
    seasonality: bool = True
    """An anomalous value within ``z`` of the same hour's mean yesterday (in the baseline's scale) is explained by
    the daily cycle and not reported (detector/seasonal.py): nightly batches and morning ramps stop paging after
    their first day. Only yesterday counts, so nothing new today is hidden; 2.4 MB per 10,000 series."""
    log_trail_s: float = Field(default=60.0, ge=0)
    """A service's WARN-and-above log lines are judged as their sum over this many trailing seconds (at least one
    window): an error every few seconds is plain in a minute and lost in a 10 s window. It also keeps an error
    incident open this long after the errors stop."""
    operations_per_service: int = Field(default=0, ge=0, le=1000)
    """Span names per service that get RED series of their own (``op:<span name>.rate`` / ``.error_ratio`` /
    ``.p95``), the first ones seen;
    spans of further names still count for their service and are counted as dropped. 0 (the default) turns
    per-operation series off: on the shared Nezha days 20 found one more TrainTicket fault, opened one more false
    incident and ranked nothing better (bench/README.md, latency only then), for ~20x the latency series. An
    operation's series counts as its service's when incidents count signal families. 20 suits a service with a few
    routes."""
    silence_s: float = Field(default=120.0, ge=0)
    """A service's request rate seen in every window for this long that stops while the other services' go on reads
    as 0 for up to 30 windows and opens an incident (detector/silence.py): a service that stopped serving sends
    nothing, so nothing else would show it. Needs a steady 2.5 requests a second or more. Most steady rates stopping
    at once is the telemetry's gap, not the services', and reads as nothing. 0 turns it off."""
    series_ttl_s: float = Field(default=25 * 3600.0, gt=0)
    """A series with no value for this long (a deleted pod's, a peer no longer called) is forgotten and its slot
    given to a new series: pods come and go with every rollout, and ``max_series`` would otherwise fill with the
    dead and refuse the living. Seen again, it starts over (warm-up). A day and an hour: a nightly job's series keep
    their baseline and yesterday's profile (``seasonality``)."""
    sampling_key: StrictInt | None = Field(default=None, ge=0, lt=2**64)
    """The seed of the hash that samples traces for the log and span flows when they are more than their budgets.
    Unset (the default), a random one per process: a sender cannot choose trace ids that are always sampled. Set it
    only to make a replay reproducible: in-process replays and ``rootward eval`` set one (change it with ``--set``,
    which comes after their settings)."""
    callers_per_callee: int = Field(default=50, ge=0)
    """Callers of one callee whose calls get edge series (``in:<caller>.rate`` / ``.error_ratio`` / ``.latency`` /
    ``.p95``),
    the first ones seen; calls of further callers still count for the callee's own series and are counted as
    dropped (``rootward_detector_dropped_total``). Bounds what a hub called by hundreds adds to ``max_series``."""
    warm_start: bool = True
    """Save every series' recent values to ``<storage.data_dir>/detector.npz`` every 5 minutes and at shutdown, and
    read them back at start (a day old at most, same ``window_s``): after a restart or an upgrade a series judges
    against its own history at once instead of warming up from nothing. Seasonal profiles, log templates and flows
    are not saved (they learn again)."""
    learn_after_s: float = Field(default=300.0, ge=0)
    """An anomalous value of a series in an open incident is left out of its baseline (still shown in its history)
    until the series has been anomalous this long without a break; then it is a new level, and is learned. A fault's
    values would otherwise widen the baseline's tail for ``history`` windows, and the next fault on the same service
    would hide in it. A burst that opens no incident is learned at once (a series' own heavy tail), and so is every
    value with 0. At most half of ``history`` x ``window_s``."""
    memory_near_limit: float = Field(default=0.9, gt=0, le=1)
    """A container's memory working set at this fraction of its limit or more (kubeletstats with k8s_cluster's
    ``k8s.container.memory_limit``, or ``*.memory_limit_utilization``) is a known failure signal,
    ``k8s:MemoryNearLimit``, with no baseline: the OOM killer acts at 1.0."""
    pod_pending_s: float = Field(default=300.0, gt=0)
    """Seconds a pod may stay Pending (k8s_cluster's ``k8s.pod.phase``) before it is a failure signal
    (``k8s:PodPending``): scheduling and image pulls take a while, a stuck pod is news (a Failed pod is at once)."""
    edge_quantiles: bool = False
    """Each call edge's p95 (``in:<caller>.p95``, from the servicegraph buckets the topology counts calls into, of
    the calls' server-side durations): a slow tail on one caller's calls that their mean hides. Off by default: on
    the shared Nezha days it found no fault the other series missed and moved one first rank (bench/README.md,
    2026-11-26 session 18)."""
    rules: dict[str, Rule] = Field(default_factory=dict)
    """Per-signal overrides of the smallest change that matters and its direction, by signal name: a span series
    (``rate``, ``error_ratio``, ``p50``, ``p95``, ``p99``, ``client_p95``, ``net_in``, ``client_net``,
    ``log_warnings``, ``log_errors``), a per-edge measure as ``in.rate``, ``in.error_ratio``, ``in.latency``, a
    Kubernetes metric series by name (``k8s.pod.cpu.usage``, ``k8s.memory.limit_ratio``, ...), or any metric by its
    full name (``http.server.request.duration.p95``). Example: ``{p95: {min_abs: 0.05}}``
    ignores p95 rises under 50 ms."""
    incidents: Incidents = Incidents()
    multivariate: Multivariate = Multivariate()
    log_flow: LogFlow = LogFlow()
    span_flow: SpanFlow = SpanFlow()

    @model_validator(mode="after")
    def _learn_within_history(self) -> Detection:
        if self.learn_after_s > self.history * self.window_s / 2:
            raise ValueError(
                f"detection.learn_after_s ({self.learn_after_s:g}) must be at most half of history x window_s "
                f"({self.history * self.window_s / 2:g} s): a baseline must keep most of its values"
            )
        return self
