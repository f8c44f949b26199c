"""The authority's steps: hold the Paillier key, decrypt only released aggregates, log every release.

Decryption happens only for a release signed by a bureau, under this
authority's key, and every decryption appends a signed, hash-chained entry to
the audit log before the plaintext file is written.

Privacy budget
    A release with bureau-added noise (see :mod:`pprl.protocol.aggregate`)
    carries its mechanism, ε and δ. The audit-log entry of each decrypt
    records them and, per score column, the running budget: the sum of ε
    (and of δ) over every noised release of that column name in the same
    log, this one included. That is basic (sequential) composition, a safe
    upper bound; columns are matched by name across releases, which is
    conservative. A release without noise has no differential-privacy
    guarantee: it adds nothing to the sums, and ``max_epsilon`` refuses it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pprl.protocol.audit import append_entry, read_log, verify_log
from pprl.crypto.paillier.packing import PackingSpec, decrypt_packed, unpack
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    decode_fixed,
    decrypt_vector,
    generate_keypair,
)
from pprl.documents import (
    Card,
    b64d,
    document_hash,
    read_document,
    sign_document,
    verify_document,
    write_atomic,
    write_document,
)
from pprl.errors import (
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    PolicyError,
    PPRLError,
)
from pprl.protocol.identity import PartyKey
from pprl.protocol.threshold.combine import combine_release

__all__ = [
    "KeygenResult",
    "DecryptResult",
    "paillier_keygen",
    "load_paillier_private",
    "decrypt_release",
    "combine_release_parts",
]


@dataclass(frozen=True)
class KeygenResult:
    public_path: Path
    private_path: Path
    fingerprint: str


def paillier_keygen(me: PartyKey, bits: int, directory: str | os.PathLike[str]) -> KeygenResult:
    """Generate the authority's Paillier keypair: a signed public key and a 0600 private key."""
    if me.role != "authority":
        raise KeyFormatError(f"only an authority generates the Paillier key; '{me.name}' is a {me.role}")
    if bits < 2048:
        raise KeyFormatError(f"--bits {bits} is too small; use 2048 or more")
    d = Path(directory)
    private_path = d / "paillier.key"
    if private_path.exists():
        raise DocumentError(f"{private_path}: already exists; refusing to overwrite a Paillier private key")
    public, private = generate_keypair(bits)
    write_document(
        private_path,
        {"kind": "paillier-key", "version": 1, "owner": me.name, "fingerprint": public.fingerprint, **private.to_dict()},
        private=True,
    )
    pub_doc = {"kind": "paillier-pub", "version": 1, "fingerprint": public.fingerprint, "key": public.to_dict()}
    public_path = write_document(d / "paillier.pub.json", sign_document(pub_doc, me.identity, me.card))
    return KeygenResult(public_path=public_path, private_path=private_path, fingerprint=public.fingerprint)


def load_paillier_private(path: str | os.PathLike[str]) -> PaillierPrivateKey:
    """Read the authority's Paillier private key."""
    doc = read_document(path, "paillier-key")
    body = {k: v for k, v in doc.items() if k not in ("kind", "version", "owner", "fingerprint")}
    key = PaillierPrivateKey.from_dict(body)
    if key.public_key.fingerprint != doc.get("fingerprint"):
        raise KeyFormatError(f"{path}: key does not match its fingerprint (damaged)")
    return key


@dataclass(frozen=True)
class DecryptResult:
    path: Path
    entities: int
    audit_entry: int


