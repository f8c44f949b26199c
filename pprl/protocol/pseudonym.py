"""Finding an applicant without giving anyone PII: a lender obtains pseudonyms through a platform's OPRF.

Platforms put each record's pseudonym ``F(k, id)`` in their submissions
(``k`` derived from the linkage secret, which the bureau never holds, so the
bureau cannot compute the pseudonym of an identifier of its choosing). A
lender holding an applicant's identifier and consent blinds it
(:func:`request_pseudonyms`), any platform evaluates the blinded elements
under ``k`` and logs the lender's query count against its daily quota
(:func:`evaluate_request`), and the lender unblinds (:func:`finish_pseudonyms`)
to the pseudonym it then sends to the bureau. The lender never learns ``k``;
the platform learns how many applicants, never which. Design: docs/registry.md#pseudonyms.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pprl.crypto import oprf
from pprl.crypto.psi import ELEMENT_BYTES
from pprl.documents import (
    Card,
    ElementsPayload,
    PseudonymRequest,
    PseudonymRequestHeader,
    PseudonymResponse,
    PseudonymResponseHeader,
    PseudonymState,
    now,
    seal,
    verify,
)
from pprl.encoding.normalise import IDENTIFIER_KINDS, normaliser_for
from pprl.errors import DataValidationError, DocumentError, KeyFormatError, KeyMismatchError, OptionError, PolicyError
from pprl.protocol.identity import PartyKey
from pprl.protocol.secret import LinkageSecret

__all__ = [
    "MAX_REQUEST",
    "EvaluatorOptions",
    "Requested",
    "evaluate_request",
    "finish_pseudonyms",
    "request_pseudonyms",
]

#: Most applicants in one request.
MAX_REQUEST = 100_000


@dataclass(frozen=True)
class Requested:
    """A lender's signed request and its private state (0600, never sent)."""

    request: PseudonymRequest
    state: PseudonymState = field(repr=False)
    invalid: int = 0


def request_pseudonyms(
    me: PartyKey, applicants: Sequence[tuple[str, str]], identifier: str = "resident_id"
) -> Requested:
    """Blind each applicant's identifier for a platform to evaluate (lender).

    ``applicants`` are (the lender's own reference, the applicant's
    identifier). Identifiers that are not valid of their kind are left out of
    the request (counted in ``invalid``): they are "not found", never guessed.
    """
    if me.role != "lender":
        raise KeyFormatError(f"only a lender asks for pseudonyms; '{me.name}' is a {me.role}")
    if identifier not in IDENTIFIER_KINDS:
        raise OptionError(f"{{identifier}} must be one of {', '.join(IDENTIFIER_KINDS)}", "identifier")
    normalise = normaliser_for(identifier)
    refs, inputs, invalid = [], [], 0
    seen: set[str] = set()
    for number, (ref, value) in enumerate(applicants, start=1):
        if ref in seen:
            raise DataValidationError(f"applicant {number}: reference repeats an earlier one; references must be unique")
        seen.add(ref)
        normal = normalise(value)
        if normal is None:
            invalid += 1
            continue
        refs.append(ref)
        inputs.append(str(normal))
    if len(inputs) > MAX_REQUEST:
        raise PolicyError(f"{len(inputs)} applicants in one request; at most {MAX_REQUEST}")
    blinding = oprf.blind_inputs(inputs, identifier)
    header = PseudonymRequestHeader(lender=me.name, identifier=identifier, count=len(inputs),
                                    nonce=secrets.token_hex(16))
    request = seal(PseudonymRequest(header=header, payload=ElementsPayload(elements=blinding.elements)),
                   me.identity, me.card)
    state = seal(PseudonymState(
        lender=me.name, request_hash=request.hash, identifier=identifier, applicants=refs, inputs=inputs,
        unblind=b"".join(blinding.unblind),
    ))
    return Requested(request, state, invalid)


