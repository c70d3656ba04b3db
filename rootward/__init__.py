"""Rootward: a telemetry-plane sidecar for autonomous operations on Kubernetes.

An OpenTelemetry Collector exports to it; it keeps a live dependency graph, detects anomalies, ranks root causes
and hands proposed fixes to a guarded executor. See README.md for the loop and the layout.
"""

from rootward._version import __version__

__all__ = ["__version__"]
