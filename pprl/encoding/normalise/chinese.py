"""Chinese text: traditional -> simplified characters, person names, toneless pinyin.

Characters are converted one at a time, never as phrases, so the result is
idempotent; the tables come from OpenCC (``t2s``) and pypinyin, and the only
table kept here is the surname readings of heteronymous characters.

Design: docs/schema.md#derived-features-and-pinyin
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache

from pprl.encoding.normalise.text import CACHE_SIZE, NOT_WORD, nfkc
from pprl.errors import SchemaError

__all__ = ["address_cn", "name_han", "name_han_only", "name_pinyin", "name_pinyin_words", "normalise_name",
           "simplify", "tables_fingerprint", "to_pinyin"]

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
# Compound surnames read as their characters read (the heteronymous ones are above): a name that
# starts with one of these has a two-character surname.
_COMPOUND_PLAIN = frozenset({
    "欧阳", "司马", "上官", "诸葛", "东方", "慕容", "皇甫", "公孙", "令狐", "端木", "夏侯", "西门",
    "宇文", "司徒", "司空", "轩辕", "呼延", "南宫", "独孤", "闻人", "赫连", "钟离", "宗政", "拓跋",
})
_LATIN_WORD = re.compile(r"[0-9a-z]+")
_LYU = re.compile(r"^([ln])(?:yu|u:)(?=$|[aeinou])")
# Provincial-level names an address may start with; 市 only ends a municipality (吉林市 is a city).
_PROVINCES = ("黑龙江", "内蒙古", "北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "江苏",
              "浙江", "安徽", "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南", "四川", "贵州",
              "云南", "陕西", "甘肃", "青海", "台湾", "广西", "西藏", "宁夏", "新疆", "香港", "澳门")
_ADDRESS_HEAD = re.compile(
    r"^(?:中华人民共和国|中国)?(?:(?:北京|天津|上海|重庆)市?|(?:" + "|".join(_PROVINCES)
    + r")(?:壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区|省)?(?!市))?")


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


_UNSAFE = "\uffff"  # a noncharacter: marks a character the fast path of fold() leaves to the slow one


def _safe(ch: str) -> bool:
    # Printable ASCII and CJK Unified Ideographs (with extension A): NFKC leaves any string of
    # them as it is (none decomposes, none combines with a neighbour, all have combining class 0).
    return " " <= ch <= "~" or "\u3400" <= ch <= "\u4dbf" or "\u4e00" <= ch <= "\u9fff"


@lru_cache(maxsize=1)
def fold_table() -> _CharMap:
    """codepoint -> its :func:`fold`, for characters whose fold does not depend on their
    neighbours; every other character -> ``_UNSAFE``."""
    simp = simplify_table()

    def one(ch: str) -> str:
        if not _safe(ch):
            return _UNSAFE
        out = ch.translate(simp).casefold()
        if not all(map(_safe, out)):
            return _UNSAFE
        return NOT_WORD.sub("", out)

    return _CharMap(one)


def fold(value: str) -> str:
    """NFKC, traditional -> simplified, lower case, NFKC again, only letters and digits kept.

    ``"陳 小·明"`` -> ``"陈小明"``. Text of printable ASCII and CJK ideographs (most names and
    addresses) takes one ``str.translate`` through :func:`fold_table`, which gives exactly what
    the chain gives: NFKC leaves such text as it is, and simplification, case folding and the
    filter act character by character. Anything else takes the chain itself.
    """
    fast = value.translate(fold_table())
    if _UNSAFE not in fast:
        return fast
    # NFKC again after simplification and casefold: both can leave non-NFKC text.
    return NOT_WORD.sub("", nfkc(simplify(nfkc(value)).casefold()))


@lru_cache(maxsize=CACHE_SIZE)
def name_han(value: str) -> str | None:
    """NFKC, simplified, lower case, only letters and digits kept (:func:`fold`); None if
    nothing is left.

    ``"陳 小·明"`` -> ``"陈小明"``.
    """
    return fold(value) or None


@lru_cache(maxsize=CACHE_SIZE)
def name_pinyin(value: str) -> str | None:
    """``to_pinyin(name_han(value))``: ``"曾偉"`` -> ``"zengwei"``; None if nothing is left."""
    han = name_han(value)
    return None if han is None else to_pinyin(han)


_HAN = re.compile("[\u3400-\u9fff\U00020000-\U0003134f〇]")


def _has_han(text: str) -> bool:
    return _HAN.search(text) is not None  # a character _is_han accepts


@lru_cache(maxsize=CACHE_SIZE)
def name_han_only(value: str) -> str | None:
    """:func:`name_han`, but None for a name without a Han character (written in pinyin).

    Why: Han bigrams of ``zhangwei`` share nothing with those of 张伟; on a platform that stores
    pinyin they would only add bits that no other platform's record of the person has.
    """
    han = name_han(value)
    return han if han is not None and _has_han(han) else None


def _latin_words(value: str) -> list[str]:
    """Words of a name written in Latin letters: lower case, tone marks dropped, ü as v."""
    s = nfkc(value).casefold().replace("ü", "v").replace("u\u0308", "v")
    s = "".join(ch for ch in unicodedata.normalize("NFKD", s) if not unicodedata.combining(ch))
    return [_LYU.sub(r"\1v", w) for w in _LATIN_WORD.findall(s)]


@lru_cache(maxsize=CACHE_SIZE)
def name_pinyin_words(value: str) -> str | None:
    """Toneless pinyin as two words, surname and given name: 张小明 -> ``"zhang xiaoming"``.

    A name written in pinyin keeps its own words: ``ZHANG Xiaoming``, ``Zhāng Xiǎomíng`` ->
    ``"zhang xiaoming"``; ``Xiaoming Zhang`` -> ``"xiaoming zhang"``, which has the same
    bigrams (the separating space pads both words alike); ``zhang xiao ming`` -> the words after
    the first joined. ü (``lü``, ``lu:``, ``lyu``) is written v. None if nothing is left.
    """
    han = name_han(value)
    if han is None:
        return None
    if not _has_han(han):
        words = _latin_words(value)
        if len(words) > 2:
            words = [words[0], "".join(words[1:])]
        return " ".join(words) or None
    if han[:2] in _COMPOUND_SURNAMES or han[:2] in _COMPOUND_PLAIN:
        head = han[:2]
    else:
        head = han[:1]
    table = pinyin_table()
    surname = _COMPOUND_SURNAMES.get(head) or _SURNAMES.get(head) or head.translate(table)
    given = han[len(head):].translate(table)
    return f"{surname} {given}" if given else surname


@lru_cache(maxsize=CACHE_SIZE)
def address_cn(value: str) -> str | None:
    """A mainland address without its country and province: NFKC, simplified, lower case, only
    letters and digits kept, then a leading 中国 and provincial-level name (河北省, 河北,
    北京市, 广西壮族自治区) dropped. None if nothing is left.

    Why: platforms write the province in full, short or not at all, and some put 中国 in front;
    the city and district that follow identify it anyway.
    """
    return _ADDRESS_HEAD.sub("", fold(value), count=1) or None


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
