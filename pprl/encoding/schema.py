"""Load and validate clkhash linkage schemas (v3; v2 is converted on load).

:func:`load_schema` collects every problem in a schema and raises them together
in one ``SchemaError`` that names the offending feature. Any schema it accepts
is accepted by clkhash and encodes identically there, unless it declares the
pprl extensions (``"version": "3+pprl"``: ``normalise`` blocks and derived
features with ``source``), which clkhash refuses.

Design: docs/schema.md
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, cast

from pprl.encoding.field_formats import FieldFormat, parse_format
from pprl.encoding.hashing import Hashing, MissingValue, parse_hashing
from pprl.encoding.keys import HASH_ALGORITHMS, KEYS_PER_FEATURE, max_hkdf_length
from pprl.encoding.normalise import Normaliser, parse_normaliser
from pprl.encoding.tokens import ExactComparison
from pprl.errors import SchemaError

__all__ = [
    "EXTENDED_VERSION",
    "EXTENSION_KEYS",
    "MAX_HASH_LENGTH",
    "Feature",
    "Hashing",
    "MissingValue",
    "Salt",
    "Schema",
    "SchemaSource",
    "load_schema",
]

SUPPORTED_VERSIONS = (2, 3)
#: ``version`` of a schema that uses pprl extensions; clkhash refuses it (as it must).
EXTENDED_VERSION = "3+pprl"
#: The largest BLIP bit-flip probability a schema may ask for (beyond it, linkage quality collapses).
MAX_BLIP = 0.25
#: Feature keys that only an extended schema may use.
EXTENSION_KEYS = ("normalise", "source", "salt")
MAX_BLAKE_KEY_SIZE = 64  # hashlib.blake2b refuses longer keys
MAX_HASH_LENGTH = 1 << 16  # bits before folding; blakeHash cannot address more anyway
MAX_XOR_FOLDS = 16
DEFAULT_KEY_SIZE = 64

SchemaSource = Union[Mapping[str, Any], str, bytes, "os.PathLike[str]"]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Salt:
    """``"salt": {"feature": "dob", "characters": 2}`` (pprl extension): every token of the feature is
    hashed together with another feature's value of the same record (its first ``characters`` characters,
    as that feature hashes it; all of it when ``characters`` is None)."""

    feature: str
    characters: int | None = None


@dataclass(frozen=True)
class Feature:
    """One schema feature: one input column, or (``source`` set) derived from another's.

    ``normalise`` (pprl extension) maps each raw value to its canonical form,
    or to None (missing), before ``format`` checks it.
    """

    identifier: str
    ignored: bool = False
    description: str | None = None
    format: FieldFormat | None = None
    hashing: Hashing | None = None
    normalise: Normaliser | None = None
    source: str | None = None
    salt: Salt | None = None

    @property
    def column(self) -> str:
        """The input column this feature reads: ``source`` for a derived feature."""
        return self.source if self.source is not None else self.identifier

    @property
    def derived(self) -> bool:
        """True for a feature computed from another feature's column (``source``)."""
        return self.source is not None

    @property
    def encoding(self) -> str:
        """Text encoding used to turn tokens into bytes (only strings can change it)."""
        return self.format.encoding if self.format is not None else "utf-8"


#: A hashed field with at most this many values forms a block of bits the bureau can read.
LOW_CARDINALITY = 16


