"""One exception family for everything a user or a peer can get wrong.

Callers catch ``PPRLError`` once; the CLI turns it into a one-line message and
a non-zero exit code. Each subclass names a failure a caller can act on.
Messages never contain a raw identifier or a plaintext score.
"""

from __future__ import annotations

from collections.abc import Callable

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
    "OptionError",
    "RegistryError",
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


class OptionError(PolicyError):
    """A step's option is out of range or contradicts another, said in parameter terms.

    The message is a template whose ``{name}`` fields are parameter names:
    ``str(exc)`` reads "noise 'gaussian' needs delta in (0, 1)"; a front end
    renders them its own way (the CLI: ``--delta``) with :meth:`render`.
    """

    def __init__(self, template: str, *names: str) -> None:
        self.template = template
        self.names = names
        super().__init__(self.render(lambda name: name))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each parameter named by ``name_of``."""
        return self.template.format(**{n: name_of(n) for n in self.names})


class RegistryError(PPRLError):
    """The registry cannot be opened, is of another format, or refused a change."""
