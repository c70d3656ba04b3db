"""The topology history's disk and time: a realistic graph checkpointed every 30 s for a simulated day.

Usage: ``.venv/bin/python bench/history_bench.py [--hours 24] [--no-thinning]`` (a day takes ~2 minutes on 2 cores).

The graph (built as the live one holds it, attributes and types included): 5 namespaces, 15 nodes, 80 services,
80 workloads, 300 pods, 20 virtual peers (databases, queues, hosts) = 500 entities; each pod is an instance of its
service, owned by its workload, runs on a node and is in a namespace, each workload is in its namespace (1,280
structural edges), and 720 call edges between services and to peers = 2,000 edges. Each call edge has a rate drawn
log-uniformly between 0.01 and 50 requests/s (so some are idle in a given 30 s), 1% errors, latencies into the
servicegraph buckets. Every entity and structural edge is seen every tick (a busy cluster: the worst case for
``last_seen``). Every 2 hours a rollout replaces the pods of 10% of the workloads (new pod names; the old pods age
out after the 15-minute TTL). Simulated time runs on a ManualClock; each tick is what the upkeep thread does: age
out, checkpoint, prune (thinning after 1 h to one checkpoint per 5 min, retention 7 days).

Printed: the database's size on disk (file + WAL) at the end, rows written and kept, checkpoint and prune times
(wall clock, p50 and max), and how long a restore, a graph-as-of and a diff take at the end.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rootward.clock import ManualClock
from rootward.topology import TopologyGraph, TopologyLimits, queries
from rootward.topology.history import THINNING, History
from rootward.topology.red import LATENCY_BUCKETS_S

TICK_S = 30.0


class Cluster:
    """A synthetic cluster's graph, kept in a TopologyGraph as the pipeline would keep it."""

    def __init__(self, graph: TopologyGraph, clock: ManualClock, rng: random.Random) -> None:
        self.graph, self.clock, self.rng = graph, clock, rng
        now = clock.now()
        g = graph.graph
        self.namespaces = [f"ns-{i}" for i in range(5)]
        for ns in self.namespaces:
            g.add_node(
                f"namespace:{ns}", kind="namespace", name=ns, namespace="", virtual=False, first_seen=now, last_seen=now
            )
        for i in range(15):
            g.add_node(
                f"node:node-{i}",
                kind="node",
                name=f"node-{i}",
                namespace="",
                virtual=False,
                first_seen=now,
                last_seen=now,
            )
        self.services = []
        self.workloads = []
        for i in range(80):
            ns = self.namespaces[i % 5]
            svc, wl = f"service:{ns}/svc-{i}", f"workload:{ns}/deployment/svc-{i}"
            g.add_node(svc, kind="service", name=f"svc-{i}", namespace=ns, virtual=False, first_seen=now, last_seen=now)
            g.add_node(
                wl,
                kind="workload",
                name=f"svc-{i}",
                namespace=ns,
                virtual=False,
                first_seen=now,
                last_seen=now,
                revision="1",
            )
            self._edge(wl, f"namespace:{ns}", "in")
            self.services.append(svc)
            self.workloads.append(wl)
        self.generation = [0] * 80
        self.gone: set[str] = set()  # replaced pods: no longer seen, they age out
        for w in range(80):
            for p in range(4 if w < 60 else 3):  # 60 x 4 + 20 x 3 = 300 pods
                self._pod(w, p)
        peers = [("database", "postgresql"), ("database", "redis"), ("queue", "kafka"), ("host", "api.example.com")]
        targets = list(self.services)
        for i in range(20):
            kind, system = peers[i % 4]
            pid = f"{kind}:{system}/peer-{i}"
            g.add_node(pid, kind=kind, name=f"peer-{i}", namespace="", virtual=True, first_seen=now, last_seen=now)
            targets.append(pid)
        self.rates: dict[tuple[str, str], float] = {}
        while len(self.rates) < 720:
            src, dst = rng.choice(self.services), rng.choice(targets)
            if src != dst and (src, dst) not in self.rates:
                self.rates[src, dst] = 10 ** rng.uniform(-2, np.log10(50))
                self._edge(src, dst, "calls")
        graph._edges = g.number_of_edges()

    def _edge(self, u: str, v: str, kind: str) -> None:
        now = self.clock.now()
        self.graph.graph.add_edge(u, v, key=kind, kind=kind, first_seen=now, last_seen=now)

    def _pod(self, w: int, p: int) -> None:
        g, now = self.graph.graph, self.clock.now()
        wl = self.workloads[w]
        ns, name = wl.split(":")[1].split("/")[0], wl.rsplit("/", 1)[1]
        pod = f"pod:{ns}/{name}-{self.generation[w]}-{p}"
        g.add_node(pod, kind="pod", name=pod.split("/")[1], namespace=ns, virtual=False, first_seen=now, last_seen=now)
        for target, kind in (
            (self.services[w], "instance_of"),
            (wl, "owned_by"),
            (f"node:node-{(w + p) % 15}", "runs_on"),
            (f"namespace:{ns}", "in"),
        ):
            self._edge(pod, target, kind)

    def rollout(self) -> None:
        """Replace the pods of 10% of the workloads: new names; the old ones stop being seen."""
        g = self.graph.graph
        for w in self.rng.sample(range(80), 8):
            old = [u for u, _, k in g.in_edges(self.workloads[w], keys=True) if k == "owned_by" and u not in self.gone]
            self.generation[w] += 1
            for p in range(len(old)):
                self._pod(w, p)
            self.gone.update(old)
            g.nodes[self.workloads[w]]["revision"] = str(self.generation[w] + 1)
        self.graph._edges = g.number_of_edges()

    def tick(self, np_rng: np.random.Generator) -> None:
        """30 s of traffic: every entity and structural edge seen (but the replaced pods), call counters moving."""
        now = self.clock.now()
        with self.graph.read() as g:
            for n, d in g.nodes(data=True):
                if n not in self.gone:
                    d["last_seen"] = now
            for u, v, k, d in g.edges(keys=True, data=True):
                if k != "calls":
                    if u not in self.gone:
                        d["last_seen"] = now
                    continue
                n = int(np_rng.poisson(self.rates[u, v] * TICK_S))
                if n == 0:
                    continue
                latencies = np_rng.lognormal(np.log(0.02), 1.0, n)
                buckets = np.bincount(
                    np.searchsorted(LATENCY_BUCKETS_S, latencies), minlength=len(LATENCY_BUCKETS_S) + 1
                )
                d["requests"] = d.get("requests", 0) + n
                d["errors"] = d.get("errors", 0) + int(np_rng.binomial(n, 0.01))
                d["latency_sum_s"] = d.get("latency_sum_s", 0.0) + float(latencies.sum())
                old = d.get("latency_buckets")
                d["latency_buckets"] = buckets.astype(np.int64) if old is None else old + buckets
                d["last_seen"] = now


