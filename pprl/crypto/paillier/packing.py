"""Several score columns in one Paillier plaintext ("packing"), with proven headroom.

A record's k fixed-point score columns (|v| ≤ B) become one plaintext of
offset slots, ``P = Σ_j (v_j + B) · 2^(j·s)``, optionally with a count slot.
:class:`PackingSpec` refuses parameters for which a sum of up to
``max_summands`` records could carry or wrap; :func:`unpack` needs the number of
records summed. Several records per ciphertext:
:mod:`pprl.crypto.paillier.packing_records`. Dict form (in submission and release
headers): ``{"scheme": "pprl-pack", "version": 1, "slots", "slot_bits", "bound",
"max_summands", "decimals", "count_slot"}``, plus ``"records_per_ciphertext"``
and ``"mask_bits"`` when R > 1, or ``"maskable": true`` and ``"mask_bits"`` for
one record per ciphertext with masking room per slot (so that a reader can be
kept from a column: :func:`column_masks`).

Design and headroom proof: docs/design.md#packing-score-columns
"""

from __future__ import annotations

import numbers
import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from pprl.crypto.paillier.engine import (
    decrypt_chunk,
    decrypt_chunk_mod_p,
    encrypt_raw,
    run_chunked,
)
from pprl.crypto.paillier.fixedpoint import MAX_DECIMALS, encode_fixed
from pprl.crypto.paillier.packing_records import extract_targets, pack_records
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPrivateKey, PaillierPublicKey
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    DocumentError,
    KeyMismatchError,
    PolicyError,
)

__all__ = [
    "PackingSpec",
    "fixed_bound",
    "pack_rows",
    "unpack",
    "encrypt_packed",
    "decrypt_packed",
    "mask_sums",
    "column_masks",
    "unmask_packed",
]

_SCHEME = "pprl-pack"
#: Bits of margin below p required for mod-p-only decryption (garbage detection 1 - 2^-64).
_MOD_P_MARGIN = 64
#: Statistical hiding of the masks over other records' slots (distance < 2^-40 per masked region).
MASK_BITS = 40
#: Upper limit on records per ciphertext (a 4096-bit key holds about 10 with the consortium's slots).
MAX_RECORDS_PER_CIPHERTEXT = 16


def _int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)


