"""Incidents as Prometheus Alertmanager alerts (``notifications.alertmanager``): the team's own routing, receivers
(PagerDuty, Opsgenie, e-mail, webhooks), silences, inhibition and on-call schedules take Rootward's incidents as
they take Prometheus' alerts, with no new integration to build.

Each open incident is one alert (``alertname="RootwardIncident"``), posted to every configured Alertmanager's
``/api/v2/alerts`` every ``interval_s`` as Prometheus does (an alert not sent again ends at its ``endsAt``, four
intervals ahead: a Rootward that stops does not leave alerts firing forever); a change is posted at once. A resolved
incident is posted with its resolution time as ``endsAt`` three more times, then forgotten; one silenced in Rootward
is silenced in Alertmanager too (a silence on its ``incident`` label, until the same time) and keeps firing there.
Every Alertmanager is posted to each round (one down does not starve the others); a round that none took is tried
again whole.

Labels: ``incident``, ``severity`` (critical / warning), ``root_cause`` (the top candidate's entity id), ``namespace``
and ``service`` when it is a service, and ``notifications.alertmanager.labels`` (e.g. the cluster's name). They are
the alert's identity to Alertmanager, so they are the ones of its first post, kept with the incident (its
``notified``, stored: a restart or a handover posts the same alert) for its life: a diagnosis that changes its mind
changes the annotations, not the alert. A severity that changes ends the old alert and starts one under the new
severity (routing on it must see an escalation).
Annotations: ``summary``, ``description`` (the strongest anomalies), ``rootward_url`` (the incident on Rootward's
page, with ``page_url``). Telemetry's words in them are redacted and bounded, as in Slack messages.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rootward.agent.redact import Redactor
from rootward.audit_ship import OPENER
from rootward.detector.incidents import Incident

logger = logging.getLogger(__name__)

ALERTNAME = "RootwardIncident"
#: Posts of a resolved incident (its end) before it is forgotten.
RESOLVED_ROUNDS = 3
#: The longest label or annotation value posted.
MAX_VALUE = 1000


@dataclass(frozen=True)
class AlertmanagerSettings:
    urls: tuple[str, ...] = ()
    interval_s: float = 60.0
    labels: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    page_url: str | None = None
    timeout_s: float = 10.0


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_alert(incident: Incident, settings: AlertmanagerSettings, redact: Callable[[str], str]) -> dict[str, Any]:
    """The alert for ``incident``, but for its ``endsAt`` (set at each post: its resolution, or a few intervals
    ahead while open)."""

    def clean(text: str) -> str:
        return redact(text)[:MAX_VALUE]

    top = incident.candidates[0] if incident.candidates else ""
    labels = {**settings.labels, "alertname": ALERTNAME, "incident": incident.id, "severity": incident.severity}
    if top:
        labels["root_cause"] = clean(top)
        kind, _, rest = top.partition(":")
        namespace, _, name = rest.rpartition("/")
        if kind == "service" and name:
            labels["service"] = clean(name)
            if namespace:
                labels["namespace"] = clean(namespace)
    strongest = sorted(incident.anomalies.values(), key=lambda a: -abs(a.score))[:5]
    description = "\n".join(
        f"{clean(a.entity)} {clean(a.signal)}: {a.value:.4g} (expected {a.expected:.4g}, z {a.score:+.1f})"
        for a in strongest
    )
    link = f"{settings.page_url.rstrip('/')}/incidents/{incident.id}" if settings.page_url else ""
    suspects = ", ".join(clean(c) for c in incident.candidates[:3]) or "unknown"
    annotations = {
        "summary": clean(f"Incident {incident.id} ({incident.status}): likely root cause {suspects}"),
        "description": description[:MAX_VALUE],
        **({"rootward_url": link} if link else {}),
    }
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _time(incident.opened),
        "generatorURL": link,
    }


@dataclass
class _Told:
    """One incident as the notifier holds it: its alert as rendered at its last change (on the pipeline's thread),
    whether it was resolved then and until when it is silenced, and how often its end was posted."""

    alert: dict[str, Any]
    resolved: float | None
    silenced_until: float | None
    rounds: int = 0
    silenced_in_alertmanager: float | None = None  # the silence's end posted there


class AlertmanagerNotifier:
    """An incident sink posting to Alertmanager from its own thread. ``counts(outcome)``: sent, failed (a post to
    one Alertmanager). ``stored(incident id, "alertmanager", labels as JSON)`` keeps an incident's label set with
    it (a restart or a handover posts the same alert). ``close`` posts once more within its deadline."""

    def __init__(
        self,
        settings: AlertmanagerSettings,
        counts: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        redactor: Redactor | None = None,
        background: bool = True,
        stored: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``background``: post from a thread of its own (without: only :meth:`post_once` posts, for tests)."""
        self.settings = settings
        self.counts = counts or (lambda outcome: None)
        self.clock = clock
        self.redact = (redactor or Redactor()).text
        self.stored = stored
        self._told: dict[str, _Told] = {}  # open incidents, and resolved ones whose end is still to be posted
        self._ended: list[dict[str, Any]] = []  # alerts whose label set changed: their end, posted once
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.configured and background:
            self._thread = threading.Thread(target=self._run, name="rootward-alertmanager", daemon=True)
            self._thread.start()

    @property
    def configured(self) -> bool:
        return bool(self.settings.urls)

    def incident_changed(self, incident: Incident, change: str) -> None:
        """Render the incident's alert now, on the pipeline's thread (it changes while the notifier's thread posts).
        Its labels stay those it was first posted with, but for its severity: an escalation ends the old alert and
        starts the new one (routing on severity must see it)."""
        alert = to_alert(incident, self.settings, self.redact)
        known = incident.notified.get("alertmanager")
        with self._lock:
            told = self._told.get(incident.id)
            pinned = told.alert["labels"] if told is not None else _labels(known)
            if pinned is not None:
                labels = {**pinned, "severity": alert["labels"]["severity"]}
                if labels != pinned:
                    self._ended.append({**(told.alert if told else alert), "labels": pinned})
                alert["labels"] = labels
            keep = told is not None and change != "reopened" and incident.status == "resolved"
            self._told[incident.id] = _Told(
                alert, incident.resolved if incident.status == "resolved" else None, incident.silenced_until,
                told.rounds if keep and told else 0, told.silenced_in_alertmanager if told else None,
            )  # fmt: skip
        if pinned != alert["labels"]:
            incident.notified = {**incident.notified, "alertmanager": json.dumps(alert["labels"], sort_keys=True)}
            if self.stored is not None:
                self.stored(incident.id, "alertmanager", incident.notified["alertmanager"])
        self._wake.set()

    def post_once(self, deadline: float | None = None) -> bool:
        """Post every current alert to every Alertmanager (and the silences Rootward's users set); return whether
        one took them (an HA cluster shares what one member took)."""
        now = self.clock()
        with self._lock:
            told = dict(self._told)
            ended, self._ended = self._ended, []
        alerts = [{**a, "endsAt": _time(now)} for a in ended]
        for entry in told.values():
            ends = min(entry.resolved, now) if entry.resolved is not None else now + 4 * self.settings.interval_s
            alerts.append({**entry.alert, "endsAt": _time(ends)})
        if not alerts:
            return True
        body = json.dumps(alerts).encode()
        ok = any([self._post(url, "/api/v2/alerts", body, deadline) for url in self.settings.urls])  # every one
        if not ok:
            with self._lock:
                self._ended = ended + self._ended  # tried again with the rest next round
            return False
        self._silence(told, now, deadline)
        with self._lock:
            for key, entry in told.items():
                if entry.resolved is None or self._told.get(key) is not entry:
                    continue
                entry.rounds += 1
                if entry.rounds >= RESOLVED_ROUNDS:
                    del self._told[key]
        return True

    def _silence(self, told: Mapping[str, _Told], now: float, deadline: float | None) -> None:
        """An incident silenced in Rootward is silenced in Alertmanager too (matched by its ``incident`` label, until
        the same time): it keeps firing there, so the silence's end does not read as its resolution."""
        for key, entry in told.items():
            until = entry.silenced_until
            if until is None or until <= now or entry.silenced_in_alertmanager == until or entry.resolved is not None:
                continue
            silence = {
                "matchers": [{"name": "incident", "value": key, "isRegex": False, "isEqual": True}],
                "startsAt": _time(now), "endsAt": _time(until), "createdBy": "rootward",
                "comment": f"silenced in Rootward until {_time(until)}",
            }  # fmt: skip
            body = json.dumps(silence).encode()
            if any([self._post(url, "/api/v2/silences", body, deadline) for url in self.settings.urls]):
                entry.silenced_in_alertmanager = until

    def _post(self, url: str, path: str, body: bytes, deadline: float | None = None) -> bool:
        target = url.rstrip("/") + path
        where = _where(target)
        timeout = self.settings.timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                self.counts("failed")
                return False
        request = urllib.request.Request(
            target, body, {"Content-Type": "application/json", **self.settings.headers}, method="POST"
        )
        try:
            with OPENER.open(request, timeout=timeout) as answer:
                answer.read()
        except urllib.error.HTTPError as e:
            logger.warning("alertmanager %s answered %d", where, e.code)
            self.counts("failed")
            return False
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            logger.warning("alertmanager %s cannot be reached: %s", where, type(e).__name__)
            self.counts("failed")
            return False
        self.counts("sent")
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.post_once()
            except Exception:  # a bug here must not end the alerts; logged with its traceback
                logger.exception("alertmanager notification failed")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop, and post once more what changed last (the ends of what resolved), all within ``timeout_s``."""
        if not self.configured:
            return
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            stuck, self._thread = self._thread.is_alive(), None
            if stuck:  # a post hangs: no second one
                return
        try:
            self.post_once(deadline)
        except Exception:
            logger.exception("alertmanager notification failed")


def _labels(stored: str | None) -> dict[str, str] | None:
    """Labels kept with an incident (its first post's), or None."""
    if not stored:
        return None
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return None


def _where(url: str) -> str:
    """A URL as logged: scheme, host and path, never credentials in it."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
