"""The Nezha data set as OTLP, checked by hand on tiny days (tests/nezha_days.py says what each row must become):
the layout and ground truth, span kinds inferred across minute files, logs of both systems, metric rows as gauges,
bad rows counted and skipped, time order and chunking, and safe archive extraction."""

from __future__ import annotations

import io
import itertools
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rootward import nezha, nezha_stream
from rootward.model import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, KIND_UNSPECIFIED
from rootward.recorded import Issues, Request
from rootward.scoring import Fault

from nezha_days import CART, FRONTEND, OB_T0, TT_T0, ns, ob_day, sid, tid, tt_day


@dataclass
class Seen:
    """What a stream of requests carried, keyed for the checks."""

    spans: dict[str, tuple[Any, dict[str, str]]] = field(default_factory=dict)  # span id hex -> (span, resource)
    logs: list[tuple[Any, dict[str, str]]] = field(default_factory=list)
    points: list[tuple[str, str, int, float, dict[str, str]]] = field(default_factory=list)  # name, unit, t, v, res
    requests: list[Request] = field(default_factory=list)


def attrs(resource: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in resource.attributes}


def seen(requests: Iterable[Request]) -> Seen:
    out = Seen()
    for r in requests:
        out.requests.append(r)
        m: Any = r.message
        if r.signal == "traces":
            for rs in m.resource_spans:
                for s in rs.scope_spans[0].spans:
                    out.spans[s.span_id.hex()] = (s, attrs(rs.resource))
        elif r.signal == "logs":
            out.logs += [(rec, attrs(rl.resource)) for rl in m.resource_logs for rec in rl.scope_logs[0].log_records]
        else:
            for rm in m.resource_metrics:
                for metric in rm.scope_metrics[0].metrics:
                    for p in metric.gauge.data_points:
                        out.points.append((metric.name, metric.unit, p.time_unix_nano, p.as_double, attrs(rm.resource)))
    return out


@pytest.fixture
def ob(tmp_path: Path) -> nezha.Day:
    ob_day(tmp_path)
    return nezha.days(tmp_path)[0]


def replayed(day: nezha.Day, **kwargs: Any) -> tuple[Seen, Issues]:
    issues = Issues()
    return seen(nezha_stream.day_requests(day, issues, **kwargs)), issues


def test_days_finds_each_system_and_the_construct_folder_beside_a_day(tmp_path: Path) -> None:
    ob_day(tmp_path)
    tt = tt_day(tmp_path)
    assert [(d.date, d.system) for d in nezha.days(tmp_path)] == [("2022-08-22", "ob"), ("2023-01-29", "tt")]
    (day,) = nezha.days(tt)  # one day's folder: its construct_data sibling comes along
    assert (day.rca, day.construct) == (tt, tmp_path / "construct_data" / "2023-01-29")
    assert [p.name for p in day.minute_files("trace")] == ["08_42_trace.csv", "08_50_trace.csv"]
    with pytest.raises(ValueError, match="no rca_data"):
        nezha.days(tmp_path / "rca_data" / "2022-08-22" / "trace")


def test_faults_read_inject_time_as_utc_and_strip_the_pod_hash(tmp_path: Path) -> None:
    ob_day(tmp_path)
    tt_day(tmp_path)
    ob, tt = nezha.days(tmp_path)
    assert nezha.faults(ob) == [
        Fault("ob", "2022-08-22", OB_T0 + 30, "cartservice", "cpu_contention"),
        Fault("ob", "2022-08-22", OB_T0 + 600, "frontend", "return"),
    ]
    # inject_timestamp is 8 h off on this day; inject_time read as UTC is right
    assert nezha.faults(tt) == [Fault("tt", "2023-01-29", TT_T0 + 30, "ts-travel-service", "exception")]


@pytest.mark.parametrize(
    ("pod", "service", "workload"),
    [
        pytest.param(CART, "cartservice", ("k8s.deployment.name", "cartservice"), id="deployment"),
        pytest.param("ts-ui-dashboard-5477b965f-2chkr", "ts-ui-dashboard", ("k8s.deployment.name", "ts-ui-dashboard"),
                     id="deployment-9-char-hash"),
        pytest.param("redis-cart-0", "redis-cart", ("k8s.statefulset.name", "redis-cart"), id="statefulset"),
        pytest.param("loadgenerator", "loadgenerator", None, id="bare-name"),
    ],
)  # fmt: skip
def test_service_and_workload_of_a_pod_name(pod: str, service: str, workload: tuple[str, str] | None) -> None:
    assert nezha.service_name(pod) == service
    assert nezha.workload(pod) == workload


