"""The Nezha RCA data set (Yu et al., FSE 2023) as OTLP: its layout, its ground truth, and a streaming conversion of
a day's traces, logs and metrics into export requests, as an OpenTelemetry Collector with the k8sattributes
processor would have sent them. See ../shared/data/nezha/README.md for the data and its clock quirks.

Layout: ``rca_data/<day>/`` and ``construct_data/<day>/`` (fault-free minutes), any number of days of either
system: TrainTicket when the pods are ``ts-*``, OnlineBoutique otherwise. A day's ground truth is
``<day>-fault_list.json`` (:func:`faults`), used for scoring only: nothing here reads it to shape the stream.

Resources (the OTLP messages are built in rootward/nezha_otlp.py): ``service.name`` (the pod name without its
ReplicaSet/pod hash), ``k8s.pod.name``, ``k8s.namespace.name`` (:data:`NAMESPACES`: the data set does not say, so
a fixed one per system), ``k8s.deployment.name`` (``k8s.statefulset.name`` for a ``<name>-<ordinal>`` pod),
``k8s.node.name`` where the day's log files name the pod's node (their Node column, read by a quick pre-scan; pods
that never log get none), and on logs ``k8s.container.name``.

Traces (``trace/HH_MM_trace.csv``): the data has no span kinds and no status. Kinds are inferred from the parent
links (rootward/nezha_stream.py, ``KindInference``): a span whose parent is in another service is SERVER and that
parent CLIENT; root spans are SERVER; the rest INTERNAL (a span that would be both goes out UNSPECIFIED, which the
topology graph pairs both ways; the shared days have none). Parent and child may sit in different minute files, so
spans are held until the replayed time is :data:`HOLD_S` past their end, and decided then. Lost at the edges: a span
whose parent ends more than HOLD_S after it (or never comes) is sent UNSPECIFIED (the graph pairs such spans by
parent link), and a parent whose cross-service child ends more than HOLD_S after it has gone out without CLIENT
(both counted as caveats). On the two shared days parents end at most 4.1 s after their cross-service children,
children at most 0.3 s after their parents; 46 same-service children of the OnlineBoutique day (of 846,632 spans)
wait longer than 30 s. Adjacent minute files overlap: a span seen again within the window is dropped.

Logs (``log/HH_MM_log.csv``): body = the container's line (the ``log`` field of the Docker JSON envelope in the Log
column, without its newline; the column as it is when it is not such an envelope), ``log.iostream`` from it, trace
and span ids, severity from the line: the ``severity``/``level`` field of a JSON line (OnlineBoutique), else the
first level word near its start (``16:42:22.382 INFO ...``, TrainTicket). Time: ``TimeUnixNano``, or ``Timestamp``
read as UTC when that is Go's zero time (counted as a caveat). Lines seen again (overlapping files) are dropped.

Metrics (``metric/<pod>_metric.csv``, one row a minute for the whole day): one gauge data point per column per
row, timed by the ``Time`` column (OnlineBoutique's ``TimeStamp`` is corrupt), names in :data:`METRICS`. NaN
values (the latency quantiles of a minute without requests) are skipped and counted. ``front_service.csv``,
``dependency.csv``, ``source_50.csv`` and ``destination_50.csv`` are not pod metrics and are not sent.

Streaming (rootward/nezha_stream.py): every event of a day in time order across signals and files, chunked into
requests, in bounded memory: never a whole day. Bad rows, zero times and unreadable files are counted per reason in
:class:`~rootward.recorded.Issues` and skipped, never a crash.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path

from rootward.model import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, KIND_UNSPECIFIED
from rootward.recorded import Issues
from rootward.scoring import Fault

#: The namespace each system's pods are given (the data set does not record one).
NAMESPACES = {"tt": "train-ticket", "ob": "online-boutique"}
#: The instrumentation scope of every converted item.
#: Seconds of replayed time a span waits for its parent and children before its kind is decided.
HOLD_S = 30.0

#: A Deployment's pod: <deployment>-<ReplicaSet pod-template hash>-<5 random characters>, e.g.
#: ``adservice-5f6585d649-fnmft`` or ``currencyservice-cf787dd48-vpjrd``; a StatefulSet's: <name>-<ordinal>.
DEPLOYMENT_POD = re.compile(r"(?P<name>.+)-[0-9a-z]{5,10}-[0-9a-z]{5}")
STATEFUL_POD = re.compile(r"(?P<name>.+)-\d+")

TRACE_HEADER = ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano", "EndTimeUnixNano"]
LOG_HEADER = ["Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log"]
METRIC_HEADER = ["Time", "TimeStamp", "PodName"]

#: Metric file column -> (OTLP metric name, UCUM unit). Columns not listed get ``nezha.pod.<column in snake case>``
#: and the unit in the column's parentheses. The Node* columns are the pod's node, as seen from the pod.
METRICS: dict[str, tuple[str, str]] = {
    "CpuUsage(m)": ("nezha.pod.cpu.usage", "{millicore}"),
    "CpuUsageRate(%)": ("nezha.pod.cpu.usage_rate", "%"),
    "MemoryUsage(Mi)": ("nezha.pod.memory.usage", "MiBy"),
    "MemoryUsageRate(%)": ("nezha.pod.memory.usage_rate", "%"),
    "SyscallRead": ("nezha.pod.syscall.read", "{call}"),
    "SyscallWrite": ("nezha.pod.syscall.write", "{call}"),
    "NetworkReceiveBytes": ("nezha.pod.network.receive", "By"),
    "NetworkTransmitBytes": ("nezha.pod.network.transmit", "By"),
    "PodClientLatencyP90(s)": ("nezha.pod.client.latency.p90", "s"),
    "PodServerLatencyP90(s)": ("nezha.pod.server.latency.p90", "s"),
    "PodClientLatencyP95(s)": ("nezha.pod.client.latency.p95", "s"),
    "PodServerLatencyP95(s)": ("nezha.pod.server.latency.p95", "s"),
    "PodClientLatencyP99(s)": ("nezha.pod.client.latency.p99", "s"),
    "PodServerLatencyP99(s)": ("nezha.pod.server.latency.p99", "s"),
    "PodWorkload(Ops)": ("nezha.pod.workload", "{operation}"),
    "PodSuccessRate(%)": ("nezha.pod.success_rate", "%"),
    "NodeCpuUsageRate(%)": ("nezha.node.cpu.usage_rate", "%"),
    "NodeMemoryUsageRate(%)": ("nezha.node.memory.usage_rate", "%"),
    "NodeNetworkReceiveBytes": ("nezha.node.network.receive", "By"),
}

# OTLP severity numbers of the level words found in the lines (and bunyan's numeric levels).
_SEVERITY = {
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "NOTICE": 10,
    "WARN": 13,
    "WARNING": 13,
    "ERROR": 17,
    "SEVERE": 17,
    "CRITICAL": 21,
    "FATAL": 21,
    "PANIC": 21,
}
_BUNYAN = {10: ("TRACE", 1), 20: ("DEBUG", 5), 30: ("INFO", 9), 40: ("WARN", 13), 50: ("ERROR", 17), 60: ("FATAL", 21)}
_LEVEL_WORD = re.compile(r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|SEVERE|CRITICAL|FATAL|PANIC)\b")
_GO_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? ([+-])(\d\d)(\d\d)")
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_MINUTE_FILE = re.compile(r"(\d\d)_(\d\d)_(trace|log)\.csv")


@functools.lru_cache(maxsize=4096)
def service_name(pod: str) -> str:
    """The service of a pod name (its workload, without the ReplicaSet/pod hash), or the name as it is."""
    match = DEPLOYMENT_POD.fullmatch(pod) or STATEFUL_POD.fullmatch(pod)
    return match["name"] if match else pod


def workload(pod: str) -> tuple[str, str] | None:
    """(resource attribute, name) of a pod's workload: ``k8s.deployment.name`` or ``k8s.statefulset.name``."""
    if match := DEPLOYMENT_POD.fullmatch(pod):
        return "k8s.deployment.name", match["name"]
    if match := STATEFUL_POD.fullmatch(pod):
        return "k8s.statefulset.name", match["name"]
    return None


