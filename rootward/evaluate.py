"""``rootward eval nezha``: replay each Nezha day through the whole pipeline and score the incidents it opens
against the day's ground truth (rootward/scoring.py), beside the published results.

Each day runs in its own in-process Rootward (rootward/replay_sinks.py: a real gRPC client into the receiver,
the App's clock following the replayed time): receiver -> topology -> detector -> incidents. Nothing about the faults
reaches the pipeline: the fault list is read for scoring only. The detector learns its baselines from what the
stream has shown, the fault-free ``construct_data`` minutes included (they are replayed in time order with the rest).
The in-process replay closes each detection window as replayed time passes it (rootward/replay_sinks.py ReplayClock).

An incident's ranked root-cause services are its diagnosis' hypotheses (the detector's root-most-first candidates
before the first diagnosis) as they stood ``RANK_AFTER_S`` after it opened (what a responder would have read by
then), pods read as their services, peers (databases, hosts) left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rootward import nezha, nezha_stream
from rootward.config import Config, load_config
from rootward.detector.incidents import Incident
from rootward.recorded import Issues
from rootward.replay import Progress, replay
from rootward.replay_sinks import IN_PROCESS, InProcess
from rootward.scoring import (
    LEAD_S,
    WINDOW_S,
    Fault,
    Opened,
    Outcome,
    by_type,
    false_incidents,
    fault_free_seconds,
    outcomes,
    reliability,
    summary,
)

#: How long after opening an incident's ranking is read.
RANK_AFTER_S = 60.0


@dataclass
class Ranking:
    """An incident's candidate rankings over time: (time, ranked services) at each change."""

    opened: float
    snapshots: list[tuple[float, tuple[str, ...], float | None]] = field(default_factory=list)

    def at(self, t: float) -> tuple[tuple[str, ...], float | None]:
        """The ranking (and the top hypothesis' confidence) as it stood at ``t``, else the first one."""
        found: tuple[tuple[str, ...], float | None] = ((), None)
        for when, ranked, confidence in self.snapshots:
            if when > t:
                break
            found = (ranked, confidence)
        if not found[0] and self.snapshots:
            return self.snapshots[0][1], self.snapshots[0][2]
        return found


class Rankings:
    """An incident sink that records each incident's ranked services as they change: the agent's diagnosis (its
    hypotheses in order) when the incident has one, else the detector's candidates. A reopened incident is a new
    alert episode (it notifies again), scored like an opening: a detection when a fault's window holds it, a false
    incident otherwise."""

    def __init__(self, service_of: Callable[[str], str | None]) -> None:
        self.service_of = service_of
        self.incidents: dict[str, Ranking] = {}
        self.episodes: list[Ranking] = []

    def incident_changed(self, incident: Incident, change: str) -> None:
        ranking = self.incidents.get(incident.id)
        if ranking is None or change == "reopened":
            ranking = self.incidents[incident.id] = Ranking(incident.updated if ranking else incident.opened)
            self.episodes.append(ranking)
        entities = incident.candidates
        confidence = None
        if incident.diagnosis is not None:
            hypotheses = incident.diagnosis.get("hypotheses", [])
            entities = [str(h["entity"]) for h in hypotheses]
            confidence = float(hypotheses[0]["confidence"]) if hypotheses else None
        ranked = tuple(dict.fromkeys(s for s in map(self.service_of, entities) if s is not None))
        ranking.snapshots.append((incident.updated, ranked, confidence))

    def opened(self) -> list[Opened]:
        return [Opened(r.opened, *r.at(r.opened + RANK_AFTER_S)) for r in self.episodes]


@dataclass
class DayResult:
    day: nezha.Day
    faults: list[Fault]
    incidents: list[Opened]
    outcomes: list[Outcome]
    false: int
    fault_free_s: float
    issues: Issues
    seconds: float
    lead_s: float = LEAD_S

    def as_json(self) -> dict[str, Any]:
        scores = summary(self.outcomes, self.false, self.fault_free_s)
        return {
            "system": self.day.system,
            "day": self.day.date,
            **{k: scores[k] for k in ("faults", "detected", "ac1", "ac3", "ac5", "avg5")},
            "recall": scores["recall"],
            "false_incidents": self.false,
            "false_per_hour": scores["false_per_hour"],
            "fault_free_hours": self.fault_free_s / 3600,
            "mean_delay_s": scores["mean_delay_s"],
            "incidents": len(self.incidents),
            "by_type": by_type(self.outcomes),
            "skipped": dict(self.issues.skipped),
            "replay_seconds": self.seconds,
            "window_s": [0.0 - self.lead_s, WINDOW_S],
            "outcomes": [
                {
                    "service": o.fault.service,
                    "kind": o.fault.kind,
                    "inject": o.fault.inject,
                    "detected": o.detected,
                    "rank": o.rank,
                    "delay_s": o.delay_s,
                    "confidence": o.confidence,
                }
                for o in self.outcomes
            ],
        }


