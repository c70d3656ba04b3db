"""Stage 6, policies: the Rego policy engine and its default bundle, approvals, and the hash-chained audit log.
The only package that imports ``regopy``."""

from rootward.policies.approvals import Approval, Approvals
from rootward.policies.audit import AuditLog
from rootward.policies.engine import Decision, PolicyEngine

__all__ = ["Approval", "Approvals", "AuditLog", "Decision", "PolicyEngine"]
