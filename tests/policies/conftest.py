"""Input documents for the policy tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

BASE: dict[str, Any] = {
    "schema": 1,
    "mode": "autonomous",
    "action": {
        "kind": "patch_resources",
        "tier": "medium",
        "read_only": False,
        "target": {"kind": "Deployment", "namespace": "shop", "name": "cart"},
        "target_id": "Deployment/shop/cart",
        "params": {},
    },
    "blast_radius": {
        "pods_total": 5,
        "pods_affected": 5,
        "pods_at_once": 1,
        "replicas_before": 5,
        "replicas_after": 5,
        "namespaces": ["shop"],
        "pdbs": [],
        "dependents": [],
    },
    "diagnosis": {"incident_id": "inc-1", "summary": "cart is OOMKilled", "confidence": 0.9},
    "history": {"last_action_on_target_s_ago": None, "actions_last_hour": 0},
    "now": {"unix": 1_700_000_000.0, "rfc3339": "2023-11-14T22:13:20Z"},
    "approval": None,
}


@pytest.fixture
def document() -> dict[str, Any]:
    """A request the default bundle allows: a confident medium-risk patch of 1 of 5 pods at once in shop."""
    return copy.deepcopy(BASE)
