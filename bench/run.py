"""``make bench``: measure the receiver's hot path against its floors and targets, print a table, and merge the
figures into bench/results.json (a flat JSON object of numbers that later issues add keys to).

Three measurements, each against a reference measured in the same run, because absolute numbers move with the
machine and its load while ratios hold (see /work/shared/PERFORMANCE.md and bench/README.md):

- decode: ``TraceDecoder.decode`` vs the plain upb parse of the same 500-span requests (decode_bench.py);
- server: Rootward's gRPC server vs a raw-bytes grpcio server, driven by one client process (server_bench.py);
- soak: 10k spans/s from rotel into a ``rootward serve`` process for 60 s: its CPU, memory and losses (soak.py).

Usage: ``python bench/run.py [--quick] [--soak-seconds N] [--output PATH] [--strict]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the helper modules beside this file, also for the spawned children

import actions_bench  # noqa: E402
import decode_bench  # noqa: E402
import detector_bench  # noqa: E402
import incidents_bench  # noqa: E402
import server_bench  # noqa: E402
import soak  # noqa: E402
import topology_bench  # noqa: E402
from workload import make_requests  # noqa: E402

SPANS_PER_REQUEST = 500
#: key -> (target, "<=" or ">="); keys without a target are reported for context only.
TARGETS: dict[str, tuple[float, str]] = {
    "r_decode": (2.0, "<="),
    "server_vs_raw": (0.35, ">="),
    "soak_cpu_core_fraction": (0.15, "<="),
    "soak_rss_mib": (150.0, "<="),
    "soak_dropped": (0.0, "<="),
    "r_graph": (1.0, "<="),
    "subgraph_p99_ms": (5.0, "<="),
    "bytes_per_entity": (2048.0, "<="),
    "bytes_per_edge": (1024.0, "<="),
    "detector_tick_ms_10k_series": (20.0, "<="),
    "detector_tick_ms_10k_series_multivariate": (20.0, "<="),
    "policy_decision_ms": (1.0, "<="),
    "audit_append_us": (200.0, "<="),
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs for smoke-checking (5 s soak, fewer rounds)")
    parser.add_argument("--soak-seconds", type=float, default=None, help="soak duration (default 60, --quick: 5)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results file to merge into (default bench/results.json; --quick writes none unless given)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def _version(name: str) -> str:
    """The installed version of ``name``; Cython is a build requirement, so a fresh .venv may not have it."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


def machine() -> str:
    """One line naming what the figures were measured on."""
    libs = ", ".join(f"{name} {_version(name)}" for name in ("grpcio", "protobuf", "Cython", "numpy"))
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {libs}, {platform.machine()}"


