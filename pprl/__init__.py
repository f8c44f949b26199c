"""pprl: privacy-preserving record linkage and encrypted score sharing.

The names below are what a pipeline needs, loaded on first use so that
``import pprl`` stays light. Each party's steps live in :mod:`pprl.protocol`
(on messages in memory; :mod:`pprl.protocol.files` over files), the documents
in :mod:`pprl.documents`, the primitives in :mod:`pprl.crypto`,
:mod:`pprl.encoding` and :mod:`pprl.matching`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pprl.errors import PPRLError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pprl.protocol.files import (
        aggregate,
        combine_secrets,
        decrypt_release,
        init_party,
        link,
        load_card,
        load_key,
        paillier_keygen,
        psi_evidence,
        release_evidence,
        share_secret,
        submit,
        verify_log,
    )
    from pprl.protocol.pseudonym import evaluate_request, finish_pseudonyms, request_pseudonyms
    from pprl.protocol.query import (
        AnswerPolicy,
        Consent,
        PurposePolicy,
        answer_part,
        decrypt_answer,
        make_query,
        make_receipts,
        open_answer,
    )
    from pprl.registry import Registry
    from pprl.sim.synth import generate_population

_LAZY = {
    "aggregate": "pprl.protocol.files",
    "combine_secrets": "pprl.protocol.files",
    "decrypt_release": "pprl.protocol.files",
    "init_party": "pprl.protocol.files",
    "link": "pprl.protocol.files",
    "load_card": "pprl.protocol.files",
    "load_key": "pprl.protocol.files",
    "paillier_keygen": "pprl.protocol.files",
    "release_evidence": "pprl.protocol.files",
    "psi_evidence": "pprl.protocol.files",
    "share_secret": "pprl.protocol.files",
    "submit": "pprl.protocol.files",
    "verify_log": "pprl.protocol.files",
    "generate_population": "pprl.sim.synth",
    # the lender product, on messages in memory
    "request_pseudonyms": "pprl.protocol.pseudonym",
    "evaluate_request": "pprl.protocol.pseudonym",
    "finish_pseudonyms": "pprl.protocol.pseudonym",
    "Consent": "pprl.protocol.query",
    "AnswerPolicy": "pprl.protocol.query",
    "PurposePolicy": "pprl.protocol.query",
    "answer_part": "pprl.protocol.query",
    "make_query": "pprl.protocol.query",
    "decrypt_answer": "pprl.protocol.query",
    "open_answer": "pprl.protocol.query",
    "make_receipts": "pprl.protocol.query",
    "Registry": "pprl.registry",
}

__all__ = [
    "AnswerPolicy",
    "Consent",
    "PPRLError",
    "PurposePolicy",
    "Registry",
    "__version__",
    "aggregate",
    "answer_part",
    "combine_secrets",
    "decrypt_answer",
    "decrypt_release",
    "evaluate_request",
    "finish_pseudonyms",
    "generate_population",
    "init_party",
    "link",
    "load_card",
    "load_key",
    "make_query",
    "make_receipts",
    "open_answer",
    "paillier_keygen",
    "psi_evidence",
    "release_evidence",
    "request_pseudonyms",
    "share_secret",
    "submit",
    "verify_log",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pprl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
