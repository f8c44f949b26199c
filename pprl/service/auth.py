"""Signed HTTP requests and responses: who is asking, that nothing was changed on the way, and no replays.

Why here and not (only) TLS: a bank's TLS often ends at a proxy, and a
certificate says which host answered, not which party. Every request carries
an Ed25519 signature by the sender's identity key over the method, the route
(from ``/v1/`` on, so a proxy may add or strip a path prefix), the service it
is meant for (its card fingerprint, so a request to one service cannot be
replayed to another), the time, a fresh nonce and the SHA-256 of the body. The
service refuses a signer that is not among its pinned cards, a time outside
:data:`WINDOW_SECONDS` of its clock, and a nonce it has seen (it keeps them for
the window, in its database, so a restart forgets none). Every response is
signed by the service over the status, the request's nonce and the body's
hash, so a client can tell its own answer from a replayed or forged one.

The headers (names are case-insensitive in HTTP): ``PPRL-Signer`` (card
fingerprint), ``PPRL-Time`` (Unix seconds), ``PPRL-Nonce`` (32 hex digits),
``PPRL-Content-SHA256`` and ``PPRL-Signature`` (base64).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Mapping, Sequence

from pprl.documents import Card
from pprl.errors import PPRLError, SignatureError
from pprl.protocol.identity import PartyKey

__all__ = [
    "WINDOW_SECONDS",
    "AuthError",
    "check_request",
    "check_response",
    "route_of",
    "sign_request",
    "sign_response",
]

#: How far a request's time may be from the service's clock (either way), and how long nonces are kept.
WINDOW_SECONDS = 300
SIGNER, TIME, NONCE, BODY, SIGNATURE = ("pprl-signer", "pprl-time", "pprl-nonce", "pprl-content-sha256",
                                        "pprl-signature")
_NONCE = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuthError(PPRLError):
    """A request the service refuses before reading it: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def route_of(path: str) -> str:
    """The part of a URL path that is signed: from ``/v1/`` on (a proxy may add or strip a prefix)."""
    at = path.find("/v1/")
    return path[at:] if at >= 0 else path


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _request_message(method: str, route: str, audience: str, signer: str, at: int, nonce: str, body: str) -> bytes:
    return "\n".join(["pprl-request-v1", method.upper(), route, audience, signer, str(at), nonce, body]).encode()


def _response_message(status: int, nonce: str, signer: str, body: str) -> bytes:
    return "\n".join(["pprl-response-v1", str(status), nonce, signer, body]).encode()


def sign_request(me: PartyKey, method: str, route: str, service: Card, body: bytes = b"", *,
                 at: int | None = None) -> dict[str, str]:
    """The headers that sign a request from ``me`` to ``service``."""
    at = int(time.time()) if at is None else at
    nonce = secrets.token_hex(16)
    digest = _digest(body)
    message = _request_message(method, route_of(route), service.fingerprint, me.card.fingerprint, at, nonce, digest)
    return {SIGNER: me.card.fingerprint, TIME: str(at), NONCE: nonce, BODY: digest,
            SIGNATURE: base64.b64encode(me.identity.sign(message)).decode("ascii")}


def check_request(headers: Mapping[str, str], method: str, path: str, body: bytes, service: Card,
                  cards: Sequence[Card], *, at: float | None = None) -> tuple[Card, str, int]:
    """The pinned card that signed this request, its nonce and time; AuthError (with the status) otherwise.

    The caller must still record the nonce (a second use is a replay).
    """
    signature = headers.get(SIGNATURE)
    if not signature:
        raise AuthError(401, "unauthenticated request: no PPRL-Signature header (sign requests with your "
                             "identity key, e.g. through pprl's client)")
    signer = headers.get(SIGNER, "")
    nonce = headers.get(NONCE, "")
    stamp = headers.get(TIME, "")
    digest = headers.get(BODY, "")
    if not _NONCE.fullmatch(nonce):
        raise AuthError(400, "PPRL-Nonce must be 32 lower-case hex digits")
    if not _HEX64.fullmatch(digest):
        raise AuthError(400, "PPRL-Content-SHA256 must be 64 lower-case hex digits")
    try:
        when = int(stamp)
    except ValueError:
        raise AuthError(400, "PPRL-Time must be Unix seconds") from None
    card = next((c for c in cards if c.fingerprint == signer), None)
    if card is None:
        raise AuthError(403, f"signer {signer[:40]!r} is not among this service's pinned cards")
    clock = time.time() if at is None else at
    if abs(clock - when) > WINDOW_SECONDS:
        raise AuthError(401, f"stale request: its time is {int(clock - when)} s from the service's clock "
                             f"(at most {WINDOW_SECONDS} s allowed; check the client's clock)")
    if _digest(body) != digest:
        raise AuthError(400, "the body does not match PPRL-Content-SHA256 (truncated or changed on the way)")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(401, "PPRL-Signature is not base64") from None
    message = _request_message(method, route_of(path), service.fingerprint, signer, when, nonce, digest)
    try:
        card.public.verify(message, raw)
    except SignatureError:
        raise AuthError(401, f"the request signature of '{card.name}' does not verify") from None
    return card, nonce, when


def sign_response(me: PartyKey, status: int, nonce: str, body: bytes) -> dict[str, str]:
    """The headers that sign a response to the request with ``nonce`` ('' when it had none)."""
    message = _response_message(status, nonce, me.card.fingerprint, _digest(body))
    return {SIGNER: me.card.fingerprint, SIGNATURE: base64.b64encode(me.identity.sign(message)).decode("ascii")}


def check_response(headers: Mapping[str, str], status: int, nonce: str, body: bytes, service: Card) -> None:
    """SignatureError unless the pinned ``service`` signed this response to the request with ``nonce``."""
    if headers.get(SIGNER) != service.fingerprint:
        raise SignatureError(f"the response is not signed by the pinned '{service.name}' "
                             "(a proxy or another server answered?)")
    try:
        raw = base64.b64decode(headers.get(SIGNATURE, ""), validate=True)
        service.public.verify(_response_message(status, nonce, service.fingerprint, _digest(body)), raw)
    except (binascii.Error, ValueError, SignatureError):
        raise SignatureError(f"the response signature of '{service.name}' does not verify "
                             "(changed on the way, or replayed)") from None