def measure(quick: bool, soak_seconds: float) -> tuple[dict[str, float], dict[str, str]]:
    """Run the three benchmarks; return the results keys and notes for the table (extra context per key)."""
    results: dict[str, float] = {}
    notes: dict[str, str] = {}
    requests = make_requests(8 if quick else 20, SPANS_PER_REQUEST, seed=1)
    wire = sum(map(len, requests)) / (len(requests) * SPANS_PER_REQUEST)
    print(f"workload: {len(requests)} requests x {SPANS_PER_REQUEST} spans, {wire:.0f} bytes a span", flush=True)

    print("decode: TraceDecoder.decode vs ExportTraceServiceRequest.FromString ...", flush=True)
    d = decode_bench.run(requests, SPANS_PER_REQUEST, rounds=3 if quick else 9)
    results["r_decode"] = d.ratio
    results["decode_us_per_span"] = d.decode_us_per_span
    results["parse_us_per_span"] = d.parse_us_per_span
    notes["r_decode"] = f"decode {d.decode_us_per_span:.3f} µs/span, parse {d.parse_us_per_span:.3f} µs/span"

    print("server: Rootward gRPC server vs raw-bytes grpcio server (separate processes) ...", flush=True)
    s = server_bench.run(requests, SPANS_PER_REQUEST, calls=200 if quick else 1000, rounds=3 if quick else 7)
    results["server_spans_per_s"] = s.real_spans_per_s
    results["raw_server_spans_per_s"] = s.raw_spans_per_s
    results["server_vs_raw"] = s.ratio
    results["server_cpu_us_per_span"] = s.real_cpu_us_per_span
    results["raw_server_cpu_us_per_span"] = s.raw_cpu_us_per_span
    results["server_spans_per_cpu_s"] = 1e6 / s.real_cpu_us_per_span
    results["raw_server_spans_per_cpu_s"] = 1e6 / s.raw_cpu_us_per_span
    notes["server_vs_raw"] = f"wall-clock; raw {s.raw_spans_per_s:,.0f} spans/s"
    notes["server_cpu_us_per_span"] = f"raw {s.raw_cpu_us_per_span:.2f}"
    notes["server_spans_per_cpu_s"] = f"raw {1e6 / s.raw_cpu_us_per_span:,.0f}"
    client = s.client_cpu_us_per_span
    notes["server_spans_per_s"] = f"client CPU {client['real']:.2f} µs/span (raw run {client['raw']:.2f})"

    print("topology: graph update vs decode; subgraph queries; memory per entity and edge ...", flush=True)
    t = topology_bench.run(requests, SPANS_PER_REQUEST, rounds=3 if quick else 5)
    results["r_graph"] = t.r_graph
    results["graph_us_per_span"] = t.graph_us_per_span
    results["subgraph_p99_ms"] = t.subgraph_p99_ms
    results["bytes_per_entity"] = t.bytes_per_entity
    results["bytes_per_edge"] = t.bytes_per_edge
    notes["r_graph"] = f"graph {t.graph_us_per_span:.2f} µs/span"
    notes["subgraph_p99_ms"] = "5,000 services, 3 calls each, depth 2"
    notes["bytes_per_entity"] = "50,000 entities (tracemalloc)"
    notes["bytes_per_edge"] = "100,000 call edges with RED (tracemalloc)"

    print("actions: policy decision on the shipped bundle; durable audit append ...", flush=True)
    a = actions_bench.run(rounds=3 if quick else 7)
    results["policy_decision_ms"] = a.policy_decision_ms
    results["audit_append_us"] = a.audit_append_us
    results["audit_append_hmac_us"] = a.audit_append_hmac_us
    results["audit_append_signed_us"] = a.audit_append_signed_us
    results["audit_intent_us"] = a.audit_intent_us
    results["audit_append_full_us"] = a.audit_append_full_us
    results["sqlite_full_commit_us"] = a.sqlite_full_commit_us
    notes["policy_decision_ms"] = "PolicyEngine.decide, compiled once, timeout thread included"
    notes["audit_append_us"] = "synchronous=NORMAL (survives kill -9), checkpoints on their own thread"
    notes["audit_append_full_us"] = f"every record fsynced; bare SQLite FULL commit {a.sqlite_full_commit_us:.0f} µs"

    print("detector: one window closed over 10,000 series ...", flush=True)
    dt = detector_bench.run(rounds=10 if quick else 30)
    results["detector_tick_ms_10k_series"] = dt.tick_ms
    notes["detector_tick_ms_10k_series"] = "median, full 240-value histories, stats refreshed every 8th value"
    joint = detector_bench.run(rounds=10 if quick else 30, multivariate=True)
    results["detector_tick_ms_10k_series_multivariate"] = joint.tick_ms
    notes["detector_tick_ms_10k_series_multivariate"] = "opt-in IsolationForest scoring 2,500 entities a window"
    results["multivariate_import_mib"] = detector_bench.import_mib()
    notes["multivariate_import_mib"] = "RSS scikit-learn's IsolationForest adds once imported (why it is opt-in)"
    w = detector_bench.window_run(rounds=5 if quick else 20)
    results["detector_window_ms_10k_series"] = w.window_ms
    notes["detector_window_ms_10k_series"] = (
        f"fold + values, {w.series:,} series (spans, histograms, kubeletstats); its metrics decode {w.decode_ms:.0f} ms"
    )

    print("incidents: a storm of 1,200 anomalies in one window ...", flush=True)
    results["incidents_storm_ms"] = incidents_bench.run(rounds=3 if quick else 5)
    notes["incidents_storm_ms"] = "1,200 services' anomalies on a real TopologyGraph, 301 incidents after it"

    print(f"soak: 10k spans/s for {soak_seconds:g} s, pacer -> rotel -> rootward serve ...", flush=True)
    k = soak.run(soak_seconds)
    results["soak_cpu_core_fraction"] = k.cpu_core_fraction
    results["soak_rss_mib"] = k.peak_rss_mib
    results["soak_dropped"] = float(k.dropped)
    results["soak_spans_per_s"] = k.rate
    results["soak_seconds"] = k.seconds
    results["soak_rss_anon_mib"] = k.rss_anon_mib
    notes["soak_rss_mib"] = f"VmHWM; max VmRSS in window {k.window_max_rss_mib:.0f}, RssAnon {k.rss_anon_mib:.0f}"
    notes["soak_dropped"] = (
        f"sent {k.sent:,}, accepted {k.accepted:,}, refused {k.refused:,} (retried by rotel), "
        f"send failures {k.send_failures:,}"
    )
    return results, notes


