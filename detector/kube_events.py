"""Recent Kubernetes Events per object, as ``kubectl describe`` ends: what the agent's ``kubernetes_events`` tool
shows (Normal and Warning, with their messages). Fed by :class:`~rootward.detector.kube.KubeSignals` from the
k8sobjects receiver's Events.

One record per Event (its namespace and name): a watch sends the Event again (MODIFIED) each time its count grows,
and the latest version replaces the earlier one; a DELETED Event (its TTL, an hour by default, ran out) is dropped.
Bounded: ``max_objects`` objects (the least recently told forgotten first), ``per_object`` Events each (the oldest
first), ``max_message`` characters of a message. Thread-safe: the pipeline writes, the agent's tools read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rootward.detector.times import stamp


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One Kubernetes Event about an object."""

    time: float
    entity: str
    type: str
    reason: str
    message: str
    count: int


class EventHistory:
    def __init__(self, max_objects: int = 2000, per_object: int = 10, max_message: int = 200) -> None:
        self.max_objects, self.per_object, self.max_message = max_objects, per_object, max_message
        self.objects: OrderedDict[str, OrderedDict[str, EventRecord]] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, event: str, obj: Mapping[str, Any], entity: str, now: float) -> None:
        """An Event (``event``: the watch's ADDED, MODIFIED or DELETED) about ``entity``."""
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        key = f"{meta.get('namespace') or ''}/{meta.get('name') or meta.get('uid') or id(obj)}"
        series = obj.get("series")
        series = series if isinstance(series, Mapping) else {}
        count = obj.get("count") or series.get("count") or 1
        record = EventRecord(
            stamp(
                {**obj, "lastObservedTime": series.get("lastObservedTime"), "created": meta.get("creationTimestamp")},
                ("lastTimestamp", "lastObservedTime", "eventTime", "created"),
                now,
            ),
            entity,
            str(obj.get("type", ""))[:20],
            str(obj.get("reason", ""))[:100],
            str(obj.get("message") or obj.get("note") or "")[: self.max_message],
            int(count) if isinstance(count, int) else 1,
        )
        with self._lock:
            kept = self.objects.pop(entity, None) or OrderedDict()
            kept.pop(key, None)
            if event != "DELETED":
                kept[key] = record  # the latest version, newest last
            while len(kept) > self.per_object:
                kept.popitem(last=False)
            if kept:
                self.objects[entity] = kept  # the most recently told object last
            while len(self.objects) > self.max_objects:
                self.objects.popitem(last=False)

    def of(self, entities: Iterable[str]) -> list[EventRecord]:
        """The recent Events of these objects (pods, nodes, workloads), oldest first."""
        with self._lock:
            found = [r for e in set(entities) for r in self.objects.get(e, {}).values()]
        return sorted(found, key=lambda r: (r.time, r.entity, r.reason))
