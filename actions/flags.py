"""Feature-flag toggles (``toggle_flag``): written to flagd's flag file, read back through OpenFeature.

flagd serves flags read-only: neither its evaluation API nor OpenFeature can change one. What changes a flag is its
definition file, which flagd in file mode (``--uri file:...``) and the flagd provider's file / in-process resolver
watch and reload. So a toggle has two halves, each the real thing an operator's applications use:

- :class:`FlagFile`, the writer: an atomic rewrite of the flag file (a temporary file beside it, fsynced, then
  ``os.replace`` and an fsync of the directory, so a reader sees the old file or the new one, never half of one)
  changing one flag's ``defaultVariant`` and/or ``state``. It is a test-and-set: the flag's setting must still be
  the one the action captured, or nothing is written (:class:`~rootward.actions.errors.FlagError`), like the
  ``test`` operations guarding the Kubernetes actions' patches. Each write stamps the flag's metadata with
  ``rootward.change`` (a fresh token), so that verification knows when a reader has loaded this write.
- :class:`FlagReader`, the reader: an OpenFeature client bound (in a domain of its own) to a flagd provider with
  the file resolver on the same file. The dry run shows what it resolves now; verification polls it until it has
  loaded the write (the stamp) and then checks that it serves the new setting: a targeting rule that still picks
  another variant, or a file flagd cannot parse, fails verification and the executor puts the prior setting back.

Verification resolves with an empty evaluation context: it checks what evaluations that no targeting rule matches
get, which is what ``defaultVariant`` decides. Only JSON flag files are written (flagd also reads YAML); the file is
written back as 2-space-indented JSON with its keys in their order, and a lock file ``.<name>.lock`` is kept beside
it, so its directory must be writable (a volume shared with flagd, not a ConfigMap mount).

This is the only module that imports ``openfeature`` (an import-linter contract keeps it so).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.exception import OpenFeatureError
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.provider.no_op_provider import NoOpProvider

from rootward.actions.errors import FlagError, InvalidRequest
from rootward.actions.kube import Json
from rootward.actions.operations import BlastRadius, Health, Operation
from rootward.actions.requests import ToggleFlag

#: The flag metadata key each write stamps with a fresh token.
CHANGE_KEY = "rootward.change"


@dataclass(frozen=True)
class FlagDefinition:
    """One flag as the file defines it."""

    key: str
    state: str
    default_variant: str | None
    variants: dict[str, Any]
    targeting: bool
    change: str | None

    def setting(self) -> dict[str, Any]:
        """What a toggle changes (and a rollback restores): ``{"state", "defaultVariant"}``."""
        return {"state": self.state, "defaultVariant": self.default_variant}

    def sample(self, variant: str | None) -> Any:
        """A value of the flag's type (which OpenFeature getter to use): ``variant``'s, else any variant's."""
        if variant in self.variants:
            return self.variants[variant]
        return next(iter(self.variants.values()), False)


@dataclass(frozen=True)
class Resolution:
    """What an OpenFeature client gets for a flag (empty evaluation context)."""

    value: Any
    variant: str | None
    reason: str
    error: str | None
    change: str | None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "variant": self.variant, "reason": self.reason, "error": self.error}

    def describe(self) -> str:
        if self.error:
            return f"error {self.error}"
        if self.reason == "DISABLED":
            return "disabled (the caller's default)"
        return f"variant {self.variant} ({self.reason})"