def decrypt_release(
    me: PartyKey,
    paillier_key: PaillierPrivateKey | str | os.PathLike[str],
    release: str | os.PathLike[str],
    audit_log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cards: Sequence[Card] | None = None,
    progress: bool = False,
    max_epsilon: float | None = None,
) -> DecryptResult:
    """Verify a release, decrypt its per-entity sums, log the release, write the CSV.

    ``max_epsilon``: refuse (PolicyError, nothing written or logged) when the
    running ε of any score column in ``audit_log`` would exceed it, or the
    release carries no noise.
    """
    if me.role != "authority":
        raise KeyFormatError(f"only an authority decrypts releases; '{me.name}' is a {me.role}")
    private = paillier_key if isinstance(paillier_key, PaillierPrivateKey) else load_paillier_private(paillier_key)
    doc = read_document(release, "release")
    verify_document(doc, cards, source=str(release), role="bureau")
    header, payload = doc["header"], doc["payload"]
    if header.get("paillier_fingerprint") != private.public_key.fingerprint:
        raise KeyMismatchError(f"{release}: encrypted under a different Paillier key than this one")
    public = PaillierPublicKey.from_dict(header["paillier_key"])
    if public != private.public_key:
        raise KeyMismatchError(f"{release}: carries a different Paillier key than this one")
    ids = payload["entity_ids"]
    spec = _packing_of(doc, release)
    budget = _privacy_budget(doc, release, audit_log, max_epsilon)
    vectors = {}
    for name in ["packed"] if spec is not None else header["score_columns"]:
        enc = EncryptedVector.from_bytes(public, b64d(payload["sums"][name], f"{release}: sums.{name}"))
        if len(enc) != len(ids):
            raise DocumentError(f"{release}: {len(enc)} sums in '{name}' for {len(ids)} entities")
        vectors[name] = enc
    if spec is not None:
        columns = decrypt_packed(private, vectors["packed"], spec, _summands(doc, release), progress=progress)
    else:
        if header.get("noise") is not None:
            raise DocumentError(f"{release}: release noise needs packed sums")
        columns = np.array([decrypt_vector(private, v, progress=progress) for v in vectors.values()], dtype=object).T
    return _publish(me, doc, columns, audit_log, out, budget)


def combine_release_parts(
    me: PartyKey | None,
    parts: Sequence[str | os.PathLike[str]],
    release: str | os.PathLike[str],
    paillier_public: str | os.PathLike[str] | None,
    audit_log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cards: Sequence[Card] | None = None,
    authority: Card | Sequence[Card] | None = None,
    progress: bool = False,
    max_epsilon: float | None = None,
) -> DecryptResult:
    """Combine T holders' verified partial decryptions of a release; log it and write the CSV.

    ``me`` (an authority) signs the audit entry and opens parts encrypted for
    it; without it the entry is attested by the holders' approvals alone.
    ``paillier_public`` defaults to the public key the parts carry;
    ``authority`` pins its dealer. ``max_epsilon`` as for :func:`decrypt_release`.
    """
    if me is not None and me.role != "authority":
        raise KeyFormatError(f"only an authority combines decryption parts; '{me.name}' is a {me.role}")
    combined = combine_release(parts, release, paillier_public, me=me, cards=cards, authority=authority,
                               progress=progress)
    spec = _packing_of(combined.release, release)
    budget = _privacy_budget(combined.release, release, audit_log, max_epsilon)
    if spec is not None:
        spec.check_key(combined.setup.public.public)  # a spec too big for the key could have wrapped
        columns = unpack(combined.sums["packed"], spec, _summands(combined.release, release))
    else:
        if combined.release["header"].get("noise") is not None:
            raise DocumentError(f"{release}: release noise needs packed sums")
        names = combined.release["header"]["score_columns"]
        columns = np.array([combined.sums[c] for c in names], dtype=object).T
    extra = {
        **budget,
        "threshold": combined.setup.public.threshold,
        "threshold_holders": list(combined.holders),
        "approvals": list(combined.approvals),
    }
    return _publish(me, combined.release, columns, audit_log, out, extra, release_hash=combined.release_hash)


def _packing_of(doc: Mapping[str, Any], source: str | os.PathLike[str]) -> PackingSpec | None:
    """The release's packing spec (None: one ciphertext per column), checked against its columns."""
    header = doc["header"]
    if header.get("packing") is None:
        return None
    if "packed" not in doc["payload"].get("sums", {}):
        raise DocumentError(f"{source}: declares packing but carries no packed sums")
    spec = PackingSpec.from_dict(header["packing"])
    if spec.slots != len(header["score_columns"]) or spec.decimals != int(header["score_decimals"]):
        raise DocumentError(f"{source}: packing spec disagrees with the release's score columns")
    return spec


