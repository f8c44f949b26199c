"""What every party's service shares: signed requests in, signed JSON out, one-line errors, chunked uploads.

A :class:`Service` is a Starlette application around one party's identity.
Each route is a plain function run in a worker thread; it gets a
:class:`Call` (the verified signer, the body) and returns ``(status,
payload)``. Around it, :meth:`Service.route` reads the body (at most
:data:`~pprl.service.state.MAX_BODY` bytes, else 413), checks the request's
signature against the service's pinned cards and the signer's role, records
the nonce (a replay is 409), and turns any refusal into a 4xx with a one-line
JSON error ``{"error": "..."}``. Every response, errors included, is signed
(:mod:`pprl.service.auth`). Documents larger than a request may be are
uploaded in chunks (``/v1/uploads``), each chunk signed like any request,
resumable after a broken connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pprl.documents import Card, Document, parse_json
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    DocumentError,
    KeyMismatchError,
    OptionError,
    PolicyError,
    PPRLError,
    RegistryError,
    SchemaError,
    SignatureError,
)
from pprl.protocol.identity import PartyKey
from pprl.service.auth import AuthError, check_request, sign_response
from pprl.service.state import MAX_BODY, MAX_UPLOAD, ServiceState, Upload

__all__ = ["Call", "Service", "document_body", "status_of"]

log = logging.getLogger("pprl.service")

#: Upload chunks handled at once; the rest wait (unread) for their turn.
BULK_AT_ONCE = 2


@dataclass(frozen=True)
class Call:
    """One verified request: who signed it, its body, the path parameters."""

    signer: Card
    body: bytes
    params: dict[str, Any]
    nonce: str

    def json(self) -> Any:
        """The body as JSON (duplicate keys and NaN refused); 400 if it is not."""
        if not self.body:
            raise DocumentError("the request has no body; expected JSON")
        return parse_json(self.body, "the request", "the request body is not valid JSON")


def status_of(exc: BaseException) -> int:
    """The HTTP status a refusal is answered with."""
    explicit = getattr(exc, "status", None)
    if isinstance(explicit, int):
        return explicit
    if isinstance(exc, SignatureError):
        return 403
    if isinstance(exc, (OptionError, DocumentError, DataValidationError, SchemaError, DecryptionError)):
        return 400
    if isinstance(exc, KeyMismatchError):
        return 409
    if isinstance(exc, PolicyError):
        return 403
    if isinstance(exc, RegistryError):
        return 503
    return 400


def document_body(doc: Document) -> bytes:
    """A document as a response body: its wire JSON, compact."""
    return json.dumps(doc.wire, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Service:
    """One party's service: ``me`` speaks for it, ``cards`` are who may call it, ``state`` its own tables."""

    role = ""
    #: Uploadable document kinds -> the roles that may upload them.
    uploads: dict[str, tuple[str, ...]] = {}

    def __init__(self, me: PartyKey, cards: Sequence[Card], state: ServiceState) -> None:
        self.me = me
        self.cards = [c for c in cards if c.fingerprint != me.card.fingerprint] + [me.card]
        self.state = state
        # Completing an upload holds the whole document in memory (its bytes, then the parsed document) while
        # it is checked: one at a time, so memory stays bounded however many platforms finish at once (the
        # bureau checks submissions in a child process, one at a time per host).
        self._assembling = threading.BoundedSemaphore(1)
        self._bulk: asyncio.Semaphore | None = None

    # -- plumbing ------------------------------------------------------------------------------------

    def respond(self, status: int, payload: Any, nonce: str) -> Response:
        body = payload if isinstance(payload, bytes) else json.dumps(
            payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = sign_response(self.me, status, nonce, body)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def error(self, status: int, message: str, nonce: str) -> Response:
        line = " ".join(str(message).split())[:600] or "refused"
        return self.respond(status, {"error": line}, nonce)

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise AuthError(400, "Content-Length is not a number") from None
            if size > MAX_BODY:
                raise AuthError(413, f"the body has {size} bytes; at most {MAX_BODY} are read (upload larger "
                                     "documents in chunks through /v1/uploads)")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY:
                raise AuthError(413, f"the body is larger than {MAX_BODY} bytes (upload larger documents in "
                                     "chunks through /v1/uploads)")
            chunks.append(chunk)
        body = b"".join(chunks)
        if declared is not None and len(body) != int(declared):
            raise AuthError(400, f"the body has {len(body)} bytes, not the {declared} declared (truncated)")
        return body

    def _authenticate(self, request: Request, body: bytes, roles: tuple[str, ...]) -> tuple[Card, str]:
        card, nonce, _when = check_request(request.headers, request.method, request.url.path, body, self.me.card,
                                           self.cards)
        self.state.remember_nonce(card.fingerprint, nonce)
        if roles and card.role not in roles and card.fingerprint != self.me.card.fingerprint:
            raise AuthError(403, f"'{card.name}' is a {card.role}; this request is for a {' or '.join(roles)}")
        return card, nonce

    def route(self, path: str, fn: Callable[[Call], tuple[int, Any]], *, methods: Sequence[str],
              roles: tuple[str, ...] = (), public: bool = False, bulk: bool = False) -> Route:
        """A route running ``fn`` for a verified signer of one of ``roles`` (any pinned card when empty).

        ``public`` routes (health) take no signature; their responses are signed all the same. ``bulk``
        routes (upload chunks) run at most :data:`BULK_AT_ONCE` at a time, the others waiting their turn
        before their bodies are read, so ten platforms uploading at once leave room for lender queries.
        """

        async def endpoint(request: Request) -> Response:
            if bulk:
                if self._bulk is None:  # made in the server's event loop, on first use
                    self._bulk = asyncio.Semaphore(BULK_AT_ONCE)
                async with self._bulk:
                    return await handle(request)
            return await handle(request)

        async def handle(request: Request) -> Response:
            # the response (a refusal too) answers the request's nonce, so the client can tell it is its own
            nonce = request.headers.get("pprl-nonce", "")
            nonce = nonce if len(nonce) == 32 and all(c in "0123456789abcdef" for c in nonce) else ""
            try:
                body = await self._body(request)
                if public:
                    card = self.me.card
                else:
                    card, nonce = await run_in_threadpool(self._authenticate, request, body, roles)
                status, payload = await run_in_threadpool(
                    fn, Call(card, body, dict(request.path_params), nonce))
                return self.respond(status, payload, nonce)
            except PPRLError as exc:
                status = status_of(exc)
                if status >= 500:
                    log.error("%s %s: %s", request.method, request.url.path, exc)
                elif status in (401, 403, 409, 413):  # refused callers stay on the service's record
                    log.warning("refused %s %s (%d): %s", request.method, request.url.path, status, exc)
                return self.error(status, str(exc), nonce)
            except Exception:  # noqa: BLE001 - a bug must not leak details to the caller
                log.exception("%s %s failed", request.method, request.url.path)
                return self.error(500, "internal error; the service logged it", nonce)

        return Route(path, endpoint, methods=list(methods))

    def routes(self) -> list[Route]:
        """The service's routes: health and uploads here; subclasses add their own."""
        out = [self.route("/v1/health", self.health, methods=["GET"], public=True)]
        if self.uploads:
            roles = tuple(sorted({r for rs in self.uploads.values() for r in rs}))
            out += [
                self.route("/v1/uploads", self.open_upload, methods=["POST"], roles=roles),
                self.route("/v1/uploads/{upload}", self.upload_status, methods=["GET"], roles=roles),
                self.route("/v1/uploads/{upload}/chunks/{index:int}", self.put_chunk, methods=["PUT"], roles=roles,
                           bulk=True),
                self.route("/v1/uploads/{upload}/complete", self.complete_upload, methods=["POST"], roles=roles),
            ]
        return out

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            await run_in_threadpool(self.startup)
            try:
                yield
            finally:
                await run_in_threadpool(self.shutdown)

        return Starlette(routes=self.routes(), lifespan=lifespan)

    def startup(self) -> None:
        """Called when the server starts (before the first request)."""

    def shutdown(self) -> None:
        """Called when the server stops."""

    # -- routes --------------------------------------------------------------------------------------

    def health(self, call: Call) -> tuple[int, Any]:
        return 200, {"service": self.me.name, "role": self.role, "card": self.me.card.to_signer()}

    def open_upload(self, call: Call) -> tuple[int, Any]:
        spec = call.json()
        if not isinstance(spec, dict):
            raise DocumentError("an upload is opened with {\"kind\", \"size\", \"sha256\", \"chunk_size\"}")
        kind, size, digest = spec.get("kind"), spec.get("size"), spec.get("sha256")
        chunk = spec.get("chunk_size", MAX_BODY)
        allowed = self.uploads.get(kind) if isinstance(kind, str) else None
        if allowed is None:
            raise DocumentError(f"this service takes uploads of {', '.join(sorted(self.uploads))}, not {kind!r}")
        if call.signer.role not in allowed:
            raise AuthError(403, f"a {call.signer.role} may not upload a {kind}")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_UPLOAD:
            raise DocumentError(f"upload size must be a whole number of bytes from 1 to {MAX_UPLOAD}")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DocumentError("upload sha256 must be 64 lower-case hex digits")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or not 1024 <= chunk <= MAX_BODY:
            raise DocumentError(f"upload chunk_size must be from 1024 to {MAX_BODY} bytes")
        up = self.state.open_upload(call.signer.name, str(kind), size, digest, chunk)
        return 201, up.to_dict()

    def upload_status(self, call: Call) -> tuple[int, Any]:
        return 200, self.state.upload(call.params["upload"], call.signer.name).to_dict()

    def put_chunk(self, call: Call) -> tuple[int, Any]:
        up = self.state.put_chunk(call.params["upload"], call.signer.name, call.params["index"], call.body)
        return 200, {"upload": up.id, "received": len(up.received), "chunks": up.chunks}

    def complete_upload(self, call: Call) -> tuple[int, Any]:
        with self._assembling:
            up = self.state.ready(call.params["upload"], call.signer.name)
            summary = self.accept_upload(up, call.signer, f"upload {up.id}")
            # the document's bytes stay where they are, in the upload's chunks
            self.state.store_document(up.id, call.signer.name, up.kind, summary["document"], None, summary)
        return 201, summary

    def accept_upload(self, up: Upload, signer: Card, source: str) -> dict[str, Any]:
        """Check a complete upload (every chunk in): its bytes against the declared SHA-256, then the document
        (:meth:`accept`). Services that check large documents elsewhere override this."""
        _up, data = self.state.assemble(up.id, signer.name)
        return self.accept(up.kind, signer, data, source)

    def accept(self, kind: str, signer: Card, data: bytes, source: str) -> dict[str, Any]:
        """Check an uploaded document of ``kind`` (signature against the pins, shape); return its summary
        (with ``"document"``, its hash). Subclasses that take uploads override this."""
        raise DocumentError(f"{source}: this service keeps no {kind}")