class FlagFile:
    """The flag file's writer. Thread-safe; writers in other processes are kept out by a lock file beside it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as e:
            raise FlagError(f"{self.path}: cannot read the flag file: {e}") from e
        except ValueError as e:
            raise FlagError(f"{self.path}: the flag file is not JSON: {e}") from e
        if not isinstance(document, dict) or not isinstance(document.get("flags"), dict):
            raise FlagError(f"{self.path}: not a flagd flag file (no 'flags' object)")
        return document

    def definition(self, key: str) -> FlagDefinition:
        """The flag ``key`` as the file defines it now.

        Raises:
            FlagError: the file cannot be read or parsed, or has no such flag.
        """
        return _definition(self._document(), key, self.path)

    def write(self, key: str, expect: dict[str, Any], setting: dict[str, Any], change: str | None = None) -> str:
        """Set flag ``key``'s ``state`` and ``defaultVariant`` to ``setting`` if they are ``expect`` (or already
        ``setting``: a retry), stamping the flag with ``change`` (default a fresh token); return the stamp.

        Raises:
            FlagError: the flag's setting is neither, or the file cannot be read or replaced (it is then unchanged).
        """
        with self._lock, self._file_lock():
            document = self._document()
            current = _definition(document, key, self.path).setting()
            if current not in (expect, setting):
                raise FlagError(f"flag {key} is {_show(current)} now, not {_show(expect)}: someone else changed it")
            flag = document["flags"][key]
            flag["state"] = setting["state"]
            flag["defaultVariant"] = setting["defaultVariant"]
            change = change or new_change()
            flag["metadata"] = {**(flag.get("metadata") or {}), CHANGE_KEY: change}
            self._replace(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return change

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise FlagError(f"{lock}: cannot lock the flag file: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _replace(self, text: str) -> None:
        """Atomically replace the file with ``text``: readers see the old or the new file, never a mix."""
        try:
            before = self.path.stat()
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as e:
            raise FlagError(f"{self.path}: cannot write beside the flag file: {e}") from e
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, before.st_mode & 0o7777)
            # Watchers reload when the modification time grows: make sure it does, even within the clock's tick.
            mtime = max(os.stat(tmp).st_mtime_ns, before.st_mtime_ns + 1_000_000)
            os.utime(tmp, ns=(mtime, mtime))
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise FlagError(f"{self.path}: cannot replace the flag file: {e}") from e
        with contextlib.suppress(OSError):  # the rename is done; the directory's fsync only makes it durable sooner
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def new_change() -> str:
    """A fresh change stamp."""
    return secrets.token_hex(8)


def _definition(document: dict[str, Any], key: str, path: Path) -> FlagDefinition:
    flag = document["flags"].get(key)
    if not isinstance(flag, dict):
        raise FlagError(f"{path}: no flag {key!r} (it has {', '.join(sorted(document['flags'])) or 'none'})")
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise FlagError(f"{path}: flag {key!r} has no variants")
    metadata = flag.get("metadata") or {}
    return FlagDefinition(
        key=key,
        state=str(flag.get("state", "ENABLED")),
        default_variant=flag.get("defaultVariant"),
        variants=dict(variants),
        targeting=bool(flag.get("targeting")),
        change=metadata.get(CHANGE_KEY) if isinstance(metadata, dict) else None,
    )


def _show(setting: dict[str, Any]) -> str:
    return f"{setting.get('state')}/{setting.get('defaultVariant')}"


class FlagReader:
    """An OpenFeature client on flagd's file resolver, in a domain of its own (so that several readers, and the
    application's own OpenFeature set-up, never share a provider). ``open``/``close`` are safe to repeat."""

    def __init__(self, path: str | Path, poll_interval_ms: int = 200) -> None:
        self.path = Path(path)
        self.poll_interval_ms = poll_interval_ms
        self.domain = f"rootward-flags-{secrets.token_hex(4)}"
        self._provider: FlagdProvider | None = None
        self._client: OpenFeatureClient | None = None

    def open(self) -> FlagReader:
        """Start the provider (it reads the file now and then every ``poll_interval_ms``).

        Raises:
            FlagError: the file cannot be read as flags.
        """
        if self._provider is None:
            provider = FlagdProvider(
                resolver_type=ResolverType.FILE,
                offline_flag_source_path=str(self.path),
                deadline_ms=self.poll_interval_ms,  # the file resolver polls the file at this interval
            )
            try:
                api.set_provider_and_wait(provider, self.domain)
            except (OpenFeatureError, OSError, ValueError) as e:
                provider.shutdown()
                api.set_provider(NoOpProvider(), self.domain)
                raise FlagError(f"{self.path}: the flagd provider cannot read the flag file: {e}") from e
            self._provider = provider
            self._client = api.get_client(self.domain)
        return self

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            api.set_provider(NoOpProvider(), self.domain)
            self._provider = self._client = None

    def resolve(self, key: str, like: Any) -> Resolution:
        """Flag ``key`` through OpenFeature with the getter of ``like``'s type.

        Raises:
            FlagError: the reader is not open.
        """
        client = self._client
        if client is None:
            raise FlagError("the flag reader is not open")
        details: FlagEvaluationDetails[Any]
        if isinstance(like, bool):
            details = client.get_boolean_details(key, False)
        elif isinstance(like, int):
            details = client.get_integer_details(key, 0)
        elif isinstance(like, float):
            details = client.get_float_details(key, 0.0)
        elif isinstance(like, str):
            details = client.get_string_details(key, "")
        else:
            details = client.get_object_details(key, {})
        change = details.flag_metadata.get(CHANGE_KEY)
        return Resolution(
            value=details.value,
            variant=details.variant,
            reason=str(getattr(details.reason, "value", details.reason)),
            error=str(getattr(details.error_code, "value", details.error_code)) if details.error_code else None,
            change=str(change) if change is not None else None,
        )


