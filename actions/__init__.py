"""Stage 5, actions: the registry of typed Kubernetes actions and the guarded executor (policy, audit,
server-side dry-run, execute, verify, roll back), including feature-flag toggles on flagd's flag file. The only
package that imports ``kubernetes`` and ``openfeature``."""

from rootward.actions.executor import Diagnosis, Executor, Outcome
from rootward.actions.flags import FeatureFlags
from rootward.actions.kube import Kube
from rootward.actions.requests import (
    REGISTRY,
    ActionRequest,
    Collect,
    Cordon,
    Drain,
    PatchResources,
    RestartPod,
    Rollback,
    RolloutRestart,
    Scale,
    ToggleFlag,
    from_json,
)

__all__ = [
    "REGISTRY",
    "ActionRequest",
    "Collect",
    "Cordon",
    "Diagnosis",
    "Drain",
    "Executor",
    "FeatureFlags",
    "Kube",
    "Outcome",
    "PatchResources",
    "RestartPod",
    "Rollback",
    "RolloutRestart",
    "Scale",
    "ToggleFlag",
    "from_json",
]
