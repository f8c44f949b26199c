"""The bureau's second step: sum ciphertexts per linked entity into a release for the authority.

Each record's scores travel packed in one ciphertext, so one homomorphic sum
per entity adds every column at once. The release payload's ``sums`` holds
one entry, ``packed``; its header carries the packing spec the authority
needs to unpack the column sums. When the platforms packed several records
per ciphertext (``pprl submit --records-per-ciphertext``), each record is
first aligned onto the spec's target slots and every sum gets fresh masks
over the other records' slots (:mod:`pprl.crypto.paillier.packing_records`).

Only entities with enough contributing platforms are released. The bureau
never holds a key that opens the sums; the release carries ciphertexts only.

Release noise (optional, ``noise="laplace"`` or ``"gaussian"``)
    Needs every submission to declare the same clip range for every score
    column (``pprl submit --clip``). Each platform contributes at most one
    record per entity, so one person's record changes an entity's column sum
    by at most Δ = max(|lo|, |hi|) (fixed-point units). Per released entity
    and column the bureau samples integer noise (discrete Laplace with scale
    Δ/ε, or discrete Gaussian with σ from the classic bound
    sqrt(2 ln(1.25/δ))·Δ/ε), packs the noise values as one extra packed
    row (slot offset B, count slot 1) and adds its encryption to the
    entity's sum. The noise is thus one more "summand": the release
    declares it, and the authority unpacks with contributors + 1 summands.
    So that the packing headroom holds, a noise value is clipped to ±B, and
    parameters are refused unless that clipping has probability < 2^-64
    per value (B ≥ 45·scale for Laplace, B ≥ 10·σ for Gaussian): the
    clipping never happens in practice and the headroom proof stays intact.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pprl.crypto.noise import discrete_gaussian, discrete_laplace, gaussian_sigma
from pprl.crypto.paillier.packing import PackingSpec, pack_rows
from pprl.crypto.paillier.packing_records import blinding_vector, record_addresses, sum_records
from pprl.crypto.paillier.vector import EncryptedVector, encode_fixed
from pprl.documents import Card, b64e, document_hash, sign_document, write_document
from pprl.errors import DocumentError, PolicyError
from pprl.protocol.link import check_consistent, load_linkage, load_submission, paillier_key_of
from pprl.protocol.identity import PartyKey

__all__ = ["NOISE_MECHANISMS", "ReleaseResult", "aggregate"]

NOISE_MECHANISMS = ("laplace", "gaussian")
#: Refuse noise whose chance of exceeding the packing bound B is not below 2^-64 per value.
_LAPLACE_TAIL = 45  # exp(-45) < 2^-64
_GAUSSIAN_TAIL = 10  # exp(-10^2 / 2) < 2^-64


@dataclass(frozen=True)
class ReleaseResult:
    """What ``aggregate`` wrote and how many entities it released and held back."""

    path: Path
    released: int
    suppressed: int


def aggregate(
    me: PartyKey,
    linkage: str | os.PathLike[str],
    submissions: Sequence[str | os.PathLike[str]],
    min_contributors: int,
    out: str | os.PathLike[str],
    *,
    cards: Sequence[Card] | None = None,
    noise: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    progress: bool = False,
) -> ReleaseResult:
    """Sum each score column per entity under encryption; release only well-supported entities.

    With ``noise`` ("laplace" or "gaussian", with ``epsilon`` and for
    gaussian ``delta``), add differentially private integer noise to each
    released sum under encryption (see the module docstring). Submissions
    with several records per ciphertext are aligned and masked on the way
    (:mod:`pprl.crypto.paillier.packing_records`); ``progress`` shows that work.
    """
    if min_contributors < 1:
        raise PolicyError("--min-contributors must be at least 1")
    _check_noise_args(noise, epsilon, delta)
    link_doc = load_linkage(linkage, [me.card])
    subs = {s.platform: s for s in (load_submission(p, cards) for p in submissions)}
    expected = {e["platform"]: e["hash"] for e in link_doc["header"]["submissions"]}
    for platform, digest in expected.items():
        if platform not in subs:
            raise DocumentError(f"{linkage}: links a submission from '{platform}' that was not given")
        if subs[platform].hash != digest:
            raise DocumentError(f"{subs[platform].path}: is not the submission the linkage was built from")
    for platform, sub in subs.items():
        if platform not in expected:
            raise DocumentError(f"{sub.path}: not part of linkage {linkage}")
    ordered = [subs[p] for p in expected]
    check_consistent(ordered)
    columns = ordered[0].header["score_columns"]
    for s in ordered:
        if s.header["score_columns"] != columns:
            raise DocumentError(f"{s.path}: score columns {s.header['score_columns']} differ from {ordered[0].path}'s {columns}")
        if s.header["score_decimals"] != ordered[0].header["score_decimals"]:
            raise DocumentError(f"{s.path}: score precision differs from {ordered[0].path}'s")
    if not columns:
        raise PolicyError("the submissions carry no score columns (linkage-only); nothing to aggregate")
    fingerprint = ordered[0].header["paillier_fingerprint"]

    spec = PackingSpec.from_dict(ordered[0].header["packing"])
    key = paillier_key_of(ordered[0])
    spec.check_key(key)  # a submission's spec must fit the key before anything is summed under it
    addresses, position = {}, 0
    for s in ordered:
        count = -(-len(s.tokens) // spec.records_per_ciphertext)
        if len(s.scores["packed"]) != count * key.ciphertext_bytes:
            raise DocumentError(
                f"{s.path}: encrypted scores are not {count} ciphertexts for {len(s.tokens)} records at "
                f"{spec.records_per_ciphertext} records per ciphertext"
            )
        addresses[s.platform] = record_addresses(position, len(s.tokens), spec)
        position += count
    token_index = {s.platform: {t: i for i, t in enumerate(s.tokens)} for s in ordered}
    released_ids, contributors, groups = [], [], []
    suppressed = 0
    for entity in link_doc["payload"]["entities"]:
        members = entity["members"]
        if len({m[0] for m in members}) < min_contributors:
            suppressed += 1
            continue
        try:
            groups.append([addresses[p][token_index[p][t]] for p, t, _ in members])
        except KeyError:
            raise DocumentError(f"{linkage}: entity {entity['entity_id']} names a token no submission has") from None
        released_ids.append(entity["entity_id"])
        contributors.append(len(members))

    clip = _common_clip(ordered)
    policy = None
    if noise is not None:
        policy = _noise_policy(noise, epsilon, delta, clip, columns, ordered, spec)
    extra = 1 if policy is not None else 0
    if any(c + extra > spec.max_summands for c in contributors):
        raise PolicyError(
            f"an entity has more than {spec.max_summands - extra} records"
            + (" (plus the noise row)" if extra else "") + ", beyond the packing's headroom"
        )
    vectors = [EncryptedVector.from_bytes(key, s.scores["packed"]) for s in ordered]
    summed = sum_records(EncryptedVector.concat(vectors), groups, spec, progress=progress)
    if released_ids and (policy is not None or spec.records_per_ciphertext > 1):
        noise_rows = _noise_rows(spec, policy, columns, len(released_ids)) if policy is not None else None
        summed = summed + blinding_vector(key, spec, len(released_ids), noise_rows, progress=progress)
    sums = {"packed": b64e(summed.to_bytes())}
    doc = {
        "kind": "release",
        "version": 1,
        "header": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "linkage_hash": document_hash(link_doc),
            "paillier_fingerprint": fingerprint,
            "paillier_key": key.to_dict(),
            "score_columns": columns,
            "score_decimals": ordered[0].header["score_decimals"],
            "packing": spec.to_dict(),
            "min_contributors": min_contributors,
            "clip": clip,
            "noise": policy,
            "entities": len(released_ids),
            "suppressed": suppressed,
        },
        "payload": {"entity_ids": released_ids, "contributors": contributors, "sums": sums},
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    return ReleaseResult(path=path, released=len(released_ids), suppressed=suppressed)


def _check_noise_args(noise: str | None, epsilon: float | None, delta: float | None) -> None:
    """PolicyError for an incoherent noise request (before any file is read)."""
    if noise is None:
        if epsilon is not None or delta is not None:
            raise PolicyError("--epsilon/--delta need --noise laplace|gaussian")
        return
    if noise not in NOISE_MECHANISMS:
        raise PolicyError(f"--noise must be one of {', '.join(NOISE_MECHANISMS)}, not '{noise}'")
    if epsilon is None or not math.isfinite(epsilon) or epsilon <= 0:
        raise PolicyError(f"--noise {noise} needs a finite --epsilon > 0")
    if noise == "laplace" and delta not in (None, 0, 0.0):
        raise PolicyError("--noise laplace is pure epsilon-DP; --delta applies only to --noise gaussian")
    if noise == "gaussian" and (delta is None or not 0 < delta < 1):
        raise PolicyError("--noise gaussian needs --delta in (0, 1)")


def _common_clip(ordered: Sequence[Any]) -> dict[str, list[str]] | None:
    """The clip ranges every submission declares, or None if they differ or some declare none."""
    first = ordered[0].header.get("clip") or {}
    for s in ordered[1:]:
        if (s.header.get("clip") or {}) != first:
            return None
    return dict(first) or None


def _noise_policy(
    noise: str,
    epsilon: float | None,
    delta: float | None,
    clip: Mapping[str, list[str]] | None,
    columns: Sequence[str],
    ordered: Sequence[Any],
    spec: PackingSpec,
) -> dict[str, Any]:
    """The release header's noise parameters; PolicyError when they cannot be honoured."""
    missing = [c for c in columns if clip is None or c not in clip]
    if missing:
        declared = {json.dumps(s.header.get("clip") or {}, sort_keys=True) for s in ordered}
        why = ("the submissions declare different clip ranges" if len(declared) > 1
               else f"no clip range declared for {', '.join(missing)}")
        raise PolicyError(
            f"noise needs every submission to declare the same clip range for every score column "
            f"(pprl submit --clip COL=LO:HI): {why}"
        )
    eps = float(epsilon)  # checked by _check_noise_args
    decimals = spec.decimals
    sensitivity: dict[str, int] = {}
    for c in columns:
        lo, hi = encode_fixed(clip[c], decimals)
        sensitivity[c] = max(abs(lo), abs(hi))
    params: dict[str, dict[str, Any]] = {}
    for c in columns:
        if noise == "laplace":
            scale = Fraction(sensitivity[c]) / Fraction(repr(eps))
            if _LAPLACE_TAIL * scale > spec.bound:
                raise PolicyError(f"noise scale for '{c}' is too large for the packing bound; raise --epsilon")
            params[c] = {"scale": str(scale), "scale_float": float(scale)}
        else:
            sigma2 = gaussian_sigma(sensitivity[c], eps, float(delta))
            if _GAUSSIAN_TAIL**2 * sigma2 > spec.bound**2:
                raise PolicyError(f"noise sigma for '{c}' is too large for the packing bound; raise --epsilon")
            params[c] = {"sigma2": str(sigma2), "sigma": math.sqrt(sigma2)}
    return {
        "mechanism": noise,
        "epsilon": eps,
        "delta": float(delta) if noise == "gaussian" else 0.0,
        "bound": "classic: sigma = sqrt(2 ln(1.25/delta)) * sensitivity / epsilon" if noise == "gaussian"
                 else "scale = sensitivity / epsilon",
        "sensitivity_fixed": sensitivity,
        "parameters": params,
        "clip": {c: list(clip[c]) for c in columns},
        "units": f"fixed point, 10^-{decimals}",
        "noise_summands": 1,
    }


def _noise_rows(
    spec: PackingSpec, policy: Mapping[str, Any], columns: Sequence[str], entities: int
) -> list[int]:
    """One packed noise row per released entity (noise clipped to ±B, count slot 1), not yet encrypted."""
    b = spec.bound
    matrix = np.empty((entities, len(columns)), dtype=object)
    for j, c in enumerate(columns):
        p = policy["parameters"][c]
        if policy["mechanism"] == "laplace":
            scale = Fraction(p["scale"])
            draw = [discrete_laplace(scale) for _ in range(entities)]
        else:
            sigma2 = Fraction(p["sigma2"])
            draw = [discrete_gaussian(sigma2) for _ in range(entities)]
        matrix[:, j] = [min(max(v, -b), b) for v in draw]
    return pack_rows(matrix, spec.single())
