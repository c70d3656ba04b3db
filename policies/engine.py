"""The policy engine: Rego v1 policies compiled once with regopy, asked one question per action request.

Every request gets a :class:`Decision` from ``data.rootward.policy.decision``: ``deny`` when any rule denies,
``needs_approval`` when a rule asks for a human and none has approved, else ``allow``, with the reasons. The shipped
bundle (``policies/bundle``, package data) is loaded first, then the ``.rego`` files of each configured directory
(files ending ``_test.rego`` are tests and are left out); all of it, with the settings as
``data.rootward.settings``, is compiled into one regopy bundle at start, and each decision only sets the input
and runs the compiled plan (~0.07 ms; bench/README.md).

Fail closed: a bundle that cannot be read or does not compile makes every decision a deny naming the error
(:attr:`PolicyEngine.error`, which the app should refuse to start on); so does a decision that errors (e.g.
two values for one complete rule), is undefined, or takes longer than ``timeout_s`` (evaluated on a worker
thread; regopy releases the GIL, and a stuck evaluation's interpreter is abandoned and a new one made).

The input document (schema 1) is described in policies/README.md.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import regopy

from rootward.config import Config, PolicyRules
from rootward.policies.errors import PolicyLoadError

logger = logging.getLogger(__name__)

#: The rule every decision reads.
ENTRYPOINT = "rootward/policy/decision"
#: A file of package rootward.policy (a comment may follow), and a line that starts a rule named decision: a
#: heuristic that sees every way of writing the rule (indented, default, if, :=), and is fooled only by a line of a
#: raw string that begins with the word.
_IN_POLICY = re.compile(r"^\s*package\s+rootward\.policy\s*(#.*)?$", re.MULTILINE)
_DECISION = re.compile(r"^\s*(default\s+)?decision\b", re.MULTILINE)
#: The version of the input document (policies/README.md); policies can check ``input.schema``.
INPUT_SCHEMA = 1

Result = Literal["allow", "deny", "needs_approval"]


@dataclass(frozen=True)
class Decision:
    """What policy says about one request, and why."""

    result: Result
    deny: tuple[str, ...] = ()
    """Reasons to deny (any one is enough)."""
    approval: tuple[str, ...] = ()
    """Reasons a human must approve first."""
    notes: tuple[str, ...] = ()
    """Shown with the decision; decide nothing."""
    error: str | None = None
    """Set when the decision is a deny because the policy failed (fail closed)."""
    elapsed_ms: float = 0.0

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons for the result: the denials, or what needs approval, or the notes."""
        if self.result == "deny":
            return self.deny or ((self.error,) if self.error else ())
        if self.result == "needs_approval":
            return self.approval
        return self.notes

    def as_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "deny": list(self.deny),
            "approval": list(self.approval),
            "notes": list(self.notes),
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def failed(error: str) -> Decision:
    """The decision of a policy that could not decide: deny, with the error."""
    return Decision("deny", deny=(f"policy error: {error}",), error=error)


def home_namespace(config: Config) -> str:
    """Rootward's own namespace, where the shipped scope policy never acts: ``actions.lease.namespace``."""
    return config.actions.lease.namespace


def settings_data(rules: PolicyRules, home_namespace: str | None = None) -> dict[str, Any]:
    """``rules`` as ``data.rootward.settings``: times as unix seconds (with the end also in RFC 3339), and
    ``home_namespace``, Rootward's own ("" when none)."""
    data = rules.model_dump(mode="json", exclude={"freeze_windows"})
    data["home_namespace"] = home_namespace or ""
    data["freeze_windows"] = [
        {
            "start": w.start.timestamp(),
            "end": w.end.timestamp(),
            "end_rfc3339": w.end.isoformat().replace("+00:00", "Z"),
            "reason": w.reason,
        }
        for w in rules.freeze_windows
    ]
    return data


@dataclass(frozen=True)
class Module:
    """One Rego source file."""

    name: str
    source: str

    @property
    def is_test(self) -> bool:
        return self.name.endswith("_test.rego")


