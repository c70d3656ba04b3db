"""Ed25519 signatures on audit records, beside (or instead of) the HMAC.

The HMAC (``policies.audit.hmac_key``) shows that whoever wrote a record held the key, but checking it needs the
same key, so every verifier could also forge. A signature is checked with the public key alone: keep the private
key with Rootward (``policies.audit.signing_key_file``, or the PEM text in ``ROOTWARD_POLICIES__AUDIT__SIGNING_KEY``
from a Secret) and hand the public key (``rootward audit public-key``) to auditors, who run
``rootward audit verify --public-key FILE``. Each record's ``sig`` is Ed25519 over the ASCII of its ``hash``, in
hex: the hash covers the record's content and the previous hash, so one signature vouches for the record and its
place in the chain.

Keys are PEM: a private key in PKCS#8 (``openssl genpkey -algorithm ed25519``), unencrypted (a Secret protects it
at rest); a public key in SubjectPublicKeyInfo. A verifier also accepts the private key and derives the public one.
Errors are :class:`~rootward.policies.errors.AuditError` naming the key's source.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rootward.config import Audit
from rootward.policies.errors import AuditError


class Verifier:
    """Checks records' signatures with an Ed25519 public key."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key

    @classmethod
    def from_pem(cls, data: bytes, source: str = "the key") -> Verifier:
        """The verifier of a PEM public key, or of a PEM private key's public half.

        Raises:
            AuditError: not a PEM Ed25519 key.
        """
        try:
            if b"PRIVATE KEY" in data:
                return Signer.from_pem(data, source).verifier()
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise AuditError(f"{source}: not a PEM public key: {e}") from e
        if not isinstance(key, Ed25519PublicKey):
            raise AuditError(f"{source}: not an Ed25519 key ({type(key).__name__})")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | Path) -> Verifier:
        """Raises AuditError: the file cannot be read or holds no Ed25519 key."""
        return cls.from_pem(_read(path), str(path))

    def verify(self, digest: str, signature: str | None) -> bool:
        """Whether ``signature`` (hex) is this key's signature of ``digest``."""
        if not signature:
            return False
        try:
            self._key.verify(bytes.fromhex(signature), digest.encode())
        except (InvalidSignature, ValueError):
            return False
        return True

    def public_pem(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Signer:
    """Signs records' hashes with an Ed25519 private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def from_pem(cls, data: bytes, source: str = "the key") -> Signer:
        """Raises AuditError: not an unencrypted PEM Ed25519 private key."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise AuditError(f"{source}: not an unencrypted PEM private key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError(f"{source}: not an Ed25519 key ({type(key).__name__})")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | Path) -> Signer:
        """Raises AuditError: the file cannot be read or holds no Ed25519 private key."""
        return cls.from_pem(_read(path), str(path))

    @classmethod
    def from_config(cls, audit: Audit) -> Signer | None:
        """The signer ``policies.audit`` configures (``signing_key_file`` or ``signing_key``), or None.

        Raises:
            AuditError: the key cannot be read or is not an Ed25519 private key.
        """
        if audit.signing_key is not None:
            return cls.from_pem(audit.signing_key.get_secret_value().encode(), "policies.audit.signing_key")
        if audit.signing_key_file is not None:
            return cls.from_file(audit.signing_key_file)
        return None

    def sign(self, digest: str) -> str:
        """The signature of ``digest`` (a record's hash), in hex."""
        return self._key.sign(digest.encode()).hex()

    def verifier(self) -> Verifier:
        return Verifier(self._key.public_key())


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AuditError(f"{path}: cannot read the key: {e}") from e
