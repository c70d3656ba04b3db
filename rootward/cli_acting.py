"""The acting side's commands: `rootward policy test|eval` (the Rego bundle) and `rootward audit
verify|public-key|export` (the hash-chained audit log). Registered on the main group by rootward/cli.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from rootward.cli_common import config_options, load

if TYPE_CHECKING:
    from rootward.policies.signing import Verifier


@click.group("policy")
def policy_group() -> None:
    """Test and try the action policies (Rego; the shipped bundle plus policies.bundle_dirs)."""


@policy_group.command("test")
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_options
@click.option("--verbose", "-v", is_flag=True, help="Also list the tests that pass.")
def policy_test(dirs: tuple[Path, ...], config_path: Path | None, overrides: tuple[str, ...], verbose: bool) -> None:
    """Run the test_ rules of the Rego files in DIRS (with the shipped bundle loaded beside them, and the
    settings of policies.rules as data.rootward.settings); with no DIRS, the shipped bundle's own tests.
    Exit status 1 when a test fails or a file does not parse; 0 when every file compiles and has no test.

    \b
    Example:
      rootward policy test ./my-policies
    """
    from rootward.policies.engine import home_namespace, read_modules, settings_data
    from rootward.policies.errors import PolicyError
    from rootward.policies.regotest import TestResult, run_tests

    cfg = load(config_path, overrides)

    def show(r: TestResult) -> None:
        if not r.passed:
            click.echo(f"FAIL: {r.name} ({r.file}): {r.error}")
        elif verbose:
            click.echo(f"PASS: {r.name} ({r.ms:.2f} ms)")

    try:
        settings = settings_data(cfg.policies.rules, home_namespace(cfg))  # as the running engine's
        results = run_tests(list(dirs), settings, on_result=show)
    except PolicyError as e:
        raise click.ClickException(str(e)) from e
    failed = sum(not r.passed for r in results)
    if not results:
        files = sum(len(read_modules(d)) for d in dirs)
        where = ", ".join(map(str, dirs)) or "the shipped bundle"
        if dirs and not files:  # a CI step must not go green having tested nothing
            raise click.ClickException(f"no .rego files in {where}")
        click.echo(f"no test_ rules in {where} ({files} files parse; nothing was tested)")
        return
    click.echo(f"policy tests: {len(results) - failed}/{len(results)} pass")
    sys.exit(1 if failed else 0)


@policy_group.command("eval")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The input document (JSON or YAML; its schema is in policies/README.md).",
)
@config_options
def policy_eval(input_path: Path, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the decision on one input document with its reasons, as JSON: allow (exit 0), needs_approval
    (exit 0), deny (exit 1), or a policy error (exit 1; a policy that fails denies).

    \b
    Example:
      rootward policy eval --input request.json --set policies.bundle_dirs=[./my-policies]
    """
    import json

    from rootward.policies.engine import PolicyEngine

    cfg = load(config_path, overrides)
    try:
        document = yaml.safe_load(input_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise click.ClickException(f"{input_path}: cannot read it as JSON or YAML: {e}") from e
    if not isinstance(document, dict):
        raise click.ClickException(f"{input_path}: the input document must be an object")
    engine = PolicyEngine.from_config(cfg)
    try:
        decision = engine.decide(document)
    finally:
        engine.close()
    click.echo(json.dumps(decision.as_json(), indent=2))
    sys.exit(1 if decision.result == "deny" else 0)


@click.group("audit")
def audit_group() -> None:
    """Check and export the hash-chained audit log of actions (policies.audit)."""


def _audit_source(db: Path | None, config_path: Path | None, overrides: tuple[str, ...]) -> tuple[Path, bytes | None]:
    """The audit log's file (DB, else the configured one) and the HMAC key, if one is configured."""
    cfg = load(config_path, overrides)
    path = db or cfg.audit_path
    if not path.exists():
        raise click.ClickException(f"{path}: no such audit log")
    key = cfg.policies.audit.hmac_key
    return path, key.get_secret_value().encode() if key else None


def _verifier(public_key: Path | None, config_path: Path | None, overrides: tuple[str, ...]) -> Verifier | None:
    """The signature checker: of --public-key, else of the configured signing key, else None."""
    from rootward.policies.errors import AuditError
    from rootward.policies.signing import Signer, Verifier

    try:
        if public_key is not None:
            return Verifier.from_file(public_key)
        signer = Signer.from_config(load(config_path, overrides).policies.audit)
    except AuditError as e:
        raise click.ClickException(str(e)) from e
    return signer.verifier() if signer else None


@audit_group.command("verify")
@click.argument("db", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ed25519 public key (PEM) to check every record's signature with. [default: derived from "
    "policies.audit.signing_key_file / signing_key when set]",
)
@click.option(
    "--from",
    "shipped",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Check the records a log backend kept instead of the DB: JSON lines of OTLP logs requests (the "
    "Collector's file exporter; policies.audit.ship sends them) or of `rootward audit export`.",
)
@click.option(
    "--partial",
    is_flag=True,
    help="With --from: a log whose first records are not in the file (a backend's retention cut them) is checked "
    "from the first one kept instead of failing.",
)
@config_options
def audit_verify(
    db: Path | None,
    public_key: Path | None,
    shipped: Path | None,
    partial: bool,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Check the hash chain of the audit log DB (default <storage.data_dir>/audit.db) and, with
    policies.audit.hmac_key set (ROOTWARD_POLICIES__AUDIT__HMAC_KEY), every record's MAC; with a public key, every
    record's Ed25519 signature. Prints the count and the head hash (keep it elsewhere to detect records cut off the
    end); exit 1 naming the first broken record.

    \b
    Examples:
      rootward audit verify
      rootward audit verify --public-key audit.pub
      rootward audit verify --from collector-logs.jsonl   # each shipped log (chain) checked on its own
    """
    from rootward.policies.audit import AuditLog
    from rootward.policies.errors import AuditError

    if shipped is not None:
        if db is not None:
            raise click.UsageError("give DB or --from, not both")
        _verify_shipped(shipped, public_key, partial, config_path, overrides)
        return
    path, key = _audit_source(db, config_path, overrides)
    verifier = _verifier(public_key, config_path, overrides)
    log = AuditLog(path)
    try:
        with log:
            result = log.verify(key, verifier)
    except AuditError as e:
        raise click.ClickException(str(e)) from e
    checked = _checked(key, verifier)
    if result.ok:
        click.echo(f"{log.path}: ok, {result.records} records{checked}, head {result.head}")
        return
    click.echo(f"{log.path}: BROKEN at record {result.broken_seq}: {result.problem}")
    click.echo(f"  {result.records} records before it are intact (head {result.head})")
    sys.exit(1)


def _checked(key: bytes | None, verifier: Verifier | None) -> str:
    """What a verification checked beyond the chain, as its report says."""
    return (", MACs checked" if key else "") + (", signatures checked" if verifier else "")


def _verify_shipped(
    path: Path, public_key: Path | None, partial: bool, config_path: Path | None, overrides: tuple[str, ...]
) -> None:
    """``audit verify --from``: each chain in ``path`` checked on its own; exit 1 when any is broken. Without a
    MAC key or a public key, a chain proves only that it is whole and unedited as it stands, not who wrote it."""
    from rootward.audit_ship import read_shipped

    key = load(config_path, overrides).policies.audit.hmac_key
    secret = key.get_secret_value().encode() if key else None
    verifier = _verifier(public_key, config_path, overrides)
    try:
        with path.open(encoding="utf-8") as lines:
            chains = read_shipped(lines)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise click.ClickException(f"{path}: {e}") from e
    if not chains:
        raise click.ClickException(f"{path}: no audit records in it")
    checked = _checked(secret, verifier)
    broken = False
    for chain in chains:
        result = chain.verify(secret, verifier, partial)
        first, last = min(chain.copies), max(chain.copies)
        name = "exported records" if chain.chain is None else f"log {chain.chain[:16]}"
        name += f" ({chain.instance})" if chain.instance else ""
        cut = f"; records before {first} are not in the file" if first > 1 else ""
        if result.ok:
            click.echo(f"{name}: ok, records {first}-{last}{checked}, head {result.head}{cut}")
            continue
        broken = True
        click.echo(f"{name}: BROKEN at record {result.broken_seq}: {result.problem}")
        click.echo(f"  {result.records} records from {first} are intact (head {result.head}){cut}")
    if broken:
        sys.exit(1)


@audit_group.command("public-key")
@config_options
def audit_public_key(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the public key (PEM) of the configured audit signing key, for `rootward audit verify --public-key`."""
    verifier = _verifier(None, config_path, overrides)
    if verifier is None:
        raise click.ClickException("no signing key: set policies.audit.signing_key_file (or signing_key)")
    click.echo(verifier.public_pem().decode(), nl=False)


@audit_group.command("export")
@click.argument("db", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="JSONL file (default stdout).")
@config_options
def audit_export(db: Path | None, output: Path | None, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Write every record of the audit log DB as one JSON object a line (with its hash, MAC and time)."""
    from rootward.policies.audit import AuditLog
    from rootward.policies.errors import AuditError

    log = AuditLog(_audit_source(db, config_path, overrides)[0])
    try:
        with log:
            if output is None:
                try:
                    log.export(sys.stdout)
                    sys.stdout.flush()
                except BrokenPipeError:  # `| head` stopped reading: what it wanted was written
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
                return
            with output.open("w", encoding="utf-8") as out:
                count = log.export(out)
    except (AuditError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{count} records written to {output}", err=True)