@dataclass(frozen=True)
class Schema:
    """A validated linkage schema. ``raw`` is the JSON as given (before any v2 conversion)."""

    raw: dict
    version: int
    features: tuple[Feature, ...]
    l: int  # noqa: E741 (clkhash's name for the filter length)
    xor_folds: int = 0
    kdf_type: str = "HKDF"
    kdf_hash: str = "SHA256"
    kdf_salt: bytes | None = None
    kdf_info: bytes | None = None
    kdf_key_size: int = DEFAULT_KEY_SIZE
    extended: bool = False
    #: pprl extensions, hardening what the bureau can read: flip each bit with this probability (BLIP,
    #: randomised response), and append the filter's complement (every CLK then has exactly half its bits set).
    blip: float = 0.0
    balance: bool = False
    #: pprl extension: the encoding key is derived from the linkage secret and the run id, so CLKs of
    #: different runs cannot be compared (encode with ``run=``; ``pprl submit --run``).
    rotate: bool = False

    @property
    def leak_warnings(self) -> list[str]:
        """Hashed features with so few values that their bits form a block the bureau can read without any key.

        A field of at most :data:`LOW_CARDINALITY` values (an enum such as gender) hashed on its own sets
        the same bits in every record with that value; ``pprl attack`` finds and reads them.
        """
        out = []
        for f in self.features:
            values = getattr(f.format, "values", None)
            if not f.ignored and values is not None and len(values) <= LOW_CARDINALITY:
                out.append(f"feature '{f.identifier}' has only {len(values)} possible values and is hashed on its "
                           "own: the bureau can read it from the CLKs without any key (see `pprl attack`); "
                           "mark it ignored")
        return out

    @property
    def identifiers(self) -> list[str]:
        """Every feature identifier in schema order, ignored and derived ones included."""
        return [f.identifier for f in self.features]

    @property
    def columns(self) -> list[str]:
        """The input columns in schema order: every feature that is not derived.

        Rows given as sequences carry one value per column, in this order; for a
        schema without derived features this is ``identifiers``.
        """
        return [f.identifier for f in self.features if not f.derived]

    @property
    def hashed_identifiers(self) -> list[str]:
        """Identifiers of the features that are hashed (not ignored), in order."""
        return [f.identifier for f in self.features if not f.ignored]

    @property
    def hash_length(self) -> int:
        """Bloom filter length before XOR folding."""
        return self.l << self.xor_folds

    def canonical_hash(self) -> str:
        """Hex SHA-256 of the canonical JSON of ``raw``: equal schemas, equal hashes."""
        text = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.canonical_hash())


# --------------------------------------------------------------------- reading


def _pairs_hook(duplicates: list[str]) -> Callable[[list[tuple[str, Any]]], dict]:
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                duplicates.append(f"key {key!r} appears more than once in one JSON object")
            out[key] = value
        return out
    return hook


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse_json(text: str, origin: str, duplicates: list[str]) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook(duplicates),
                          parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise SchemaError(f"schema: {origin} is not valid JSON (line {e.lineno}, "
                          f"column {e.colno}: {e.msg})") from None
    except ValueError as e:  # NaN / Infinity
        raise SchemaError(f"schema: {origin} is not valid JSON ({e})") from None


