"""Log flow: the code paths a service's log lines show, and the one that stopped running while the rest go on.

A fault in code (an exception thrown half-way through a handler, a wrong value returned) rarely moves a service's
request rate, latency or error count: what changes is *which* lines it logs. The line after the failing statement
is never written, while the lines before it, and the requests, keep coming (on the shared TrainTicket day, every
code fault shows as a log template whose share of its service's lines falls from 5-60 % to nothing; Nezha mines the
same thing as event-graph patterns per trace). Two tests find such a template, each over a trailing window
(``trail_s``) of lines, both judged against what was learned from the lines before (exponentially forgotten by
``half_life`` lines of the service, or traces through the anchor's service):

- **share**: the service wrote ``n`` lines and template ``k`` had share ``p`` of its lines; ``n * p`` of them were
  expected (at least ``min_expected``) and none came. A change in the request mix moves shares too, so it needs a
  large expectation.
- **trace**: in past traces, whenever template ``a`` (of any service) was in a trace, ``k`` was too, in a share
  ``q`` of them (at least ``min_q``). Now the last ``m`` traces with ``a`` (since a window last had one with both,
  within the trail) had no ``k``: the chance of that is ``(1 - q) ** m``; its ``-log10`` is the evidence, at least
  ``min_evidence``. The request still happens (``a`` is its anchor), only the path through ``k`` is gone; a change
  in the request mix removes ``a`` too, and says nothing. Anchors are chosen again in the first window of each trail
  on the clock (window number // trail windows), whenever the flow began. Counting from the last trace with both,
  not over a whole trail without one, a fault shows within seconds of its first traces, not a trail after the last
  good one (a trace file that ends 30 s into a fault showed nothing).

Either makes an anomaly ``log_missing:<template>`` on the template's service (value 0, the expected count, the
evidence as score). A trace counts once no line of it came for a whole window. Not judged: WARN-and-above templates
(errors that stop are good news), a service within a trail of writing a line below WARN it never wrote before (a
new version), and by the share test, one within a trail of its lines resuming after a silence (requests under way
log only their later lines). Bounded:
open traces (the oldest finished early past ``max_open``), templates a trace may hold (past ``max_keys`` it counts for
nothing: which keys it kept would depend on arrival order), learned pairs (``max_pairs``; decayed ones are forgotten
each trail), services (``max_entities``; unheard for 6 hours, forgotten); decayed templates, and those the miner
evicted (their lines come back under a new id), are forgotten too.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from rootward.detector.detector import Anomaly

Key = tuple[str, int]  # (entity, template id)
Pair = tuple[Key, Key]
T = TypeVar("T")

_MASK = (1 << 64) - 1


def sampling_key(seed: int | None = None) -> int:
    """The key of the traces' sampling hash: an odd 64-bit multiplier mixed from ``seed`` (splitmix64, so a small or
    even seed makes as good a key as any), or from a random one. Random, a sender cannot choose trace ids that are
    always sampled (with ``id & 1023`` as the bucket, ids ending in ten zero bits were, and could take the whole
    budget); a fixed seed makes a replay sample the same traces each run."""
    z = ((secrets.randbits(64) if seed is None else seed) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) | 1


def bucket(trace: int, key: int) -> int:
    """A trace id's sampling bucket, 0..1023: the top ten bits of ``trace * key mod 2**64`` (multiplicative hashing;
    every bit of the id moves them). Lines and spans are sampled by trace with ``bucket(trace, key) < keep``."""
    return ((trace * key) & _MASK) >> 54


def buckets(traces: np.ndarray, key: int) -> np.ndarray:
    """:func:`bucket` of a uint64 array (numpy's uint64 product wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        return (traces.astype(np.uint64) * np.uint64(key)) >> np.uint64(54)


class Trailing(Generic[T]):
    """Counts summed over the last ``windows`` windows: one Counter pushed a window."""

    def __init__(self, windows: int) -> None:
        self.windows = windows
        self.ring: deque[Counter[T]] = deque()
        self.sum: Counter[T] = Counter()

    def push(self, counts: Counter[T]) -> None:
        self.ring.append(counts)
        self.sum.update(counts)
        while len(self.ring) > self.windows:
            self.sum.subtract(self.ring.popleft())
            self.sum = +self.sum


@dataclass(frozen=True, slots=True)
class FlowSettings:
    trail_s: float = 60.0
    half_life: float = 3000.0
    min_expected: float = 8.0
    min_evidence: float = 6.0
    min_q: float = 0.9
    min_anchor: float = 30.0
    warmup_lines: float = 200.0
    max_open: int = 50_000
    max_keys: int = 16
    max_pairs: int = 200_000
    max_entities: int = 10_000


class LogFlow:
    """Fed every mined line (:meth:`line`), judged a window at a time (:meth:`close`). Not thread-safe: the
    caller (:class:`~rootward.detector.templates.LogTemplates`) holds its lock."""

    def __init__(self, settings: FlowSettings | None = None, window_s: float = 10.0) -> None:
        self.settings = s = settings or FlowSettings()
        self.windows = max(1, round(s.trail_s / window_s))
        self.decay = 0.5 ** (1.0 / s.half_life)
        # share test: this window's lines, the trailing windows', and what was learned (decayed by lines)
        self.now: Counter[Key] = Counter()
        self.trail: Trailing[Key] = Trailing(self.windows)
        self.learned: dict[str, dict[int, float]] = {}
        self.lines: dict[str, float] = {}
        self.seen: Counter[Key] = Counter()  # windows a template showed in
        self.severe: set[Key] = set()  # templates of WARN-and-above lines: never missing
        self.heard: dict[str, int] = {}  # entity -> the last window it had a line in
        self.resumed: dict[str, int] = {}  # entity -> the window its lines resumed in after a silence
        # trace test: open traces, finished traces' keys and pairs (trailing), learned pairs (inflated counts)
        self.open: OrderedDict[int, tuple[int, set[Key] | None]] = OrderedDict()  # None: past max_keys
        self.early_has: Counter[Key] = Counter()  # traces finished early (max_open), for the next window
        self.early_both: Counter[Pair] = Counter()
        self.has: Trailing[Key] = Trailing(self.windows)
        self.both: Trailing[Pair] = Trailing(self.windows)
        self.n_a: dict[Key, float] = {}
        self.n_ab: dict[Pair, float] = {}
        self.inflate: dict[str, float] = {}  # entity -> its growing weight (see _finish)
        self.anchors: dict[Key, tuple[Key, float]] = {}
        self.chosen: int | None = None  # the window anchors were last chosen in
        self.last: int | None = None
        self.changed: dict[str, int] = {}  # entity -> the last window a template below WARN was first seen in
        self.evicted = 0  # open traces finished early (max_open)
        self.refused = 0  # new pairs past max_pairs
        self.overflowed = 0  # traces past max_keys, judged and learned from by no one
        self.crowded = 0  # lines of entities past max_entities

    def line(self, entity: str, template: int, trace: int, number: int, severe: bool = False) -> None:
        """One mined line of ``entity`` in window ``number``; ``trace`` is 0 when the line names no trace. A
        ``severe`` (WARN and above) template counts, but its absence is never news: errors that stop are good."""
        if entity not in self.lines and len(self.lines) >= self.settings.max_entities:
            self.crowded += 1
            return
        self.lines.setdefault(entity, 0.0)
        key = (entity, template)
        self.now[key] += 1
        if severe:
            self.severe.add(key)
        if not trace:
            return
        entry = self.open.pop(trace, None)
        keys = set() if entry is None else entry[1]
        if keys is not None and key not in keys and len(keys) >= self.settings.max_keys:
            keys = None  # which keys a long trace keeps would depend on arrival order: it counts for nothing
            self.overflowed += 1
        elif keys is not None:
            keys.add(key)
        self.open[trace] = (number, keys)  # newest last
        if len(self.open) > self.settings.max_open:
            self.evicted += 1
            early = self.open.popitem(last=False)[1][1]
            has, both = self._finish([early] if early is not None else [])
            self.early_has.update(has)
            self.early_both.update(both)

    def spoil(self, trace: int, number: int) -> None:
        """A line of ``trace`` was not mined: the trace counts for nothing (its keys would look missing)."""
        self.open.pop(trace, None)
        self.open[trace] = (number, None)

    def close(self, number: int, start: float, end: float) -> list[Anomaly]:
        """Judge window ``number`` (its lines are in), then learn from it. A trace is finished once no line of it
        came for a whole window."""
        if self.last is not None:  # windows without a line (telemetry stopped) leave the trailing sums empty
            for _ in range(min(self.windows, number - self.last - 1)):
                for trailing in (self.trail, self.has, self.both):
                    trailing.push(Counter())
        if self.last is not None and number // 360 != self.last // 360:  # hourly (at 10 s windows), even across a
            self._forget(number - 6 * 360)  # silence: entities unheard for 6 hours are forgotten
        self.last = number
        for entity in {entity for entity, _ in self.now}:
            if number - self.heard.get(entity, -(10**9)) > self.windows:
                self.resumed[entity] = number
            self.heard[entity] = number
        finished = []
        while self.open and next(iter(self.open.values()))[0] < number:
            keys = self.open.popitem(last=False)[1][1]
            if keys is not None:
                finished.append(keys)
        has, both = self._finish(finished)
        has.update(self.early_has)
        both.update(self.early_both)
        self.early_has, self.early_both = Counter(), Counter()
        self.trail.push(Counter(self.now))
        self.has.push(has)
        self.both.push(both)
        found: dict[Key, Anomaly] = {}
        for anomaly in [*self._shares(number, start, end), *self._traces(start, end)]:
            key = (anomaly.entity, int(anomaly.signal.rpartition(":")[2]))
            if key not in found or anomaly.score > found[key].score:
                found[key] = anomaly
        self._learn_shares()
        if self.chosen is None or number // self.windows != self.chosen // self.windows:  # a trail's first window on
            self.chosen = number  # the clock: when anchors are chosen again does not hang on when the flow began
            self._choose_anchors()
        return list(found.values())

    # share test

    def _shares(self, number: int, start: float, end: float) -> list[Anomaly]:
        """Templates of a service missing from the trailing window, judged once the service has been heard from
        for a whole trailing window (after a silence, requests already under way log only their later lines)."""
        s = self.settings
        totals: dict[str, float] = {}
        for (entity, _), count in self.trail.sum.items():
            totals[entity] = totals.get(entity, 0) + count
        anomalies = []
        for entity, n in totals.items():
            learned, lines = self.learned.get(entity), self.lines.get(entity, 0.0)
            if learned is None or lines < s.warmup_lines or number - self.resumed.get(entity, 0) < self.windows:
                continue
            if number - self.changed.get(entity, -(10**9)) < self.windows:
                continue  # it writes a line it never wrote before: a new version, whose old lines may be gone
            for template, weight in learned.items():
                expected = n * weight / lines
                key = (entity, template)
                if (
                    expected >= s.min_expected
                    and not self.trail.sum.get(key)
                    and self.seen[key] >= 3
                    and key not in self.severe
                ):
                    evidence = -n * math.log10(1.0 - min(weight / lines, 0.99))
                    anomalies.append(self._anomaly(entity, template, expected, evidence, start, end))
        return anomalies

    def _learn_shares(self) -> None:
        per: Counter[str] = Counter()
        for (entity, _), count in self.now.items():
            per[entity] += count
        for entity, n in per.items():
            factor = self.decay**n
            learned = self.learned.setdefault(entity, {})
            for template in learned:
                learned[template] *= factor
            self.lines[entity] = self.lines.get(entity, 0.0) * factor + n
        for (entity, template), count in self.now.items():
            learned = self.learned[entity]
            if template not in learned and self.lines[entity] > count and (entity, template) not in self.severe:
                self.changed[entity] = self.last if self.last is not None else 0
            learned[template] = learned.get(template, 0.0) + count
            self.seen[(entity, template)] += 1
        for entity in per:  # forget what decayed to nothing: template ids churn, and entities come and go
            for template in [t for t, weight in self.learned[entity].items() if weight < 0.01]:
                self._drop(entity, template)
        self.now = Counter()

    # trace test

    def _finish(self, traces: list[set[Key]]) -> tuple[Counter[Key], Counter[Pair]]:
        """Count finished traces' keys and pairs (for the trailing window) and learn them. What is learned is
        forgotten by the traces of the anchor's own service (``half_life`` of them): a busy service's traces must
        not wash out a quiet one's anchors, nor an idle hour forget them. Counts are stored inflated (each new trace
        of a service weighs more than the last), so nothing needs decaying: the true count is stored / inflate."""
        s = self.settings
        has: Counter[Key] = Counter()
        both: Counter[Pair] = Counter()
        for keys in traces:
            for entity in {entity for entity, _ in keys}:
                self.inflate[entity] = self.inflate.get(entity, 1.0) / self.decay
                if self.inflate[entity] > 1e200:
                    self._renormalise(entity)
            for a in keys:
                has[a] += 1
                weight = self.inflate[a[0]]
                self.n_a[a] = self.n_a.get(a, 0.0) + weight
                for b in keys:
                    if a == b:
                        continue
                    pair = (a, b)
                    both[pair] += 1
                    if pair in self.n_ab:
                        self.n_ab[pair] += weight
                    elif len(self.n_ab) < s.max_pairs:
                        self.n_ab[pair] = weight
                    else:
                        self.refused += 1
        return has, both

    def _traces(self, start: float, end: float) -> list[Anomaly]:
        s = self.settings
        anomalies = []
        for b, (a, q) in self.anchors.items():
            m = self._since_both(a, b)
            fresh = self.last is not None and self.last - self.changed.get(b[0], -(10**9)) < self.windows
            if m and b not in self.severe and not fresh:
                evidence = m * -math.log10(1.0 - min(q, 0.99))
                if evidence >= s.min_evidence:
                    anomalies.append(self._anomaly(b[0], b[1], m * q, evidence, start, end))
        return anomalies

    def _since_both(self, a: Key, b: Key) -> int:
        """The traces with ``a`` in the trailing windows since the last that had a trace with both (a window's
        traces finish in no known order: one with both ends the run, whatever else the window had)."""
        pair = (a, b)
        if not self.both.sum.get(pair):
            return self.has.sum.get(a, 0)
        m = 0
        for has, both in zip(reversed(self.has.ring), reversed(self.both.ring), strict=True):
            if both.get(pair):
                return m
            m += has.get(a, 0)
        return m

    def _choose_anchors(self) -> None:
        """For each template, the template it most reliably comes with in a trace (highest ``q``, then the greatest
        key: a tie is settled neither by the order pairs were first stored in, which follows set iteration and so
        the process's string hashing, nor by stored counts, inflated per service and not comparable across
        services), among anchors seen in ``min_anchor`` traces or more; a
        template's anchor is kept while its ``q`` stays within 0.2 of ``min_q`` (a minute of a fault in a quiet
        service would otherwise unlearn it)."""
        s = self.settings
        inflate = self.inflate  # pairs and keys that decayed below 1 % of a trace are forgotten
        self.n_a = {k: v for k, v in self.n_a.items() if v >= 0.01 * inflate.get(k[0], 1.0)}
        self.n_ab = {k: v for k, v in self.n_ab.items() if v >= 0.01 * inflate.get(k[0][0], 1.0)}
        best: dict[Key, tuple[Key, float]] = {}
        for (a, b), n_ab in self.n_ab.items():
            n_a = self.n_a.get(a, 0.0)
            if n_a < s.min_anchor * inflate.get(a[0], 1.0):
                continue
            q = n_ab / n_a
            if q >= s.min_q and (b not in best or (q, a) > best[b][::-1]):
                best[b] = (a, q)
        for b, (a, _) in self.anchors.items():  # an anchor stays while q >= min_q - 0.2: learning from the
            n_a = self.n_a.get(a, 0.0)  # fault itself must not unlearn what it breaks
            if b not in best and n_a >= s.min_anchor * inflate.get(a[0], 1.0):
                q = self.n_ab.get((a, b), 0.0) / n_a
                if q >= s.min_q - 0.2:
                    best[b] = (a, q)
        self.anchors = best

    def drop_templates(self, gone: set[int]) -> None:
        """Forget templates the miner no longer has (it evicted them): their absence is not news."""
        for entity, learned in self.learned.items():
            for template in [t for t in learned if t in gone]:
                self._drop(entity, template)
        self._forget_pairs(lambda key: key[1] in gone)

    def _forget(self, before: int) -> None:
        gone = {e for e, at in self.heard.items() if at < before}
        if gone:
            self._forget_pairs(lambda key: key[0] in gone)
        for entity in gone:
            for template in list(self.learned.get(entity, ())):
                self._drop(entity, template)
            for table in (self.learned, self.lines, self.heard, self.resumed, self.changed, self.inflate):
                table.pop(entity, None)

    def _drop(self, entity: str, template: int) -> None:
        del self.learned[entity][template]
        self.seen.pop((entity, template), None)
        self.severe.discard((entity, template))

    def _forget_pairs(self, dead: Callable[[Key], bool]) -> None:
        """Drop what the trace test learned of (and chose as anchors) the keys ``dead`` names."""
        self.n_a = {k: v for k, v in self.n_a.items() if not dead(k)}
        self.n_ab = {k: v for k, v in self.n_ab.items() if not dead(k[0]) and not dead(k[1])}
        self.anchors = {b: (a, q) for b, (a, q) in self.anchors.items() if not dead(b) and not dead(a)}

    def _renormalise(self, entity: str) -> None:
        scale = 1.0 / self.inflate[entity]
        self.n_a = {k: v * scale if k[0] == entity else v for k, v in self.n_a.items()}
        self.n_ab = {k: v * scale if k[0][0] == entity else v for k, v in self.n_ab.items()}
        self.inflate[entity] = 1.0

    @staticmethod
    def _anomaly(entity: str, template: int, expected: float, evidence: float, start: float, end: float) -> Anomaly:
        return Anomaly(entity, f"log_missing:{template}", 0.0, round(expected, 2), min(20.0, evidence), start, end)
