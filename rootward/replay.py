"""Replay recorded telemetry through the real pipeline: ``rootward replay`` and the evaluation harness.

Sources (:func:`open_source`): files an OpenTelemetry Collector's file exporter wrote (rootward/recorded.py), and
the Nezha data set, as a folder or an archive of the shared data (rootward/nezha.py, rootward/nezha_stream.py).
Several sources replay merged by time.

Every request goes out as OTLP through a real gRPC client, to a running receiver or to an in-process App at
replayed time (rootward/replay_sinks.py: :class:`~rootward.replay_sinks.GrpcSink`,
:class:`~rootward.replay_sinks.InProcess`).

Time: kept (the events' own timestamps), or shifted so that the first event is now. Pacing: as fast as possible,
or ``speed`` times real time (each request waits until its event time, scaled, has passed since the first).
"""

from __future__ import annotations

import heapq
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from rootward import nezha, nezha_stream
from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import Config
from rootward.recorded import SIGNALS, Issues, Request, otlp_file, shift_times
from rootward.replay_sinks import GrpcSink, InProcess, ReplayError, Sink

# --- sources --------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    """What to replay: its requests (a one-shot iterator), what could not be used (filled while it is read), and
    the span of its event times when it is known beforehand (Unix ns, for progress)."""

    name: str
    requests: Iterator[Request]
    issues: Issues
    time_range: tuple[int, int] | None = None
    days: list[nezha.Day] = field(default_factory=list)


def is_nezha(path: Path) -> bool:
    """A folder (the Nezha layout) or a ``.tar.gz`` archive of one, as opposed to an OTLP file."""
    return path.is_dir() or path.name.endswith((".tar.gz", ".tgz"))


def open_source(paths: Sequence[Path], chunking: nezha_stream.Chunking | None = None) -> Source:
    """The requests of ``paths`` merged by time: Nezha folders or archives (every day in them), and OTLP files.

    Raises:
        ReplayError: a path is neither an OTLP file nor a Nezha layout (the message says why).
    """
    if not paths:
        raise ReplayError("nothing to replay")
    issues = Issues()
    streams: list[Iterator[Request]] = []
    days: list[nezha.Day] = []
    ranges: list[tuple[int, int]] = []
    for path in paths:
        if is_nezha(path):
            try:
                found = nezha.days(path)
            except (ValueError, OSError, EOFError, tarfile.TarError) as e:
                raise ReplayError(str(e) if str(path) in str(e) else f"{path}: {e}") from e
            days += found
            ranges += [r for r in map(nezha_stream.time_range, found) if r is not None]
            streams.append(nezha_stream.requests(found, issues, chunking))
        elif path.is_file():
            streams.append(otlp_file(path, issues))
        else:
            raise ReplayError(f"{path}: not a file or a folder")
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=attrgetter("time_ns"))
    # Known only when every source is a Nezha day with a time range (OTLP files would have to be read first).
    known = ranges and len(ranges) == len(days) and all(is_nezha(p) for p in paths)
    span = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if known else None
    return Source(", ".join(str(p) for p in paths), merged, issues, span, days)


# --- the replay -----------------------------------------------------------------------------------------------------


@dataclass
class ReplayStats:
    """What a replay did: items and requests sent per signal, items the receiver refused, requests that failed by
    status code (with the first message of each), what the source could not use, and the times."""

    sent: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)
    issues: Issues = field(default_factory=Issues)
    first_ns: int = 0  # replayed time of the first and last request (shifted when the time was)
    last_ns: int = 0
    shift_ns: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Progress:
    """The state after one request, for ``on_progress``: the replayed time (Unix ns), the fraction of the
    source's time span replayed (None when unknown), and the running stats."""

    time_ns: int
    fraction: float | None
    stats: ReplayStats


class Pacer:
    """Waits so that replayed time runs at ``speed`` times real time (None: no waiting)."""

    def __init__(self, speed: float | None, sleep: Callable[[float], None] = time.sleep) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.sleep = sleep
        self._start: tuple[int, float] | None = None

    def wait(self, t_ns: int) -> None:
        if self.speed is None or not t_ns:
            return
        if self._start is None:
            self._start = (t_ns, time.monotonic())
            return
        first, wall = self._start
        due = wall + (t_ns - first) / 1e9 / self.speed
        while (left := due - time.monotonic()) > 0:
            self.sleep(min(left, 1.0))


