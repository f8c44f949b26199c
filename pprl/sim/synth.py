"""Synthetic Chinese population with ground truth, split over K platforms.

:func:`generate_population` draws people, puts each on one or more platforms and
gives every platform its own corrupted copy, its own user ids and scores;
``truth`` says which row on which platform is which person. Same seed, same
frames.

Design: docs/design.md#synthetic-population
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pprl.errors import DataValidationError

tqdm.monitor_interval = 0  # no monitor thread: it would make a later fork unsafe

__all__ = [
    "COLUMNS",
    "TRUTH_COLUMNS",
    "REFERENCE_DATE",
    "Population",
    "SynthParameterError",
    "PROFILES",
    "generate_population",
    "write_population",
    "resident_id_check_digit",
    "is_valid_resident_id",
]

COLUMNS = ("user_id", "name", "gender", "dob", "mobile", "resident_id", "address",
           "repay_score", "spend_score", "travel_score")
TRUTH_COLUMNS = ("platform", "user_id", "person")
#: Ages (18..80) are computed against this fixed date so output never depends on the clock.
REFERENCE_DATE = "2025-01-01"

_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_CHECK_CHARS = "10X98765432"
# Real county-level codes (province, prefecture, district).
_REGIONS = ["110101", "110102", "110105", "110108", "120101", "120104", "130102", "130104", "140105", "150102", "210102", "210202", "220102", "230102", "310101", "310104", "310115", "320102", "320506", "330106", "330212", "340104", "350203", "360102", "370102", "370202", "410105", "420106", "430104", "440103", "440106", "440305", "440604", "450103", "460105", "500103", "510107", "520102", "530102", "540102", "610113", "620102", "630104", "640104", "650102"]  # noqa: E501 (one table per line)
_MOBILE_PREFIXES = ["130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "145", "147", "150", "151", "152", "153", "155", "156", "157", "158", "159", "166", "171", "173", "175", "176", "177", "178", "180", "181", "182", "183", "184", "185", "186", "187", "188", "189", "191", "195", "198", "199"]  # noqa: E501 (one table per line)
_COMPOUND_SURNAMES = ["司马", "上官", "诸葛", "东方", "慕容", "皇甫", "尉迟", "公孙", "令狐", "端木", "夏侯", "西门"]
# Groups of characters easily confused by ear or by pinyin input (each char in one group).
_HOMOPHONE_GROUPS = ["张章", "王汪", "李里礼", "刘柳留", "陈程", "杨阳扬", "黄皇", "赵照", "吴武", "周州舟", "明铭鸣", "伟玮炜", "芳方", "丽莉俐", "军君钧", "静婧靖", "华桦", "林琳霖", "红虹宏", "平萍", "娟鹃", "敏珉", "燕艳", "玲铃", "婷亭", "英莹瑛", "杰洁", "涛韬", "辉晖", "鹏朋", "飞菲", "宇雨羽", "浩昊", "建健", "峰锋", "晨辰", "瑞睿", "文雯", "东冬", "志智", "磊蕾", "勇永", "斌彬", "兰岚", "梅玫", "霞侠", "云芸", "慧惠", "琴勤", "徐许", "胡湖", "朱珠", "郭国", "何和", "马玛", "罗萝", "梁良", "于余", "冯逢", "邓登", "彭蓬", "肖萧", "叶业", "潘攀", "蒋江", "唐堂", "韩寒"]  # noqa: E501 (one table per line)
_HOMOPHONES = {ch: g.replace(ch, "") for g in _HOMOPHONE_GROUPS for ch in g}
_TRADITIONAL = str.maketrans(
    "陈刘张杨黄赵吴郑孙马罗谢许冯邓韩叶苏卢蒋钱汤龙华伟军丽红兰凤国东刚鹏飞涛辉强艳欢宁杰云荣"
    "贵庆凯帅岚玮铭莹宾丰顾钟陆贺阳扬颖双宝义龚阎尧乔严邹纪费贾单万晓泽鸣钧",
    "陳劉張楊黃趙吳鄭孫馬羅謝許馮鄧韓葉蘇盧蔣錢湯龍華偉軍麗紅蘭鳳國東剛鵬飛濤輝強艷歡寧傑雲榮"
    "貴慶凱帥嵐瑋銘瑩賓豐顧鐘陸賀陽揚穎雙寶義龔閻堯喬嚴鄒紀費賈單萬曉澤鳴鈞",
)
_FULL_WIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")
_PROVINCE_SUFFIXES = ("壮族自治区", "回族自治区", "维吾尔自治区", "自治区", "省", "市")
_MUNICIPALITIES = ("北京市", "上海市", "天津市", "重庆市")
# Per-field rates at corruption=1 (they scale linearly with `corruption`).
_P_NAME, _P_GENDER_MISSING = 0.5, 0.15
_P_DOB_MISSING, _P_DOB_FORMAT = 0.10, 0.75
_P_MOBILE_MISSING, _P_MOBILE_FORMAT, _P_MOBILE_TYPO = 0.20, 0.75, 0.15
_P_RID_LOWER_X, _P_RID_OLD, _P_RID_FULL_WIDTH = 0.75, 0.15, 0.10
_P_ADDR_MISSING, _P_ADDR_PROVINCE, _P_ADDR_TYPO = 0.25, 0.75, 0.25

#: Corruption profiles: ``default`` (the mess above, every platform alike) and ``cn-heavy``
#: (each platform its own script and formats, and far more mess; see :func:`_corrupt_heavy`).
PROFILES = ("default", "cn-heavy")
#: The corruption a profile uses when none is given.
_PROFILE_CORRUPTION = {"default": 0.2, "cn-heavy": 1.0}
# cn-heavy: platform k writes in style _HEAVY_STYLES[(k - 1) % 3]. Rates at corruption=1.
_HEAVY_STYLES = ("han", "pinyin", "traditional")
_H_NAME_SCRIPT = {"han": 0.0, "pinyin": 0.8, "traditional": 0.0}   # name written in pinyin
_H_TRADITIONAL = {"han": 0.05, "pinyin": 0.05, "traditional": 0.7}  # names/addresses in traditional
_H_NAME_TYPO, _H_PINYIN_TYPO, _H_NAME_MISSING = 0.25, 0.15, 0.02
_H_GENDER_MISSING = 0.3
_H_DOB_MISSING, _H_DOB_TYPO = 0.08, 0.04
_H_MOBILE_MISSING, _H_MOBILE_TYPO, _H_MOBILE_OTHER = 0.15, 0.08, 0.05
_H_RID_MISSING = {"han": 0.1, "pinyin": 0.35, "traditional": 0.2}
_H_RID_OLD, _H_RID_TYPO, _H_RID_FULL_WIDTH, _H_RID_SPACED = 0.5, 0.03, 0.1, 0.15
_H_ADDR_MISSING, _H_ADDR_MOVED, _H_ADDR_TYPO, _H_ADDR_FORMAT = 0.15, 0.05, 0.3, 0.5


class SynthParameterError(DataValidationError, ValueError):
    """An argument to the generator (count, fraction, seed, ID body) is out of range."""


@dataclass(frozen=True)
class Population:
    """Platform copies ("platform_1".."platform_K" -> records) and their ground truth."""

    platforms: dict[str, pd.DataFrame]
    truth: pd.DataFrame


def resident_id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character ("0".."9" or "X") for 17 ASCII digits."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise SynthParameterError("resident ID body must be exactly 17 ASCII digits")
    total = sum(int(ch) * w for ch, w in zip(first17, _WEIGHTS.tolist()))
    return _CHECK_CHARS[total % 11]


def is_valid_resident_id(s: str) -> bool:
    """True for a canonical 18-character resident ID: digits, real birth date, right check char.

    Upper-case "X" only; normalise case (and full-width digits) before calling.
    """
    if not isinstance(s, str) or len(s) != 18 or not (s[:17].isascii() and s[:17].isdigit()):
        return False
    try:
        np.datetime64(f"{s[6:10]}-{s[10:12]}-{s[12:14]}", "D")
    except ValueError:
        return False
    return s[0] != "0" and s[17] == resident_id_check_digit(s[:17])


def _check_chars(bodies: np.ndarray) -> np.ndarray:
    codes = bodies.astype("U17").view(np.uint32).reshape(-1, 17).astype(np.int64) - 48
    return np.array(list(_CHECK_CHARS))[(codes @ _WEIGHTS) % 11]


@functools.lru_cache(maxsize=1)
def _pools() -> dict[str, tuple]:
    """Name and address pools taken once from Faker's zh_CN providers."""
    from faker.providers.address.zh_CN import Provider as Address
    from faker.providers.person.zh_CN import Provider as Person

    surnames = list(Person.last_names) + _COMPOUND_SURNAMES
    weights = np.array(list(Person.last_names.values()) + [0.02] * len(_COMPOUND_SURNAMES))
    excluded = set(_MUNICIPALITIES) | {"台湾省", "香港特别行政区", "澳门特别行政区"}
    bad_cities = {"北京", "上海", "天津", "重庆", "台北", "香港", "澳门"}
    return {
        "surnames": tuple(surnames),
        "surname_p": tuple(weights / weights.sum()),
        "male": tuple(Person.first_names_male),
        "female": tuple(Person.first_names_female),
        "male1": tuple(g for g in Person.first_names_male if len(g) == 1),
        "female1": tuple(g for g in Person.first_names_female if len(g) == 1),
        "provinces": tuple(p for p in Address.provinces if p not in excluded) + _MUNICIPALITIES,
        "cities": tuple(dict.fromkeys(c + "市" for c in Address.cities
                                      if c not in bad_cities and not c.endswith("盟"))),
        "districts": tuple(dict.fromkeys(d if d.endswith("区") else d + "区"
                                         for d in Address.districts)),
        "street_stems": tuple(dict.fromkeys(Address.cities)) + tuple(list(Person.last_names)[:60]),
        "street_suffixes": tuple(Address.street_suffixes) + ("大道", "巷"),
    }


