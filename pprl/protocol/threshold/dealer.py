"""Threshold decryption of releases: T of n named holders must cooperate to open any sum.

Dealing is here (the authority, once, as trusted dealer): a threshold
Paillier key whose signed public key is the ordinary ``paillier-pub``
document plus a ``threshold`` object, and one ``paillier-share`` per holder,
wrapped for the holder's card under an ephemeral X25519 key that is discarded
at once (not even the dealer can reopen a share). The holders' step is in
:mod:`pprl.protocol.threshold.holder`, combining in
:mod:`pprl.protocol.threshold.combine`; both rely on the context strings and
the ``ThresholdSetup`` parsing defined here. Design: docs/threshold.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pprl.crypto.exchange import wrap
from pprl.crypto.identity import IdentityKey
from pprl.crypto.paillier.threshold.partials import (
    MAX_HOLDERS,
    ThresholdPublicKey,
    deal,
)
from pprl.crypto.paillier.vector import PaillierPublicKey
from pprl.documents import Card, PaillierPub, PaillierShare, b64d, b64e, seal, verify, verify_document
from pprl.errors import (
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    OptionError,
    PolicyError,
    SignatureError,
)
from pprl.protocol.identity import PartyKey

__all__ = [
    "MIN_THRESHOLD_BITS",
    "DealtKey",
    "ThresholdOptions",
    "ThresholdSetup",
    "deal_threshold_key",
    "open_threshold_public",
    "dealer_pins",
    "parse_setup",
    "part_context",
    "proof_context",
    "share_context",
    "verify_embedded_public",
]

MIN_THRESHOLD_BITS = 2048
_SHARE_CONTEXT = b"pprl-paillier-share-v1"
_PART_CONTEXT = b"pprl-decryption-part-v1"
_PROOF_CONTEXT = b"pprl-decryption-proof-v1"



def _framed(*items: bytes) -> bytes:
    return b"".join(len(x).to_bytes(4, "big") + x for x in items)


def share_context(fingerprint: str, index: int, pub_hash: str) -> bytes:
    """What a holder's wrapped share of key ``fingerprint`` is bound to (its index and the public key's hash)."""
    return _framed(_SHARE_CONTEXT, fingerprint.encode(), index.to_bytes(4, "big"), pub_hash.encode())


def part_context(release_hash: str, index: int) -> bytes:
    """What a holder's part for ``release_hash`` is bound to when wrapped for its combiner."""
    return _framed(_PART_CONTEXT, release_hash.encode(), index.to_bytes(4, "big"))


def proof_context(release_hash: str, column: str) -> bytes:
    """What a partial decryption's proof of ``column`` in ``release_hash`` is bound to."""
    return _framed(_PROOF_CONTEXT, release_hash.encode(), column.encode("utf-8"))


@dataclass(frozen=True)
class ThresholdOptions:
    """How a holder or combiner runs: ``workers`` (None: every CPU), ``progress`` bars, and
    ``allow_insecure`` (keys below 2048 bits: tests only)."""

    workers: int | None = None
    progress: bool = False
    allow_insecure: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise OptionError("{workers} must be at least 1", "workers")


# --- the public key with its threshold object --------------------------------------------


@dataclass(frozen=True)
class ThresholdSetup:
    """A threshold key as the documents describe it: key, holder names, cards, provenance.

    ``holders[i - 1]`` is holder i; ``fingerprints`` maps each holder to the
    card fingerprint the dealer wrapped its share for; ``pub_hash`` is the
    hash of the signed ``paillier.pub.json``; ``dealer`` signed it.
    """

    public: ThresholdPublicKey
    holders: tuple[str, ...]
    fingerprints: Mapping[str, str] = field(repr=False, compare=False)
    pub_hash: str
    dealer: Card = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """The Paillier key fingerprint (as in every submission and release header)."""
        return self.public.public.fingerprint

    def index_of(self, name: str) -> int:
        """1-based holder index of ``name``; SignatureError if not a holder."""
        if name not in self.holders:
            raise SignatureError(f"'{name}' is not a holder of threshold key {self.fingerprint}")
        return self.holders.index(name) + 1


def _threshold_object(tpk: ThresholdPublicKey, holders: Sequence[Card]) -> dict[str, Any]:
    width = tpk.element_bytes
    return {
        "t": tpk.threshold,
        "holders": [c.name for c in holders],
        "holder_fingerprints": {c.name: c.fingerprint for c in holders},
        "verification_base": b64e(tpk.verification_base.to_bytes(width, "big")),
        "verification_keys": {
            c.name: b64e(k.to_bytes(width, "big")) for c, k in zip(holders, tpk.verification_keys)
        },
        "delta": tpk.delta,
    }