@dataclass(frozen=True)
class EvaluatorOptions:
    """A platform's limits as pseudonym evaluator: ``daily_quota`` elements per lender per UTC day (None: none)."""

    daily_quota: int | None = 10_000

    def __post_init__(self) -> None:
        q = self.daily_quota
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 0):
            raise OptionError("{daily_quota} must be a whole number >= 0", "daily_quota")


def evaluate_request(
    me: PartyKey,
    secret: LinkageSecret,
    request: PseudonymRequest,
    lenders: Sequence[Card],
    log: Sequence[Mapping[str, Any]],
    options: EvaluatorOptions,
) -> tuple[PseudonymResponse, dict[str, Any]]:
    """Evaluate a lender's blinded request (platform); return the signed response and the log entry to append.

    Refused (nothing evaluated): a request not signed by a lender among
    ``lenders``, one already answered, or one over the lender's quota for
    today as ``log`` (this platform's earlier entries) counts it.
    """
    if me.role != "platform":
        raise KeyFormatError(f"only a platform evaluates pseudonyms; '{me.name}' is a {me.role}")
    if secret.owner != me.name:
        raise KeyMismatchError(f"the linkage secret belongs to '{secret.owner}', not '{me.name}'")
    source = request.source
    lender = verify(request, lenders, source=source, role="lender")
    header = request.header
    if header.lender != lender.name:
        raise DocumentError(f"{source}: names lender '{header.lender}' but '{lender.name}' signed it")
    if len(request.payload.elements) != header.count * ELEMENT_BYTES:
        raise DocumentError(f"{source}: holds {len(request.payload.elements) // ELEMENT_BYTES} elements, "
                            f"not the {header.count} it declares")
    if any(entry.get("request") == request.hash for entry in log):
        raise PolicyError(f"{source}: this request was already answered (replayed)")
    time = now()
    day = time[:10]
    used = sum(int(e.get("count", 0)) for e in log if e.get("lender") == lender.name and str(e.get("time", ""))[:10] == day)
    if options.daily_quota is not None and used + header.count > options.daily_quota:
        raise PolicyError(
            f"{source}: lender '{lender.name}' would ask {used + header.count} pseudonyms today, "
            f"over its daily quota of {options.daily_quota}"
        )
    key = oprf.derive_key(secret.secret, header.identifier)
    evaluated = oprf.evaluate(key, request.payload.elements)
    response = seal(PseudonymResponse(
        header=PseudonymResponseHeader(platform=me.name, lender=lender.name, request_hash=request.hash,
                                       identifier=header.identifier, count=header.count),
        payload=ElementsPayload(elements=evaluated),
    ), me.identity, me.card)
    entry = {"time": time, "lender": lender.name, "fingerprint": lender.fingerprint, "request": request.hash,
             "count": header.count, "identifier": header.identifier}
    return response, entry


def finish_pseudonyms(
    me: PartyKey, state: PseudonymState, response: PseudonymResponse, platforms: Sequence[Card]
) -> list[tuple[str, bytes]]:
    """Unblind a platform's response (lender): (the lender's reference, pseudonym) per valid applicant."""
    if state.lender != me.name:
        raise KeyMismatchError(f"{state.source}: belongs to '{state.lender}', not '{me.name}'")
    source = response.source
    verify(response, platforms, source=source, role="platform")
    header = response.header
    if header.request_hash != state.request_hash or header.lender != me.name:
        raise DocumentError(f"{source}: answers another request than the one in {state.source}")
    n = len(state.inputs)
    if header.count != n or len(state.unblind) != n * 32 or len(state.applicants) != n:
        raise DocumentError(f"{source}: does not answer the {n} applicants of {state.source}")
    unblind = tuple(state.unblind[i * 32 : (i + 1) * 32] for i in range(n))
    blinding = oprf.Blinding(b"", unblind, state.identifier)
    found = oprf.finalize(blinding, state.inputs, response.payload.elements)
    return list(zip(state.applicants, found))
