"""The policies package's errors.

    RootwardError (rootward.errors)
    └── PolicyError              a policy, the audit log or an approval cannot do what was asked
        ├── PolicyLoadError      a bundle cannot be read or does not compile (decisions then deny: fail closed)
        ├── AuditError           the audit log cannot be opened or appended to (the caller must not act)
        └── ApprovalError        an approval does not exist, or is not pending (already decided, or expired)
            ├── UnknownApproval  no approval has that id here
            └── ApprovalExpired  it expired before it was decided

A policy that errors or times out while deciding raises nothing: the decision is a deny carrying the error.
"""

from __future__ import annotations

from rootward.errors import RootwardError


class PolicyError(RootwardError):
    """Base of the policies package's errors."""


class PolicyLoadError(PolicyError):
    """A policy bundle cannot be read or does not compile; permanent until the files change."""


class AuditError(PolicyError):
    """The audit log cannot be opened, read or appended to."""


class ApprovalError(PolicyError):
    """An approval does not exist or is not pending."""


class UnknownApproval(ApprovalError):
    """No approval has that id in this audit database (on the DaemonSet it may be another pod's)."""


class ApprovalExpired(ApprovalError):
    """The approval expired before it was decided."""