def _pick(rng: np.random.Generator, items: tuple, size: int, p: tuple | None = None) -> np.ndarray:
    return np.asarray(items, dtype=object)[rng.choice(len(items), size=size, p=p)]


def _given_names(rng: np.random.Generator, n: int, male: np.ndarray, pools: dict) -> np.ndarray:
    out = np.empty(n, dtype=object)
    for sex, key in ((True, "male"), (False, "female")):
        idx = np.flatnonzero(male == sex)
        whole = _pick(rng, pools[key], len(idx))           # Faker's own (incl. 建华, 秀英)
        a, b = _pick(rng, pools[key + "1"], len(idx)), _pick(rng, pools[key + "1"], len(idx))
        compound = rng.random(len(idx)) < 0.6                # most modern given names are 2 chars
        out[idx] = np.where(compound, a + b, whole)
    return out


def _unique_resident_bodies(rng: np.random.Generator, region: np.ndarray, ymd: np.ndarray,
                            male: np.ndarray) -> np.ndarray:
    """17-digit bodies; sequence parity encodes sex (odd = male); redraw the rare clashes."""
    n = len(region)
    seq = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        seq[todo] = rng.integers(1, 500, size=len(todo)) * 2 - male[todo]
        bodies = region + ymd + np.char.zfill(seq.astype("U3"), 3).astype(object)
        _, first = np.unique(bodies.astype("U17"), return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)
    return bodies