def run(hours: float, thinning: bool = True) -> dict[str, float]:
    rng, np_rng = random.Random(11), np.random.default_rng(11)
    clock = ManualClock(1_700_000_000.0)
    graph = TopologyGraph(TopologyLimits(ttl_s=900.0), clock)
    cluster = Cluster(graph, clock, rng)
    with tempfile.TemporaryDirectory(prefix="rootward-history-") as tmp:
        path = Path(tmp) / "topology.db"
        history = History(path, clock, thinning=THINNING if thinning else ())
        history.open()
        checkpoint_s, prune_s, rows = [], [], 0
        ticks = int(hours * 3600 / TICK_S)
        for i in range(ticks):
            clock.advance(TICK_S)
            if i and i % int(7200 / TICK_S) == 0:
                cluster.rollout()
            cluster.tick(np_rng)
            graph.age_out()
            stats = history.checkpoint(graph)
            checkpoint_s.append(stats.seconds)
            rows += stats.rows
            started = time.perf_counter()
            history.prune()
            prune_s.append(time.perf_counter() - started)
        history.close()  # folds the WAL in: the size is the database's own
        history.open()
        size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("topology.db-*"))
        kept = history.checkpoints()
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            versions = db.execute("SELECT count(*), avg(length(attrs)) FROM versions").fetchone()
            page = db.execute("PRAGMA page_size").fetchone()[0]
            free_pages = db.execute("PRAGMA freelist_count").fetchone()[0]
            space = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        started = time.perf_counter()
        restored = TopologyGraph(TopologyLimits(), clock)
        history.restore(restored)
        restore_s = time.perf_counter() - started
        started = time.perf_counter()
        before, _ = history.graph_at(clock.now() - min(6.0, hours / 2) * 3600)
        at_s = time.perf_counter() - started
        after, _ = history.graph_at(clock.now())
        started = time.perf_counter()
        queries.diff(before, after)
        diff_s = time.perf_counter() - started
        history.close()
    with graph.read() as g:
        entities, edges = g.number_of_nodes(), g.number_of_edges()
    return {
        "entities": entities,
        "edges": edges,
        "checkpoints_written": ticks,
        "checkpoints_kept": len(kept),
        "rows_written": rows,
        "rows_kept": versions[0],
        "bytes_per_row_json": versions[1],
        "mib": size / 2**20,
        "versions_mib": space.get("versions", 0) / 2**20,
        "time_index_mib": space.get("versions_by_time", 0) / 2**20,
        "free_mib": free_pages * page / 2**20,
        "checkpoint_ms_p50": 1000 * statistics.median(checkpoint_s),
        "checkpoint_ms_max": 1000 * max(checkpoint_s),
        "prune_ms_p50": 1000 * statistics.median(prune_s),
        "prune_ms_max": 1000 * max(prune_s),
        "restore_ms": 1000 * restore_s,
        "graph_at_ms": 1000 * at_s,
        "diff_ms": 1000 * diff_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--no-thinning", action="store_true", help="keep every checkpoint (for comparison)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures = run(args.hours, thinning=not args.no_thinning)
    for key, value in figures.items():
        print(f"{key:22} {value:12,.2f}")
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