def service_name(entity: str, service_of: dict[str, str]) -> str | None:
    """The service an entity id names: ``service:<ns>/<name>`` -> name; a pod -> its service's name."""
    entity = service_of.get(entity, entity)
    return entity.split("/", 1)[1] if entity.startswith("service:") else None


def evaluate_day(
    day: nezha.Day,
    config: Config | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    lead_s: float = LEAD_S,
) -> DayResult:
    """Replay one day in a fresh in-process Rootward and score what it opened (``lead_s``: how long before a
    fault's label an incident still counts as its detection)."""
    issues = Issues()
    truth = nezha.faults(day, issues)
    with InProcess(config or load_config(environ={}, overrides=IN_PROCESS)) as target:
        app = target.app
        rankings = Rankings(lambda e: service_name(e, app.detector.service_of))
        app.incidents.sinks.append(rankings)
        assert target.sink is not None

        stats = replay(nezha_stream.day_requests(day, issues), target.sink, clock=target.clock, on_progress=on_progress)
        target.clock.advance(2 * app.config.detection.window_s)  # the last windows close
    opened = rankings.opened()
    observed = [(stats.first_ns / 1e9, stats.last_ns / 1e9)] if stats.first_ns else []
    return DayResult(
        day,
        truth,
        opened,
        outcomes(truth, opened, WINDOW_S, lead_s),
        false_incidents(truth, opened, WINDOW_S, lead_s),
        fault_free_seconds(observed, truth, WINDOW_S, lead_s),
        issues,
        stats.seconds,
        lead_s,
    )


def overall(results: Iterable[DayResult]) -> dict[str, dict[str, Any]]:
    """The scores per system over all its days."""
    by_system: dict[str, list[DayResult]] = {}
    for r in results:
        by_system.setdefault(r.day.system, []).append(r)
    out = {}
    for system, days in sorted(by_system.items()):
        results_ = [o for d in days for o in d.outcomes]
        false, free = sum(d.false for d in days), sum(d.fault_free_s for d in days)
        scores = summary(results_, false, free)
        out[system] = {**scores, "by_type": by_type(results_), "calibration": reliability(results_)}
    return out


def evaluate(
    paths: Iterable[Path], config: Config | None = None, echo: Callable[[str], None] = print, lead_s: float = LEAD_S
) -> dict[str, Any]:
    """Every day under ``paths`` (folders or archives of the Nezha layout), scored; the stable JSON document."""
    days = [d for p in paths for d in nezha.days(p)]
    if not days:
        raise ValueError("no Nezha days found")
    results = []
    for i, day in enumerate(days, 1):
        echo(f"[{i}/{len(days)}] {day.system} {day.date}: replaying ...")
        span = nezha_stream.time_range(day)
        last = [0.0]

        def progress(p: Progress, last: list[float] = last, span: tuple[int, int] | None = span) -> None:
            if span is None or span[1] <= span[0]:
                return
            fraction = (p.time_ns - span[0]) / (span[1] - span[0])
            if fraction - last[0] >= 0.1:
                last[0] = fraction
                echo(f"    {min(fraction, 1.0):4.0%} of the day, {sum(p.stats.sent.values()):,} items")

        result = evaluate_day(day, config, progress, lead_s)
        row = result.as_json()
        echo(
            f"    {row['faults']} faults, {row['detected']} detected, AC@1 {row['ac1']:.2f}, AC@3 {row['ac3']:.2f}, "
            f"{row['false_incidents']} false incidents, replayed in {result.seconds:.0f} s"
        )
        results.append(result)
    return {"days": [r.as_json() for r in results], "overall": overall(results)}


__all__ = ["evaluate", "evaluate_day", "nezha"]
