"""One exception family for everything a user or a peer can get wrong.

Callers catch ``PPRLError`` once; the CLI turns it into a one-line message and
a non-zero exit code. Each subclass names a failure a caller can act on.
Messages never contain a raw identifier or a plaintext score.
"""

from __future__ import annotations

__all__ = [
    "PPRLError",
    "SchemaError",
    "DataValidationError",
    "DocumentError",
    "KeyFormatError",
    "KeyMismatchError",
    "DecryptionError",
    "SignatureError",
    "UnsupportedVersionError",
    "PolicyError",
]


class PPRLError(Exception):
    """Base of every error pprl raises on purpose."""


class SchemaError(PPRLError):
    """A linkage schema is malformed or asks for something unsupported."""


class DataValidationError(PPRLError):
    """Input data (a CSV, a value) breaks what the schema or command expects."""


class DocumentError(PPRLError):
    """A pprl document is unreadable, of the wrong kind, or inconsistent."""


class KeyFormatError(DocumentError):
    """A key file cannot be parsed as the key it claims to be."""


class KeyMismatchError(PPRLError):
    """Two things that must share a key (or schema) do not."""


class DecryptionError(PPRLError):
    """A ciphertext could not be opened. Deliberately says nothing about why."""


class SignatureError(PPRLError):
    """A signature does not verify, or the signer is not a known party."""


class UnsupportedVersionError(DocumentError):
    """A document's version is one this release cannot read."""


class PolicyError(PPRLError):
    """A release policy (e.g. minimum contributors) forbids the request."""