def test_spans_get_kinds_from_service_changes_and_the_k8s_resource(ob: nezha.Day) -> None:
    got, issues = replayed(ob)
    kinds = {name: got.spans[sid(name)][0].kind for name in ("a1", "a2", "a3", "a4")}
    assert kinds == {"a1": KIND_SERVER, "a2": KIND_CLIENT, "a3": KIND_SERVER, "a4": KIND_INTERNAL}
    span, resource = got.spans[sid("a3")]
    assert span.trace_id.hex() == tid("1")
    assert span.parent_span_id.hex() == sid("a2")
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (ns(OB_T0, 0.15), ns(OB_T0, 0.35))
    assert span.name == "hipstershop.CartService/GetCart"
    assert span.status.code == 0  # the data has no status
    assert resource == {
        "service.name": "cartservice",
        "k8s.pod.name": CART,
        "k8s.namespace.name": "online-boutique",
        "k8s.deployment.name": "cartservice",
        "k8s.node.name": "33.33.33.155",  # from the log file's Node column
    }
    assert "k8s.node.name" not in got.spans[sid("a1")][1]  # the frontend never logs: no node known
    assert got.spans[sid("a1")][0].parent_span_id == b""
    assert issues.skipped["span_time_bad"] == 1
    assert issues.skipped["span_time_zero"] == 1
    assert sid("b1") not in got.spans
    assert sid("b2") not in got.spans


def test_a_parent_in_the_next_minute_file_makes_its_child_a_server(ob: nezha.Day) -> None:
    got, issues = replayed(ob)
    kinds = {name: got.spans[sid(name)][0].kind for name in ("c1", "e1", "e0")}
    assert kinds == {"c1": KIND_SERVER, "e1": KIND_CLIENT, "e0": KIND_SERVER}
    assert issues.skipped["span_duplicate"] == 1  # c1 is in both files
    assert len(got.spans) == 8
    assert not issues.caveats


def test_a_parent_later_than_the_window_leaves_its_child_without_a_kind(ob: nezha.Day) -> None:
    """The edge of the window: c1 ends at 59.9 s; d1 (60.2 s) moves replayed time past c1's end + 0.2 s before its
    parent e1 (60.5 s) comes, so c1 goes out UNSPECIFIED (the graph pairs that by parent link) and e1 still CLIENT."""
    got, issues = replayed(ob, hold_s=0.2)
    assert got.spans[sid("c1")][0].kind == KIND_UNSPECIFIED
    assert got.spans[sid("e1")][0].kind == KIND_CLIENT
    assert issues.caveats["span_parent_unseen"] == 1
    assert issues.caveats["span_late_parent"] == 1


def test_logs_carry_ids_severity_and_the_container_line_of_either_system(tmp_path: Path) -> None:
    ob_day(tmp_path)
    tt_day(tmp_path)
    ob, tt = nezha.days(tmp_path)
    ob_logs, ob_issues = replayed(ob)
    ((record, resource),) = ob_logs.logs
    assert record.time_unix_nano == ns(OB_T0, 0.3)
    assert (record.severity_number, record.severity_text) == (17, "error")  # the JSON line's severity field
    assert record.body.string_value.startswith('{"message": "TraceID: ')  # the container's line, not the envelope
    assert (record.trace_id.hex(), record.span_id.hex()) == (tid("1"), sid("a3"))
    assert {kv.key: kv.value.string_value for kv in record.attributes} == {"log.iostream": "stdout"}
    assert resource["k8s.container.name"] == "server"
    assert resource["service.name"] == "cartservice"
    assert ob_issues.skipped["log_row_short"] == 1

    tt_logs, tt_issues = replayed(tt)
    (info, _), (error, tt_resource) = tt_logs.logs
    assert (info.severity_number, info.severity_text) == (9, "INFO")  # the level word of the text line
    assert info.body.string_value.startswith("16:42:22.382 INFO  t.s.TravelServiceImpl")
    assert (error.severity_number, error.severity_text) == (17, "ERROR")
    assert error.time_unix_nano == ns(TT_T0, 23.295)  # Go's zero time in TimeUnixNano: Timestamp, read as UTC
    assert tt_issues.caveats["log_time_from_timestamp"] == 1
    assert tt_resource["k8s.namespace.name"] == "train-ticket"
    assert tt_resource["service.name"] == "ts-travel-service"


def test_metric_rows_become_gauges_named_with_units(ob: nezha.Day) -> None:
    got, issues = replayed(ob)
    t = ns(OB_T0, 19.5)  # the Time column; TimeStamp (1861140279) is corrupt
    assert sorted(p[:4] for p in got.points) == [
        ("nezha.pod.cpu.usage_rate", "%", t, 5.5),
        ("nezha.pod.workload", "{operation}", t, 12.0),
    ]
    assert got.points[0][4]["k8s.pod.name"] == FRONTEND
    assert issues.skipped["metric_value_nan"] == 1
    assert issues.skipped["metric_time_bad"] == 1
    assert {p[4]["service.name"] for p in got.points} == {"frontend"}  # front_service.csv, dependency.csv: not sent