def _unique_mobiles(rng: np.random.Generator, n: int) -> np.ndarray:
    prefix_idx = rng.integers(0, len(_MOBILE_PREFIXES), size=n)
    numbers = prefix_idx * 10**8 + rng.integers(0, 10**8, size=n)
    while True:
        _, first = np.unique(numbers, return_index=True)
        dup = np.setdiff1d(np.arange(n), first)
        if not len(dup):
            break
        numbers[dup] = prefix_idx[dup] * 10**8 + rng.integers(0, 10**8, size=len(dup))
    return np.array([f"{_MOBILE_PREFIXES[v // 10**8]}{v % 10**8:08d}" for v in numbers.tolist()],
                    dtype=object)


def _master(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Clean, internally consistent record of every person plus latent score drivers."""
    pools = _pools()
    male = rng.random(n) < 0.5
    surname = _pick(rng, pools["surnames"], n, pools["surname_p"])
    name = surname + _given_names(rng, n, male, pools)
    ref = np.datetime64(REFERENCE_DATE, "D")
    oldest = (ref.astype("datetime64[Y]") - 81).astype("datetime64[D]") + 1   # REFERENCE_DATE
    youngest = (ref.astype("datetime64[Y]") - 18).astype("datetime64[D]")     # is a 1 January
    dob = oldest + rng.integers(0, (youngest - oldest).astype(np.int64) + 1, size=n)
    dob_s = np.datetime_as_string(dob, unit="D").astype(object)
    year = dob.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dob.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (dob - dob.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    region = _pick(rng, tuple(_REGIONS), n)
    bodies = _unique_resident_bodies(rng, region, np.char.replace(dob_s.astype("U10"), "-", "")
                                     .astype(object), male.astype(np.int64))
    province = _pick(rng, pools["provinces"], n)
    city = np.where(np.isin(province, _MUNICIPALITIES), "", _pick(rng, pools["cities"], n))
    street = (_pick(rng, pools["street_stems"], n) + _pick(rng, pools["street_suffixes"], n))
    number = [f"{a}号" if r < 0.4 else f"{a}号{b}栋{f}{u:02d}室" for a, b, f, u, r in zip(
        rng.integers(1, 400, n).tolist(), rng.integers(1, 30, n).tolist(),
        rng.integers(1, 33, n).tolist(), rng.integers(1, 9, n).tolist(), rng.random(n).tolist())]
    rest = city + _pick(rng, pools["districts"], n) + street + np.array(number, dtype=object)
    return {
        "name": name, "surname_len": np.array([len(v) for v in surname.tolist()], dtype=np.int64),
        "gender": np.where(male, "男", "女").astype(object), "dob": dob_s,
        "year": year, "month": month, "day": day, "mobile": _unique_mobiles(rng, n),
        "resident_id": bodies + _check_chars(bodies.astype("U17")).astype(object),
        "province": province, "address_rest": rest,
        "credit": rng.standard_normal(n),                  # drives repay_score
        "spend": 7.0 + 0.8 * rng.standard_normal(n),       # log of typical spend
        # Drawn last so every earlier draw (and so every other column) is what it was before
        # travel_score existed.
        "travel": 6.5 + 1.0 * rng.standard_normal(n),      # log of typical travel spend
    }


def _membership(rng: np.random.Generator, n: int, k: int, overlap: float) -> np.ndarray:
    """n x k bool: a random non-empty subset per person; round(overlap*n) people on 2+."""
    sizes = np.ones(n, dtype=np.int64)
    if k >= 2:
        multi = rng.permutation(n)[: int(round(overlap * n))]
        sizes[multi] = 2 + rng.binomial(k - 2, 0.5, size=len(multi))
    rank = rng.random((n, k)).argsort(axis=1).argsort(axis=1)
    return rank < sizes[:, None]


def _user_ids(rng: np.random.Generator, k: int, count: int) -> list[str]:
    """Opaque, platform-specific ids; the platform tag keeps them distinct across platforms."""
    style = (k - 1) % 3
    if style == 1:
        return [f"P{k}_{v:012x}" for v in rng.choice(16**12, size=count, replace=False).tolist()]
    space = max(10**8, 10 * count)
    nums = rng.choice(space, size=count, replace=False).tolist()
    return [f"p{k}-{v:08d}" for v in nums] if style == 0 else [f"u{k}x{v:010d}" for v in nums]


def _typo_name(name: str, kind: float, u1: float, u2: float) -> str:
    if kind < 0.15:
        variant = name.translate(_TRADITIONAL)
        if variant != name:
            return variant
    if kind < 0.7:
        spots = [j for j, ch in enumerate(name) if ch in _HOMOPHONES]
        if spots:
            j = spots[int(u1 * len(spots))]
            alts = _HOMOPHONES[name[j]]
            return name[:j] + alts[int(u2 * len(alts))] + name[j + 1:]
        kind = 0.7 + 0.3 * u2
    j = int(u1 * len(name))
    if kind < 0.8 and len(name) >= 3:                       # drop a given-name character
        return name[: max(j, 1)] + name[max(j, 1) + 1:]
    if kind < 0.9 and len(name) >= 3:                       # transpose within the given name
        j = 1 + int(u1 * (len(name) - 2))
        if name[j] != name[j - 1]:
            return name[: j - 1] + name[j] + name[j - 1] + name[j + 1:]
    return name[: j + 1] + name[j] + name[j + 1:]           # duplicate a character


def _short_province(p: str) -> str:
    for suffix in _PROVINCE_SUFFIXES:
        if p.endswith(suffix) and len(p) > len(suffix) + 1:
            return p[: -len(suffix)]
    return p


def _corrupt(rng: np.random.Generator, c: float, f: dict[str, list], m: dict[str, np.ndarray],
             who: np.ndarray) -> None:
    """Mess up one platform's copy in place; each field independently, rates scaled by c."""
    n = len(who)

    def chosen(p: float) -> list[int]:
        return np.flatnonzero(rng.random(n) < min(1.0, p * c)).tolist()

    names = f["name"]
    rows = chosen(_P_NAME)
    for i, (kind, u1, u2) in zip(rows, rng.random((len(rows), 3)).tolist()):
        names[i] = _typo_name(names[i], kind, u1, u2)

    rows = chosen(_P_DOB_FORMAT)
    for i, v in zip(rows, rng.integers(0, 3, len(rows)).tolist()):
        y, mo, d = (int(m[key][who[i]]) for key in ("year", "month", "day"))
        f["dob"][i] = (f"{y}/{mo}/{d}", f"{y}{mo:02d}{d:02d}", f"{y}年{mo}月{d}日")[v]

    mob = f["mobile"]
    rows = chosen(_P_MOBILE_TYPO)
    for i, pos, delta in zip(rows, rng.integers(3, 11, len(rows)).tolist(),
                             rng.integers(1, 10, len(rows)).tolist()):
        mob[i] = mob[i][:pos] + str((int(mob[i][pos]) + delta) % 10) + mob[i][pos + 1:]
    rows = chosen(_P_MOBILE_FORMAT)
    for i, v in zip(rows, rng.integers(0, 4, len(rows)).tolist()):
        s = mob[i]
        mob[i] = (f"+86 {s[:3]} {s[3:7]} {s[7:]}", f"0086-{s}", f"{s[:3]}-{s[3:7]}-{s[7:]}",
                  f"+86{s}")[v]

    rid = f["resident_id"]
    for i in chosen(_P_RID_LOWER_X):
        rid[i] = rid[i].replace("X", "x")
    for i in chosen(_P_RID_OLD):
        if m["year"][who[i]] < 1990:                         # only they could hold a 15-digit card
            rid[i] = rid[i][:6] + rid[i][8:17]
    for i in chosen(_P_RID_FULL_WIDTH):
        rid[i] = rid[i].translate(_FULL_WIDTH)

    prov, rest = f.pop("province"), f.pop("address_rest")
    rows = chosen(_P_ADDR_PROVINCE)
    for i, drop in zip(rows, (rng.random(len(rows)) < 0.5).tolist()):
        prov[i] = "" if drop else _short_province(prov[i])
    rows = chosen(_P_ADDR_TYPO)
    for i, u in zip(rows, rng.random(len(rows)).tolist()):
        j = int(u * len(rest[i]))
        rest[i] = rest[i][:j] + rest[i][j + 1:]
    f["address"] = [a + b for a, b in zip(prov, rest)]

    for key, p in (("gender", _P_GENDER_MISSING), ("dob", _P_DOB_MISSING),
                   ("mobile", _P_MOBILE_MISSING), ("address", _P_ADDR_MISSING)):
        for i in chosen(p):
            f[key][i] = ""


@functools.lru_cache(maxsize=1)
def _converters() -> tuple[Any, Any, Any]:
    """OpenCC simplified -> traditional (phrase mode, as a real converter writes), pypinyin."""
    import opencc
    from pypinyin import Style, lazy_pinyin

    s2t = opencc.OpenCC("s2t").convert
    plain = functools.lru_cache(maxsize=1 << 16)(lambda t: tuple(lazy_pinyin(t, style=Style.NORMAL)))
    tone = functools.lru_cache(maxsize=1 << 16)(lambda t: tuple(lazy_pinyin(t, style=Style.TONE)))
    return s2t, plain, tone


def _pinyin_name(name: str, surname_len: int, fmt: int, u: float) -> str:
    """A Han name as a platform that stores pinyin writes it (phrase readings, as pypinyin gives).

    ``fmt``: 0 passport ``ZHANG XIAOMING``, 1 ``Zhang Xiaoming``, 2 western ``Xiaoming Zhang``,
    3 ``zhang xiao ming``, 4 tone marks ``Zhāng Xiǎomíng``, 5 ``zhangxiaoming``; ü as v, u or yu.
    """
    _, plain, tone = _converters()
    read = tone if fmt == 4 else plain
    sur, given = read(name[:surname_len]), read(name[surname_len:])
    if fmt != 4:
        u_as = ("v", "u", "yu")[int(u * 3)]
        sur, given = (tuple(p.replace("v", u_as) for p in part) for part in (sur, given))
    s, g = "".join(sur), "".join(given)
    if fmt == 0:
        return f"{s} {g}".upper()
    if fmt in (1, 4):
        return f"{s.capitalize()} {g.capitalize()}"
    if fmt == 2:
        return f"{g.capitalize()} {s.capitalize()}"
    if fmt == 3:
        return " ".join((s, *given))
    return s + g


def _typo_pinyin(text: str, kind: float, u: float) -> str:
    """A slip in typed pinyin: a southern-accent merge (zh/z, sh/s, ch/c, ng/n), a dropped,
    doubled or swapped letter."""
    low = text.lower()
    if kind < 0.4:
        for a, b in (("zh", "z"), ("sh", "s"), ("ch", "c"), ("ng", "n")):
            j = low.find(a)
            if j >= 0:
                return text[:j] + text[j:j + len(b)] + text[j + len(a):]
    letters = [j for j, ch in enumerate(text) if ch.isalpha()]
    j = letters[int(u * len(letters))]
    if kind < 0.6:
        return text[:j] + text[j + 1:]
    if kind < 0.8:
        return text[:j + 1] + text[j] + text[j + 1:]
    if j + 1 < len(text) and text[j + 1].isalpha():
        return text[:j] + text[j + 1] + text[j] + text[j + 2:]
    return text[:j] + text[j + 1:]


def _corrupt_heavy(rng: np.random.Generator, c: float, f: dict[str, list], m: dict[str, np.ndarray],
                   who: np.ndarray, style: str) -> None:
    """``cn-heavy``: one platform's copy in its own style (``han``, ``pinyin`` or ``traditional``),
    with typos, missing fields, legacy 15-digit IDs, moved people and per-platform formats."""
    n = len(who)
    s2t = _converters()[0]

    def chosen(p: float) -> list[int]:
        return np.flatnonzero(rng.random(n) < min(1.0, p * c)).tolist()

    names = f["name"]
    rows = chosen(_H_NAME_TYPO)                       # Han typos first: the pinyin of a homophone
    for i, (kind, u1, u2) in zip(rows, rng.random((len(rows), 3)).tolist()):   # typo is unchanged
        names[i] = _typo_name(names[i], 0.15 + 0.85 * kind, u1, u2)
    for i in chosen(_H_TRADITIONAL[style]):
        names[i] = s2t(names[i])
    pinyin_rows = chosen(_H_NAME_SCRIPT[style])
    formats = rng.choice(6, size=len(pinyin_rows), p=[0.3, 0.25, 0.15, 0.1, 0.05, 0.15]).tolist()
    for i, fmt, u in zip(pinyin_rows, formats, rng.random(len(pinyin_rows)).tolist()):
        true = m["name"][who[i]]
        # a typo in the Han name changes the pinyin only where it is not a homophone
        base = names[i] if len(names[i]) == len(true) else true
        names[i] = _pinyin_name(base, int(m["surname_len"][who[i]]), fmt, u)
    p_typo = min(1.0, _H_PINYIN_TYPO * c)
    for i, kind, u in zip(pinyin_rows, rng.random(len(pinyin_rows)).tolist(),
                          rng.random(len(pinyin_rows)).tolist()):
        if kind < p_typo:
            names[i] = _typo_pinyin(names[i], kind / p_typo, u)

    gender = f["gender"]
    if style == "pinyin":
        for i, v in zip(range(n), rng.integers(0, 3, n).tolist()):
            gender[i] = (("M", "Male", "m") if gender[i] == "男" else ("F", "Female", "f"))[v]

    dob = f["dob"]
    rows = chosen(_H_DOB_TYPO)
    for i, kind in zip(rows, rng.integers(0, 3, len(rows)).tolist()):
        y, mo, d = (int(m[key][who[i]]) for key in ("year", "month", "day"))
        if kind == 0 and d <= 12 and d != mo:
            mo, d = d, mo                             # day and month swapped
        elif kind == 1:
            d = d + 1 if d < 28 else d - 1
        else:
            y += 1 if y < 2006 else -1
        dob[i] = f"{y:04d}-{mo:02d}-{d:02d}"
    fmt_p = {"han": (0.7, 0.1, 0.1, 0.1, 0.0), "pinyin": (0.1, 0.5, 0.1, 0.0, 0.3),
             "traditional": (0.1, 0.1, 0.1, 0.7, 0.0)}[style]
    rows = chosen(1.0)
    for i, v in zip(rows, rng.choice(5, size=len(rows), p=fmt_p).tolist()):
        y, mo, d = (int(x) for x in dob[i].split("-"))
        dob[i] = (f"{y:04d}-{mo:02d}-{d:02d}", f"{y}/{mo}/{d}", f"{y}{mo:02d}{d:02d}",
                  f"{y}年{mo}月{d}日", f"{y}-{mo:02d}-{d:02d} 00:00:00")[v]

    mob = f["mobile"]
    rows = chosen(_H_MOBILE_OTHER)                     # a number of its own: a second phone
    for i, other in zip(rows, _unique_mobiles(rng, len(rows)).tolist()):
        mob[i] = other
    rows = chosen(_H_MOBILE_TYPO)
    for i, pos, delta in zip(rows, rng.integers(3, 11, len(rows)).tolist(),
                             rng.integers(1, 10, len(rows)).tolist()):
        mob[i] = mob[i][:pos] + str((int(mob[i][pos]) + delta) % 10) + mob[i][pos + 1:]
    mob_p = {"han": (0.6, 0.1, 0.1, 0.1, 0.1), "pinyin": (0.05, 0.4, 0.3, 0.15, 0.1),
             "traditional": (0.2, 0.1, 0.1, 0.1, 0.5)}[style]
    rows = chosen(1.0)
    for i, v in zip(rows, rng.choice(5, size=len(rows), p=mob_p).tolist()):
        s = mob[i]
        mob[i] = (s, f"+86 {s[:3]} {s[3:7]} {s[7:]}", f"+86{s}", f"(+86) {s}",
                  f"+86-{s[:3]}-{s[3:7]}-{s[7:]}")[v]

    rid = f["resident_id"]
    for i in chosen(_H_RID_OLD):
        if m["year"][who[i]] < 1984:                   # issued before 1999 to an adult
            rid[i] = rid[i][:6] + rid[i][8:17]
    rows = chosen(_H_RID_TYPO)
    for i, pos, delta in zip(rows, rng.integers(0, 15, len(rows)).tolist(),
                             rng.integers(1, 10, len(rows)).tolist()):
        rid[i] = rid[i][:pos] + str((int(rid[i][pos]) + delta) % 10) + rid[i][pos + 1:]
    for i in chosen(0.5):
        rid[i] = rid[i].replace("X", "x")
    for i in chosen(_H_RID_SPACED):
        r = rid[i]
        rid[i] = f"{r[:6]} {r[6:-4]} {r[-4:]}"
    for i in chosen(_H_RID_FULL_WIDTH):
        rid[i] = rid[i].translate(_FULL_WIDTH)

    prov, rest = f.pop("province"), f.pop("address_rest")
    rows = chosen(_H_ADDR_MOVED)                       # moved: another address altogether
    if rows:
        other = _master_addresses(rng, len(rows))
        for i, (p_new, r_new) in zip(rows, other):
            prov[i], rest[i] = p_new, r_new
    rows = chosen(0.75)
    for i, drop in zip(rows, (rng.random(len(rows)) < 0.5).tolist()):
        prov[i] = "" if drop else _short_province(prov[i])
    rows = chosen(_H_ADDR_TYPO)
    for i, u in zip(rows, rng.random(len(rows)).tolist()):
        j = int(u * len(rest[i]))
        rest[i] = rest[i][:j] + rest[i][j + 1:]
    address = [a + b for a, b in zip(prov, rest)]
    rows = chosen(_H_ADDR_FORMAT)
    for i, v in zip(rows, rng.integers(0, 3, len(rows)).tolist()):
        a = address[i]
        address[i] = ("中国" + a, a.translate(_FULL_WIDTH), re.sub(r"(市|区|路|街|道)", r"\1 ", a).strip())[v]
    for i in chosen(_H_TRADITIONAL[style]):
        address[i] = s2t(address[i])
    f["address"] = address

    for key, p in (("name", _H_NAME_MISSING), ("gender", _H_GENDER_MISSING), ("dob", _H_DOB_MISSING),
                   ("mobile", _H_MOBILE_MISSING), ("resident_id", _H_RID_MISSING[style]),
                   ("address", _H_ADDR_MISSING)):
        for i in chosen(p):
            f[key][i] = ""


def _master_addresses(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` fresh (province, rest of address) pairs, drawn as :func:`_master` draws them."""
    pools = _pools()
    province = _pick(rng, pools["provinces"], n)
    city = np.where(np.isin(province, _MUNICIPALITIES), "", _pick(rng, pools["cities"], n))
    street = _pick(rng, pools["street_stems"], n) + _pick(rng, pools["street_suffixes"], n)
    number = [f"{a}号" for a in rng.integers(1, 400, n).tolist()]
    rest = city + _pick(rng, pools["districts"], n) + street + np.array(number, dtype=object)
    return list(zip(province.tolist(), rest.tolist()))


def _check_args(people: int, platforms: int, seed: int, overlap: float, corruption: float,
                profile: str) -> None:
    if profile not in PROFILES:
        raise SynthParameterError(f"profile must be one of {', '.join(PROFILES)}")
    for label, value, low in (("people", people, 1), ("platforms", platforms, 1),
                              ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise SynthParameterError(f"{label} must be an integer >= {low}")
    for label, share in (("overlap", overlap), ("corruption", corruption)):
        if isinstance(share, bool) or not isinstance(share, (int, float, np.floating, np.integer)) \
                or not 0.0 <= share <= 1.0:
            raise SynthParameterError(f"{label} must be a number in [0, 1]")


def generate_population(people: int, platforms: int, *, seed: int = 0, overlap: float = 0.6,
                        corruption: float | None = None, progress: bool = False,
                        profile: str = "default") -> Population:
    """Draw ``people`` persons, spread them over ``platforms`` platforms, corrupt each copy.

    About ``overlap`` of the people (exactly round(overlap * people) when platforms >= 2) sit on
    two or more platforms; ``corruption`` in [0, 1] scales every corruption rate (0 = clean;
    None: the profile's own, 0.2 for ``default`` and 1.0 for ``cn-heavy``). ``profile``:
    ``"default"`` corrupts every platform alike; ``"cn-heavy"`` gives platform k its own
    style, cycling han (simplified), pinyin (names mostly in pinyin, international formats)
    and traditional (traditional characters), with far more typos, missing fields, legacy
    15-digit IDs and moved people (docs/design.md#synthetic-population).
    """
    if corruption is None:
        corruption = _PROFILE_CORRUPTION.get(profile, 0.2)
    _check_args(people, platforms, seed, overlap, corruption, profile)
    people, platforms, seed = int(people), int(platforms), int(seed)
    # Streams 0 .. platforms+1 are the original ones; the travel_score streams come after them
    # (a SeedSequence's i-th child does not depend on how many are spawned), so adding that
    # column left every other column, id and corruption of a given seed unchanged.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2 * platforms + 2)]
    bar = tqdm(total=platforms + 2, desc="synth", unit="step", file=sys.stderr,
               disable=not progress, leave=False)
    with bar:
        master = _master(streams[0], people)
        person_ids = np.array([f"person_{i:06d}" for i in range(people)], dtype=object)
        bar.update()
        member = _membership(streams[1], people, platforms, overlap)
        bar.update()
        frames: dict[str, pd.DataFrame] = {}
        truths = []
        for k in range(1, platforms + 1):
            rng = streams[k + 1]
            who = rng.permutation(np.flatnonzero(member[:, k - 1]))      # shuffled rows
            count = len(who)
            slope, bias, shift = rng.uniform(0.6, 1.0), rng.normal(0, 25), rng.normal(0, 0.3)
            repay = np.clip(np.rint(650 + 80 * slope * master["credit"][who] + bias
                                    + 45 * rng.standard_normal(count)), 300, 850).astype(np.int64)
            spend = np.exp(master["spend"][who] + shift + 0.35 * rng.standard_normal(count))
            travel_rng = streams[platforms + 1 + k]
            travel = np.exp(master["travel"][who] + travel_rng.normal(0, 0.3)
                            + 0.4 * travel_rng.standard_normal(count))
            fields = {key: master[key][who].tolist() for key in (
                "name", "gender", "dob", "mobile", "resident_id", "province", "address_rest")}
            user_ids = _user_ids(rng, k, count)     # drawn before corruption: same seed, same ids
            if corruption > 0 and profile == "cn-heavy":
                _corrupt_heavy(rng, float(corruption), fields, master, who,
                               _HEAVY_STYLES[(k - 1) % len(_HEAVY_STYLES)])
            elif corruption > 0:
                _corrupt(rng, float(corruption), fields, master, who)
            else:
                fields["address"] = [a + b for a, b in zip(fields.pop("province"),
                                                           fields.pop("address_rest"))]
            fields["user_id"] = user_ids
            fields["repay_score"] = [str(v) for v in repay.tolist()]
            fields["spend_score"] = [f"{v:.2f}" for v in spend.tolist()]
            fields["travel_score"] = [f"{v:.2f}" for v in travel.tolist()]
            label = f"platform_{k}"
            frames[label] = pd.DataFrame({col: fields[col] for col in COLUMNS},
                                         columns=list(COLUMNS))
            truths.append(pd.DataFrame({"platform": [label] * count, "user_id": user_ids,
                                        "person": person_ids[who].tolist()}))
            bar.update()
    truth = pd.concat(truths, ignore_index=True)[list(TRUTH_COLUMNS)]
    return Population(platforms=frames, truth=truth)


def _write_csv_atomic(frame: pd.DataFrame, path: pathlib.Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_population(population: Population, out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Write ``platform_<k>.csv`` for each platform and ``truth.csv``; return their paths.

    Each file is written to a temp file in ``out_dir`` and renamed into place, so a reader never
    sees half a file. ``out_dir`` is created if needed.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in [*population.platforms.items(), ("truth", population.truth)]:
        path = out / f"{name}.csv"
        _write_csv_atomic(frame, path)
        paths.append(path)
    return paths