class FeatureFlags:
    """The flag file (``actions.flags.source``) and its OpenFeature reader; ``open``/``close`` are safe to repeat."""

    def __init__(self, path: str | Path, poll_interval_ms: int = 200) -> None:
        self.path = Path(path)
        self.file = FlagFile(self.path)
        self.reader = FlagReader(self.path, poll_interval_ms)

    def open(self) -> FeatureFlags:
        """Raises FlagError when the file cannot be read as flags."""
        self.reader.open()
        return self

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> FeatureFlags:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class FlagOperation(Operation):
    """``toggle_flag``: the flag's setting captured, the file rewritten, OpenFeature's answer verified, the captured
    setting written back on a failed verification. Never calls the Kubernetes API."""

    flags: FeatureFlags | None = None
    want: dict[str, Any] = field(default_factory=dict)
    """The setting verification waits for: the toggle's, then the prior one after a rollback."""
    change: str | None = None
    """The stamp of the last write (None: nothing written)."""

    def _flags(self) -> FeatureFlags:
        if self.flags is None:
            raise FlagError("feature flags are off: set actions.flags.source to the flagd flag file")
        return self.flags

    def _request(self) -> ToggleFlag:
        assert isinstance(self.request, ToggleFlag)
        return self.request

    def _definition(self) -> FlagDefinition:
        return self._flags().file.definition(self._request().flag)

    def _target(self, current: FlagDefinition) -> dict[str, Any]:
        r = self._request()
        if r.variant is not None and r.variant not in current.variants:
            raise InvalidRequest(f"flag {r.flag} has no variant {r.variant!r} ({', '.join(sorted(current.variants))})")
        return {"state": r.state or current.state, "defaultVariant": r.variant or current.default_variant}

    def blast_radius(self) -> BlastRadius:
        current = self._definition()
        reach = {
            "key": current.key,
            "from": current.setting(),
            "to": self._target(current),
            "variants": sorted(current.variants),
            "targeting": current.targeting,
        }
        return BlastRadius(flag=reach)

    def capture(self) -> Json:
        self.prior = self._definition().setting()
        return dict(self.prior)

    def apply(self, dry_run: bool) -> Json:
        r, current = self._request(), self._definition()
        to = self._target(current)
        if dry_run:
            now = self._flags().reader.resolve(r.flag, current.sample(current.default_variant))
            return {
                "flag": r.flag,
                "source": str(self._flags().path),
                "from": current.setting(),
                "to": to,
                "resolved_now": now.as_json(),
                "targeting": current.targeting,
                "dry_run": True,
            }
        expect = dict(self.prior) if self.prior else current.setting()
        # Known before the write, so that after a failure changed() can tell whether this write landed.
        self.want, self.change = to, new_change()
        self._flags().file.write(r.flag, expect, to, self.change)
        return {"flag": r.flag, "from": expect, "to": to, "change": self.change, "dry_run": False}

    def health(self) -> Health:
        r, current = self._request(), self._definition()
        want = self.want or current.setting()
        got = self._flags().reader.resolve(r.flag, current.sample(want.get("defaultVariant")))
        if self.change is not None and got.change != self.change:
            return Health(False, False, f"OpenFeature has not loaded the change yet (serves {got.describe()})")
        if want["state"] == "DISABLED":
            served = got.reason == "DISABLED"
            wanted = "disabled"
        else:
            served = got.error is None and got.variant == want["defaultVariant"]
            wanted = f"variant {want['defaultVariant']}"
        if served:
            return Health(True, True, f"OpenFeature serves {r.flag} {wanted}")
        return Health(True, False, f"OpenFeature serves {r.flag} {got.describe()}, not {wanted}")

    @property
    def revertible(self) -> bool:
        return bool(self.prior)

    def revert(self) -> Json:
        r = self._request()
        expect = self.want or self._definition().setting()
        self.change = self._flags().file.write(r.flag, expect, dict(self.prior), new_change())
        self.want = dict(self.prior)
        return {"flag": r.flag, "from": expect, "to": dict(self.prior), "change": self.change}

    def changed(self) -> bool:
        """Whether this operation's write is in the file (its stamp), not merely whether the flag moved: a change
        someone else made after the capture is theirs to keep."""
        return self.change is not None and self._definition().change == self.change
