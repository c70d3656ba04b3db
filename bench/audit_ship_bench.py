"""Shipping the audit log (rootward/audit_ship.py): what each record costs to read back from the log, turn into an
OTLP log record and send over gRPC to a log backend on this machine (a real gRPC server that takes the request),
the cursor written after each export; beside, in the same run, what appending the record cost. 5,000 records of
the executor's sizes (a decision with its request, diagnosis, blast radius and policy reasons, ~1.2 KiB of JSON).
Best of 3.

    cd bench && ../.venv/bin/python audit_ship_bench.py
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from run import merge

from rootward.audit_ship import AuditShipper
from rootward.config_acting import AuditShip
from rootward.policies import AuditLog

RECORDS = 5_000


class Backend(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.taken = 0

    def Export(self, request: Any, context: grpc.ServicerContext) -> ExportLogsServiceResponse:  # noqa: N802
        self.taken += sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        return ExportLogsServiceResponse()


def decision(k: int) -> dict[str, Any]:
    return {
        "request": {"kind": "patch_resources", "namespace": "shop", "name": f"cart-{k % 50}", "container": "cart",
                    "limits": {"memory": "384Mi"}},
        "diagnosis": {"summary": "resource_saturation at service:shop/cart: memory near its limit", "confidence": 0.87,
                      "incident_id": f"inc-{k}", "root_cause": "service:shop/cart",
                      "evidence": [f"pod:shop/cart-{k % 50}-x k8s:MemoryNearLimit: 0.97 (expected 0.6, z +9.1)"] * 5},
        "blast_radius": {"pods_total": 5, "pods_affected": 5, "pods_at_once": 1, "replicas_before": 5,
                         "replicas_after": 5, "namespaces": ["shop"], "pdbs": [], "dependents": ["service:shop/web"]},
        "decision": {"result": "allow", "reasons": [], "approval": []},
        "mode": "autonomous",
    }  # fmt: skip


def main() -> None:
    backend = Backend()
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 0)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(backend, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ship_best = append_best = float("inf")
    size = 0
    try:
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp, AuditLog(Path(tmp) / "audit.db") as log:
                start = time.perf_counter()
                for k in range(RECORDS):
                    log.append("decision", decision(k), request_id=f"act-{k}", target=f"Deployment/shop/cart-{k % 50}")
                append_best = min(append_best, time.perf_counter() - start)
                size = len(json.dumps(next(log.records(limit=1)).as_json()))
                shipper = AuditShipper(log, AuditShip(endpoint=f"127.0.0.1:{port}", protocol="grpc"), "bench")
                before = backend.taken
                start = time.perf_counter()
                assert shipper.ship_all()
                ship_best = min(ship_best, time.perf_counter() - start)
                assert backend.taken - before == RECORDS
                shipper.shutdown()
    finally:
        server.stop(0)
    results = {
        "audit_ship_us_per_record": round(ship_best / RECORDS * 1e6, 1),
        "audit_ship_records_per_s": round(RECORDS / ship_best),
        "audit_ship_vs_append": round(ship_best / append_best, 2),
        "audit_ship_record_bytes": size,
    }
    print(json.dumps(results, indent=1))
    merge(Path(__file__).with_name("results.json"), results)


if __name__ == "__main__":
    main()