def _warn_if_busy() -> None:
    """Other work on a 2-core box skews every figure here (most of all the client/server ratio): say so."""
    load = float(Path("/proc/loadavg").read_text().split()[0])
    if load > 0.5:
        print(f"WARNING: 1-minute load average is {load:.2f} before starting; figures will be skewed", flush=True)


def verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    target, op = TARGETS[key]
    ok = value <= target if op == "<=" else value >= target
    return "pass" if ok else "FAIL"


def table(results: dict[str, float], notes: dict[str, str]) -> str:
    """The figures as an aligned text table: figure, value, target, pass/FAIL, notes."""
    rows = [("figure", "value", "target", "result", "notes")]
    for key, value in results.items():
        target = f"{TARGETS[key][1]} {TARGETS[key][0]:g}" if key in TARGETS else "-"
        shown = f"{value:,.0f}" if abs(value) >= 1000 or float(value).is_integer() else f"{value:.3f}"
        rows.append((key, shown, target, verdict(key, value) or "-", notes.get(key, "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        name, value, target, result, note = row
        cells = [name.ljust(widths[0]), value.rjust(widths[1]), target.ljust(widths[2]), result.ljust(widths[3])]
        lines.append(("  ".join(cells) + "  " + note).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines[:1] + [line[:100] for line in lines]))
    return "\n".join(lines)


def merge(path: Path, results: dict[str, float]) -> None:
    """Merge ``results`` into the JSON object at ``path``, keeping keys other benchmarks wrote."""
    existing: dict[str, float] = {}
    if path.exists():
        loaded = json.loads(path.read_text() or "{}")
        if not isinstance(loaded, dict):
            raise SystemExit(f"{path} does not hold a JSON object; not overwriting it")
        existing = loaded
    existing.update({k: round(v, 6) for k, v in results.items()})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    soak_seconds = args.soak_seconds if args.soak_seconds is not None else (5.0 if args.quick else 60.0)
    output = args.output if args.output is not None else (None if args.quick else HERE / "results.json")
    print(f"machine: {machine()}", flush=True)
    _warn_if_busy()
    started = time.monotonic()
    results, notes = measure(args.quick, soak_seconds)
    print()
    print(table(results, notes))
    print(f"\ntook {time.monotonic() - started:.0f} s", end="")
    if output is not None:
        merge(output, results)
        print(f"; merged into {output}")
    else:
        print("; --quick: no results file written (pass --output to write one)")
    missed = [k for k in results if verdict(k, results[k]) == "FAIL"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
