"""The authority's steps: hold the Paillier key, decrypt only released aggregates, log every release.

Decryption happens only for a release signed by a bureau, under this
authority's key, and every decryption appends a signed, hash-chained entry to
the audit log before the plaintext file is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pprl.audit import append_entry
from pprl.crypto.packing import PackingSpec, decrypt_packed, unpack
from pprl.crypto.paillier import (
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
from pprl.errors import DocumentError, KeyFormatError, KeyMismatchError
from pprl.parties.identity import PartyKey
from pprl.parties.threshold import combine_release, load_threshold_public

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
) -> DecryptResult:
    """Verify a release, decrypt its per-entity sums, log the release, write the CSV."""
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
    vectors = {}
    for name in ["packed"] if spec is not None else header["score_columns"]:
        enc = EncryptedVector.from_bytes(public, b64d(payload["sums"][name], f"{release}: sums.{name}"))
        if len(enc) != len(ids):
            raise DocumentError(f"{release}: {len(enc)} sums in '{name}' for {len(ids)} entities")
        vectors[name] = enc
    if spec is not None:
        columns = decrypt_packed(private, vectors["packed"], spec, payload["contributors"], progress=progress)
    else:
        columns = np.array([decrypt_vector(private, v, progress=progress) for v in vectors.values()], dtype=object).T
    return _publish(me, doc, columns, audit_log, out, {})


def combine_release_parts(
    me: PartyKey,
    parts: Sequence[str | os.PathLike[str]],
    release: str | os.PathLike[str],
    paillier_public: str | os.PathLike[str],
    audit_log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cards: Sequence[Card] | None = None,
    progress: bool = False,
) -> DecryptResult:
    """Combine T holders' verified partial decryptions of a release; log it and write the CSV."""
    if me.role != "authority":
        raise KeyFormatError(f"only an authority combines decryption parts; '{me.name}' is a {me.role}")
    combined = combine_release(parts, release, paillier_public, me=me, cards=cards, progress=progress)
    spec = _packing_of(combined.release, release)
    if spec is not None:
        columns = unpack(combined.sums["packed"], spec, combined.release["payload"]["contributors"])
    else:
        names = combined.release["header"]["score_columns"]
        columns = np.array([combined.sums[c] for c in names], dtype=object).T
    setup = load_threshold_public(paillier_public)
    extra = {"threshold": setup.public.threshold, "threshold_holders": list(combined.holders)}
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


def _publish(
    me: PartyKey,
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
        me.identity,
        me.card,
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