def system_of_pods(pods: Iterable[str]) -> str:
    """``tt`` (TrainTicket) when any pod is ``ts-*``, else ``ob`` (OnlineBoutique)."""
    return "tt" if any(p.startswith("ts-") for p in pods) else "ob"


# --- layout and ground truth ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """One day of one system: its ``rca_data`` and ``construct_data`` folders (either may be absent)."""

    date: str
    system: str
    rca: Path | None
    construct: Path | None

    @property
    def dirs(self) -> tuple[Path, ...]:
        return tuple(d for d in (self.rca, self.construct) if d is not None)

    @property
    def namespace(self) -> str:
        return NAMESPACES[self.system]

    def minute_files(self, kind: str) -> list[Path]:
        """The ``trace`` or ``log`` minute files of both folders, in minute order."""
        found = [p for d in self.dirs for p in (d / kind).glob(f"*_{kind}.csv") if _MINUTE_FILE.fullmatch(p.name)]
        return sorted(found, key=lambda p: (p.name, str(p)))

    def metric_files(self) -> list[Path]:
        """One ``<pod>_metric.csv`` per pod (rca_data's; construct_data holds the same files)."""
        files: dict[str, Path] = {}
        for d in reversed(self.dirs):
            files.update({p.name: p for p in (d / "metric").glob("*_metric.csv")})
        return [files[name] for name in sorted(files)]

    @property
    def fault_list(self) -> Path | None:
        return self.rca / f"{self.date}-fault_list.json" if self.rca is not None else None


