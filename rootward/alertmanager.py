"""Incidents as Prometheus Alertmanager alerts (``notifications.alertmanager``): the team's own routing, receivers
(PagerDuty, Opsgenie, e-mail, webhooks), silences, inhibition and on-call schedules take Rootward's incidents as
they take Prometheus' alerts, with no new integration to build.

Each open incident is one alert (``alertname="RootwardIncident"``), posted to every configured Alertmanager's
``/api/v2/alerts`` every ``interval_s`` as Prometheus does (an alert not sent again ends at its ``endsAt``, four
intervals ahead: a Rootward that stops does not leave alerts firing forever); a change is posted at once. A resolved
incident is posted with its resolution time as ``endsAt`` three more times, then forgotten; a silenced one is not
posted (it ends at its last ``endsAt``). A failed post is counted and the next round sends everything again.

Labels: ``incident``, ``severity`` (critical / warning), ``root_cause`` (the top candidate's entity id), ``namespace``
and ``service`` when it is a service, and ``notifications.alertmanager.labels`` (e.g. the cluster's name). They are
the alert's identity to Alertmanager, so they are the ones of its first post, kept for the incident's life (a
diagnosis that changes its mind changes the annotations, not the alert); the annotations say what is now.
Annotations: ``summary``, ``description`` (the strongest anomalies), ``rootward_url`` (the incident on Rootward's
page, with ``page_url``). Telemetry's words in them are redacted and bounded, as in Slack messages.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
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


def to_alert(
    incident: Incident, settings: AlertmanagerSettings, redact: Callable[[str], str], ends: float
) -> dict[str, Any]:
    """The alert for ``incident``, ending at ``ends`` (its resolution, or a few intervals ahead while open)."""

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
        "endsAt": _time(ends),
        "generatorURL": link,
    }


class AlertmanagerNotifier:
    """An incident sink posting to Alertmanager from its own thread. ``counts(outcome)``: sent, failed (a post to
    one Alertmanager). ``close`` posts once more."""

    def __init__(
        self,
        settings: AlertmanagerSettings,
        counts: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        redactor: Redactor | None = None,
        background: bool = True,
    ) -> None:
        """``background``: post from a thread of its own (without: only :meth:`post_once` posts, for tests)."""
        self.settings = settings
        self.counts = counts or (lambda outcome: None)
        self.clock = clock
        self.redact = (redactor or Redactor()).text
        self._incidents: dict[str, Incident] = {}  # open ones, and resolved ones still to be posted
        self._resolved_rounds: dict[str, int] = {}
        self._labels: dict[str, dict[str, str]] = {}  # each incident's labels as first posted: its identity
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
        with self._lock:
            self._incidents[incident.id] = incident
            if change == "reopened":
                self._resolved_rounds.pop(incident.id, None)
        self._wake.set()

    def post_once(self) -> bool:
        """Post every current alert to every Alertmanager; return whether all took them."""
        now = self.clock()
        with self._lock:
            incidents = list(self._incidents.values())
        alerts = []
        for incident in incidents:
            if incident.silenced_until is not None and incident.silenced_until > now:
                continue
            resolved = incident.status == "resolved"
            ends = incident.resolved or now if resolved else now + 4 * self.settings.interval_s
            alert = to_alert(incident, self.settings, self.redact, ends)
            with self._lock:
                alert["labels"] = self._labels.setdefault(incident.id, alert["labels"])
            alerts.append(alert)
        if not alerts:
            return True
        body = json.dumps(alerts).encode()
        ok = all(self._post(url, body) for url in self.settings.urls)
        if ok:
            with self._lock:
                for incident in incidents:
                    if incident.status != "resolved":
                        continue
                    told = self._resolved_rounds.get(incident.id, 0) + 1
                    if told >= RESOLVED_ROUNDS:
                        self._incidents.pop(incident.id, None)
                        self._resolved_rounds.pop(incident.id, None)
                        self._labels.pop(incident.id, None)
                    else:
                        self._resolved_rounds[incident.id] = told
        return ok

    def _post(self, url: str, body: bytes) -> bool:
        target = url.rstrip("/") + "/api/v2/alerts"
        request = urllib.request.Request(
            target, body, {"Content-Type": "application/json", **self.settings.headers}, method="POST"
        )
        try:
            with OPENER.open(request, timeout=self.settings.timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as e:
            logger.warning("alertmanager %s answered %d", target, e.code)
            self.counts("failed")
            return False
        except (urllib.error.URLError, OSError, ValueError) as e:
            logger.warning("alertmanager %s cannot be reached: %s", target, type(e).__name__)
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
        if not self.configured:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.post_once()  # what changed last, and the ends of what resolved
        except Exception:
            logger.exception("alertmanager notification failed")
