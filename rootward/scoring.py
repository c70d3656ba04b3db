"""Scoring root-cause analysis against ground truth: what ``rootward eval`` prints and writes.

Per fault, the incidents opened within ``[inject - lead, inject + window]`` count; the first of them is the detection,
and its ranked root-cause services give AC@k (the true service among the first k) and Avg@5 (the mean of AC@1..5).
A fault no incident caught is a miss at every k. Incidents opened outside every fault window are false; they are
counted per fault-free hour of observed telemetry. The JSON keys and their meaning are a stable format (other tools
read it): fractions in 0..1, seconds, counts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How long after an injection an incident still counts as its detection (the faults last about 3 minutes).
WINDOW_S = 180.0

#: How long before its labelled injection an incident counts as a fault's detection in ``rootward eval`` (the
#: functions here take it as ``lead_s``, 0 unless given). A label is the time the
#: injector's command returned: TrainTicket's faults injected through a JVM agent (return, exception) show in the
#: service's own error logs 40-90 s before it (bench/README.md, "Fault labels"), while the CPU faults' metrics rise
#: after it. Without a lead those incidents counted twice against the detector: a missed fault and a false incident.
LEAD_S = 60.0

FAULT_TYPES = ("cpu_contention", "cpu_consumed", "network_delay", "return", "exception")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: when (Unix seconds, UTC), where (the root-cause service), and what."""

    system: str  # "tt" or "ob"
    day: str  # YYYY-MM-DD
    inject: float
    service: str
    kind: str


@dataclass(frozen=True, slots=True)
class Opened:
    """An incident as it was opened: when, and its root-cause services, most likely first."""

    time: float
    ranked: tuple[str, ...]
    confidence: float | None = None  # the reasoner's confidence in its first-ranked service, when it gave one


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one fault: the rank of the true service in the detecting incident (1-based; None when the
    incident did not name it or nothing detected the fault) and the detection delay."""

    fault: Fault
    detected: bool
    rank: int | None
    delay_s: float | None
    confidence: float | None = None


def outcomes(
    faults: Iterable[Fault], incidents: Sequence[Opened], window_s: float = WINDOW_S, lead_s: float = 0.0
) -> list[Outcome]:
    """Each fault's outcome: the first incident opened within its window is its detection (its delay is negative
    when it opened in the lead, before the label). An incident detects one fault at most: the earliest labelled
    whose window holds it."""
    ordered = sorted(incidents, key=lambda i: i.time)
    listed = list(faults)
    used: set[int] = set()
    result: dict[int, Outcome] = {}
    for k in sorted(range(len(listed)), key=lambda k: listed[k].inject):
        fault = listed[k]
        lo, hi = fault.inject - lead_s, fault.inject + window_s
        found = next((n for n, i in enumerate(ordered) if n not in used and lo <= i.time <= hi), None)
        if found is None:
            result[k] = Outcome(fault, False, None, None)
            continue
        used.add(found)
        first = ordered[found]
        rank = first.ranked.index(fault.service) + 1 if fault.service in first.ranked else None
        result[k] = Outcome(fault, True, rank, first.time - fault.inject, first.confidence)
    return [result[k] for k in range(len(listed))]


def false_incidents(
    faults: Iterable[Fault], incidents: Iterable[Opened], window_s: float = WINDOW_S, lead_s: float = 0.0
) -> int:
    """Incidents opened outside every fault's window."""
    windows = [(f.inject - lead_s, f.inject + window_s) for f in faults]
    return sum(not any(lo <= i.time <= hi for lo, hi in windows) for i in incidents)


