"""The platform's and the key holders' services.

- :class:`PlatformService`: ``POST /v1/pseudonyms`` evaluates a registered
  lender's blinded pseudonym request (the document) under the platform's key,
  checks the lender's daily quota against the platform's log, logs the use,
  and answers with the signed response. Requests per lender are also limited
  per minute (429 beyond).
- :class:`HolderService` (the authority with the whole key, or one threshold
  key holder): ``POST /v1/answer-decryptions`` takes a bureau's answer (the
  document, or ``{"document": hash}`` of one uploaded in chunks) from the
  lender it is for, checks it against the holder's own release policy and
  pins exactly as ``pprl decrypt-answer`` does, logs it first, and answers
  with the masked decryption (or, for a threshold holder, its part, encrypted
  for the lender).

Both keep their logs as the CLI does (a file per party) and their nonces and
uploads in a small SQLite state file.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pprl.crypto.paillier.vector import PaillierPrivateKey
from pprl.documents import Answer, AnswerDecryption, Card, DecryptionPart, PseudonymRequest, parse_json
from pprl.errors import DocumentError, PPRLError
from pprl.protocol.files import append_log_line, checked_audit_log, read_log_lines
from pprl.protocol.identity import PartyKey
from pprl.protocol.pseudonym import EvaluatorOptions, evaluate_request
from pprl.protocol.query import AnswerPolicy, answer_part, decrypt_answer
from pprl.protocol.secret import LinkageSecret
from pprl.protocol.threshold.dealer import ThresholdOptions
from pprl.protocol.threshold.holder import LoadedShare
from pprl.service.app import Call, Service, document_body
from pprl.service.auth import AuthError
from pprl.service.state import ServiceState

__all__ = ["HolderService", "PlatformService"]


class _RateLimit:
    """At most ``per_minute`` requests per caller in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._seen[who]
            while seen and now - seen[0] > 60:
                seen.popleft()
            if len(seen) >= self.per_minute:
                raise AuthError(429, f"'{who}' sent more than {self.per_minute} requests in a minute; "
                                     "wait and send again")
            seen.append(now)


class PlatformService(Service):
    """A platform's OPRF evaluator for registered lenders."""

    role = "platform"

    def __init__(self, me: PartyKey, secret: LinkageSecret, cards: Sequence[Card], log: str | Path,
                 state: str | Path, *, daily_quota: int | None = 10_000, per_minute: int = 600) -> None:
        if me.role != "platform":
            raise PPRLError(f"only a platform evaluates pseudonyms; '{me.name}' is a {me.role}")
        super().__init__(me, cards, ServiceState(state))
        self.secret = secret
        self.lenders = [c for c in self.cards if c.role == "lender"]
        self.log_path = Path(log)
        self.options = EvaluatorOptions(daily_quota=daily_quota)
        self.limit = _RateLimit(per_minute)
        self._lock = threading.Lock()

    def routes(self) -> list:
        return [*super().routes(),
                self.route("/v1/pseudonyms", self.evaluate, methods=["POST"], roles=("lender",))]

    def evaluate(self, call: Call) -> tuple[int, Any]:
        self.limit.check(call.signer.name)
        request = PseudonymRequest.from_dict(call.json(), "the pseudonym request")
        if request.header.lender != call.signer.name:
            raise AuthError(403, f"the request is '{request.header.lender}''s, but '{call.signer.name}' sent it")
        with self._lock:  # one evaluation at a time reads and appends the log
            response, entry = evaluate_request(self.me, self.secret, request, self.lenders,
                                               read_log_lines(self.log_path), self.options)
            append_log_line(self.log_path, entry)
        return 200, document_body(response)


class HolderService(Service):
    """The authority (``private``: the whole key) or a threshold key holder (``share``) decrypting answers."""

    role = "authority"
    uploads = {"answer": ("lender",)}

    def __init__(self, me: PartyKey, cards: Sequence[Card], audit_log: str | Path, state: str | Path, *,
                 private: PaillierPrivateKey | None = None, share: LoadedShare | None = None,
                 policy: AnswerPolicy | None = None, workers: int | None = None) -> None:
        if me.role != "authority":
            raise PPRLError(f"only the authority or a key holder decrypts answers; '{me.name}' is a {me.role}")
        if (private is None) == (share is None):
            raise PPRLError("a key holder serves with the whole key or with a share, one of them")
        super().__init__(me, cards, ServiceState(state))
        self.private, self.share = private, share
        self.audit_log = Path(audit_log)
        self.policy = policy
        self.options = ThresholdOptions(workers=workers)
        self.bureaus = [c for c in self.cards if c.role == "bureau"]
        self.lenders = [c for c in self.cards if c.role == "lender"]
        self._lock = threading.Lock()

    def routes(self) -> list:
        return [*super().routes(),
                self.route("/v1/answer-decryptions", self.decrypt, methods=["POST"], roles=("lender",))]

    def accept(self, kind: str, signer: Card, data: bytes, source: str) -> dict[str, Any]:
        doc = Answer.from_dict(parse_json(data, source, f"{source}: not a pprl document (not valid JSON)"), source)
        if doc.header.lender != signer.name:
            raise AuthError(403, f"{source}: an answer for '{doc.header.lender}' uploaded by '{signer.name}'")
        return {"document": doc.hash, "kind": kind, "lender": doc.header.lender, "count": doc.header.count}

    def decrypt(self, call: Call) -> tuple[int, Any]:
        raw = call.json()
        if isinstance(raw, dict) and set(raw) == {"document"}:
            (body,) = self.state.document_bodies([str(raw["document"])])
            raw = parse_json(body, "the uploaded answer")
        answer = Answer.from_dict(raw, "the answer")
        if answer.header.lender != call.signer.name:
            raise AuthError(403, f"the answer is for '{answer.header.lender}', but '{call.signer.name}' asked")
        with self._lock:  # one decryption at a time appends to the audit log, after checking its chain
            entries = checked_audit_log(self.audit_log)
            doc: AnswerDecryption | DecryptionPart
            if self.private is not None:
                doc, entry = decrypt_answer(self.me, self.private, answer, entries, self.bureaus, self.lenders,
                                            self.policy)
            else:
                if self.share is None:  # pragma: no cover - the constructor makes sure
                    raise DocumentError("no key share loaded")
                doc, entry = answer_part(self.me, self.share, answer, entries, self.bureaus, self.lenders,
                                         self.policy, self.options)
            append_log_line(self.audit_log, entry)
        return 200, document_body(doc)