def _noise_of(doc: Mapping[str, Any], source: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The release's noise parameters (None: no noise), checked for shape."""
    noise = doc["header"].get("noise")
    if noise is None:
        return None
    try:
        eps, delta = float(noise["epsilon"]), float(noise["delta"])
        ok = (
            noise["mechanism"] in ("laplace", "gaussian")
            and math.isfinite(eps) and eps > 0 and 0 <= delta < 1
            and noise["noise_summands"] == 1
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise DocumentError(f"{source}: malformed noise parameters in the release header")
    return dict(noise)


def _summands(doc: Mapping[str, Any], source: str | os.PathLike[str]) -> list[int]:
    """Summands per released sum: the contributors, plus the noise row when the bureau added noise."""
    counts = doc["payload"]["contributors"]
    if _noise_of(doc, source) is None:
        return counts
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise DocumentError(f"{source}: contributor counts must be integers")
    return [c + 1 for c in counts]


def _privacy_budget(
    doc: Mapping[str, Any],
    source: str | os.PathLike[str],
    audit_log: str | os.PathLike[str],
    max_epsilon: float | None,
) -> dict[str, Any]:
    """Audit fields ``noise`` and ``privacy_budget`` (running ε, δ per column, basic composition).

    PolicyError when ``max_epsilon`` is set and the release has no noise or
    would take some column's running ε above it.
    """
    if max_epsilon is not None and (not math.isfinite(max_epsilon) or max_epsilon < 0):
        raise PolicyError("--max-epsilon must be a finite number >= 0")
    noise = _noise_of(doc, source)
    columns = doc["header"]["score_columns"]
    try:
        verify_log(audit_log)
    except PPRLError as exc:
        raise DocumentError(f"refusing to use a damaged audit log: {exc}") from None
    totals = {c: {"epsilon": 0.0, "delta": 0.0} for c in columns}
    for entry in read_log(audit_log):
        previous = entry.get("noise")
        if entry.get("event") != "release" or not isinstance(previous, dict):
            continue
        for c in entry.get("score_columns") or []:
            if c in totals:
                totals[c]["epsilon"] += float(previous.get("epsilon", 0.0))
                totals[c]["delta"] += float(previous.get("delta", 0.0))
    if noise is not None:
        for c in columns:
            totals[c]["epsilon"] += float(noise["epsilon"])
            totals[c]["delta"] += float(noise["delta"])
    if max_epsilon is not None:
        if noise is None:
            raise PolicyError(f"{source}: release carries no noise, so it has no privacy budget to check against --max-epsilon")
        over = [c for c in columns if totals[c]["epsilon"] > max_epsilon * (1 + 1e-12)]
        if over:
            raise PolicyError(
                f"{source}: refused: the running epsilon of {over[0]} would be {totals[over[0]]['epsilon']:g}, "
                f"above --max-epsilon {max_epsilon:g}"
            )
    return {"noise": noise, "privacy_budget": totals, "composition": "basic (sum of epsilon and delta per column)"}


def _publish(
    me: PartyKey | None,
    doc: Mapping[str, Any],
    sums: np.ndarray,
    audit_log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    extra: Mapping[str, Any],
    *,
    release_hash: str | None = None,
) -> DecryptResult:
    """Log a decrypted release in the audit log, then write its CSV: the one way plaintext leaves."""
    header, payload = doc["header"], doc["payload"]
    ids, counts, columns = payload["entity_ids"], payload["contributors"], header["score_columns"]
    decimals = int(header["score_decimals"])
    plain = {column: decode_fixed(list(sums[:, j]), decimals) for j, column in enumerate(columns)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["entity_id", "contributors", *[f"{c}_sum" for c in columns]])
    for i, entity in enumerate(ids):
        writer.writerow([entity, counts[i], *[str(plain[c][i]) for c in columns]])
    data = buffer.getvalue().encode("utf-8")
    entry = append_entry(
        audit_log,
        None if me is None else me.identity,
        None if me is None else me.card,
        "release",
        {
            "release_hash": release_hash or document_hash(doc),
            "linkage_hash": header.get("linkage_hash"),
            "bureau": doc["signer"]["name"],
            "paillier_fingerprint": header["paillier_fingerprint"],
            "entities": len(ids),
            "score_columns": columns,
            "min_contributors": header.get("min_contributors"),
            "packing": header.get("packing"),
            "output_sha256": hashlib.sha256(data).hexdigest(),
            **extra,
        },
    )
    path = write_atomic(out, data)
    return DecryptResult(path=path, entities=len(ids), audit_entry=int(entry["seq"]))
