"""Several records in one Paillier ciphertext, summed per entity without any extra round.

Why
    A ciphertext is 2·|n| bits whatever it holds. With one record per
    ciphertext (:mod:`pprl.crypto.paillier.packing`) a submission costs 512 bytes per
    record at 2048 bits; packing R records per ciphertext divides both the
    platform's upload and its encryption work by R. The bureau must still
    add each *record* into its own entity's sum. It can do that alone,
    because multiplying a plaintext by 2^t (raising the ciphertext to 2^t)
    shifts every slot up by t bits: it shifts each record's slots onto one
    common *target* position, and masks whatever else lands around them.

Layout (R records, F = k value slots + count slot, slot width s)
    Each slot position is w = s + σ + 1 bits wide (σ = ``mask_bits``, 40).
    Field f of the record in slot j (0 ≤ j < R) sits at position f·R + j:
    the fields are interleaved, so aligning a record moves it by at most
    (R - 1)·w bits, not (R - 1)·F·w. A platform's ciphertext c holds
    records c·R … c·R + R - 1 of its (shuffled) submission; unused slots
    of the last ciphertext are zero.

Aligning and summing (the bureau)
    Record j of a ciphertext is raised to 2^((R-1-j)·w): its field f lands on
    the target position f·R + R - 1. Another slot i of the same ciphertext
    lands on f·R + i + R - 1 - j, which is a target only when i = j (a shift
    of at most R - 1 positions cannot reach the next field's target). So
    after summing m aligned records, each target holds exactly the sum of the
    entity's records for its field, below 2^s by the headroom proof of
    :class:`~pprl.crypto.paillier.packing.PackingSpec`, and the positions between
    targets hold sums of *other* records' fields ("garbage").

Masks (what the key holder may not see)
    The garbage lies in F + 1 regions of R - 1 positions each: below every
    target (positions f·R … f·R + R - 2, f = 0 … F - 1) and above the last one
    (f = F). Each region's garbage is below 2^((R-2)·w + s), since every
    position holds less than 2^s. The bureau adds, under one fresh
    encryption per entity, a uniform mask in [0, 2^((R-2)·w + s + σ)) to
    every region. Garbage plus mask stays below 2^((R-1)·w), so nothing
    carries into a target, and the masked region is within statistical
    distance 2^-σ of a value independent of the garbage. The key holder
    therefore learns the targets (the aggregate, as with one record per
    ciphertext) and, per region, nothing but negligible statistical bias
    (over a whole release, by the union bound, at most (F + 1)·E·2^-σ for
    E entities: below 2^-21 for 100,000 entities with σ = 40; a spec may
    set a larger ``mask_bits`` at the cost of fewer records per ciphertext).
    The same encryption carries the release noise, if any, on the targets.
    The largest plaintext is below 2^((F·R + R - 1)·w), which
    ``PackingSpec.check_key`` keeps at most |n| - 3 bits, so nothing wraps.

Costs (2048-bit key, the consortium's 4 slots of 44 bits: R ≤ 5)
    Platform: 1/R of the encryptions and bytes (5 records = 15 values per
    512-byte ciphertext, about 34 bytes per value). Bureau: (R - 1)·w
    modular squarings per ciphertext (340 for R = 5: 1.3 ms with gmpy2, 0.5 ms
    on AVX-512 IFMA, see :mod:`pprl.crypto.montexp`) to align
    its records, plus one encryption per entity for the masks. Key holder:
    the aggregate is larger than p, so decryption needs both CRT halves
    (about twice the one-record case, which decrypts mod p only). The trust
    model is unchanged: an honest-but-curious bureau, which could always
    add any plaintext it likes under the public key.
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