@dataclass(frozen=True)
class PackingSpec:
    """How k fixed-point columns share one plaintext; validated on construction.

    ``slots`` = k columns, ``slot_bits`` = s, ``bound`` = B (max |value| after
    fixed-point encoding, also the offset), ``max_summands`` = M (most
    records one aggregate may sum), ``decimals`` = the fixed-point scale,
    ``count_slot`` = carry the number of summed records in an extra slot,
    ``maskable`` = give each slot ``mask_bits + 1`` bits of room with one record
    per ciphertext too (several records per ciphertext always have it), so
    whoever adds the masks can hide a column from the reader of the sum
    (:func:`column_masks`). PolicyError if 2·B·M ≥ 2^s (a sum could carry
    into the next slot).
    """

    slots: int
    slot_bits: int
    bound: int
    max_summands: int
    decimals: int = 0
    count_slot: bool = False
    records_per_ciphertext: int = 1
    mask_bits: int = MASK_BITS
    maskable: bool = False

    def __post_init__(self) -> None:
        for name in ("slots", "slot_bits", "bound", "max_summands", "decimals", "records_per_ciphertext", "mask_bits"):
            value = getattr(self, name)
            if not _int(value):
                raise DataValidationError(f"packing spec field '{name}' must be an integer")
            object.__setattr__(self, name, int(value))
        if self.slots < 1 or self.slot_bits < 1 or self.max_summands < 1 or self.bound < 0:
            raise DataValidationError(
                "packing spec needs slots, slot_bits and max_summands >= 1 and bound >= 0"
            )
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise DataValidationError(f"packing spec decimals must be 0..{MAX_DECIMALS}")
        for name in ("count_slot", "maskable"):
            if not isinstance(getattr(self, name), bool):
                raise DataValidationError(f"packing spec field '{name}' must be true or false")
        if not 1 <= self.records_per_ciphertext <= MAX_RECORDS_PER_CIPHERTEXT:
            raise DataValidationError(
                f"packing spec records_per_ciphertext must be 1..{MAX_RECORDS_PER_CIPHERTEXT}"
            )
        if self.records_per_ciphertext > 1:  # always roomy; one spelling of it
            object.__setattr__(self, "maskable", False)
        if self.mask_bits < MASK_BITS:
            raise PolicyError(f"packing spec refused: mask_bits below {MASK_BITS} hides too little")
        need = self.required_slot_bits(self.bound, self.max_summands)
        if self.slot_bits < need:
            raise PolicyError(
                f"packing spec refused: a sum of {self.max_summands} values of magnitude up to "
                f"{self.bound} needs {need}-bit slots, not {self.slot_bits} (it could overflow)"
            )

    @staticmethod
    def required_slot_bits(bound: int, max_summands: int) -> int:
        """Smallest s with 2·B·M < 2^s, i.e. bitlen(2·B·M) (at least 1)."""
        return max(1, (2 * int(bound) * int(max_summands)).bit_length())

    @classmethod
    def plan(
        cls,
        bound: int,
        slots: int,
        max_summands: int,
        *,
        key: PaillierPublicKey | int | None = None,
        decimals: int = 0,
        count_slot: bool = False,
        records_per_ciphertext: int = 1,
        maskable: bool = False,
    ) -> PackingSpec:
        """The tightest spec for these limits, checked against ``key`` (or its bit length) if given.

        PolicyError when the k slots (times ``records_per_ciphertext``, see
        :mod:`pprl.crypto.paillier.packing_records`) cannot fit the key's plaintext space.
        """
        if not (_int(bound) and _int(max_summands)):
            raise DataValidationError("bound and max_summands must be integers")
        s_bits = cls.required_slot_bits(bound, max_summands)
        spec = cls(slots, s_bits, bound, max_summands, decimals, count_slot, records_per_ciphertext,
                   maskable=maskable)
        if key is not None:
            spec.check_key(key)
        return spec

    @property
    def offset(self) -> int:
        """Added to every value before packing (= ``bound``)."""
        return self.bound

    @property
    def fields(self) -> int:
        """Slots per record: the k value slots plus the count slot if any."""
        return self.slots + self.count_slot

    @property
    def roomy(self) -> bool:
        """Slot positions have masking room (several records per ciphertext, or ``maskable``)."""
        return self.records_per_ciphertext > 1 or self.maskable

    @property
    def position_bits(self) -> int:
        """Width of one slot position: s, or s + mask_bits + 1 with masking room (see :attr:`roomy`)."""
        if not self.roomy:
            return self.slot_bits
        return self.slot_bits + self.mask_bits + 1

    @property
    def total_bits(self) -> int:
        """Every packed plaintext and admissible (masked) sum is below 2^total_bits.

        ((k + count slot)·R + R - 1) positions for R records per ciphertext
        (see :mod:`pprl.crypto.paillier.packing_records`); for R = 1, (k + count slot) positions.
        """
        r = self.records_per_ciphertext
        return (self.fields * r + r - 1) * self.position_bits

    def single(self) -> PackingSpec:
        """The same slots, one record per ciphertext, no room: the layout a decoded aggregate is read in."""
        return replace(self, records_per_ciphertext=1, maskable=False)

    def max_records_per_ciphertext(self, key: PaillierPublicKey | int) -> int:
        """The largest records_per_ciphertext this key's plaintext space holds (0 if none)."""
        best = 0
        for r in range(1, MAX_RECORDS_PER_CIPHERTEXT + 1):
            if replace(self, records_per_ciphertext=r, maskable=self.maskable and r == 1).total_bits <= _bits_of(key) - 3:
                best = r
        return best

    def check_key(self, key: PaillierPublicKey | int) -> None:
        """PolicyError unless total_bits ≤ |n| - 3 for this key (or bit length)."""
        bits = _bits_of(key)
        if self.total_bits > bits - 3:
            room = ""
            if self.records_per_ciphertext > 1:
                room = (f" ({self.records_per_ciphertext} records per ciphertext; this key holds at most "
                        f"{self.max_records_per_ciphertext(bits)})")
            raise PolicyError(
                f"packing spec refused: {self.fields} slots of {self.slot_bits} bits need "
                f"{self.total_bits} bits, a {bits}-bit key holds at most {bits - 3}{room}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, see the module docstring (one record per ciphertext: no layout fields)."""
        d = {"scheme": _SCHEME, "version": 1, **asdict(self)}
        if self.records_per_ciphertext == 1:
            del d["records_per_ciphertext"]
            if not self.maskable:
                del d["mask_bits"]
        if not self.maskable or self.records_per_ciphertext > 1:
            del d["maskable"]
        return d

    @classmethod
    def from_dict(cls, d: object) -> PackingSpec:
        """Parse :meth:`to_dict` output (DocumentError if malformed, PolicyError if unsafe)."""
        if not isinstance(d, dict) or d.get("scheme") != _SCHEME or d.get("version") != 1:
            raise DocumentError("not a pprl-pack version 1 packing spec")
        fields = ("slots", "slot_bits", "bound", "max_summands", "decimals")
        optional = {"count_slot": False, "records_per_ciphertext": 1, "mask_bits": MASK_BITS, "maskable": False}
        if not {"scheme", "version", *fields} <= set(d) <= {"scheme", "version", *fields, *optional}:
            raise DocumentError(f"packing spec must have the fields scheme, version, {', '.join(fields)}")
        if "maskable" in d and (d["maskable"] is not True or "records_per_ciphertext" in d):
            raise DocumentError("packing spec: maskable is given only as true, with one record per ciphertext")
        roomy = "records_per_ciphertext" in d or "maskable" in d
        if roomy != ("mask_bits" in d) or d.get("records_per_ciphertext") == 1:
            raise DocumentError("packing spec: records_per_ciphertext (above 1) and mask_bits go together")
        try:
            return cls(*(d[f] for f in fields), **{f: d.get(f, v) for f, v in optional.items()})
        except DataValidationError as exc:
            raise DocumentError(f"packing spec: {exc}") from None


def _bits_of(key: PaillierPublicKey | int) -> int:
    bits = key.bits if isinstance(key, PaillierPublicKey) else key
    if not _int(bits):
        raise DataValidationError("check_key needs a PaillierPublicKey or a bit length")
    return int(bits)


def fixed_bound(max_abs: str | float | int, decimals: int) -> int:
    """B for scores with |score| ≤ ``max_abs`` at ``decimals`` (rounding is monotone, so exact)."""
    return abs(encode_fixed([max_abs], decimals)[0])


def _matrix(matrix: Any, spec: PackingSpec) -> np.ndarray:
    """2-D integer (or Python-int object) array with ``spec.slots`` columns, or DataValidationError."""
    if hasattr(matrix, "to_numpy") and not isinstance(matrix, np.ndarray):  # pandas
        matrix = matrix.to_numpy()
    arr = np.asarray(matrix) if not isinstance(matrix, np.ndarray) else matrix
    if arr.ndim != 2 or arr.shape[1] != spec.slots:
        raise DataValidationError(
            f"packing needs a (records, {spec.slots}) matrix, got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "iuO":
        raise DataValidationError("packed values must be integers (use encode_fixed for decimals)")
    return arr


def pack_rows(matrix: Any, spec: PackingSpec) -> list[int]:
    """One packed plaintext per row: Σ_j (v_j + B)·2^(j·s). DataValidationError if |v| > B.

    With several records per ciphertext, one plaintext per that many rows
    (:func:`pprl.crypto.paillier.packing_records.pack_records`).
    """
    if spec.roomy:
        return pack_records(pack_rows(matrix, spec.single()), spec)
    arr = _matrix(matrix, spec)
    b = spec.bound
    cols: list[list[int]] = []
    for j in range(spec.slots):
        values = arr[:, j].tolist()  # Python ints (numpy ints convert exactly)
        for i, v in enumerate(values):
            if not _int(v):
                raise DataValidationError(
                    f"value at row {i + 1}, column {j + 1} is not an integer "
                    "(use encode_fixed for decimals)"
                )
            if not -b <= v <= b:
                raise DataValidationError(
                    f"value at row {i + 1}, column {j + 1} exceeds the packing bound"
                )
        cols.append([int(v) for v in values])
    shift, packed = spec.slot_bits, [int(spec.count_slot)] * arr.shape[0]
    for j in reversed(range(spec.slots)):
        packed = [(acc << shift) | (v + b) for acc, v in zip(packed, cols[j], strict=True)]
    return packed


def unpack(
    values: Sequence[int], spec: PackingSpec, summands: Sequence[int] | None, *, invalid: str = "raise"
) -> np.ndarray:
    """Column sums from packed (summed) plaintexts: slot_j - m·B, as an object array of ints.

    ``summands[i]`` is m for ``values[i]`` (0 for an empty sum); with a count
    slot it is checked against the count the plaintext carries, or may be
    None to take it from there. DecryptionError (position only) for a
    plaintext, slot or count out of range; PolicyError for m > M.

    ``invalid="mark"`` instead leaves such a row as None in every column and
    says nothing: a decryptor must not become a comparison oracle for a
    platform that submits an out-of-range value (whether a sum overflowed
    depends on the other contributors' values), so nobody but the decryptor
    learns that, or which, a sum could not be read.
    """
    if invalid not in ("raise", "mark"):
        raise DataValidationError("invalid must be 'raise' or 'mark'")
    if summands is None and not spec.count_slot:
        raise DataValidationError("summand counts are needed unless the spec has a count slot")
    if invalid == "mark":
        return _unpack_marked(values, spec, summands)
    if spec.roomy:
        values, spec = extract_targets(values, spec), spec.single()
    counts = _summands(summands, len(values), spec) if summands is not None else None
    k, s, b = spec.slots, spec.slot_bits, spec.bound
    mask, limit = (1 << s) - 1, 1 << spec.total_bits
    out = np.empty((len(values), k), dtype=object)
    for i, x in enumerate(values):
        x = int(x)
        if not 0 <= x < limit:
            raise DecryptionError(
                f"packed value at position {i + 1} is out of range: tampered, "
                "not made under this key, or more summands than declared"
            )
        m = counts[i] if counts is not None else x >> (k * s)
        if spec.count_slot and x >> (k * s) != m:
            raise DecryptionError(f"aggregate at position {i + 1} does not sum the declared number of records")
        if m > spec.max_summands:
            raise DecryptionError(f"aggregate at position {i + 1} sums more records than the spec allows")
        top = 2 * b * m
        for j in range(k):
            slot = (x >> (j * s)) & mask
            if slot > top:
                raise DecryptionError(
                    f"packed value at position {i + 1}, slot {j + 1} exceeds its headroom: "
                    "the summand count is wrong or the ciphertext was tampered with"
                )
            out[i, j] = slot - m * b
    return out


def _unpack_marked(values: Sequence[int], spec: PackingSpec, summands: Sequence[int] | None) -> np.ndarray:
    """:func:`unpack`, one row at a time, with None for a row that does not decode."""
    counts = _summands(summands, len(values), spec) if summands is not None else None
    out = np.empty((len(values), spec.slots), dtype=object)
    for i, x in enumerate(values):
        try:
            row = unpack([x], spec, None if counts is None else [counts[i]])[0]
        except (DecryptionError, PolicyError):
            row = [None] * spec.slots
        out[i, :] = row
    return out


def _summands(summands: Sequence[int], length: int, spec: PackingSpec) -> list[int]:
    if hasattr(summands, "tolist"):
        summands = summands.tolist()
    counts = list(summands)
    if len(counts) != length:
        raise DataValidationError(f"{len(counts)} summand counts for {length} packed values")
    for i, m in enumerate(counts):
        if not _int(m) or m < 0:
            raise DataValidationError(f"summand count at position {i + 1} must be an integer >= 0")
        if m > spec.max_summands:
            raise PolicyError(
                f"aggregate at position {i + 1} sums {m} records; the packing spec allows at most "
                f"{spec.max_summands}"
            )
    return [int(m) for m in counts]


def encrypt_packed(
    public_key: PaillierPublicKey,
    matrix: Any,
    spec: PackingSpec,
    *,
    workers: int | None = None,
    progress: bool = False,
    method: str | None = None,
    exponent_bits: int | None = None,
    window: int | None = None,
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> EncryptedVector:
    """One ciphertext per row of ``matrix`` (records × spec.slots integers; array or DataFrame),
    or per ``spec.records_per_ciphertext`` rows.

    The spec is checked against the key before anything is packed.
    Keyword arguments as for :func:`~pprl.crypto.paillier.vector.encrypt_vector`.
    """
    if not isinstance(public_key, PaillierPublicKey):
        raise DataValidationError("encrypt_packed needs a PaillierPublicKey")
    if not isinstance(spec, PackingSpec):
        raise DataValidationError("encrypt_packed needs a PackingSpec")
    spec.check_key(public_key)
    plain = pack_rows(matrix, spec)
    out = encrypt_raw(
        public_key, plain, workers=workers, progress=progress, method=method,
        exponent_bits=exponent_bits, window=window, cache_dir=cache_dir,
    )
    return EncryptedVector._trusted(public_key, out)


def decrypt_packed(
    private_key: PaillierPrivateKey,
    enc: EncryptedVector,
    spec: PackingSpec,
    summands: Sequence[int] | None,
    *,
    workers: int | None = None,
    progress: bool = False,
    invalid: str = "raise",
) -> np.ndarray:
    """Decrypt packed aggregates to an (aggregates × slots) object array of column sums.

    ``summands``: records summed per aggregate (see :func:`unpack`; None only with a count slot);
    ``invalid``: as for :func:`unpack`.
    """
    if not isinstance(private_key, PaillierPrivateKey) or not isinstance(enc, EncryptedVector):
        raise DataValidationError("decrypt_packed needs a PaillierPrivateKey and an EncryptedVector")
    if not isinstance(spec, PackingSpec):
        raise DataValidationError("decrypt_packed needs a PackingSpec")
    if enc.public_key != private_key.public_key:
        raise KeyMismatchError("ciphertexts are not under this private key's public key")
    spec.check_key(private_key.public_key)
    if summands is not None:
        _summands(summands, len(enc), spec)  # refuse before the expensive part
    elif not spec.count_slot:
        raise DataValidationError("summand counts are needed unless the spec has a count slot")
    crt = private_key.crt
    kernel = decrypt_chunk_mod_p if spec.total_bits + _MOD_P_MARGIN < crt.p.bit_length() else decrypt_chunk
    raw = run_chunked(kernel, crt, enc._c, workers=workers, progress=progress, desc="decrypt")
    return unpack(raw, spec, summands, invalid=invalid)


def mask_sums(
    enc: EncryptedVector, *, hiding: Sequence[int] | None = None, workers: int | None = 1
) -> tuple[EncryptedVector, list[int]]:
    """Add a fresh uniform mask R in [0, n) to every sum under encryption; return the masked sums and the masks.

    Whoever decrypts the masked sums sees uniform values mod n and learns
    nothing; only the holder of the masks can recover the sums
    (:func:`unmask_packed`). The masks come from the OS CSPRNG. ``hiding``
    (from :func:`column_masks`) is added too but not returned: the holder of
    the masks then reads the sums with those columns hidden.
    """
    n = enc.public_key.n
    masks = [secrets.randbelow(n) for _ in range(len(enc))]
    extra = list(hiding) if hiding is not None else [0] * len(enc)
    if len(extra) != len(enc):
        raise DataValidationError(f"{len(extra)} hiding values for {len(enc)} sums")
    plain = [(r + g) % n for r, g in zip(masks, extra)]
    masked = enc + EncryptedVector._trusted(enc.public_key, encrypt_raw(enc.public_key, plain, workers=workers))
    return masked, masks


def column_masks(spec: PackingSpec, hidden: Sequence[int], count: int) -> list[int]:
    """Per sum, a fresh mask over the slots ``hidden`` (0-based columns): what keeps a reader from them.

    Each hidden slot gets a uniform (slot_bits + mask_bits)-bit value, which
    the slot's own room absorbs without a carry, and which hides the slot's
    sum to statistical distance 2^-mask_bits. Added to sums the reader then
    decrypts (or unmasks) and never learns; needs a :attr:`PackingSpec.roomy`
    single-record spec. The count slot is never hidden.
    """
    if not spec.maskable or spec.records_per_ciphertext != 1:
        raise PolicyError("a column can be hidden only in sums packed with masking room (a maskable packing spec)")
    if any(not _int(j) or not 0 <= j < spec.slots for j in hidden):
        raise DataValidationError(f"hidden columns must be 0..{spec.slots - 1}")
    w, bits = spec.position_bits, spec.slot_bits + spec.mask_bits
    out = []
    for _ in range(count):
        value = 0
        for j in sorted(set(hidden)):
            value += secrets.randbits(bits) << (w * j)
        out.append(value)
    return out


def unmask_packed(
    masked: Sequence[int],
    masks: Sequence[int],
    n: int,
    spec: PackingSpec,
    summands: Sequence[int] | None = None,
    hidden: Sequence[int] = (),
    *,
    invalid: str = "raise",
) -> np.ndarray:
    """Column sums from masked plaintexts: (value - mask) mod n, then :func:`unpack` (counts from the count slot).

    Columns in ``hidden`` (0-based) carry a :func:`column_masks` value the
    reader does not know: they are cleared before unpacking and come back as 0.
    """
    if len(masked) != len(masks):
        raise DataValidationError("one mask per masked value is needed")
    clear = 0
    if hidden:
        if not spec.maskable or spec.records_per_ciphertext != 1:
            raise DataValidationError("hidden columns need a maskable single-record packing spec")
        w = spec.position_bits
        for j in set(hidden):
            clear |= ((1 << w) - 1) << (w * j)
    values = [((int(v) - int(r)) % n) & ~clear for v, r in zip(masked, masks)]
    if hidden and not spec.count_slot:
        raise DataValidationError("hidden columns need a packing spec with a count slot")
    if hidden:  # a cleared slot reads as m·B, i.e. a sum of 0
        w, counts = spec.position_bits, [x >> (w * spec.slots) for x in values]
        values = [x | sum((m * spec.bound) << (w * j) for j in set(hidden)) for x, m in zip(values, counts)]
    return unpack(values, spec, summands, invalid=invalid)
