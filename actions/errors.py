"""The actions package's errors.

RootwardError (rootward.errors)
└── ActionError          an action cannot be carried out
    ├── InvalidRequest   the request's parameters are wrong (permanent; never sent to the cluster)
    ├── KubeError        the Kubernetes API refused (4xx: permanent until something changes); ``status``
    │   └── NotFound     the object does not exist (404)
    ├── KubeUnavailable  the API could not be reached or failed (5xx, timeout): temporary, retry later
    └── FlagError        the flag file cannot be read or written, or the flag changed since it was read
"""

from __future__ import annotations

from rootward.errors import RootwardError


class ActionError(RootwardError):
    """Base of the actions package's errors."""


class InvalidRequest(ActionError, ValueError):
    """An action request with bad parameters."""


class KubeError(ActionError):
    """The Kubernetes API answered with an error."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """The object does not exist."""


class KubeUnavailable(ActionError):
    """The Kubernetes API could not be reached, timed out, or failed on its side (5xx)."""


class FlagError(ActionError):
    """The flagd flag file cannot be read, parsed or rewritten, has no such flag, or the flag's setting is no longer
    the one the action read (someone else changed it): nothing was written."""