def _system(dirs: Iterable[Path]) -> str:
    pods: list[str] = []
    for d in dirs:
        pods += [p.name.removesuffix("_metric.csv") for p in (d / "metric").glob("*_metric.csv")]
        for f in sorted((d / "trace").glob("*_trace.csv"))[:1]:
            with f.open(newline="", errors="replace") as fh:
                pods += [row[3] for row, _ in zip(csv.reader(fh), range(50), strict=False) if len(row) > 3]
    return system_of_pods(pods)


def days(path: Path) -> list[Day]:
    """The days under ``path``: a folder holding ``rca_data``/``construct_data``, or one day's folder inside
    either (its sibling in the other is found too), or an archive of the shared data (extracted by :func:`extract`).

    Raises:
        ValueError: ``path`` is none of these.
    """
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = extract(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder or a .tar.gz archive of the Nezha layout")
    if _DATE.fullmatch(path.name) and path.parent.name in ("rca_data", "construct_data"):
        root, dates = path.parent.parent, [path.name]
    else:
        root = path
        dates = sorted(
            {
                d.name
                for part in ("rca_data", "construct_data")
                if (root / part).is_dir()
                for d in (root / part).iterdir()
                if d.is_dir() and _DATE.fullmatch(d.name)
            }
        )
        if not dates:
            raise ValueError(f"{path}: no rca_data/<YYYY-MM-DD> or construct_data/<YYYY-MM-DD> folders")
    found = []
    for date in dates:
        rca, construct = root / "rca_data" / date, root / "construct_data" / date
        dirs = [d for d in (rca, construct) if d.is_dir()]
        found.append(Day(date, _system(dirs), rca if rca.is_dir() else None, construct if construct.is_dir() else None))
    return sorted(found, key=attrgetter("date", "system"))


def faults(day: Day, issues: Issues | None = None) -> list[Fault]:
    """The ground truth of ``day``: its ``<day>-fault_list.json`` as :class:`~rootward.scoring.Fault` objects,
    ``inject_time`` read as UTC (``inject_timestamp`` is 8 h off on some days), the root-cause service being the
    injected pod without its hash. Entries that cannot be read are counted (``fault_entry_bad``) and left out; a
    missing file gives no faults (``fault_list``, missing)."""
    issues = issues if issues is not None else Issues()
    path = day.fault_list
    if path is None or not path.is_file():
        issues.miss("fault_list", str(path))
        return []
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        issues.skip("fault_list_bad", f"{path.name}: {e}")
        return []
    entries = [e for hour in doc.values() for e in hour] if isinstance(doc, dict) else []
    found = []
    for entry in entries:
        try:
            inject = datetime.strptime(entry["inject_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            pod, kind = str(entry["inject_pod"]), str(entry["inject_type"])
        except (KeyError, TypeError, ValueError) as e:
            issues.skip("fault_entry_bad", f"{path.name}: {entry!r:.120} ({e})")
            continue
        found.append(Fault(day.system, day.date, inject, service_name(pod), kind))
    return sorted(found, key=attrgetter("inject"))


def missing_minutes(day: Day, issues: Issues) -> None:
    """Count the faults whose injection minute has no trace file (``trace_minute``) or no log file
    (``log_minute``): the data set dropped files of 4 MiB and more."""
    if day.rca is None:
        return
    for fault in faults(day, Issues()):
        minute = datetime.fromtimestamp(fault.inject, UTC).strftime("%H_%M")
        for kind in ("trace", "log"):
            if not (day.rca / kind / f"{minute}_{kind}.csv").is_file():
                issues.miss(f"{kind}_minute", f"{day.date} {minute.replace('_', ':')} ({fault.service})")


# --- archives ---------------------------------------------------------------------------------------------------------

#: Archive members that are extracted: regular files under rca_data/ or construct_data/ with plain names.
SAFE_MEMBER = re.compile(r"(?:rca_data|construct_data)(?:/[A-Za-z0-9_][A-Za-z0-9_.%()-]*)+")
_STAMP_VERSION = "rootward-nezha-1"


def cache_root() -> Path:
    """Where archives are extracted: ``$XDG_CACHE_HOME/rootward/nezha`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rootward" / "nezha"


def extract(archive: Path, dest: Path | None = None) -> Path:
    """``dest`` (default: :func:`cache_root` / the archive's name without ``.tar.gz``) holding ``archive``'s data;
    extracted when absent, incomplete, or made from another archive. Returns ``dest``.

    Safe by construction: only regular-file members whose whole name matches :data:`SAFE_MEMBER` (so no absolute
    paths, no ``..``, no links or devices) are written, by our own code. The tree is built beside ``dest`` and
    renamed into place when complete, so a concurrent or interrupted run never sees half of it.

    Raises:
        ValueError: the archive holds no Nezha data.
        OSError, tarfile.TarError: it cannot be read.
    """
    if dest is None:
        dest = cache_root() / re.sub(r"\.(tar\.gz|tgz)$", "", archive.name)
    stat = archive.stat()
    stamp = f"{_STAMP_VERSION} {archive.name} {stat.st_size} {stat.st_mtime_ns}\n"
    marker = dest / ".complete"

    def done() -> bool:
        return marker.is_file() and marker.read_text() == stamp

    if done():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        count = 0
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not (member.isfile() and SAFE_MEMBER.fullmatch(name)) or ".." in name.split("/"):
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
                count += 1
        if not count:
            raise ValueError(f"{archive}: no rca_data/ or construct_data/ files in it")
        (tmp / ".complete").write_text(stamp)
        if dest.exists() and not done():
            shutil.rmtree(dest)  # stale: from another archive or version, or not ours
        try:
            tmp.rename(dest)
        except OSError:
            if not done():  # not a concurrent run that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --- rows -----------------------------------------------------------------------------------------------------------


class BadRow(ValueError):
    """A row that cannot be used; ``reason`` is its count key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class IdStats:
    """Ids as OTLP bytes, counting those that had to be hashed."""

    hashed: Counter[str] = field(default_factory=Counter)  # ids that were not hex of the OTLP size

    def otlp_id(self, text: str, size: int, what: str) -> bytes:
        """``text`` as ``size`` bytes: its hex value when it is hex of that size, else a hash of it (the same text
        always gives the same bytes, so span ids, parent ids and the ids in logs still meet); empty stays empty."""
        if not text:
            return b""
        if len(text) == 2 * size:
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
        self.hashed[what] += 1
        return hashlib.blake2b(text.encode(), digest_size=size).digest()


class Span:
    """One span row, and what kind inference learns about it."""

    __slots__ = (
        "client",
        "end",
        "name",
        "parent_id",
        "parent_seen",
        "pod",
        "released",
        "server",
        "service",
        "span_id",
        "start",
        "trace_id",
    )

    def __init__(self, trace_id: bytes, span_id: bytes, parent_id: bytes, pod: str, name: str, start: int, end: int):
        self.trace_id, self.span_id, self.parent_id = trace_id, span_id, parent_id
        self.pod, self.name, self.start, self.end = pod, name, start, end
        self.service = service_name(pod)
        self.server = not parent_id  # root spans are SERVER
        self.client = False
        self.parent_seen = not parent_id
        self.released = False

    @property
    def kind(self) -> int:
        """SERVER (a root, or its parent is in another service), CLIENT (a child is in another service), INTERNAL
        (neither, parent seen), UNSPECIFIED (both, or the parent never seen: the graph pairs these by parent link)."""
        if self.server != self.client:
            return KIND_SERVER if self.server else KIND_CLIENT
        return KIND_INTERNAL if self.parent_seen and not self.server else KIND_UNSPECIFIED


def parse_span(row: list[str], ids: IdStats, names: dict[str, str] | None = None) -> Span:
    """A trace row (``TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,...``).
    ``names`` interns the pod and operation names. Raises BadRow."""
    if len(row) < 7:
        raise BadRow("span_row_short")
    trace, span, parent, pod, name, start_text, end_text = row[:7]
    if not (trace and span and pod):
        raise BadRow("span_id_or_pod_empty")
    try:
        start, end = int(start_text), int(end_text)
    except ValueError:
        raise BadRow("span_time_bad") from None
    if start <= 0 or end <= 0:
        raise BadRow("span_time_zero")
    if end < start:
        raise BadRow("span_end_before_start")
    if names is not None:
        pod, name = names.setdefault(pod, pod), names.setdefault(name, name)
    parent_id = b"" if parent in ("root", "") else ids.otlp_id(parent, 8, "span")
    return Span(ids.otlp_id(trace, 16, "trace"), ids.otlp_id(span, 8, "span"), parent_id, pod, name, start, end)


def _utc_ns(groups: tuple[str | None, ...], offset_minutes: int = 0) -> int:
    y, mo, d, h, mi, s, frac = (g or "" for g in groups[:7])
    t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC) - timedelta(minutes=offset_minutes)
    return int(t.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0") or 0)


def go_time_ns(text: str) -> int:
    """Unix ns of a Go ``time.Time.String()`` (``2022-08-22 03:51:19.607158889 +0000 UTC m=+0.11``).
    Raises ValueError."""
    m = _GO_TIME.match(text)
    if m is None:
        raise ValueError(f"not a Go time: {text[:40]!r}")
    sign = 1 if m[8] == "+" else -1
    return _utc_ns(m.groups(), sign * (int(m[9]) * 60 + int(m[10])))


def rfc3339_ns(text: str) -> int:
    """Unix ns of an RFC 3339 time; without a zone it is read as UTC. Raises ValueError."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}")
    zone = m[8] or "Z"
    offset = 0
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = (1 if zone[0] == "+" else -1) * (int(digits[:2]) * 60 + int(digits[2:]))
    return _utc_ns(m.groups(), offset)


@dataclass(slots=True)
class Log:
    time: int
    pod: str
    container: str
    trace_id: bytes
    span_id: bytes
    body: str
    stream: str
    severity: int
    severity_text: str


def severity(line: str) -> tuple[int, str]:
    """(OTLP severity number, text as found) of a container line; (0, "") when it names no level."""
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            level = doc.get("severity", doc.get("level"))
            if isinstance(level, str) and level.upper() in _SEVERITY:
                return _SEVERITY[level.upper()], level
            if isinstance(level, int) and not isinstance(level, bool) and level in _BUNYAN:
                return _BUNYAN[level][1], _BUNYAN[level][0]
            return 0, ""
    m = _LEVEL_WORD.search(line, 0, 64)
    return (_SEVERITY[m[1]], m[1]) if m else (0, "")


def parse_log(row: list[str], ids: IdStats, issues: Issues) -> Log:
    """A log row (``Timestamp,TimeUnixNano,Node,PodName,Container,TraceID,SpanID,Log``). Raises BadRow."""
    if len(row) < 8:
        raise BadRow("log_row_short")
    stamp, nanos, _, pod, container, trace, span, raw = row[:8]
    if not pod:
        raise BadRow("log_pod_empty")
    try:
        time = int(nanos)
    except ValueError:
        time = 0
    if time <= 0:  # Go's zero time (-6795364578871345152), or no number at all
        try:
            time = rfc3339_ns(stamp)
        except ValueError:
            raise BadRow("log_time_bad") from None
        issues.caveat("log_time_from_timestamp", f"{stamp} {nanos}")
    body, stream = raw, ""
    try:
        envelope = json.loads(raw) if raw.startswith("{") else None
    except ValueError:
        envelope = None
    if isinstance(envelope, dict) and isinstance(envelope.get("log"), str):
        body, stream = envelope["log"].rstrip("\n"), str(envelope.get("stream") or "")
    else:
        issues.caveat("log_not_docker_json", raw[:120])
    number, text = severity(body)
    return Log(
        time, pod, container, ids.otlp_id(trace, 16, "trace"), ids.otlp_id(span, 8, "span"), body, stream, number, text
    )


def metric_columns(header: list[str]) -> list[tuple[int, str, str]]:
    """(column index, metric name, unit) of a metric file's value columns (after Time, TimeStamp, PodName)."""
    found = []
    for i, column in enumerate(header[3:], 3):
        column = column.strip()
        if column in METRICS:
            name, unit = METRICS[column]
        else:
            m = re.fullmatch(r"([^()]*)(?:\((.*)\))?", column)
            base, unit = (m[1], m[2] or "") if m else (column, "")
            name = "nezha.pod." + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base).lower().strip("_")
        found.append((i, name, unit))
    return found
