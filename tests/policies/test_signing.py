"""Ed25519-signed audit records: a good chain verifies with the public key alone; a record rewritten (even with every
hash after it recomputed) or a wrong key is caught at the first bad record; the commands derive or take the key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rootward.cli import main
from rootward.clock import ManualClock
from rootward.config import load_config
from rootward.errors import ConfigError
from rootward.policies.audit import _MIGRATIONS, AuditLog, canonical, record_hash
from rootward.policies.errors import AuditError
from rootward.policies.signing import Signer, Verifier
from rootward.storage import open_database


def _private_pem(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return _private_pem(tmp_path / "audit-signing.pem")


@pytest.fixture
def public_file(tmp_path: Path, key_file: Path) -> Path:
    path = tmp_path / "audit-signing.pub"
    path.write_bytes(Signer.from_file(key_file).verifier().public_pem())
    return path


def _signed_log(path: Path, key_file: Path, n: int = 5) -> None:
    with AuditLog(path, ManualClock(), signer=Signer.from_file(key_file)) as log:
        for i in range(n):
            log.append("decision", {"result": "allow", "i": i}, f"req-{i}", "Deployment/shop/cart")


def _rewrite_from(path: Path, seq: int) -> None:
    """What someone with the file but not the key can do: change record ``seq`` and recompute every hash after it,
    so that the chain itself is consistent again; the signatures are the old ones."""
    with AuditLog(path) as log:
        records = list(log.records())
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_no_update")
    prev = records[seq - 2].hash if seq > 1 else records[0].prev
    for r in records[seq - 1 :]:
        data = {**r.data, "result": "deny"} if r.seq == seq else r.data
        digest = record_hash({**r.body(), "data": data, "prev": prev})
        conn.execute(
            "UPDATE audit SET data = ?, prev = ?, hash = ? WHERE seq = ?", (canonical(data), prev, digest, r.seq)
        )
        prev = digest
    conn.commit()
    conn.close()


def test_a_signed_chain_verifies_with_the_public_key_alone(tmp_path: Path, key_file: Path, public_file: Path) -> None:
    path = tmp_path / "audit.db"
    _signed_log(path, key_file)
    with AuditLog(path) as log:
        records = list(log.records())
        result = log.verify(public_key=Verifier.from_file(public_file))
    assert result.ok, result.problem
    assert result.records == 5
    assert all(r.sig is not None and len(r.sig) == 128 for r in records)
    assert records[0].as_json()["sig"] == records[0].sig


def test_a_record_rewritten_with_a_consistent_chain_is_named_by_its_signature(
    tmp_path: Path, key_file: Path, public_file: Path
) -> None:
    path = tmp_path / "audit.db"
    _signed_log(path, key_file)
    _rewrite_from(path, 3)
    with AuditLog(path) as log:
        assert log.verify().ok  # the hashes alone cannot tell
        result = log.verify(public_key=Verifier.from_file(public_file))
    assert not result.ok
    assert result.broken_seq == 3
    assert result.records == 2
    assert result.problem == "record 3: its signature does not match (wrong public key, or rewritten without it)"


def test_a_wrong_public_key_fails_at_the_first_record(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "audit.db"
    _signed_log(path, key_file)
    other = Verifier.from_file(_private_pem(tmp_path / "other.pem"))
    with AuditLog(path) as log:
        result = log.verify(public_key=other)
    assert not result.ok
    assert result.broken_seq == 1
    assert result.problem is not None
    assert "signature does not match" in result.problem


def test_with_a_public_key_every_record_must_be_signed(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, ManualClock()) as log:
        log.append("decision", {"unsigned": True})
    _signed_log(path, key_file, 2)
    with AuditLog(path) as log:
        result = log.verify(public_key=Signer.from_file(key_file).verifier())
    assert result.broken_seq == 1
    assert result.problem == "record 1: it is not signed (written before signing was on, or stripped)"


def test_a_log_from_before_signatures_gains_the_column_and_keeps_verifying(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "audit.db"
    open_database(path, "audit", _MIGRATIONS[:1]).close()  # the schema of the first release
    with AuditLog(path, ManualClock()) as log:
        log.append("decision", {"i": 0})
    with AuditLog(path, ManualClock(), signer=Signer.from_file(key_file)) as log:
        log.append("decision", {"i": 1})
        assert log.verify().ok
        assert [r.sig is None for r in log.records()] == [True, False]


def test_audit_verify_checks_signatures_with_a_given_or_derived_public_key(
    tmp_path: Path, key_file: Path, public_file: Path
) -> None:
    path = tmp_path / "audit.db"
    _signed_log(path, key_file, 3)
    runner = CliRunner()
    given = runner.invoke(main, ["audit", "verify", str(path), "--public-key", str(public_file)], env={})
    assert given.exit_code == 0, given.output
    assert "ok, 3 records, signatures checked" in given.output
    derived_env = {"ROOTWARD_POLICIES__AUDIT__SIGNING_KEY_FILE": str(key_file)}
    derived = runner.invoke(main, ["audit", "verify", str(path)], env=derived_env)
    assert derived.exit_code == 0, derived.output
    assert "signatures checked" in derived.output
    shown = runner.invoke(main, ["audit", "public-key"], env=derived_env)
    assert shown.exit_code == 0, shown.output
    assert shown.output.encode() == public_file.read_bytes()
    _rewrite_from(path, 2)
    broken = runner.invoke(main, ["audit", "verify", str(path), "--public-key", str(public_file)], env={})
    assert broken.exit_code == 1
    assert "BROKEN at record 2: record 2: its signature does not match" in broken.output
    wrong = runner.invoke(
        main, ["audit", "verify", str(path), "--public-key", str(_private_pem(tmp_path / "x.pem"))], env={}
    )
    assert wrong.exit_code == 1
    assert "BROKEN at record 1" in wrong.output


def test_the_signing_key_can_come_from_the_environment_as_pem_text(key_file: Path) -> None:
    config = load_config(environ={"ROOTWARD_POLICIES__AUDIT__SIGNING_KEY": key_file.read_text()})
    signer = Signer.from_config(config.policies.audit)
    assert signer is not None
    assert signer.verifier().verify("ab" * 32, signer.sign("ab" * 32))


def test_a_key_that_is_not_ed25519_pem_is_refused_naming_its_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(AuditError, match=r"bad\.pem: not an unencrypted PEM private key"):
        Signer.from_file(bad)
    with pytest.raises(AuditError, match="cannot read the key"):
        Verifier.from_file(tmp_path / "missing.pem")


def test_a_signing_key_file_and_text_together_are_refused(key_file: Path) -> None:
    env = {
        "ROOTWARD_POLICIES__AUDIT__SIGNING_KEY": key_file.read_text(),
        "ROOTWARD_POLICIES__AUDIT__SIGNING_KEY_FILE": str(key_file),
    }
    with pytest.raises(ConfigError, match="not both"):
        load_config(environ=env)
