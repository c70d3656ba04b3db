"""Incident notifications in Slack: an incident sink (see detector/incidents.py) that never blocks the pipeline.

Two ways to post, both through ``slack_sdk`` with its retry handlers (429 with Retry-After, 5xx):

- a bot token (Web API): one message per incident, posted with ``chat.postMessage`` when it opens and edited in place
  with ``chat.update`` as it changes and when it resolves;
- an incoming webhook: a message when an incident opens, reopens and resolves (webhooks cannot edit).

Changes go through a bounded queue to one worker thread; a full queue drops (counted), a Slack outage is counted
and logged, never raised. Per channel at most ``max_per_minute`` messages a minute: past it, new incidents wait and
go out together as one digest. Silenced incidents are not posted; an update whose rendering has not changed is not
posted again. Tokens and webhook URLs are secrets: never logged, never in messages.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from rootward.agent.redact import Redactor
from rootward.detector.incidents import Incident, Sink

logger = logging.getLogger(__name__)

_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "resolved": ":white_check_mark:"}


def _when(t: float | None) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t)) if t is not None else "-"


#: Redaction of what Slack is told when the notifier is given none: the shipped patterns (agent/redact.py).
_DEFAULT_REDACTOR = Redactor()


def _safe(text: str, limit: int = 200, redact: Callable[[str], str] = _DEFAULT_REDACTOR.text) -> str:
    """Telemetry's words (entity ids, signal names: service and span names are the sender's) as Slack mrkdwn text:
    secrets redacted (a token in a span name, an e-mail address in a template), ``&``, ``<`` and ``>`` escaped (so
    no ``<!channel>`` or link reaches a channel), backticks out, at most ``limit`` characters."""
    text = redact(text)[:limit].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("`", "'")


#: Calls between an incident's entities a message names (the rest are counted).
MAX_LINKS = 6


def render(
    incident: Incident,
    page_url: str | None = None,
    links: list[tuple[str, str]] | None = None,
    redact: Callable[[str], str] = _DEFAULT_REDACTOR.text,
) -> tuple[str, list[dict[str, Any]]]:
    """The message for an incident: fallback text and Block Kit blocks. Entity ids and signal names only: no
    secrets, no raw telemetry text. ``links``: the calls between its entities' services (how the affected part of
    the graph connects, in words)."""

    def safe(text: str, limit: int = 200) -> str:
        return _safe(text, limit, redact)

    state = "resolved" if incident.status == "resolved" else incident.severity
    title = f"{_EMOJI[state]} Incident {incident.id}: {incident.status}"
    if incident.status == "open" and incident.acknowledged:
        title += " (acknowledged)"
    top = incident.candidates[:3]
    suspects = ", ".join(f"`{safe(c)}`" for c in top) or "-"
    text = f"{title}. Likely root cause: {', '.join(safe(c) for c in top) or 'unknown'}"
    anomalies = sorted(incident.anomalies.values(), key=lambda a: -abs(a.score))[:5]
    lines = [
        f"• `{safe(a.entity)}` {safe(a.signal)}: {a.value:.4g} (expected {a.expected:.4g}, z {a.score:+.1f})"
        for a in anomalies
    ]
    others = len(incident.first_seen) - len(top)
    count = len(incident.first_seen)
    affected = f"{count} {'entity' if count == 1 else 'entities'} affected" + (
        f" ({others} more)" if others > 0 else ""
    )
    if links:
        named = [f"`{safe(u)}` calls `{safe(v)}`" for u, v in links[:MAX_LINKS]]
        more = len(links) - len(named)
        affected += ": " + ", ".join(named) + (f", and {more} more {'call' if more == 1 else 'calls'}" if more else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Likely root cause:* {suspects}\n{affected}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Top anomalies*\n" + ("\n".join(lines) or "-")}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"severity {incident.severity} · opened {_when(incident.opened)} · "
                    f"updated {_when(incident.updated)}"
                    + (f" · resolved {_when(incident.resolved)}" if incident.resolved else ""),
                }
            ],
        },
    ]
    if incident.changes:
        changes = [
            f"• {_when(c.time)} {c.kind} `{safe(c.entity)}`"
            + (f" {safe(c.detail)}" if c.detail else "")
            + (f" by {_safe(c.who, 200, str)}" if c.who else "")  # the API server's record of the user, not telemetry
            for c in incident.changes[-5:]
        ]
        blocks.insert(
            3, {"type": "section", "text": {"type": "mrkdwn", "text": "*Recent changes*\n" + "\n".join(changes)}}
        )
    if page_url:
        link = f"{page_url.rstrip('/')}/incidents/{incident.id}"
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open in Rootward"}, "url": link}
                ],
            }
        )
    return text, blocks


def render_approval(
    incident_id: str,
    approval_id: str,
    action: dict[str, Any],
    page_url: str | None = None,
    redact: Callable[[str], str] = _DEFAULT_REDACTOR.text,
) -> tuple[str, list[dict[str, Any]]]:
    """A message asking a human to approve an action, with Approve / Reject buttons (their clicks come back to
    ``POST /api/v1/slack/interactions``, signed; action_id approve|reject, value the approval id): the diagnosis
    behind it with its confidence and evidence, why policy wants a human, the blast radius, the dry run, and a link
    to the approval on the page."""

    def safe(text: str, limit: int = 200) -> str:
        return _safe(text, limit, redact)

    request = action.get("request", {})
    target = "/".join(str(request[k]) for k in ("namespace", "name") if request.get(k)) or request.get("node", "")
    decision = action.get("decision") or {}
    reasons = decision.get("approval") or []
    blast = action.get("blast_radius") or {}
    what = safe(f"{request.get('kind', '?')} {target}")
    text = f":raising_hand: Approval needed for incident {safe(incident_id)}: {what}"
    lines = []
    if action.get("because"):
        confidence = action.get("confidence")
        pct = f" ({float(confidence):.0%} confident)" if isinstance(confidence, (int, float)) else ""
        lines.append(f"*Diagnosis:* {safe(str(action['because']))}{pct}")
    lines += [f"• {safe(str(e))}" for e in (action.get("evidence") or [])[:5]]
    lines.append(f"*Why a human:* {safe('; '.join(map(str, reasons))) or 'policy'}")
    if blast:
        figures = [f"{k} {v}" for k, v in sorted(blast.items()) if not isinstance(v, (list, dict))]
        lines.append(f"*Blast radius:* {safe(', '.join(figures))}")
    if action.get("status") == "pending_approval":  # the executor waits for a human only after the dry run passed
        lines.append("*Dry run:* passed on the API server (dryRun=All)")
    if page_url:
        lines.append(f"<{page_url.rstrip('/')}/approvals|Open the approvals page> (the full reasoning and dry run)")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {
            "type": "actions",
            "elements": [
                {"type": "button", "style": "primary", "action_id": "approve", "value": approval_id,
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "style": "danger", "action_id": "reject", "value": approval_id,
                 "text": {"type": "plain_text", "text": "Reject"}},
            ],
        },
    ]  # fmt: skip
    return text, blocks


@dataclass(frozen=True, slots=True)
class _Note:
    """One change to post, rendered when it happened."""

    incident: str
    change: str
    silenced_until: float | None
    text: str
    blocks: list[dict[str, Any]]
    digest_line: str
    remember: Callable[[str], None] | None = None  # keeps a new message's ts on the incident (stored with it)


def _digest_line(incident: Incident, redact: Callable[[str], str] = _DEFAULT_REDACTOR.text) -> str:
    suspects = ", ".join(_safe(c, 200, redact) for c in incident.candidates[:2]) or "-"
    return f"• {incident.id} ({incident.severity}): {suspects}"


@dataclass(frozen=True)
class SlackSettings:
    webhook_url: str | None = None
    bot_token: str | None = None
    channel: str | None = None
    base_url: str | None = None  # the Web API's, for tests and proxies
    page_url: str | None = None
    max_per_minute: int = 10
    queue_size: int = 1000
    retries: int = 2
    resend: int = 5  # times a message Slack did not take is sent again (a newer one of its incident replaces it)
    resend_after_s: float = 10.0  # the first wait; doubling, at most RESEND_MAX_S


#: The longest wait before a message is sent again.
RESEND_MAX_S = 300.0
#: Slack's answers that no resend changes (the token, the channel, the app's rights): given up at once.
_PERMANENT = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "channel_not_found",
    "not_in_channel", "is_archived", "missing_scope", "no_permission", "restricted_action",
})  # fmt: skip
#: chat.update's answers for a message that is gone: post a new one.
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


def _error(e: SlackApiError) -> str | None:
    """Slack's error code in a failed Web API answer (the code only: never the request, which holds the token)."""
    try:
        code = e.response.get("error")
    except (AttributeError, TypeError, KeyError):  # an answer that is no JSON object
        return None
    return code if isinstance(code, str) else None