def parse_setup(
    doc: Mapping[str, Any], source: str, pub_hash: str, dealer: Card, allow_small: bool
) -> ThresholdSetup:
    """Rebuild a ThresholdSetup from a document's ``key`` and ``threshold`` fields."""
    try:
        key = PaillierPublicKey.from_dict(doc.get("key"), allow_small=allow_small)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{source}: {exc}") from None
    if key.fingerprint != doc.get("fingerprint"):
        raise KeyMismatchError(f"{source}: key does not match its fingerprint")
    th = doc.get("threshold")
    if not isinstance(th, dict):
        raise DocumentError(f"{source}: not a threshold key (no 'threshold' object)")
    try:
        holders = th["holders"]
        fingerprints, vks = th["holder_fingerprints"], th["verification_keys"]
        if not (isinstance(holders, list) and all(isinstance(h, str) for h in holders)):
            raise TypeError
        if len(set(holders)) != len(holders) or set(fingerprints) != set(holders) or set(vks) != set(holders):
            raise DocumentError(f"{source}: threshold holder lists disagree or repeat a name")
        if th["delta"] != math.factorial(len(holders)):
            raise DocumentError(f"{source}: threshold 'delta' is not {len(holders)}!")
        width = key.ciphertext_bytes

        def element(text: Any, what: str) -> int:
            raw = b64d(text, f"{source}: {what}")
            if len(raw) != width:
                raise DocumentError(f"{source}: {what} has the wrong length for this key")
            return int.from_bytes(raw, "big")

        tpk = ThresholdPublicKey(
            key,
            th["t"],
            element(th["verification_base"], "verification_base"),
            tuple(element(vks[h], f"verification key of '{h}'") for h in holders),
        )
        prints = {h: str(fingerprints[h]) for h in holders}
    except (KeyError, TypeError, AttributeError):
        raise DocumentError(f"{source}: malformed 'threshold' object") from None
    except KeyFormatError as exc:
        raise KeyFormatError(f"{source}: {exc}") from None
    return ThresholdSetup(tpk, tuple(holders), prints, pub_hash, dealer)


def dealer_pins(authority: Card | Sequence[Card]) -> list[Card]:
    """``authority`` as the list of cards the dealer must be among."""
    return [authority] if isinstance(authority, Card) else list(authority)


def open_threshold_public(
    doc: PaillierPub, authority: Card | Sequence[Card], *, allow_insecure: bool = False
) -> ThresholdSetup:
    """A signed threshold public key, checked; ``authority`` pins the dealer (a card, or cards it must be among)."""
    dealer = verify(doc, dealer_pins(authority), source=doc.source, role="authority")
    return parse_setup(doc.wire, doc.source, doc.hash, dealer, allow_insecure)


def verify_embedded_public(pub: Any, where: str, dealers: Sequence[Card]) -> Card:
    """Check a ``paillier-pub`` document carried inside another (share or part); return its dealer."""
    if not isinstance(pub, dict) or pub.get("kind") != "paillier-pub" or pub.get("version") != 1:
        raise DocumentError(f"{where} is malformed")
    return verify_document(pub, dealers, source=where, role="authority")


# --- keygen ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DealtKey:
    """A dealt threshold key: the signed public key and each holder's wrapped share, by holder name."""

    pub: PaillierPub
    shares: dict[str, PaillierShare] = field(repr=False)
    fingerprint: str
    threshold: int
    holders: tuple[str, ...]


def deal_threshold_key(
    me: PartyKey, bits: int, threshold: int, holders: Sequence[Card], *, allow_insecure: bool = False
) -> DealtKey:
    """Deal a T-of-n Paillier key: signed public key and one wrapped share per holder.

    Holders are indexed 1..n in the order given. Refuses a non-authority
    dealer, ``bits`` below 2048 (``allow_insecure`` is for tests only), T
    outside 1..n and a repeated holder (by name or by card). The full key
    exists only inside this call.
    """
    if me.role != "authority":
        raise KeyFormatError(f"only an authority deals the threshold key; '{me.name}' is a {me.role}")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise KeyFormatError("bits must be an integer")
    if bits < MIN_THRESHOLD_BITS and not allow_insecure:
        raise KeyFormatError(f"a {bits}-bit key is too small; use {MIN_THRESHOLD_BITS} bits or more")
    cards = list(holders)
    if not 1 <= len(cards) <= MAX_HOLDERS:
        raise PolicyError(f"a threshold key needs 1 to {MAX_HOLDERS} holders, not {len(cards)}")
    for card in cards:
        if not isinstance(card, Card):
            raise KeyFormatError("holders must be party cards")
    for i, card in enumerate(cards):
        for other in cards[:i]:
            if card.name == other.name or card.fingerprint == other.fingerprint:
                raise DocumentError(f"holder '{card.name}' is listed twice; every holder needs its own card")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(cards):
        raise OptionError(f"{{threshold}} {threshold} must be between 1 and the {len(cards)} holders", "threshold")

    tpk, shares = deal(bits, threshold, len(cards), _allow_insecure=allow_insecure)
    public = tpk.public
    th = _threshold_object(tpk, cards)
    pub = seal(PaillierPub(fingerprint=public.fingerprint, key=public.to_dict(), threshold=th), me.identity, me.card)
    out: dict[str, PaillierShare] = {}
    for card, share in zip(cards, shares):
        ephemeral = IdentityKey.generate()  # only the holder can reopen the share, not the dealer
        blob = wrap(
            ephemeral, me.name, card.public.agree_pub, card.name, share.to_bytes(),
            share_context(public.fingerprint, share.index, pub.hash),
        )
        doc = PaillierShare(
            holder=card.name,
            index=share.index,
            fingerprint=public.fingerprint,
            paillier_pub_hash=pub.hash,
            key=public.to_dict(),
            threshold=th,
            # the signed public key travels with the share into every part, so a
            # combiner needs no separate copy of paillier.pub.json
            paillier_pub=pub.wire,
            ephemeral_pub=ephemeral.public().agree_pub,
            wrapped_share=blob,
        )
        out[card.name] = seal(doc, me.identity, me.card)
        del ephemeral, blob
    del shares
    return DealtKey(pub=pub, shares=out, fingerprint=public.fingerprint, threshold=tpk.threshold,
                    holders=tuple(c.name for c in cards))
