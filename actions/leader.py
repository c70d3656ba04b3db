"""Leader election on a ``coordination.k8s.io/v1`` Lease: with several Rootward replicas, only the holder acts.

Each replica tries every ``renew_s``: it creates the Lease if there is none, renews it if it holds it, and takes it
over when the holder has not renewed for ``duration_s``. Every write is a JSON Patch whose ``test`` operations
check the holder and renew time it read, so of two replicas racing for an expired Lease exactly one wins (the API
server applies a patch atomically; the loser gets 422 and stays a follower). A replica counts itself leader only
until ``duration_s`` after its last successful renewal (by its own monotonic clock), so it stops acting before
another may take over, even when it cannot reach the API to learn that it lost.

With ``pod`` set (this replica's own pod), the holder labels its pod ``rootward.dev/leader: "true"`` while it
holds the Lease and takes the label off when it loses or gives it up, so that a Service selecting the label
(``rootward-leader`` in otel-config/deploy/base) reaches whoever acts: the other sidecars forward their anomalies
there, and people approve there. A label that cannot be written is logged and tried again next round; a holder that
died keeps its label only as long as its pod exists.

The holder also keeps the changes it made on the Lease (annotation ``rootward.dev/changes``: when, to which
target, for the last ``keep_s``), so that the cooldowns and the hourly rate limit hold across a handover: a new
holder's own audit log has none of its predecessor's changes (DESIGN.md has the audit log move with the Lease; on
the DaemonSet it lives on each pod's emptyDir, so what moves is what the guards need).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from rootward.actions.errors import ActionError, KubeError, NotFound
from rootward.actions.kube import Json, Kube
from rootward.actions.pause import Paused
from rootward.actions.pause import parse as parse_pause
from rootward.actions.pause import text as pause_text
from rootward.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

#: The label the holder puts on its own pod.
LEADER_LABEL = "rootward.dev/leader"


def _pointer(parent: str, key: str) -> str:
    """The JSON Pointer of ``key`` under ``parent`` (``~`` and ``/`` escaped, RFC 6901)."""
    return f"{parent}/" + key.replace("~", "~0").replace("/", "~1")


_LABEL_PATH = _pointer("/metadata/labels", LEADER_LABEL)
#: The Lease annotation that holds the changes made (a JSON list of [unix time, target id, kind]), at most MAX_CHANGES.
CHANGES_ANNOTATION = "rootward.dev/changes"
_CHANGES_PATH = _pointer("/metadata/annotations", CHANGES_ANNOTATION)
MAX_CHANGES = 500
#: The Lease annotation that pauses every Rootward's actions (actions/pause.py).
PAUSED_ANNOTATION = "rootward.dev/paused"
_PAUSED_PATH = _pointer("/metadata/annotations", PAUSED_ANNOTATION)
#: What a listed change was: executed (counts for the rate limit and the cooldown), rolled_back (the cooldown).
CHANGE_KINDS = ("executed", "rolled_back")


class Change(NamedTuple):
    at: float
    target: str
    kind: str


#: The longest annotation read (MAX_CHANGES entries are ~60 KiB); a longer one is read as no list.
_MAX_ANNOTATION = 256 * 1024
#: How far ahead of this clock a listed change may be (clock skew between nodes); later ones are not believed.
_SKEW_S = 300.0


def _annotations_of(lease: Json) -> dict[str, Any] | None:
    """The Lease's annotations, or None when it has no map of them."""
    annotations = (lease.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else None


def _raw(lease: Json) -> str | None:
    raw = (_annotations_of(lease) or {}).get(CHANGES_ANNOTATION)
    return raw if isinstance(raw, str) else None


def _changes_text(changes: list[Change]) -> str:
    """The annotation's value listing ``changes``."""
    return json.dumps([[round(c.at, 3), c.target, c.kind] for c in changes])


def _add(lease: Json, key: str, value: str) -> list[Json]:
    """The JSON Patch that sets annotation ``key`` of ``lease`` (as read): by its key; on a Lease made before
    annotations were kept, the whole map, if nothing changed since the read."""
    if _annotations_of(lease) is not None:
        return [{"op": "add", "path": _pointer("/metadata/annotations", key), "value": value}]
    return [*_unchanged(lease), {"op": "add", "path": "/metadata/annotations", "value": {key: value}}]


def _changes(lease: Json, now: float) -> list[Change]:
    """The changes a Lease's annotation lists (a malformed annotation gives none, a malformed entry is skipped, and
    so is one dated after ``now`` plus the skew allowed)."""
    raw = _raw(lease)
    if raw is None or len(raw) > _MAX_ANNOTATION:
        return []
    try:
        listed = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    if not isinstance(listed, list):
        return []
    found = []
    for e in listed:
        if not (isinstance(e, list) and len(e) == 3 and isinstance(e[1], str) and e[2] in CHANGE_KINDS):
            continue
        if not isinstance(e[0], int | float) or isinstance(e[0], bool):
            continue
        try:
            t = float(e[0])
        except OverflowError:  # an integer past float's range
            continue
        if math.isfinite(t) and t <= now + _SKEW_S:
            found.append(Change(t, e[1], e[2]))
    return found


def _unchanged(lease: Json) -> list[Json]:
    """A JSON Patch test that the object is as read (its resourceVersion), when the server gave one: a whole-map
    write then cannot erase what another wrote since."""
    version = (lease.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] if version else []


def _micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class LeaderElector:
    """One replica's side of the election. ``start``/``shutdown`` are safe to call twice."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration_s: float = 15.0,
        renew_s: float = 5.0,
        clock: Clock | None = None,
        pod: str | None = None,
        keep_s: float = 3600.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.renew_s = renew_s
        self.clock = clock or SystemClock()
        self.pod = pod  # this replica's pod in ``namespace``, labelled while it leads
        self._labelled: bool | None = None  # what the pod's label says as last written (None: never written)
        self._label_failed = False  # a write of the label failed: what the pod carries is not known
        self.holder: str | None = None  # who held the Lease when this replica last read or wrote it
        self.keep_s = keep_s  # how long a change stays listed on the Lease (the longest cooldown, an hour at least)
        self._changes: list[Change] = []  # as last read from the Lease, or written
        self._round = threading.Lock()  # a round, and shutdown's giving up, one at a time
        self._held_until: float | None = None  # monotonic
        self._stop = threading.Event()
        #: told (with the holder as read) when this replica loses the Lease: what it holds for its time as the
        #: actor (approvals) is withdrawn there
        self.on_lost: Callable[[str | None], None] | None = None
        self.paused: Paused | None = None  # the Lease's pause as last read or written (actions/pause.py)
        self._lost_to_someone = False  # lost the Lease, and not yet seen who holds it now
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        """Whether this replica holds the Lease now (and may act)."""
        return self._held_until is not None and self.clock.monotonic() < self._held_until

    def step(self) -> bool:
        """One round: create, renew or take over the Lease when possible; return whether this replica leads."""
        with self._round:
            if self._stop.is_set():  # shut down (a round that waited for shutdown's giving up takes nothing back)
                return False
            return self._step_locked()

    def _step_locked(self) -> bool:
        started = self.clock.monotonic()
        now = self.clock.now()
        try:
            won = self._step(now)
        except ActionError as e:
            logger.warning("leader election: %s", e)
            won = False
        if won:
            if self._held_until is None:
                logger.info("leader election: %s now holds Lease %s/%s", self.identity, self.namespace, self.name)
            self._held_until = started + self.duration_s
        elif self._held_until is not None and not self.is_leader():
            logger.info("leader election: %s lost Lease %s/%s", self.identity, self.namespace, self.name)
            self._held_until = None
            self._lost_to_someone = True  # told once another holds it (not on a blip of the API)
        leading = self.is_leader()
        if leading:
            self._lost_to_someone = False
        elif self._lost_to_someone and self.holder not in (None, self.identity):
            self._lost_to_someone = False
            self._lost()
        self._label(leading)
        return leading

    def _lost(self) -> None:
        if self.on_lost is None:
            return
        try:
            self.on_lost(self.holder)
        except Exception:  # the election goes on whatever the listener does
            logger.exception("leader election: handling the loss of the Lease failed")

    def _label(self, leading: bool) -> None:
        """Put the leader label on this replica's pod, or take it off, when it is not already so."""
        if self.pod is None or self._labelled is leading:
            return
        op = {"op": "add", "path": _LABEL_PATH, "value": "true"} if leading else {"op": "remove", "path": _LABEL_PATH}
        try:
            self.kube.patch_pod(self.namespace, self.pod, [op])
        except KubeError as e:
            if leading or e.status not in (404, 422):  # no such label (422) or pod (404): it is off already
                logger.warning("leader election: could not %s the label of Pod %s/%s: %s",
                               "set" if leading else "remove", self.namespace, self.pod, e)  # fmt: skip
                self._label_failed = True
                return
        except ActionError as e:
            logger.warning("leader election: could not label Pod %s/%s: %s", self.namespace, self.pod, e)
            self._label_failed = True
            return
        self._labelled, self._label_failed = leading, False

    def _step(self, now: float) -> bool:
        stamp = _micro_time(now)
        try:
            lease = self.kube.lease(self.namespace, self.name)
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                # what this replica last knew of the annotations (a deleted Lease keeps its pause and its changes),
                # and a map to add to by key from now on (never a whole-map write another's could race with)
                "metadata": {"name": self.name, "namespace": self.namespace, "annotations": self._annotations()},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": round(self.duration_s),
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            try:
                self.kube.create_lease(self.namespace, body)
            except KubeError as e:
                if e.status == 409:  # another replica created it first
                    return False
                raise
            self.holder = self.identity
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        self.holder = holder if isinstance(holder, str) else None
        self._changes = _changes(lease, now)
        self.paused = parse_pause((_annotations_of(lease) or {}).get(PAUSED_ANNOTATION))
        renewed = spec.get("renewTime")
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        guard: list[Json] = [
            {"op": "test", "path": "/spec/holderIdentity", "value": holder},
            {"op": "test", "path": "/spec/renewTime", "value": renewed},
        ]
        patch: list[Json]
        if holder == self.identity:
            patch = [*guard, {"op": "replace", "path": "/spec/renewTime", "value": stamp}]
        else:
            last = _parse(renewed)
            if holder and last is not None and now < last + duration:
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + 1
            patch = [
                *guard,
                {"op": "replace", "path": "/spec/holderIdentity", "value": self.identity},
                {"op": "replace", "path": "/spec/acquireTime", "value": stamp},
                {"op": "replace", "path": "/spec/renewTime", "value": stamp},
                {"op": "replace", "path": "/spec/leaseDurationSeconds", "value": round(self.duration_s)},
                {"op": "replace", "path": "/spec/leaseTransitions", "value": transitions},
            ]
        try:
            self.kube.patch_lease(self.namespace, self.name, patch)
        except KubeError as e:
            if e.status in (409, 422):  # someone else wrote the Lease since we read it
                return False
            raise
        self.holder = self.identity
        return True

    def _annotations(self) -> dict[str, str]:
        kept: dict[str, str] = {}
        if self._changes:
            kept[CHANGES_ANNOTATION] = _changes_text(self._changes)
        if self.paused is not None:
            kept[PAUSED_ANNOTATION] = pause_text(self.paused)
        return kept

    def changes(self, since: float) -> list[Change]:
        """The changes listed on the Lease since ``since``, as last read or written."""
        return [c for c in self._changes if c.at >= since]

    def note_change(self, target: str, kind: str = "executed") -> None:
        """List a change (``kind``: executed or rolled_back) to ``target`` on the Lease, now: only while holding it,
        on the list as read (a write since is tried once more on a fresh read); the oldest past ``keep_s`` or
        ``MAX_CHANGES`` go.

        Raises:
            ActionError: the Lease cannot be read or written (the change is in the audit log all the same).
        """
        for attempt in range(2):
            now = self.clock.now()
            lease = self.kube.lease(self.namespace, self.name)
            recent = [c for c in _changes(lease, now) if c.at >= now - self.keep_s][-(MAX_CHANGES - 1) :]
            kept = [*recent, Change(now, target, kind)]
            raw = _raw(lease)
            patch: list[Json] = [{"op": "test", "path": "/spec/holderIdentity", "value": self.identity}]
            if raw is not None:  # no one else's write in between
                patch.append({"op": "test", "path": _CHANGES_PATH, "value": raw})
            patch += _add(lease, CHANGES_ANNOTATION, _changes_text(kept))
            try:
                self.kube.patch_lease(self.namespace, self.name, patch)
            except KubeError as e:
                if attempt == 0 and e.status in (409, 422):
                    continue
                raise
            self._changes = kept
            return

    def set_paused(self, by: str, reason: str) -> Paused:
        """Pause every Rootward's actions: the Lease's annotation (anyone may write it, holder or not).

        Raises:
            ActionError: the Lease cannot be read or written (nothing is paused).
        """
        paused = Paused.now(by, reason, self.clock)
        for attempt in range(3):
            lease = self.kube.lease(self.namespace, self.name)
            try:
                self.kube.patch_lease(self.namespace, self.name, _add(lease, PAUSED_ANNOTATION, pause_text(paused)))
            except KubeError as e:
                if attempt < 2 and e.status in (409, 422):
                    continue
                raise
            break
        self.paused = paused
        return paused

    def clear_paused(self) -> None:
        """Take the pause off the Lease (none there: done).

        Raises:
            ActionError: the Lease cannot be written (the pause stays).
        """
        try:
            self.kube.patch_lease(self.namespace, self.name, [{"op": "remove", "path": _PAUSED_PATH}])
        except KubeError as e:
            if e.status != 422:  # 422: no such annotation, not paused
                raise
        self.paused = None

    def start(self) -> None:
        """Take part in the election in a background thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rootward-leader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the loop's boundary: log and try again next round
                logger.exception("leader election round failed")
            self._stop.wait(self.renew_s)

    def shutdown(self) -> None:
        """Stop; a holder gives the Lease up (renew time in the past) so another replica takes over at once."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(self.renew_s + 5)
        # A round still under way (its API calls can outlast the join) ends first, within the renew interval: past
        # it the API is not answering, the Lease expires by itself and the label goes with the pod.
        if not self._round.acquire(timeout=self.renew_s + 5):
            logger.warning("leader election: a round is still waiting on the API; not giving the Lease up")
            return
        try:
            self._give_up()
        finally:
            self._round.release()

    def _give_up(self) -> None:
        if self._held_until is not None:
            self._held_until = None
            try:
                lease = self.kube.lease(self.namespace, self.name)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") == self.identity:
                    past = _micro_time(self.clock.now() - 10 * self.duration_s)
                    self.kube.patch_lease(
                        self.namespace,
                        self.name,
                        [
                            {"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
                            {"op": "replace", "path": "/spec/renewTime", "value": past},
                        ],
                    )
            except ActionError as e:
                logger.warning("leader election: could not give up the Lease: %s", e)
        if self._labelled or self._label_failed:  # labelled, or not known (a failed write): take it off
            self._label(False)