def fault_free_seconds(
    observed: Iterable[tuple[float, float]], faults: Iterable[Fault], window_s: float = WINDOW_S, lead_s: float = 0.0
) -> float:
    """The length of the observed intervals (merged) minus what the fault windows cover of them."""
    merged = _merge(observed)
    total = sum(hi - lo for lo, hi in merged)
    windows = _merge((f.inject - lead_s, f.inject + window_s) for f in faults)
    covered = sum(max(0.0, min(hi, whi) - max(lo, wlo)) for lo, hi in merged for wlo, whi in windows)
    return total - covered


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def summary(results: Sequence[Outcome], false: int = 0, fault_free_s: float = 0.0) -> dict[str, float | int | None]:
    """The scores of a set of outcomes: faults, detected, ac1, ac3, ac5, avg5, recall, mean_delay_s,
    false_incidents, false_per_hour (None without fault-free time)."""
    n = len(results)

    def ac(k: int) -> float:
        return sum(r.rank is not None and r.rank <= k for r in results) / n if n else 0.0

    delays = [max(0.0, r.delay_s) for r in results if r.delay_s is not None]  # one in the lead: 0, not early
    return {
        "faults": n,
        "detected": sum(r.detected for r in results),
        "ac1": ac(1),
        "ac3": ac(3),
        "ac5": ac(5),
        "avg5": sum(ac(k) for k in range(1, 6)) / 5,
        "recall": sum(r.detected for r in results) / n if n else 0.0,
        "mean_delay_s": sum(delays) / len(delays) if delays else None,
        "false_incidents": false,
        "false_per_hour": false / (fault_free_s / 3600) if fault_free_s > 0 else None,
    }


def reliability(results: Sequence[Outcome], bins: int = 5) -> dict[str, Any]:
    """How well the reasoner's confidence in its first-ranked service matches how often it is right, over the
    detected faults that had one: per confidence bin the count, mean confidence and accuracy (AC@1 among them), and
    the expected calibration error (ECE: the count-weighted mean gap). Empty bins are left out."""
    scored = [(r.confidence, r.rank == 1) for r in results if r.detected and r.confidence is not None]
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(c, ok) for c, ok in scored if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if inside:
            mean = sum(c for c, _ in inside) / len(inside)
            accuracy = sum(ok for _, ok in inside) / len(inside)
            rows.append({"from": lo, "to": hi, "count": len(inside), "confidence": mean, "accuracy": accuracy})
    ece = sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / len(scored) if scored else None
    return {"scored": len(scored), "ece": ece, "bins": rows}


def by_type(results: Sequence[Outcome]) -> dict[str, dict[str, float | int | None]]:
    """:func:`summary` per fault type, for the types present."""
    kinds = sorted({r.fault.kind for r in results})
    return {kind: summary([r for r in results if r.fault.kind == kind]) for kind in kinds}


@dataclass(frozen=True, slots=True)
class Published:
    """A published method's service-level AC@1/3/5 per system (fractions), from Nezha's Table 3."""

    method: str
    scores: dict[str, tuple[float, float, float]]  # system -> (ac1, ac3, ac5)


def published(path: Path) -> list[Published]:
    """Rows of ``nezha_fse23_table3_service_level.csv`` (percentages there, fractions here)."""
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            scores = {
                system: tuple(float(row[f"{system.upper()}_AS@{k}"]) / 100 for k in (1, 3, 5))
                for system in ("ob", "tt")
            }
            rows.append(Published(row["method"], scores))  # type: ignore[arg-type]
    return rows


def table(ours: dict[str, dict[str, float | int | None]], others: Sequence[Published]) -> str:
    """A plain-text table: Rootward's AC@1/3/5 per system beside the published methods', best first."""
    systems = [s for s in ("ob", "tt") if s in ours]
    head = f"{'method':<18}" + "".join(f"{s.upper() + ' AC@' + str(k):>10}" for s in systems for k in (1, 3, 5))
    lines = [head, "-" * len(head)]

    def row(name: str, values: list[float]) -> str:
        return f"{name:<18}" + "".join(f"{v:>10.2%}" for v in values)

    mine = [float(ours[s][f"ac{k}"] or 0.0) for s in systems for k in (1, 3, 5)]
    lines.append(row("Rootward", mine))
    ranked = sorted(others, key=lambda p: -sum(p.scores[s][0] for s in systems))
    lines.extend(row(p.method, [v for s in systems for v in p.scores[s]]) for p in ranked)
    return "\n".join(lines)