def replay(
    source: Source | Iterable[Request],
    sink: Sink,
    *,
    clock: ManualClock | None = None,
    speed: float | None = None,
    shift_to_now: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> ReplayStats:
    """Send every request of ``source`` to ``sink`` in order; return what happened.

    ``clock`` (in-process) is set to each request's event time before it is sent. ``speed`` paces the replay
    (None: as fast as possible). ``shift_to_now`` moves every timestamp so that the first event is now.
    ``on_progress`` is called after each request with the replayed time.

    Raises:
        ReplayError: the receiver refuses everything (unreachable, unauthenticated).
    """
    requests = source.requests if isinstance(source, Source) else iter(source)
    stats = ReplayStats(issues=source.issues if isinstance(source, Source) else Issues())
    span = source.time_range if isinstance(source, Source) else None
    pacer = Pacer(speed)
    began = time.perf_counter()
    current = 0
    for req in requests:
        if req.time_ns and not stats.first_ns:
            stats.shift_ns = time.time_ns() - req.time_ns if shift_to_now else 0
            stats.first_ns = req.time_ns + stats.shift_ns
        shift = stats.shift_ns
        if req.time_ns:
            current = max(current, req.time_ns + shift)
        pacer.wait(current)
        if clock is not None and current:
            clock.set(current / 1e9)
        if shift:
            shift_times(req.signal, req.message, shift)
        sent = sink.export(req.signal, req.message.SerializeToString(), req.items)
        stats.sent[req.signal] += req.items
        stats.requests[req.signal] += 1
        stats.rejected[req.signal] += sent.rejected
        if sent.error is not None:
            stats.failed[sent.error] += 1
            stats.messages.setdefault(sent.error, sent.message)
        elif sent.rejected and sent.message:
            stats.messages.setdefault("partial", sent.message)
        stats.last_ns = current
        stats.seconds = time.perf_counter() - began
        if on_progress is not None:
            fraction = None
            if span is not None and span[1] > span[0] and current:
                fraction = min(1.0, max(0.0, (current - shift - span[0]) / (span[1] - span[0])))
            on_progress(Progress(current, fraction, stats))
    stats.seconds = time.perf_counter() - began
    return stats


def item_names(signal: str) -> str:
    return {"traces": "spans", "metrics": "points", "logs": "logs"}[signal]


def progress_line(progress: Progress) -> str:
    """One line of progress: replayed time, percent of the source, items sent, rejected, skipped."""
    from rootward.topology.queries import format_time

    s = progress.stats
    percent = f" {100 * progress.fraction:5.1f}%" if progress.fraction is not None else ""
    sent = "  ".join(f"{item_names(x)} {s.sent[x]:,}" for x in SIGNALS)
    rejected = sum(s.rejected.values())
    return (
        f"replay {format_time(progress.time_ns / 1e9) if progress.time_ns else '-'}{percent}  {sent}  "
        f"rejected {rejected:,}  skipped {s.issues.total_skipped():,}"
    )


def _receiver_items(app: App) -> Counter[tuple[str, str]]:
    """(signal, outcome) -> items, from the receiver's own counters."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in app.telemetry.registry.collect():
        if family.name == "rootward_receiver_items":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["signal"], sample.labels["outcome"]] += int(sample.value)
    return counts


def _reasons(title: str, counts: Counter[str], issues: Issues) -> list[str]:
    if not counts:
        return []
    lines = [title]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        example = issues.examples.get(reason, "")
        lines.append(f"  {reason:28} {n:9,}" + (f"   e.g. {example[:100]}" if example else ""))
    return lines


def summary(stats: ReplayStats, app: App | None = None, max_edges: int = 60) -> list[str]:
    """The end-of-replay report: sent per signal, refused, what the receiver counted (in-process), what the source
    could not use, and the dependency graph's services and call edges (in-process)."""
    from rootward.topology.queries import format_time

    total = sum(stats.sent.values())
    when = f"{format_time(stats.first_ns / 1e9)} .. {format_time(stats.last_ns / 1e9)}" if stats.first_ns else "-"
    shifted = f", shifted by {stats.shift_ns / 1e9:+,.0f} s" if stats.shift_ns else ""
    lines = [f"replayed {total:,} items in {stats.seconds:.1f} s (event time {when}{shifted})", "sent:"]
    for signal in SIGNALS:
        lines.append(
            f"  {signal:8} {stats.requests[signal]:7,} requests {stats.sent[signal]:11,} {item_names(signal):6} "
            f"{stats.rejected[signal]:9,} rejected"
        )
    if stats.seconds > 0 and stats.sent["traces"]:
        lines.append(f"  ({stats.sent['traces'] / stats.seconds:,.0f} spans/s, {total / stats.seconds:,.0f} items/s)")
    if stats.failed:
        lines.append("failed requests:")
        for code, n in sorted(stats.failed.items()):
            lines.append(f"  {code:28} {n:9,}   {stats.messages.get(code, '')[:100]}")
    if app is not None:
        counts = _receiver_items(app)
        lines.append(
            "receiver (its counters): "
            + ", ".join(
                f"{signal} {counts[signal, 'accepted']:,} accepted / {counts[signal, 'refused']:,} refused / "
                f"{counts[signal, 'dropped']:,} dropped"
                for signal in SIGNALS
            )
        )
    lines += _reasons("skipped (not sent):", stats.issues.skipped, stats.issues)
    lines += _reasons("sent with a caveat:", stats.issues.caveats, stats.issues)
    lines += _reasons("missing from the data:", stats.issues.missing, stats.issues)
    if app is not None:
        app.topology.flush()
        with app.topology.read() as g:
            services = sorted(n for n, d in g.nodes(data=True) if d.get("kind") == "service")
        calls = app.topology.calls()
        at = format_time(stats.last_ns / 1e9) if stats.last_ns else "the end"
        lines.append(f"dependency graph at {at}: {len(services)} services, {len(calls)} call edges:")
        width = max((len(src) for src, *_ in calls[:max_edges]), default=10)
        for src, dst, requests, errors in calls[:max_edges]:
            lines.append(f"  {src:{width}} -> {dst}  {requests:,} requests, {errors:,} errors")
        if len(calls) > max_edges:
            lines.append(f"  ... and {len(calls) - max_edges} more")
    return lines


class ProgressPrinter:
    """An ``on_progress`` hook that prints :func:`progress_line` at most every ``interval_s`` seconds."""

    def __init__(self, echo: Callable[[str], None], interval_s: float = 1.0) -> None:
        self.echo = echo
        self.interval_s = interval_s
        self._last = 0.0
        self.latest: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self.latest = progress
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self.echo(progress_line(progress))

    def final(self) -> None:
        if self.latest is not None:
            self.echo(progress_line(self.latest))


@dataclass(frozen=True)
class Options:
    """``rootward replay``'s choices, defaults resolved (see :func:`options`)."""

    endpoint: str | None
    token: str | None
    tls: bool
    ca_file: Path | None
    keep_time: bool
    speed: float | None


def options(
    endpoint: str | None,
    token: str | None = None,
    insecure: bool | None = None,
    ca_file: Path | None = None,
    keep_time: bool | None = None,
    speed: float | None = None,
    fast: bool = False,
) -> Options:
    """Resolve the defaults: in-process, keep the time and go as fast as possible; with an endpoint, shift to now,
    replay at real speed, and use TLS unless the host is local (or ``insecure``).

    Raises:
        ValueError: contradictory choices.
    """
    if speed is not None and fast:
        raise ValueError("--speed and --as-fast-as-possible exclude each other")
    if endpoint is None:
        if token is not None or insecure is not None or ca_file is not None:
            raise ValueError("--token, --insecure/--tls and --ca-file go with --endpoint")
        return Options(None, None, False, None, True if keep_time is None else keep_time, None if fast else speed)
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    local = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
    tls = (not local) if insecure is None else not insecure
    if ca_file is not None and not tls:
        raise ValueError("--ca-file goes with --tls")
    return Options(endpoint, token, tls, ca_file, bool(keep_time), None if fast else (speed or 1.0))


def run(
    paths: Sequence[Path],
    opts: Options,
    config: Config | None = None,
    echo: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
) -> int:
    """``rootward replay``: replay ``paths`` per ``opts``, print the summary with ``echo`` and the progress
    lines with ``progress`` (None: quiet). Returns the exit code: 0 when the receiver took every item sent.

    Raises:
        ReplayError: a source cannot be opened, or the receiver refuses the replay.
    """
    source = open_source(paths)
    printer = ProgressPrinter(progress) if progress is not None else None
    where = opts.endpoint or "an in-process Rootward"
    if progress is not None:
        days = ", ".join(f"{d.system} {d.date}" for d in source.days)
        progress(f"replaying {source.name}{f' ({days})' if days else ''} to {where}")
    if opts.endpoint is not None:
        sink = GrpcSink(opts.endpoint, opts.token, opts.tls, opts.ca_file)
        try:
            stats = replay(source, sink, speed=opts.speed, shift_to_now=not opts.keep_time, on_progress=printer)
        finally:
            sink.close()
        lines = summary(stats)
    else:
        with InProcess(config) as target:
            assert target.sink is not None
            stats = replay(
                source,
                target.sink,
                clock=target.clock,
                speed=opts.speed,
                shift_to_now=not opts.keep_time,
                on_progress=printer,
            )
            lines = summary(stats, target.app)
    if printer is not None:
        printer.final()
    for line in lines:
        echo(line)
    return 1 if stats.failed or sum(stats.rejected.values()) else 0