class SlackNotifier:
    """An incident sink posting to Slack from its own thread. ``counts(outcome)`` is told of each message:
    sent, failed (each attempt Slack did not take), given_up (after ``resend`` more), dropped (queue full),
    silenced, unchanged, digested."""

    def __init__(
        self,
        settings: SlackSettings,
        counts: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        links: Callable[[list[str]], list[tuple[str, str]]] | None = None,
        redactor: Redactor | None = None,
        stored: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``links(entities)``: the calls between the services of an incident's entities (the topology's);
        ``redactor``: what is removed from every word of telemetry a message holds (default: the shipped patterns);
        ``stored(incident id, "slack", ts)`` keeps a new message's ts at once (the incident store)."""
        self.stored = stored
        self.redact = (redactor or Redactor()).text
        self.settings = settings
        self.counts = counts or (lambda outcome: None)
        self.clock = clock
        self.links = links
        handlers = [
            RateLimitErrorRetryHandler(max_retry_count=settings.retries),
            ServerErrorRetryHandler(max_retry_count=settings.retries),
        ]
        self.web = (
            WebClient(
                token=settings.bot_token, base_url=settings.base_url or WebClient.BASE_URL, retry_handlers=handlers
            )
            if settings.bot_token
            else None
        )
        self.webhook = (
            WebhookClient(url=settings.webhook_url, retry_handlers=handlers) if settings.webhook_url else None
        )
        self._queue: queue.Queue[_Note | None] = queue.Queue(settings.queue_size)
        self._posted: dict[str, str] = {}  # incident id -> message ts (Web API)
        self._last: dict[str, str] = {}  # incident id -> hash of the last rendering sent
        self._sent_at: deque[float] = deque()  # times of recent posts (the per-channel rate limit)
        self._waiting: list[str] = []  # lines for new incidents held back by the rate limit: the next digest
        self._resend: dict[str, tuple[float, _Note, int]] = {}  # key -> (due, the note, attempts so far)
        self._permanent = False  # the last failed post was refused for good (see _PERMANENT)
        self._thread = threading.Thread(target=self._run, name="rootward-slack", daemon=True)
        self._thread.start()

    @property
    def configured(self) -> bool:
        return self.web is not None or self.webhook is not None

    # --- the sink (pipeline thread): never blocks ---------------------------------------------------------------------

    def incident_changed(self, incident: Incident, change: str) -> None:
        if not self.configured:
            return
        if self.webhook is not None and self.web is None and change == "updated":
            return  # a webhook cannot edit; updates would be new messages each window
        links = self.links(list(incident.first_seen)) if self.links is not None else None
        text, blocks = render(incident, self.settings.page_url, links, self.redact)  # now: it changes while it waits
        told = incident.notified.get("slack")
        if told is not None and self.web is not None:  # posted before a restart: edit that message
            self._posted.setdefault(incident.id, told)

        def remember(ts: str, incident: Incident = incident) -> None:
            incident.notified = {**incident.notified, "slack": ts}
            if self.stored is not None:
                self.stored(incident.id, "slack", ts)

        note = _Note(
            incident.id, change, incident.silenced_until, text, blocks, _digest_line(incident, self.redact), remember
        )
        try:
            self._queue.put_nowait(note)
        except queue.Full:
            self.counts("dropped")

    def approval_requested(self, incident_id: str, approval_id: str, action: dict[str, Any]) -> None:
        """Ask for a human's decision on an action (the responder calls this for pending approvals)."""
        if not self.configured:
            return
        text, blocks = render_approval(incident_id, approval_id, action, self.settings.page_url, self.redact)
        note = _Note(f"approval:{approval_id}", "opened", None, text, blocks, f"• approval {approval_id}")
        try:
            self._queue.put_nowait(note)
        except queue.Full:
            self.counts("dropped")

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), then stop the worker."""
        try:
            self._queue.put((None), timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything queued has been handled (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    # --- the worker --------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            due = min((d for d, _, _ in self._resend.values()), default=None)
            wait = 5.0 if due is None else min(5.0, max(0.0, due - time.monotonic()))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                self._digest()
                self._resend_due()
                continue
            try:
                if item is None:
                    self._digest(force=True)
                    return
                self._resend.pop(item.incident, None)  # a newer rendering of the same: it replaces the old
                self._handle(item)
                self._resend_due()
            except Exception:  # a bug here must not kill the worker; logged with its traceback, never the secrets
                logger.exception("slack notification failed")
                self.counts("failed")
            finally:
                self._queue.task_done()

    def _resend_due(self) -> None:
        now = time.monotonic()
        for key, (due, note, attempts) in list(self._resend.items()):
            if due <= now:
                del self._resend[key]
                self._handle(note, attempts)

    def _handle(self, note: _Note, attempts: int = 0) -> None:
        now = self.clock()
        if note.silenced_until is not None and note.silenced_until > now:
            self.counts("silenced")
            return
        digest = hashlib.sha256(repr(note.blocks).encode()).hexdigest()
        if self._last.get(note.incident) == digest:
            self.counts("unchanged")
            return
        new = note.incident not in self._posted and note.change in ("opened", "reopened")
        if new and not self._allowed(now):
            self._waiting.append(note.digest_line)
            self.counts("digested")
            return
        self._digest()
        if self._post(note.incident, note.text, note.blocks, note.remember):
            self._last[note.incident] = digest
        elif attempts < self.settings.resend and not self._permanent:
            wait = min(RESEND_MAX_S, self.settings.resend_after_s * 2**attempts)
            self._resend[note.incident] = (time.monotonic() + wait, note, attempts + 1)
        else:
            logger.warning("slack: gave up on a message after %d attempts", attempts + 1)
            self.counts("given_up")

    def _allowed(self, now: float) -> bool:
        while self._sent_at and self._sent_at[0] <= now - 60:
            self._sent_at.popleft()
        return len(self._sent_at) < self.settings.max_per_minute

    def _digest(self, force: bool = False) -> None:
        """Post the incidents the rate limit held back, as one message, once the limit allows (or at close)."""
        if not self._waiting or not (force or self._allowed(self.clock())):
            return
        lines, self._waiting = self._waiting, []
        text = f"{len(lines)} more incidents opened"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n" + "\n".join(lines[:20])}}]
        self._post(None, text, blocks)

    def _post(
        self,
        incident_id: str | None,
        text: str,
        blocks: list[dict[str, Any]],
        remember: Callable[[str], None] | None = None,
    ) -> bool:
        self._permanent = False
        try:
            if self.web is not None:
                ts = self._posted.get(incident_id) if incident_id else None
                if ts is not None:
                    try:
                        self.web.chat_update(channel=self.settings.channel or "", ts=ts, text=text, blocks=blocks)
                    except SlackApiError as e:
                        if _error(e) not in _GONE:
                            raise
                        assert incident_id is not None
                        del self._posted[incident_id]  # the message was deleted: a new one, told again
                        return self._post(incident_id, text, blocks, remember)
                else:
                    response = self.web.chat_postMessage(channel=self.settings.channel or "", text=text, blocks=blocks)
                    if incident_id is not None:
                        self._posted[incident_id] = str(response["ts"])
                        if remember is not None:
                            remember(str(response["ts"]))
            elif self.webhook is not None:
                response_ = self.webhook.send(text=text, blocks=blocks)
                if response_.status_code != 200:
                    raise RuntimeError(f"webhook answered {response_.status_code}")
        except Exception as e:  # noqa: BLE001 (SlackApiError, connection errors: counted and logged by type only)
            code = _error(e) if isinstance(e, SlackApiError) else None
            self._permanent = code in _PERMANENT  # sending again would be refused again: given up at once
            logger.warning("slack post failed: %s%s", type(e).__name__, f" ({code})" if code else "")
            self.counts("failed")
            return False
        self._sent_at.append(self.clock())
        self.counts("sent")
        return True


class WhileLeading:
    """An incident sink (Slack) that hears of changes only while ``leading()``: with follow_lease, the sidecar that
    holds the Lease alerts, on what every sidecar forwarded to it. An incident it told of keeps being told of after
    the Lease moves on, so that its message is updated and resolved, not left open."""

    def __init__(self, sink: Sink, leading: Callable[[], bool]) -> None:
        self.sink, self.leading = sink, leading
        self.told: set[str] = set()  # incidents the sink heard of (forgotten once resolved)

    def incident_changed(
        self, incident: Incident, change: Literal["opened", "updated", "resolved", "reopened"]
    ) -> None:
        if incident.id in self.told or incident.notified or self.leading():  # notified: told before a restart
            self.sink.incident_changed(incident, change)
            self.told.add(incident.id)
        if change == "resolved":
            self.told.discard(incident.id)