def default_bundle() -> list[Module]:
    """The shipped bundle's files (package data), tests included, in name order."""
    root = resources.files("rootward.policies").joinpath("bundle")
    return [
        Module(f"bundle/{item.name}", item.read_text(encoding="utf-8"))
        for item in sorted(root.iterdir(), key=lambda i: i.name)
        if item.name.endswith(".rego")
    ]


def read_modules(directory: Path) -> list[Module]:
    """The ``.rego`` files under ``directory`` (recursively, hidden folders aside), in path order.

    Raises:
        PolicyLoadError: the directory or a file cannot be read.
    """
    if not directory.is_dir():
        raise PolicyLoadError(f"{directory}: not a directory of .rego files")
    modules = []
    for path in sorted(directory.rglob("*.rego")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts[:-1]):
            continue  # a ConfigMap volume's ..data and ..<timestamp> folders: the same files again
        try:
            modules.append(Module(str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyLoadError(f"{path}: cannot read: {e}") from e
    return modules


def load_modules(bundle_dirs: Sequence[Path], default: bool = True, tests: bool = False) -> list[Module]:
    """The shipped bundle (if ``default``), then each directory's files; test files only if ``tests``."""
    modules = default_bundle() if default else []
    for directory in bundle_dirs:
        modules.extend(read_modules(directory))
    return [m for m in modules if tests or not m.is_test]


def interpreter(modules: Iterable[Module], settings: Mapping[str, Any]) -> regopy.Interpreter:
    """A regopy interpreter holding ``modules`` and ``settings`` as ``data.rootward.settings``.

    Raises:
        PolicyLoadError: a module does not parse (the message names the file and the line).
    """
    rego = regopy.Interpreter()
    rego.add_data({"rootward": {"settings": dict(settings)}})
    for module in modules:
        try:
            rego.add_module(module.name, module.source)
        except regopy.RegoError as e:
            raise PolicyLoadError(f"{module.name}: {_first_line(str(e))}") from e
    return rego


def _digest(modules: Iterable[Module], settings: Mapping[str, Any]) -> str:
    """Which bundle: the same files (by name and text, in any order) and settings give the same digest."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for module in sorted(modules, key=lambda m: m.name):
        h.update(f"\0{module.name.rsplit('/', 1)[-1]}\0{module.source}".encode())  # where it is mounted aside
    return h.hexdigest()[:16]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:4])[:500] if lines else "error"


class _Worker:
    """One daemon thread that runs evaluations: a stuck one is left behind without holding up the process's exit
    (a ThreadPoolExecutor's threads are joined at exit)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="rootward-policy", daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((future, fn))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as e:  # noqa: BLE001 (handed to the caller, which denies)
                    future.set_exception(e)

    def shutdown(self) -> None:
        self._queue.put(None)


@dataclass
class _Compiled:
    bundle: regopy.Bundle
    runner: regopy.Interpreter
    worker: _Worker = field(default_factory=_Worker)


class PolicyEngine:
    """Rego policies compiled once; :meth:`decide` is thread-safe (one decision at a time)."""

    def __init__(
        self,
        bundle_dirs: Sequence[Path] = (),
        rules: PolicyRules | None = None,
        default: bool = True,
        timeout_s: float = 1.0,
        home_namespace: str | None = None,
    ) -> None:
        """``home_namespace``: Rootward's own, where the shipped scope policy never acts (its own pods and workload
        live there: a restart of itself would end its verification under way)."""
        self.bundle_dirs = tuple(bundle_dirs)
        self.settings = settings_data(rules or PolicyRules(), home_namespace)
        self.timeout_s = timeout_s
        self.error: str | None = None
        """Why the policies could not be loaded (every decision is then a deny), else None."""
        self.modules: list[str] = []
        self.digest = ""
        """sha256 (16 hex digits) of the modules' names and sources and the settings: which bundle this is."""
        self._lock = threading.Lock()
        self._compiled: _Compiled | None = None
        try:
            modules = load_modules(self.bundle_dirs, default)
            self.modules = [m.name for m in modules]
            self.digest = _digest(modules, self.settings)
            self._compiled = self._compile(modules)
        except PolicyLoadError as e:
            self.error = str(e)
            logger.error("policies not loaded, every action will be denied: %s", e)

    @classmethod
    def from_config(cls, config: Config) -> PolicyEngine:
        """The engine a Rootward with ``config`` runs, its own namespace ``actions.lease.namespace`` (`rootward config
        check` and `rootward policy eval` build the same, so the digests agree with /readyz)."""
        p = config.policies
        return cls(p.bundle_dirs, p.rules, p.default_bundle, p.eval_timeout_s, home_namespace(config))

    def _compile(self, modules: list[Module]) -> _Compiled:
        if not any(_DECISION.search(m.source) for m in modules if _IN_POLICY.search(m.source)):
            # it would compile, and every decision would be "undefined": a deny for every action, found only then
            raise PolicyLoadError(
                "no policy file defines data.rootward.policy.decision (the shipped bundle does: keep "
                "policies.default_bundle, or a copy of its decision.rego in your bundle_dirs)"
            )
        rego = interpreter(modules, self.settings)
        try:
            bundle = rego.build(None, [ENTRYPOINT])
        except regopy.RegoError as e:
            raise PolicyLoadError(f"the policies do not compile: {_first_line(str(e))}") from e
        if not bundle.ok():
            raise PolicyLoadError(f"the policies do not compile: {_first_line(str(bundle.node()))}")
        return _Compiled(bundle, regopy.Interpreter())

    @property
    def ok(self) -> bool:
        return self.error is None

    def decide(self, document: Mapping[str, Any]) -> Decision:
        """The decision on the input ``document`` (policies/README.md). Never raises: a failure is a deny."""
        started = time.perf_counter()
        if self._compiled is None:
            return failed(self.error or "no policies")
        with self._lock:
            compiled = self._compiled
            future = compiled.worker.submit(lambda: _evaluate(compiled, document))
            try:
                raw = future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                # The evaluation cannot be interrupted: leave its thread and interpreter behind, start afresh.
                compiled.worker.shutdown()
                self._compiled = _Compiled(compiled.bundle, regopy.Interpreter())
                logger.error("a policy decision took over %.3f s: denied", self.timeout_s)
                return failed(f"the decision took over {self.timeout_s:g} s")
            except Exception as e:
                logger.exception("policy evaluation failed")
                return failed(f"evaluation failed: {e}")
        decision = _parse(raw)
        return Decision(
            decision.result,
            decision.deny,
            decision.approval,
            decision.notes,
            decision.error,
            (time.perf_counter() - started) * 1000,
        )

    def close(self) -> None:
        """Stop the worker thread (safe to call twice)."""
        if self._compiled is not None:
            self._compiled.worker.shutdown()


def _evaluate(compiled: _Compiled, document: Mapping[str, Any]) -> str | None:
    """The decision's JSON text, or None when the policy produced an error (the error text)."""
    compiled.runner.set_input(regopy.Input(dict(document)))
    output = compiled.runner.query_bundle_entrypoint(compiled.bundle, ENTRYPOINT)
    text = str(output)
    if not output.ok():
        raise RuntimeError(_first_line(text))
    return text


def _parse(raw: str | None) -> Decision:
    if raw is None or raw == "undefined":
        return failed("data.rootward.policy.decision is undefined")
    try:
        value = json.loads(raw)["expressions"][0]
        result = value["result"]
        if result not in ("allow", "deny", "needs_approval"):
            return failed(f"decision.result is {result!r}, not allow, deny or needs_approval")
        deny, approval, notes = (
            tuple(sorted(str(r) for r in value.get(k) or ())) for k in ("deny", "approval", "notes")
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return failed(f"the decision is not {{result, deny, approval, notes}}: {raw[:200]}")
    if result != "deny" and deny:
        return failed("the decision has denials but its result is not deny")
    return Decision(result, deny, approval, notes)
