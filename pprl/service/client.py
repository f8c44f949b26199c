"""The client side: a party talking to another party's service, every request signed, every answer checked.

:class:`Client` first asks the service who it is (``/v1/health``) and goes on
only if the card it names is among the caller's pinned cards, with the
expected role; every later response must carry that card's signature over
the status, the request's nonce and the body (:mod:`pprl.service.auth`).

Network settings, for bank networks: ``PPRL_PROXY`` (or the usual
``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``) for an HTTP proxy;
``PPRL_TLS_CA`` for the deployment's CA certificate (https URLs are then
checked against it instead of the system's CAs); ``PPRL_TLS_CERT`` and
``PPRL_TLS_KEY`` for a client certificate (mutual TLS). Broken connections
are retried with a fresh signature, for up to ``PPRL_RETRY_SECONDS`` (60 s);
uploads resume where they stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from pprl.documents import Card, parse_json
from pprl.errors import PPRLError, SignatureError
from pprl.protocol.identity import PartyKey
from pprl.service.auth import NONCE, check_response, sign_request
from pprl.service.state import MAX_BODY

__all__ = ["Client", "ServiceError", "http_settings"]

#: Room left under MAX_BODY for the JSON around a document sent in one request.
_MARGIN = 4096


class ServiceError(PPRLError):
    """The service refused a request (``status`` is the HTTP status; the message is the service's one line)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def http_settings() -> dict[str, Any]:
    """httpx settings from the environment (proxy, CA certificate, client certificate)."""
    out: dict[str, Any] = {"trust_env": True}
    ca = os.environ.get("PPRL_TLS_CA")
    cert, key = os.environ.get("PPRL_TLS_CERT"), os.environ.get("PPRL_TLS_KEY")
    if ca or cert:
        try:
            context = ssl.create_default_context(cafile=ca or None)
            if cert:
                context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise PPRLError(f"cannot load the TLS files of PPRL_TLS_CA / PPRL_TLS_CERT / PPRL_TLS_KEY ({exc})") from None
        out["verify"] = context
    proxy = os.environ.get("PPRL_PROXY")
    if proxy:
        out["proxy"] = proxy
    return out


class Client:
    """A signed conversation between ``me`` and the service at ``url``, which must be one of ``pinned``
    with role ``role``."""

    def __init__(self, url: str, me: PartyKey, pinned: Sequence[Card], role: str, *, timeout: float = 120.0,
                 retry_seconds: float | None = None, http: httpx.Client | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise PPRLError(f"{url}: a service URL starts with http:// or https://")
        self.url = url.rstrip("/")
        self.me = me
        self.retry_seconds = float(os.environ.get("PPRL_RETRY_SECONDS", "60")) if retry_seconds is None \
            else retry_seconds
        self.http = http or httpx.Client(timeout=timeout, **http_settings())
        try:
            self.service = self._discover(pinned, role)
        except BaseException:
            self.http.close()
            raise

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------------

    def _send(self, method: str, route: str, body: bytes, content_type: str | None, idempotent: bool,
              signed: bool = True) -> httpx.Response:
        deadline = time.monotonic() + self.retry_seconds
        wait = 0.2
        # A request the service may already have acted on is sent again only if it never got through.
        retryable: tuple[type[Exception], ...] = (
            (httpx.TransportError,) if idempotent else (httpx.ConnectError, httpx.ConnectTimeout))
        while True:
            if signed:
                headers = sign_request(self.me, method, route, self.service, body)
            else:
                headers = {NONCE: secrets.token_hex(16)}
            if content_type:
                headers["content-type"] = content_type
            try:
                response = self.http.request(method, self.url + route, content=body, headers=headers)
                response.read()
                response.extensions["pprl_nonce"] = headers[NONCE]
                return response
            except retryable as exc:
                text = str(exc)
                if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
                    raise PPRLError(f"{self.url}: TLS failed ({text[:160]}); trust the deployment's CA certificate "
                                    "with PPRL_TLS_CA (and give PPRL_TLS_CERT / PPRL_TLS_KEY if the service asks "
                                    "for a client certificate)") from None
                if time.monotonic() + wait > deadline:
                    hint = "is it running?"
                    if self.url.startswith("https://") and not os.environ.get("PPRL_TLS_CERT"):
                        hint += (" (a service that asks for a client certificate drops the connection: give "
                                 "PPRL_TLS_CERT and PPRL_TLS_KEY)")
                    raise PPRLError(f"{self.url}{route}: cannot reach the service ({type(exc).__name__}: "
                                    f"{str(exc)[:120] or 'connection failed'}); {hint}") from None
                time.sleep(wait)
                wait = min(wait * 2, 5.0)

    def _checked(self, response: httpx.Response, route: str, card: Card) -> Any:
        nonce = response.extensions.get("pprl_nonce", "")
        check_response(response.headers, response.status_code, nonce, response.content, card)
        try:
            data = parse_json(response.content, f"{self.url}{route}")
        except PPRLError:
            data = None
        if response.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            raise ServiceError(f"{self.url}{route}: {response.status_code} "
                               f"{message or response.reason_phrase}", response.status_code)
        return data

    def call(self, method: str, route: str, payload: Any = None, *, body: bytes | None = None,
             idempotent: bool | None = None) -> Any:
        """Send a signed request; the verified JSON answer, or ServiceError with the service's one line."""
        if body is None:
            body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode("utf-8")
            content_type = "application/json" if payload is not None else None
        else:
            content_type = "application/octet-stream"
        if idempotent is None:
            idempotent = method in ("GET", "PUT")
        response = self._send(method, route, body, content_type, idempotent)
        return self._checked(response, route, self.service)

    def _discover(self, pinned: Sequence[Card], role: str) -> Card:
        response = self._send("GET", "/v1/health", b"", None, True, signed=False)
        try:
            info = parse_json(response.content, f"{self.url}/v1/health")
            named = Card.from_signer(info["card"], f"{self.url}/v1/health card")
        except (PPRLError, KeyError, TypeError):
            raise PPRLError(f"{self.url}: does not answer as a pprl service (no card at /v1/health)") from None
        card = next((c for c in pinned if c.fingerprint == named.fingerprint), None)
        if card is None:
            raise SignatureError(f"{self.url}: the service is '{named.name}' ({named.fingerprint}), which is not "
                                 "among your pinned cards; pin its card (--service-card or the trust store)")
        if card.role != role:
            raise SignatureError(f"{self.url}: the service is '{card.name}', a {card.role}; expected a {role}")
        self._checked(response, "/v1/health", card)
        return card

    # -- uploads ---------------------------------------------------------------------------------------

    def upload(self, kind: str, data: bytes, *, chunk_size: int = MAX_BODY,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Upload ``data`` in chunks (resuming an earlier, unfinished upload of the same bytes); the
        service's summary of the document it accepted."""
        digest = hashlib.sha256(data).hexdigest()
        up = self.call("POST", "/v1/uploads", {"kind": kind, "size": len(data), "sha256": digest,
                                               "chunk_size": chunk_size}, idempotent=True)
        size = int(up["chunk_size"])
        have = set(up["received"])
        for index in range(int(up["chunks"])):
            if index not in have:
                self.call("PUT", f"/v1/uploads/{up['upload']}/chunks/{index}",
                          body=data[index * size:(index + 1) * size])
            if progress is not None:
                progress(index + 1, int(up["chunks"]))
        try:
            return dict(self.call("POST", f"/v1/uploads/{up['upload']}/complete", idempotent=True))
        except ServiceError as exc:
            if exc.status != 409 or "already complete" not in str(exc):
                raise
            # completed by an earlier attempt whose answer was lost: the document is there
            done = self.call("GET", f"/v1/uploads/{up['upload']}")
            return {"document": done["document"], "kind": kind}

    def send_document(self, route: str, kind: str, data: bytes) -> Any:
        """POST a document to ``route``: in the body when it fits, else uploaded first and named by hash."""
        if len(data) <= MAX_BODY - _MARGIN:
            return self.call("POST", route, body=data, idempotent=False)
        summary = self.upload(kind, data)
        return self.call("POST", route, {"document": summary["document"]}, idempotent=False)

    # -- jobs ------------------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/jobs/{job_id}"))

    def wait(self, job_id: str, *, poll: float = 1.0, timeout: float | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll a job until it is done or failed; its last state."""
        start = time.monotonic()
        while True:
            state = self.job(job_id)
            if progress is not None:
                progress(state)
            if state["status"] in ("done", "failed"):
                return state
            if timeout is not None and time.monotonic() - start > timeout:
                raise PPRLError(f"{self.url}: job {job_id} is still {state['status']} after {timeout:.0f} s")
            time.sleep(poll)
