"""Stage 3, detection: per-entity series (RED, metrics, logs, Kubernetes events), streaming detectors, and the
incident lifecycle. (Issue 6; not built yet.)"""
