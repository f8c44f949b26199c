"""Chinese text: traditional -> simplified characters, person names, toneless pinyin.

Characters are converted one at a time, never as phrases, so the result is
idempotent; the tables come from OpenCC (``t2s``) and pypinyin, and the only
table kept here is the surname readings of heteronymous characters.

Design: docs/schema.md#derived-features-and-pinyin
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache

from pprl.encoding.normalise.text import CACHE_SIZE, NOT_WORD, nfkc
from pprl.errors import SchemaError

__all__ = ["name_han", "name_pinyin", "normalise_name", "simplify", "tables_fingerprint", "to_pinyin"]

# Surnames whose reading as a surname differs from pypinyin's default reading of the
# character (readings from the list in mozillazg/python-pinyin#297, after overtrue/pinyin).
# Every other character is read by pypinyin. Compound surnames are matched first.
_COMPOUND_SURNAMES = {"万俟": "moqi", "尉迟": "yuchi", "单于": "chanyu", "长孙": "zhangsun",
                      "澹台": "tantai"}
_SURNAMES = {
    "曾": "zeng", "单": "shan", "解": "xie", "区": "ou", "仇": "qiu", "朴": "piao",
    "查": "zha", "盖": "ge", "乐": "yue", "缪": "miao", "覃": "qin", "翟": "zhai",
    "重": "chong", "种": "chong", "秘": "bi", "繁": "po", "折": "she", "佴": "nai",
    "粘": "nian", "藏": "zang", "扎": "za", "都": "du", "六": "lu", "薄": "bo",
    "乜": "nie", "阚": "kan", "卜": "bu", "召": "shao", "句": "gou", "隗": "wei",
    "祭": "zhai", "员": "yun", "贠": "yun",
}


class _CharMap(dict):
    """codepoint -> replacement, filled on first sight; a ``str.translate`` table."""

    def __init__(self, convert: Callable[[str], str]) -> None:
        super().__init__()
        self._convert = convert

    def __missing__(self, cp: int) -> str:
        out = chr(cp)
        for _ in range(4):  # follow chains (薴 -> 苧 -> 苎) to a fixed point
            nxt = self._convert(out) if len(out) == 1 else out
            if nxt == out:
                break
            out = nxt
        self[cp] = out
        return out


@lru_cache(maxsize=1)
def simplify_table() -> _CharMap:
    """The traditional -> simplified table (loads OpenCC on first call)."""
    import opencc  # lazily: schemas without Chinese normalisers must not pay for it

    convert = opencc.OpenCC("t2s").convert
    return _CharMap(lambda ch: convert(ch) if ord(ch) > 0x2E7F else ch)  # CJK and above only


def simplify(text: str) -> str:
    """Traditional -> simplified Chinese, character by character (OpenCC ``t2s``)."""
    return text.translate(simplify_table())


def _is_han(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\U00020000" <= ch <= "\U0003134f" or ch == "〇"


@lru_cache(maxsize=1)
def pinyin_table() -> _CharMap:
    """Han character -> toneless pinyin (loads pypinyin on first call)."""
    from pypinyin import Style, lazy_pinyin

    def read(ch: str) -> str:
        if not _is_han(ch):
            return ch
        return "".join(lazy_pinyin(ch, style=Style.NORMAL, errors="default")).lower()

    return _CharMap(read)


def to_pinyin(name: str) -> str:
    """Toneless pinyin of an already cleaned name (see :func:`name_han`), without spaces.

    The leading (compound) surname takes its surname reading (曾 zeng, 单 shan,
    解 xie, 区 ou); every other Han character its most common reading, one
    character at a time, so a homophone typo changes nothing. ``ü`` is
    written ``v`` (lv, nv). Characters that are not Han are kept.
    """
    head, reading = "", ""
    if name[:2] in _COMPOUND_SURNAMES:
        head = name[:2]
        reading = _COMPOUND_SURNAMES[head]
    elif name[:1] in _SURNAMES:
        head = name[:1]
        reading = _SURNAMES[head]
    return reading + name[len(head):].translate(pinyin_table())


@lru_cache(maxsize=CACHE_SIZE)
def name_han(value: str) -> str | None:
    """NFKC, simplified, lower case, only letters and digits kept; None if nothing is left.

    ``"陳 小·明"`` -> ``"陈小明"``.
    """
    # NFKC again after simplification and casefold: both can leave non-NFKC text.
    s = NOT_WORD.sub("", nfkc(simplify(nfkc(value)).casefold()))
    return s or None


@lru_cache(maxsize=CACHE_SIZE)
def name_pinyin(value: str) -> str | None:
    """``to_pinyin(name_han(value))``: ``"曾偉"`` -> ``"zengwei"``; None if nothing is left."""
    han = name_han(value)
    return None if han is None else to_pinyin(han)


def normalise_name(value: str, output: str = "han") -> str | None:
    """A person name in canonical form (``output`` ``"han"`` or ``"pinyin"``), or None if empty."""
    if output == "pinyin":
        return name_pinyin(value)
    if output == "han":
        return name_han(value)
    raise SchemaError(f"output must be 'han' or 'pinyin', not {output!r}")


@lru_cache(maxsize=1)
def tables_fingerprint() -> str:
    """Hex SHA-256 over the simplification and pinyin of every CJK character (U+3400..U+9FFF).

    Why: platforms only agree on name and address tokens if they run the same
    OpenCC and pypinyin data; a different library version could silently read
    or convert some characters differently. Platforms can compare this value
    (it takes about half a second, once per process) as they compare schema hashes.
    """
    simp, read = simplify_table(), pinyin_table()
    digest = hashlib.sha256()
    for cp in range(0x3400, 0xA000):
        s = simp[cp]
        digest.update(f"{s}\t{s.translate(read)}\n".encode())
    for table in (_COMPOUND_SURNAMES, _SURNAMES):
        digest.update(repr(sorted(table.items())).encode())
    return digest.hexdigest()
