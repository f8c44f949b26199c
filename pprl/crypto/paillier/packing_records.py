"""Several records in one Paillier ciphertext, summed per entity without any extra round.

R records share one plaintext in an interleaved layout with masking room per
slot. The bureau aligns each record onto common target slots (raising its
ciphertext to a power of two, :func:`sum_records`) and masks everything but the
targets under one fresh encryption per entity (:func:`blinding_vector`).

Design, layout and proof: docs/design.md#several-records-per-ciphertext
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pprl.crypto.montexp import powmod_many
from pprl.crypto.paillier.engine import encrypt_raw, run_chunked
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey
from pprl.errors import DataValidationError, DecryptionError

if TYPE_CHECKING:
    from pprl.crypto.paillier.packing import PackingSpec

__all__ = [
    "pack_records",
    "extract_targets",
    "record_addresses",
    "sum_records",
    "blinding_plaintexts",
    "blinding_vector",
]


def _spread(standard: int, spec: PackingSpec, slot: int) -> int:
    """A one-record packed value (F fields of s bits) laid out at ``slot`` of the interleaved layout."""
    s, w, r = spec.slot_bits, spec.position_bits, spec.records_per_ciphertext
    field_mask = (1 << s) - 1
    out = 0
    for f in range(spec.fields):
        out |= ((standard >> (f * s)) & field_mask) << (w * (f * r + slot))
    return out


def pack_records(standard: Sequence[int], spec: PackingSpec) -> list[int]:
    """One plaintext per R consecutive one-record packed values (the last one zero-filled)."""
    r = spec.records_per_ciphertext
    out = []
    for start in range(0, len(standard), r):
        value = 0
        for j, x in enumerate(standard[start : start + r]):
            value |= _spread(int(x), spec, j)
        out.append(value)
    return out


def extract_targets(values: Sequence[int], spec: PackingSpec) -> list[int]:
    """Aligned, masked sums -> one-record packed values (the targets), for ``spec.single()``.

    DecryptionError (position only) when a plaintext exceeds the layout or a
    target's guard bits are set: tampered, foreign, or not aligned by this spec.
    """
    s, w, r = spec.slot_bits, spec.position_bits, spec.records_per_ciphertext
    limit, mask = 1 << spec.total_bits, (1 << w) - 1
    out = []
    for i, x in enumerate(values):
        x = int(x)
        if not 0 <= x < limit:
            raise DecryptionError(
                f"packed value at position {i + 1} is out of range: tampered or not made under this key"
            )
        standard = 0
        for f in range(spec.fields):
            target = (x >> (w * (f * r + r - 1))) & mask
            if target >> s:
                raise DecryptionError(
                    f"packed value at position {i + 1}, slot {f + 1} exceeds its headroom: "
                    "the records were not aligned under this packing spec, or it was tampered with"
                )
            standard |= target << (f * s)
        out.append(standard)
    return out


def record_addresses(ciphertext_offset: int, records: int, spec: PackingSpec) -> range:
    """Addresses of a submission's records whose ciphertexts start at ``ciphertext_offset``.

    Address = ciphertext index · R + slot; with R = 1 it is the ciphertext index.
    """
    r = spec.records_per_ciphertext
    return range(ciphertext_offset * r, ciphertext_offset * r + records)


def _align_chunk(arg: tuple[int, int], items: Sequence[tuple[Any, tuple[int, ...]]]) -> list[list[Any]]:
    """Per (ciphertext, ascending shifts): the ciphertext raised to 2^(shift·w) for each shift.

    Each ciphertext's shifts are reached one after the other (2^(Δ·w) from the
    previous one); ciphertexts taking the same step share one
    :func:`~pprl.crypto.montexp.powmod_many` batch (AVX-512 IFMA when available).
    """
    n2, w = arg
    current = [c for c, _ in items]
    done = [0] * len(items)
    out: list[list[Any]] = [[] for _ in items]
    for step in range(max((len(shifts) for _, shifts in items), default=0)):
        batches: dict[int, list[int]] = {}
        for i, (_, shifts) in enumerate(items):
            if step < len(shifts):
                batches.setdefault(shifts[step] - done[i], []).append(i)
        for delta, members in batches.items():
            if delta:
                raised = powmod_many([current[i] for i in members], 1 << (w * delta), n2)
                for i, value in zip(members, raised, strict=True):
                    current[i] = value
            for i in members:
                done[i] += delta
                out[i].append(current[i])
    return out


def sum_records(
    enc: EncryptedVector,
    groups: Sequence[Sequence[int]],
    spec: PackingSpec,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> EncryptedVector:
    """One ciphertext per group of record addresses: the group's records aligned on the targets and summed.

    With one record per ciphertext this is :meth:`EncryptedVector.sum_groups`.
    Otherwise the result still needs :func:`blinding_vector` added before
    anyone decrypts it (it carries other records' slots around the targets).
    """
    r = spec.records_per_ciphertext
    if r == 1:
        return enc.sum_groups(groups)
    cts = enc.ciphertexts
    limit = len(cts) * r
    wanted: dict[int, set[int]] = {}
    checked: list[list[int]] = []
    for g_pos, group in enumerate(groups, start=1):
        row = []
        for a in group:
            if isinstance(a, bool | np.bool_) or not isinstance(a, int | np.integer) or not 0 <= a < limit:
                raise DataValidationError(f"group {g_pos} has a record address outside 0..{limit - 1}")
            row.append(int(a))
            wanted.setdefault(int(a) // r, set()).add(r - 1 - int(a) % r)
        checked.append(row)
    order = sorted(wanted)
    items = [(cts[c], tuple(sorted(wanted[c]))) for c in order]
    rows = run_chunked(
        _align_chunk, (enc.public_key.nsquare, spec.position_bits), items,
        workers=workers, progress=progress, desc="align",
    )
    position: dict[int, int] = {}
    aligned: list[Any] = []
    for c, (_, shifts), row in zip(order, items, rows, strict=True):
        for t, value in zip(shifts, row, strict=True):
            position[c * r + (r - 1 - t)] = len(aligned)
            aligned.append(value)
    remapped = [[position[a] for a in group] for group in checked]
    return EncryptedVector._trusted(enc.public_key, aligned).sum_groups(remapped)


def blinding_plaintexts(spec: PackingSpec, count: int, noise: Sequence[int] | None = None) -> list[int]:
    """Per aggregate: fresh uniform masks over every garbage region, plus ``noise[i]`` on the targets.

    ``noise`` holds one-record packed values (as :func:`~pprl.crypto.paillier.packing.pack_rows`
    makes them for ``spec.single()``) or None.
    """
    if noise is not None and len(noise) != count:
        raise DataValidationError(f"{len(noise)} noise rows for {count} aggregates")
    r, w = spec.records_per_ciphertext, spec.position_bits
    out = []
    for i in range(count):
        value = _spread(int(noise[i]), spec, r - 1) if noise is not None else 0
        if r > 1:
            mask_bits = (r - 2) * w + spec.slot_bits + spec.mask_bits
            for f in range(spec.fields + 1):
                value += secrets.randbits(mask_bits) << (w * f * r)
        out.append(value)
    return out


def blinding_vector(
    public_key: PaillierPublicKey,
    spec: PackingSpec,
    count: int,
    noise: Sequence[int] | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> EncryptedVector:
    """:func:`blinding_plaintexts`, each under fresh encryption (this also re-randomises the sums)."""
    plain = blinding_plaintexts(spec, count, noise)
    out = encrypt_raw(public_key, plain, workers=workers, progress=progress, desc="mask")
    return EncryptedVector._trusted(public_key, out)
