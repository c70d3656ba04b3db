"""The acting part of the app: the Kubernetes client, the policy engine, the audit log, approvals, the Lease, the
guarded executor, and the responder that hands it each diagnosed incident's proposed action.

Built only with ``actions.enabled`` (the shipped Kubernetes manifests turn it on) and a reachable API; the
executor's mode stays ``actions.mode`` (``dry-run`` by default: decide and dry-run on the server, never change).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from rootward.actions import Diagnosis, Executor, FeatureFlags, Kube
from rootward.actions.dependents import topology_dependents
from rootward.actions.leader import LeaderElector
from rootward.agent.propose import Sizes
from rootward.agent.redact import Redactor
from rootward.agent.respond import Responder
from rootward.audit_ship import AuditShipper
from rootward.clock import Clock
from rootward.config import Config
from rootward.errors import RootwardError
from rootward.policies import Approvals, AuditLog, PolicyEngine
from rootward.policies.signing import Signer
from rootward.telemetry import Telemetry
from rootward.topology import TopologyGraph

logger = logging.getLogger(__name__)

#: (incident id, approval id, the action as JSON) of an action that waits for a human.
Pending = Callable[[str, str, dict[str, object]], None]


class Acting:
    """Everything that acts; ``start``/``shutdown`` follow the app's."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        topology: TopologyGraph,
        kube: Kube,
        pending: Pending | None = None,
        counted: Callable[[str, str], None] | None = None,
        sizes: Sizes | None = None,
        cleared: Callable[[Diagnosis], bool | None] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        """``pending`` is told of actions waiting for a human (the Slack notifier's approval requests); ``sizes``
        are the current memory limits a resize proposal starts from; ``cleared`` says whether the incident behind
        an action is over (verification waits for it)."""
        p, a = config.policies, config.actions
        self.config = config
        self.kube = kube
        self.policy = PolicyEngine.from_config(config)
        if not self.policy.ok:
            raise RootwardError(f"the policy bundle does not compile: {self.policy.error}")
        key = p.audit.hmac_key.get_secret_value().encode() if p.audit.hmac_key else None
        self.audit = AuditLog(config.audit_path, clock, key, Signer.from_config(p.audit), p.audit.synchronous)
        self.approvals = Approvals(config.audit_path, clock, p.approvals.ttl_s)
        lease = a.lease
        self.elector = LeaderElector(
            kube, lease.namespace, lease.name, lease.identity or socket.gethostname(), lease.duration_s,
            lease.renew_s, clock, lease.pod, max(3600.0, p.rules.cooldown_s),
        )  # fmt: skip
        # the trail off the pod (policies.audit.ship): records go to a log backend as they are written
        self.shipper = AuditShipper(self.audit, p.audit.ship, self.elector.identity) if p.audit.ship.endpoint else None
        self.flags = FeatureFlags(a.flags.source, a.flags.poll_interval_ms) if a.flags.source else None
        self.executor = Executor(
            kube, self.policy, self.audit, self.approvals, mode=a.mode, clock=clock,
            verify_timeout_s=a.verify_timeout_s, poll_interval_s=a.poll_interval_s,
            dependents=topology_dependents(topology), is_leader=self.elector.is_leader if lease.enabled else None,
            flags=self.flags, anomaly_cleared=cleared, ledger=self.elector if lease.enabled else None,
            pause=self.elector if lease.enabled else None,  # the Lease's pause, honoured by every Rootward
        )  # fmt: skip
        if lease.enabled:  # approvals pending here can no longer be carried out here
            self.elector.on_lost = self._lost
        self.responder = Responder(
            self.executor.submit, topology, config.agent.min_action_confidence, pending=pending, counted=counted,
            sizes=sizes, redactor=redactor, workers=a.workers,
        )  # fmt: skip

    def measured(self, telemetry: Telemetry) -> None:
        """Its gauges on ``telemetry``: paused, approvals waiting, the bundle's digest, what the shipper does."""
        telemetry.actions_paused.set_function(lambda: float(self.executor.pause.paused is not None))
        telemetry.approvals_pending.set_function(lambda: float(self._pending()))
        telemetry.policy_bundle.labels(self.policy.digest).set(1)
        shipper = self.shipper
        if shipper is not None:
            shipper.counted = lambda outcome, n: telemetry.audit_shipped.labels(outcome).inc(n)
            telemetry.audit_unshipped.set_function(lambda: float(shipper.waiting))

    def health(self) -> dict[str, object]:
        """Its part of /healthz and /readyz (never reads a database: the audit shipping as the shipper last saw)."""
        paused = self.executor.pause.paused  # who and why stay behind a token: GET /api/v1/actions/pause
        return {
            **({"actions_paused": True} if paused is not None else {}),
            "policy_bundle": self.policy.digest,
            **(
                {"audit_unshipped": self.shipper.waiting, "audit_ship_error": self.shipper.last_error}
                if self.shipper is not None
                else {}
            ),
        }

    def _pending(self) -> int:
        try:
            return self.approvals.pending_count()
        except Exception:  # a scrape must not fail for the approvals table (closing, locked): logged, not counted
            logger.warning("approvals could not be counted for /metrics", exc_info=True)
            return 0

    def _lost(self, holder: str | None) -> None:
        now = f"{holder} holds it now and proposes again for its own incidents" if holder else "it could not renew it"
        self.executor.withdraw(f"this Rootward lost the Lease ({now})")

    @classmethod
    def build(
        cls,
        config: Config,
        clock: Clock,
        topology: TopologyGraph,
        pending: Pending | None = None,
        counted: Callable[[str, str], None] | None = None,
        sizes: Sizes | None = None,
        cleared: Callable[[Diagnosis], bool | None] | None = None,
        redactor: Redactor | None = None,
    ) -> Acting | None:
        """The acting part, or None (logged) when actions are off or no Kubernetes API is reachable."""
        if not config.actions.enabled:
            return None
        try:
            kube = Kube.connect(config.actions.kubernetes)
        except RootwardError as e:
            logger.warning("actions are off: %s", e)
            return None
        return cls(config, clock, topology, kube, pending, counted, sizes, cleared, redactor)

    def start(self) -> None:
        self.audit.open()
        if self.shipper is not None:
            self.shipper.start()
        if self.flags is not None:
            try:
                self.flags.open()
            except RootwardError as e:  # toggle_flag requests then fail, audited, with the reason
                logger.warning("feature-flag actions are off: %s", e)
        if self.config.actions.lease.enabled:
            self.elector.start()

    def shutdown(self) -> None:
        self.executor.stop()  # changes under verification are recorded before the audit log closes
        self.responder.close()
        if self.config.actions.lease.enabled:
            self.elector.shutdown()
        if self.shipper is not None:  # the last records (the executor's stop among them) go before the log closes
            self.shipper.shutdown()
        for part in (self.policy, self.audit, self.approvals, self.kube, self.flags):
            if part is not None:
                part.close()