def test_unknown_metric_columns_get_a_derived_name_and_unit() -> None:
    columns = nezha.metric_columns(["Time", "TimeStamp", "PodName", "CpuUsage(m)", "DiskReadBytes(By)", "Threads"])
    assert columns == [
        (3, "nezha.pod.cpu.usage", "{millicore}"),
        (4, "nezha.pod.disk_read_bytes", "By"),
        (5, "nezha.pod.threads", ""),
    ]


def item_times(r: Request) -> list[int]:
    m: Any = r.message
    if r.signal == "traces":
        return [s.end_time_unix_nano for rs in m.resource_spans for s in rs.scope_spans[0].spans]
    if r.signal == "logs":
        return [rec.time_unix_nano for rl in m.resource_logs for rec in rl.scope_logs[0].log_records]
    return [
        p.time_unix_nano for rm in m.resource_metrics for x in rm.scope_metrics[0].metrics for p in x.gauge.data_points
    ]


def test_events_come_in_time_order_and_requests_in_chunks(tmp_path: Path) -> None:
    tt_day(tmp_path)
    ob_day(tmp_path)
    for day in nezha.days(tmp_path):
        got, _ = replayed(day, chunking=nezha_stream.Chunking(spans=2, points=3, logs=1))
        for signal, limit in (("traces", 2), ("metrics", 3), ("logs", 1)):
            requests = [r for r in got.requests if r.signal == signal]
            assert requests, (day.date, signal)
            assert all(0 < r.items <= limit for r in requests)
            assert all(r.time_ns == max(item_times(r)) for r in requests)  # a request's time: its latest event
            for before, after in itertools.pairwise(requests):
                assert max(item_times(before)) <= min(item_times(after))


def test_unreadable_files_and_missing_minutes_are_counted(tmp_path: Path) -> None:
    day_dir = ob_day(tmp_path)
    (day_dir / "trace" / "04_02_trace.csv").write_text("not,a,trace,file\n1,2,3,4\n")
    (day_dir / "log" / "04_01_log.csv").write_text("")
    got, issues = replayed(nezha.days(tmp_path)[0])
    assert issues.skipped["trace_file_bad_header"] == 1
    assert issues.skipped["log_file_bad_header"] == 1
    assert issues.missing == {"trace_minute": 1, "log_minute": 1}  # the 04:10 fault: no minute files
    assert len(got.spans) == 8


def test_time_range_spans_the_minute_files_and_the_metric_rows(ob: nezha.Day) -> None:
    lo, hi = nezha_stream.time_range(ob) or (0, 0)
    assert lo == ns(OB_T0, -60)  # a minute file may start before its name says
    assert hi == ns(OB_T0, 120)


# --- archives ---------------------------------------------------------------------------------------------------


def add(tar: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    info.linkname = link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_extract_writes_only_plain_members_inside_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = tmp_path / "ob-2099-01-01.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add(tar, "rca_data/2099-01-01/trace/00_00_trace.csv", b"TraceID\n")
        add(tar, "./rca_data/2099-01-01/log/00_00_log.csv", b"Timestamp\n")
        add(tar, "../evil.txt")
        add(tar, "/tmp/abs.txt")
        add(tar, "rca_data/../../evil2.txt")
        add(tar, "rca_data/2099-01-01/link", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add(tar, "rca_data/2099-01-01/hard", kind=tarfile.LNKTYPE, link="rca_data/2099-01-01/trace/00_00_trace.csv")
        add(tar, "other/readme.txt")
    dest = nezha.extract(archive)
    assert dest == tmp_path / "cache" / "rootward" / "nezha" / "ob-2099-01-01"
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    assert files == [".complete", "rca_data/2099-01-01/log/00_00_log.csv", "rca_data/2099-01-01/trace/00_00_trace.csv"]
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "evil2.txt").exists()
    (dest / "rca_data" / "2099-01-01" / "trace" / "00_00_trace.csv").write_text("kept")
    assert nezha.extract(archive) == dest  # the same archive: not extracted again
    assert (dest / "rca_data" / "2099-01-01" / "trace" / "00_00_trace.csv").read_text() == "kept"


def test_days_of_an_archive_are_extracted_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ob_day(tmp_path / "data")
    archive = tmp_path / "ob.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "data" / "rca_data", "rca_data")
    (day,) = nezha.days(archive)
    assert day.rca == tmp_path / "cache" / "rootward" / "nezha" / "ob" / "rca_data" / "2022-08-22"
    assert len(replayed(day)[0].spans) == 8