def _read(source: Any, duplicates: list[str]) -> Any:
    if isinstance(source, Mapping):
        try:
            return json.loads(json.dumps(source, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise SchemaError(f"schema: the given dict is not plain JSON data ({e})") from None
    if isinstance(source, (bytes, bytearray)):
        try:
            return _parse_json(bytes(source).decode("utf-8-sig"), "the given bytes", duplicates)
        except UnicodeDecodeError:
            raise SchemaError("schema: the given bytes are not UTF-8 text") from None
    if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
        return _parse_json(source, "the given text", duplicates)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as e:
            raise SchemaError(f"schema: cannot read {str(path)!r}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise SchemaError(f"schema: {str(path)!r} is not UTF-8 text") from None
        return _parse_json(text, repr(str(path)), duplicates)
    raise SchemaError(f"schema: expected a dict, JSON text or a file path, not {type(source).__name__}")


def _v2_to_v3(dct: dict, problems: list[str]) -> dict:
    """clkhash's v2 -> v3 conversion: k/numBits -> bitsPerToken/bitsPerFeature, ngram -> comparison.

    v3-only keys in a v2 schema are reported, as clkhash's v2 validation would.
    """
    dct = copy.deepcopy(dct)
    dct["version"] = 3
    features = dct.get("features")
    for i, feature in enumerate(features if isinstance(features, list) else [], start=1):
        if not isinstance(feature, dict) or feature.get("ignored") is True:
            continue
        hashing = feature.get("hashing")
        if not isinstance(hashing, dict):
            continue
        ident = feature.get("identifier")
        label = f"feature {ident!r}" if isinstance(ident, str) else f"feature #{i}"
        strategy = hashing.get("strategy")
        if isinstance(strategy, dict):
            for old, new in (("k", "bitsPerToken"), ("numBits", "bitsPerFeature")):
                if old in strategy:
                    value = strategy.pop(old)
                    if isinstance(value, float) and value.is_integer():
                        value = int(value)
                    strategy[new] = value
                    break
            else:
                problems.append(f"{label}: hashing.strategy needs k or numBits in a version 2 schema")
        if "comparison" in hashing:
            problems.append(f"{label}: hashing.comparison is a version 3 key (this schema says version 2)")
        elif "ngram" not in hashing:
            problems.append(f"{label}: hashing.ngram is missing (version 2 schema)")
        else:
            hashing["comparison"] = {"type": "ngram", "n": hashing.pop("ngram"),
                                     "positional": hashing.pop("positional", False)}
    return dct


# --------------------------------------------------------------------- parsing


def _decode_b64(kdf: dict, key: str, problems: list[str]) -> bytes | None:
    if key not in kdf:
        return None
    value = kdf[key]
    if not isinstance(value, str):
        problems.append(f"clkConfig.kdf.{key} must be a base64 string")
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        problems.append(f"clkConfig.kdf.{key} is not valid base64")
        return None


def _parse_clk_config(cfg: Any, problems: list[str]) -> dict:
    out: dict = {"l": None, "xor_folds": 0, "kdf_type": "HKDF", "kdf_hash": "SHA256",
                 "kdf_salt": None, "kdf_info": None, "kdf_key_size": DEFAULT_KEY_SIZE, "blip": 0.0,
                 "balance": False, "rotate": False}
    if not isinstance(cfg, dict):
        problems.append("clkConfig is missing" if cfg is None else "clkConfig must be an object")
        return out
    for key in sorted(set(cfg) - {"l", "kdf", "xor_folds", "xorFolds", "blip", "balance", "rotate"}):
        problems.append(f"clkConfig has unknown key {key!r}")
    blip = cfg.get("blip", 0.0)
    if isinstance(blip, bool) or not isinstance(blip, (int, float)) or not 0 <= blip <= MAX_BLIP:
        problems.append(f"clkConfig.blip must be a bit-flip probability from 0 to {MAX_BLIP}")
    else:
        out["blip"] = float(blip)
    balance = cfg.get("balance", False)
    if not isinstance(balance, bool):
        problems.append("clkConfig.balance must be true or false")
    else:
        out["balance"] = balance
    rotate = cfg.get("rotate", False)
    if not isinstance(rotate, bool):
        problems.append("clkConfig.rotate must be true or false")
    else:
        out["rotate"] = rotate
    l = cfg.get("l")  # noqa: E741 (clkhash's name)
    if l is None:
        problems.append("clkConfig.l is missing")
    elif not _is_int(l) or l < 1:
        problems.append("clkConfig.l must be an integer >= 1")
    else:
        out["l"] = l
    folds = cfg.get("xor_folds", 0)
    if not _is_int(folds) or not 0 <= folds <= MAX_XOR_FOLDS:
        problems.append(f"clkConfig.xor_folds must be an integer from 0 to {MAX_XOR_FOLDS}")
    else:
        out["xor_folds"] = folds
    if "xorFolds" in cfg and cfg["xorFolds"] != folds:
        problems.append("clkConfig.xorFolds is ignored by clkhash 0.18, which reads "
                        "clkConfig.xor_folds; use xor_folds")
    kdf = cfg.get("kdf")
    if not isinstance(kdf, dict):
        problems.append("clkConfig.kdf is missing" if kdf is None else "clkConfig.kdf must be an object")
        return out
    for key in sorted(set(kdf) - {"type", "hash", "salt", "info", "keySize"}):
        problems.append(f"clkConfig.kdf has unknown key {key!r}")
    if kdf.get("type") != "HKDF":
        problems.append("clkConfig.kdf.type must be 'HKDF'")
    kdf_hash = kdf.get("hash", "SHA256")
    if not isinstance(kdf_hash, str) or kdf_hash not in HASH_ALGORITHMS:
        problems.append(f"clkConfig.kdf.hash {kdf_hash!r} is not one of {', '.join(HASH_ALGORITHMS)}")
    else:
        out["kdf_hash"] = kdf_hash
    out["kdf_salt"] = _decode_b64(kdf, "salt", problems)
    out["kdf_info"] = _decode_b64(kdf, "info", problems)
    key_size = kdf.get("keySize", DEFAULT_KEY_SIZE)
    if not _is_int(key_size) or key_size < 1:
        problems.append("clkConfig.kdf.keySize must be an integer >= 1")
    else:
        out["kdf_key_size"] = key_size
    return out


_FEATURE_KEYS = {"identifier", "ignored", "description", "format", "hashing"}
_IGNORE_KEYS = {"identifier", "ignored", "description"}


def _parse_salt(obj: Any, local: list[str]) -> Salt | None:
    """A feature's ``salt`` block: ``{"feature": identifier, "characters": n}`` (``characters`` optional)."""
    if not isinstance(obj, dict):
        local.append('salt must be an object such as {"feature": "dob", "characters": 2}')
        return None
    for key in sorted(set(obj) - {"feature", "characters"}):
        local.append(f"salt has unknown key {key!r}")
    feature = obj.get("feature")
    if not isinstance(feature, str) or not feature:
        local.append("salt.feature must be the identifier of another feature (a non-empty string)")
        return None
    characters = obj.get("characters")
    if characters is not None and (not _is_int(characters) or characters < 1):
        local.append("salt.characters must be an integer >= 1 (or left out for the whole value)")
        return None
    return Salt(feature, characters)


def _parse_extensions(obj: dict, fmt: FieldFormat | None, hashing: Hashing | None,
                      local: list[str]) -> tuple[Normaliser | None, str | None, Salt | None]:
    """The ``normalise``, ``source`` and ``salt`` keys of a hashed feature in an extended schema."""
    source = obj.get("source")
    if "source" in obj and (not isinstance(source, str) or not source):
        local.append("source must be the identifier of another feature (a non-empty string)")
        source = None
    salt = _parse_salt(obj["salt"], local) if "salt" in obj else None
    if "normalise" not in obj:
        return None, source, salt
    normaliser = parse_normaliser(obj["normalise"], local)
    if normaliser is None:
        return None, source, salt
    if normaliser.type == "cn_resident_id" and hashing is not None \
            and not isinstance(hashing.comparison, ExactComparison):
        local.append("normalise.type 'cn_resident_id' needs hashing.comparison.type 'exact': "
                     "n-grams of an ID number reveal birth date, sex and region and link "
                     "near-identical numbers of different people")
    if fmt is not None:
        problem = fmt.check(normaliser.sample)
        if problem:
            local.append(f"format rejects what normalise.type {normaliser.type!r} produces "
                         f"(e.g. {normaliser.sample!r}: {problem})")
    if hashing is not None and hashing.missing_value is not None \
            and hashing.missing_value.replace_with != "":
        local.append("hashing.missingValue.replaceWith must be '' (or left out) with normalise: "
                     "missing and invalid values add no bits")
    return normaliser, source, salt


def _parse_feature(obj: Any, index: int, problems: list[str], extended: bool) -> Feature | None:
    if not isinstance(obj, dict):
        problems.append(f"feature #{index}: must be an object")
        return None
    ident = obj.get("identifier")
    label = f"feature {ident!r}" if isinstance(ident, str) else f"feature #{index}"
    local: list[str] = []
    if ident is None:
        local.append("identifier is missing")
    elif not isinstance(ident, str):
        local.append("identifier must be a string")
    ignored = obj.get("ignored", False)
    if not isinstance(ignored, bool):
        local.append("ignored must be true or false")
    description = obj.get("description")
    if "description" in obj and not isinstance(description, str):
        local.append("description must be a string")
    for key in sorted(set(obj) - _FEATURE_KEYS):
        if key in EXTENSION_KEYS and not extended:
            local.append(f"{key!r} is a pprl extension: declare \"version\": \"{EXTENDED_VERSION}\" "
                         f"(clkhash cannot read such a schema; it would ignore the key and "
                         f"encode differently)")
        elif key not in EXTENSION_KEYS:
            local.append(f"unknown key {key!r}")
    used = [key for key in EXTENSION_KEYS if key in obj]
    if ignored is True and used and extended:
        local.append(f"{' and '.join(used)} cannot be used on an ignored feature "
                     f"(it would have no effect)")

    fmt = hashing = None
    if not (ignored is not False and set(obj) - set(EXTENSION_KEYS) <= _IGNORE_KEYS):
        # A full feature; clkhash validates format and hashing even when it is ignored.
        if "format" not in obj:
            local.append("format is missing (or mark the feature \"ignored\": true)")
        else:
            fmt = parse_format(obj["format"], local)
            if isinstance(obj["format"], dict) and "hashAs" in obj["format"] and not extended:
                local.append(f"format.hashAs is a pprl extension: declare \"version\": \"{EXTENDED_VERSION}\"")
        if "hashing" not in obj:
            local.append("hashing is missing (or mark the feature \"ignored\": true)")
        else:
            hashing = parse_hashing(obj["hashing"], local)
    normaliser = source = salt = None
    if extended and used and ignored is False:
        normaliser, source, salt = _parse_extensions(obj, fmt, hashing, local)

    problems.extend(f"{label}: {p}" for p in local)
    if local:
        return None
    ident = cast(str, ident)  # checked above
    if ignored:
        return Feature(ident, True, description)
    return Feature(ident, False, description, fmt, hashing, normaliser, source, salt)


def _cross_checks(features: list[Feature], total: int, known: set[str], cfg: dict,
                  problems: list[str]) -> None:
    """Checks across features and clkConfig; ``features`` are those that parsed, ``known``
    every identifier given (parsed or not)."""
    seen: set[str] = set()
    reported: set[str] = set()
    for f in features:
        if f.identifier in seen and f.identifier not in reported:
            problems.append(f"feature {f.identifier!r}: identifier is used by more than one feature")
            reported.add(f.identifier)
        seen.add(f.identifier)
    by_id = {f.identifier: f for f in features}
    for f in features:
        if f.source is None:
            continue
        target = by_id.get(f.source)
        if f.source == f.identifier:
            problems.append(f"feature {f.identifier!r}: source names the feature itself")
        elif f.source not in known:
            problems.append(f"feature {f.identifier!r}: source {f.source!r} is not a feature "
                            f"of this schema")
        elif target is not None and target.derived:
            problems.append(f"feature {f.identifier!r}: source {f.source!r} is itself derived "
                            f"(from {target.source!r}); name a feature that reads its own column")
    for f in features:
        if f.salt is None:
            continue
        target = by_id.get(f.salt.feature)
        if f.salt.feature == f.identifier:
            problems.append(f"feature {f.identifier!r}: salt names the feature itself")
        elif f.salt.feature not in known:
            problems.append(f"feature {f.identifier!r}: salt.feature {f.salt.feature!r} is not a feature "
                            f"of this schema")
        elif target is not None and target.salt is not None:
            problems.append(f"feature {f.identifier!r}: salt.feature {f.salt.feature!r} is itself salted; "
                            f"salt with a feature that is not")
    hashed = [f for f in features if f.hashing is not None]
    if not hashed and len(features) == total:
        problems.append("features: no feature is hashed (all are ignored)")
    key_size = cfg["kdf_key_size"]
    need = KEYS_PER_FEATURE * total * key_size
    if need > max_hkdf_length(cfg["kdf_hash"]):
        problems.append(f"clkConfig.kdf: {total} features x {KEYS_PER_FEATURE} keys x "
                        f"keySize {key_size} = {need} bytes is more than HKDF-{cfg['kdf_hash']} "
                        f"can derive ({max_hkdf_length(cfg['kdf_hash'])})")
    blake = [f.identifier for f in hashed if f.hashing is not None and f.hashing.hash_type == "blakeHash"]
    if blake and key_size > MAX_BLAKE_KEY_SIZE:
        problems.append(f"clkConfig.kdf.keySize {key_size} is larger than blakeHash allows "
                        f"({MAX_BLAKE_KEY_SIZE}), used by feature {blake[0]!r}")
    if cfg["l"] is None:
        return
    length = cfg["l"] << cfg["xor_folds"]
    if length > MAX_HASH_LENGTH:
        problems.append(f"clkConfig: l x 2**xor_folds = {length} bits is more than the "
                        f"supported {MAX_HASH_LENGTH}")
    elif blake and length & (length - 1):
        problems.append(f"clkConfig: l x 2**xor_folds = {length} must be a power of two for "
                        f"blakeHash (used by feature {blake[0]!r})")


def load_schema(source: SchemaSource) -> Schema:
    """Load and validate a clkhash linkage schema (or a pprl-extended one, version "3+pprl").

    ``source`` is a dict, JSON text (str or bytes), or a path to a JSON file.
    Raises ``SchemaError`` listing every problem found; the list is also on the
    exception's ``problems`` attribute.
    """
    problems: list[str] = []
    raw = _read(source, problems)
    if not isinstance(raw, dict):
        raise SchemaError("schema: the top level must be a JSON object")
    version = raw.get("version")
    dct = raw
    extended = version == EXTENDED_VERSION
    if version is None:
        problems.append("version is missing (expected 3)")
    elif extended:
        version = 3
    elif isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        problems.append(f"version {version!r} is not supported (expected 3, \"{EXTENDED_VERSION}\" "
                        f"for a schema with pprl extensions, or 2 which is converted; convert "
                        f"older schemas with clkhash first)")
    elif version == 2:
        dct = _v2_to_v3(raw, problems)

    cfg = _parse_clk_config(dct.get("clkConfig"), problems)
    if (cfg["blip"] or cfg["balance"] or cfg["rotate"]) and not extended:
        problems.append(f"clkConfig.blip, clkConfig.balance and clkConfig.rotate are pprl extensions: declare "
                        f"\"version\": \"{EXTENDED_VERSION}\"")
    raw_features = dct.get("features")
    features: list[Feature] = []
    if not isinstance(raw_features, list):
        problems.append("features is missing" if raw_features is None else "features must be a list")
    elif not raw_features:
        problems.append("features must not be empty")
    else:
        parsed = [_parse_feature(obj, i, problems, extended)
                  for i, obj in enumerate(raw_features, start=1)]
        features = [f for f in parsed if f is not None]
        known = {obj["identifier"] for obj in raw_features
                 if isinstance(obj, dict) and isinstance(obj.get("identifier"), str)}
        _cross_checks(features, len(raw_features), known, cfg, problems)

    if problems:
        err = SchemaError("schema: " + "; ".join(problems))
        err.problems = list(problems)  # type: ignore[attr-defined]
        raise err
    return Schema(
        raw=raw,
        version=int(cast(int, version)),  # checked above
        features=tuple(features),
        l=cfg["l"],
        xor_folds=cfg["xor_folds"],
        kdf_type=cfg["kdf_type"],
        kdf_hash=cfg["kdf_hash"],
        kdf_salt=cfg["kdf_salt"],
        kdf_info=cfg["kdf_info"],
        kdf_key_size=cfg["kdf_key_size"],
        extended=extended,
        blip=cfg["blip"],
        balance=cfg["balance"],
        rotate=cfg["rotate"],
    )
