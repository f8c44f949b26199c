"""Normalisers on real-looking values, their idempotence, and the schema extension's validation."""

from __future__ import annotations

import copy
import json
import pickle
import random
from pathlib import Path

import pytest

from pprl.encoding.normalise import (
    NORMALISER_TYPES,
    Normaliser,
    clear_caches,
    normalise_date,
    normalise_gender,
    normalise_mobile,
    normalise_name,
    normalise_resident_id,
    normalise_text,
    parse_normaliser,
    simplify,
    tables_fingerprint,
)
from pprl.encoding.normalise.identifiers import normalise_resident_id as psi_resident_id
from pprl.encoding.schema import EXTENDED_VERSION, load_schema
from pprl.errors import SchemaError
from pprl.sim.synth import generate_population

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: The gender feature hashed on its own, as schema-cn.json had it until December 2026 (it leaks: see
#: test_attack.py); kept here to test the gender normaliser end to end.
GENDER_HASHED = {
    "identifier": "gender", "normalise": {"type": "gender"}, "format": {"type": "enum", "values": ["M", "F"]},
    "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 20}, "hash": {"type": "blakeHash"}},
}
SHIPPED_CN = json.loads((EXAMPLES / "schema-cn.json").read_text(encoding="utf-8"))
SCHEMA_CN = {**SHIPPED_CN, "features": [GENDER_HASHED if f["identifier"] == "gender" else f
                                        for f in SHIPPED_CN["features"]]}


def n(ntype: str, **options) -> Normaliser:
    return Normaliser(ntype, tuple(options.items()))


# ------------------------------------------------------------------ resident ID


@pytest.mark.parametrize("raw, expected", [
    ("110105491231002", "11010519491231002X"),              # 15 -> 18 digits
    ("11010519491231002X", "11010519491231002X"),
    ("11010519491231002x", "11010519491231002X"),           # lower-case x
    ("１１０１０５１９４９１２３１００２ｘ", "11010519491231002X"),  # full width
    (" 110105 19491231 002X ", "11010519491231002X"),       # spaces
    ("110105-19491231-002X", "11010519491231002X"),
    ("11010519491231002", None),                            # 17 digits
    ("110105194912310021", None),                           # bad check digit
    ("11010519491331002X", None),                           # month 13
    ("010105194912310025", None),                           # leading zero
    ("110105490231002", None),                              # 15 digits, 1949-02-31
    ("", None),
    ("unknown", None),
])
def test_resident_id(raw, expected):
    assert n("cn_resident_id")(raw) == expected
    assert normalise_resident_id(raw) == expected


def test_resident_id_is_the_psi_paths_canonical_form():
    ids = generate_population(300, 1, seed=4, corruption=1.0).platforms["platform_1"]["resident_id"]
    norm = n("cn_resident_id")
    assert [norm(v) for v in ids] == [psi_resident_id(v) for v in ids]
    assert all(norm(v) is not None for v in ids)  # synth's variants are all valid numbers


# ------------------------------------------------------------------ mobile


@pytest.mark.parametrize("raw", ["+86 138 0013 8000", "0086-13800138000", "138-0013-8000",
                                 "13800138000", "+8613800138000", "(+86) 138.0013.8000",
                                 "１３８００１３８０００", "8613800138000"])
def test_mobile_variants(raw):
    assert n("cn_mobile")(raw) == "13800138000"
    assert normalise_mobile(raw) == "13800138000"


@pytest.mark.parametrize("raw", ["12800138000", "1380013800", "138001380000", "010-12345678",
                                 "+1 138 0013 8000", "", "n/a"])
def test_mobile_invalid_is_missing(raw):
    assert n("cn_mobile")(raw) is None


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize("raw", ["1990-03-07", "1990/3/7", "19900307", "1990年3月7日", "1990.3.7",
                                 "1990-3-7", " 1990年03月07日 ", "１９９０年３月７日",
                                 "1990-03-07 00:00:00", "1990-03-07T08:30", "1990/03/07"])
def test_date_variants_agree(raw):
    assert normalise_date(raw) == "1990-03-07"
    assert n("date")(raw) == "1990-03-07"
    assert n("date", output="compact")(raw) == "19900307"


@pytest.mark.parametrize("raw", ["1990-02-30", "07/03/1990", "3/7/1990", "1990-13-01", "90-3-7",
                                 "199037", "1990年3月", "", "unknown", "1990-03-07x"])
def test_invalid_dates_are_missing(raw):
    assert normalise_date(raw) is None


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("raw, han", [
    ("陳", "陈"),
    ("陳小明", "陈小明"),
    ("張偉", "张伟"),
    ("买买提·艾力", "买买提艾力"),
    ("阿 卜 杜", "阿卜杜"),
    ("欧阳•修", "欧阳修"),
    ("王\u3000芳", "王芳"),                  # ideographic space
    ("李\u200b娜", "李娜"),                  # zero-width space
    ("ＬＩ Ｎａ", "lina"),                   # full-width Latin, case folded
    ("", None),
    (" · ", None),
])
def test_name_han(raw, han):
    assert normalise_name(raw) == han
    assert n("cn_name")(raw) == han


@pytest.mark.parametrize("raw, pinyin", [
    ("曾伟", "zengwei"),       # not ceng
    ("曾", "zeng"),
    ("单田芳", "shantianfang"),  # not dan
    ("解缙", "xiejin"),         # not jie
    ("区志坚", "ouzhijian"),    # not qu
    ("仇英", "qiuying"),
    ("朴树", "piaoshu"),
    ("查良镛", "zhaliangyong"),
    ("尉迟恭", "yuchigong"),
    ("万俟卨", "moqixie"),
    ("欧阳修", "ouyangxiu"),
    ("吕布", "lvbu"),
    ("張偉", "zhangwei"),       # traditional first simplified
    ("章伟", "zhangwei"),       # homophone of 张伟
    ("买买提·艾力", "maimaitiaili"),
    ("", None),
])
def test_name_pinyin(raw, pinyin):
    assert normalise_name(raw, "pinyin") == pinyin
    assert n("cn_name", output="pinyin")(raw) == pinyin


def test_surname_reading_only_applies_to_the_surname():
    assert normalise_name("王曾", "pinyin") == "wangceng"  # 曾 as a given name keeps pypinyin's reading
    assert normalise_name("曾曾", "pinyin") == "zengceng"


def test_simplify_is_per_character():
    assert simplify("陳偉國") == "陈伟国"
    assert simplify("abc 123") == "abc 123"


# ------------------------------------------------------------------ gender, text


@pytest.mark.parametrize("raw, expected", [
    ("男", "M"), ("女", "F"), ("M", "M"), ("F", "F"), ("m", "M"), ("f", "F"), ("Ｍ", "M"),
    ("male", "M"), ("Female", "F"), ("男性", "M"), ("女性", "F"), (" 男 ", "M"),
    ("", None), ("未知", None), ("X", None), ("1", None),
])
def test_gender(raw, expected):
    assert normalise_gender(raw) == expected
    assert n("gender")(raw) == expected


def test_text():
    assert normalise_text(" 北京市 朝陽區，建國路１號-3 ") == "北京市朝阳区建国路1号3"
    assert n("text")("上海市 浦東新區 ABC路") == "上海市浦东新区abc路"
    assert n("text", strip="space")("上海 浦東，1号") == "上海浦东,1号"
    assert n("text", simplify=False, lower=False, strip="none")("浦東 AB") == "浦東 AB"
    assert n("text")(" ，。 ") is None


# ------------------------------------------------------------------ idempotence


def _tricky_values(rng: random.Random) -> list[str]:
    pop = generate_population(400, 2, seed=9, corruption=1.0)
    values = []
    for frame in pop.platforms.values():
        for col in ("name", "gender", "dob", "mobile", "resident_id", "address"):
            values.extend(frame[col].tolist())
    values += ["ß", "ẞ", "İstanbul", "ﬁ", "Ⅻ", "①", "㍿", "ｶﾞ", "薴", "乾隆", "後", "髮", "x\u0301",
               "1990-3-7 12:00", "0086 138", "  ", "\u200b", "·", "〇一", "𠀀", "ǚ"]
    alphabet = "陳陈張张曾單单解區ａＢc1２·• \u3000-_/年月日xX+86０"
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(500)]
    return values


def _all_normalisers() -> list[Normaliser]:
    out = [n(t) for t in NORMALISER_TYPES]
    out += [n("cn_name", output="pinyin"), n("date", output="compact"),
            n("text", strip="space"), n("text", strip="none", lower=False, simplify=False)]
    return out


def test_every_normaliser_is_idempotent():
    values = _tricky_values(random.Random(5))
    for norm in _all_normalisers():
        for v in values:
            once = norm(v)
            if once is not None:
                assert norm(once) == once, (norm, v)


def test_normalisers_pickle_and_compare():
    for norm in _all_normalisers():
        clone = pickle.loads(pickle.dumps(norm))
        assert clone == norm and clone("陳偉") == norm("陳偉")
    assert n("date") == n("date", output="iso")
    assert n("date") != n("date", output="compact")


def test_tables_fingerprint_is_stable():
    first = tables_fingerprint()
    assert len(first) == 64 and first == tables_fingerprint()


# ------------------------------------------------------------------ normalise block


@pytest.mark.parametrize("block, fragment", [
    ({"type": "soundex"}, "normalise.type 'soundex' is not one of cn_resident_id, cn_mobile"),
    ({}, "normalise.type is missing"),
    ("cn_name", "normalise must be an object"),
    ({"type": "cn_name", "output": "latin"}, "normalise.output must be one of 'han', 'pinyin'"),
    ({"type": "cn_name", "outptu": "pinyin"}, "unknown key 'outptu' for type 'cn_name' (options: output, han_only, words)"),
    ({"type": "cn_mobile", "strict": True}, "unknown key 'strict' for type 'cn_mobile' (it takes no options)"),
    ({"type": "text", "lower": 1}, "normalise.lower must be one of true, false"),
    ({"type": "date", "output": "%d/%m/%Y"}, "normalise.output must be one of 'iso', 'compact'"),
])
def test_bad_normalise_blocks(block, fragment):
    problems: list[str] = []
    assert parse_normaliser(block, problems) is None
    assert any(fragment in p for p in problems), problems


def test_direct_construction_errors():
    with pytest.raises(SchemaError, match="not one of"):
        Normaliser("soundex")
    with pytest.raises(SchemaError, match="no option 'x'"):
        Normaliser("date", (("x", 1),))
    with pytest.raises(SchemaError, match="must be one of"):
        Normaliser("date", (("output", "long"),))
    with pytest.raises(SchemaError):
        normalise_name("x", "latin")


# ------------------------------------------------------------------ schema extension


def cn() -> dict:
    return copy.deepcopy(SCHEMA_CN)


def feature(raw: dict, ident: str) -> dict:
    return next(f for f in raw["features"] if f["identifier"] == ident)


def test_schema_cn_is_extended():
    schema = load_schema(EXAMPLES / "schema-cn.json")
    assert schema.extended and schema.raw["version"] == EXTENDED_VERSION and schema.version == 3
    assert schema.columns == ["user_id", "name", "gender", "dob", "mobile", "resident_id", "address",
                              "repay_score", "spend_score", "travel_score"]
    assert schema.hashed_identifiers == ["name", "name_pinyin", "dob", "mobile", "resident_id",
                                         "address"]  # gender is not hashed: it would leak (test_attack.py)
    by_id = {f.identifier: f for f in schema.features}
    assert by_id["name_pinyin"].source == "name" and by_id["name_pinyin"].column == "name"
    assert by_id["name_pinyin"].normalise == n("cn_name", output="pinyin", words=True)
    assert by_id["resident_id"].normalise.type == "cn_resident_id"
    assert not load_schema(EXAMPLES / "schema-cn-clkhash.json").extended


def test_clkhash_refuses_the_extended_schema():
    clkhash_schema = pytest.importorskip("clkhash.schema")
    with pytest.raises(Exception, match="3\\+pprl"):
        clkhash_schema.from_json_dict(cn())


def _problems(raw: dict) -> str:
    with pytest.raises(SchemaError) as info:
        load_schema(raw)
    return str(info.value)


def test_extension_keys_need_the_extended_version():
    raw = cn()
    raw["version"] = 3
    message = _problems(raw)
    assert "feature 'name': 'normalise' is a pprl extension: declare \"version\": \"3+pprl\"" in message
    assert "feature 'name_pinyin': 'source' is a pprl extension" in message
    raw["version"] = 2
    assert "'normalise' is a pprl extension" in _problems(raw)


def test_unknown_normaliser_is_refused_never_ignored():
    raw = cn()
    feature(raw, "name")["normalise"] = {"type": "cn_name_v2"}
    assert "feature 'name': normalise.type 'cn_name_v2' is not one of" in _problems(raw)


def test_ngram_on_resident_id_is_refused():
    raw = cn()
    feature(raw, "resident_id")["hashing"]["comparison"] = {"type": "ngram", "n": 2}
    feature(raw, "resident_id")["hashing"]["strategy"] = {"bitsPerFeature": 100}
    message = _problems(raw)
    assert "feature 'resident_id': normalise.type 'cn_resident_id' needs hashing.comparison.type 'exact'" \
        in message


@pytest.mark.parametrize("source, fragment", [
    ("nmae", "feature 'name_pinyin': source 'nmae' is not a feature of this schema"),
    ("name_pinyin", "feature 'name_pinyin': source names the feature itself"),
    ("", "feature 'name_pinyin': source must be the identifier of another feature"),
    (["name"], "feature 'name_pinyin': source must be the identifier of another feature"),
])
def test_bad_source_references(source, fragment):
    raw = cn()
    feature(raw, "name_pinyin")["source"] = source
    assert fragment in _problems(raw)


def test_source_may_not_be_derived_itself():
    raw = cn()
    extra = copy.deepcopy(feature(raw, "name_pinyin"))
    extra["identifier"] = "name_pinyin_2"
    extra["source"] = "name_pinyin"
    raw["features"].append(extra)
    assert "source 'name_pinyin' is itself derived (from 'name')" in _problems(raw)


def test_source_may_name_an_ignored_column():
    raw = cn()
    feature(raw, "name")["ignored"] = True
    for key in ("normalise", "format", "hashing"):
        del feature(raw, "name")[key]
    schema = load_schema(raw)
    assert "name" not in schema.hashed_identifiers and "name" in schema.columns


def test_extension_on_ignored_feature_is_refused():
    raw = cn()
    feature(raw, "user_id")["normalise"] = {"type": "text"}
    assert "feature 'user_id': normalise cannot be used on an ignored feature" in _problems(raw)


def test_format_must_accept_the_normalised_value():
    raw = cn()
    feature(raw, "dob")["format"] = {"type": "date", "format": "%Y/%m/%d"}
    feature(raw, "gender")["format"] = {"type": "enum", "values": ["男", "女"]}
    message = _problems(raw)
    assert "feature 'dob': format rejects what normalise.type 'date' produces (e.g. '1990-03-07'" in message
    assert "feature 'gender': format rejects what normalise.type 'gender' produces" in message


def test_missing_value_replacement_is_refused_with_normalise():
    raw = cn()
    feature(raw, "dob")["hashing"]["missingValue"] = {"sentinel": "", "replaceWith": "19000101"}
    assert "feature 'dob': hashing.missingValue.replaceWith must be ''" in _problems(raw)
    feature(raw, "dob")["hashing"]["missingValue"] = {"sentinel": "未知"}
    feature(raw, "dob")["hashing"]["missingValue"]["replaceWith"] = ""
    assert load_schema(raw).extended


def test_extended_version_without_extensions_loads():
    raw = json.loads((EXAMPLES / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    raw["version"] = EXTENDED_VERSION
    assert load_schema(raw).extended


def test_all_extension_problems_reported_together():
    raw = cn()
    feature(raw, "name")["normalise"] = {"type": "nope"}
    feature(raw, "name_pinyin")["source"] = "missing_column"
    feature(raw, "resident_id")["hashing"]["comparison"] = {"type": "ngram", "n": 3}
    with pytest.raises(SchemaError) as info:
        load_schema(raw)
    assert len(info.value.problems) == 3


# ------------------------------------------------------------------ pinyin words, han only, addresses


@pytest.mark.parametrize("raw", ["张小明", "張小明", "ZHANG XIAOMING", "Zhang Xiaoming", "zhang xiao ming",
                                 "Zhāng Xiǎomíng", "章小明"])
def test_pinyin_words_agree_across_scripts_and_formats(raw):
    assert n("cn_name", output="pinyin", words=True)(raw) == "zhang xiaoming"


def test_pinyin_words_western_order_has_the_same_bigrams():
    from pprl.encoding.tokens import NgramComparison

    f = n("cn_name", output="pinyin", words=True)
    bigrams = NgramComparison(2).tokenize
    assert f("Xiaoming Zhang") == "xiaoming zhang"
    assert sorted(bigrams(f("Xiaoming Zhang"))) == sorted(bigrams(f("张小明")))


@pytest.mark.parametrize("raw, expected", [
    ("吕明", "lv ming"), ("LYU MING", "lv ming"), ("Lü Ming", "lv ming"), ("欧阳娜娜", "ouyang nana"),
    ("曾伟", "zeng wei"), ("王", "wang"), ("·", None), ("", None),
])
def test_pinyin_words_surnames_and_u_umlaut(raw, expected):
    assert n("cn_name", output="pinyin", words=True)(raw) == expected


def test_han_only_drops_names_without_han_characters():
    f = n("cn_name", han_only=True)
    assert f("陳 小·明") == "陈小明" and f("ZHANG Xiaoming") is None and f("张Xiaoming") == "张xiaoming"
    assert n("cn_name")("ZHANG Xiaoming") == "zhangxiaoming"     # the default is unchanged


@pytest.mark.parametrize("raw", ["中国河北省石家庄市长安区建国路1号", "河北石家庄市长安区建国路1号",
                                 "石家庄市 长安区 建国路 1号", "石家莊市長安區建國路１號", "中国石家庄市长安区建国路1号"])
def test_cn_address_drops_country_and_province(raw):
    assert n("cn_address")(raw) == "石家庄市长安区建国路1号"


def test_cn_address_keeps_a_city_named_like_its_province():
    f = n("cn_address")
    assert f("吉林省吉林市船营区") == f("吉林市船营区") == "吉林市船营区"
    assert f("北京市朝阳区1号") == f("北京朝阳区1号") == "朝阳区1号"
    assert f("广西壮族自治区南宁市") == "南宁市" and f("中国") is None


def test_options_that_do_not_go_together_are_refused():
    problems: list[str] = []
    assert parse_normaliser({"type": "cn_name", "words": True}, problems) is None
    assert problems and "words" in problems[0]
    with pytest.raises(SchemaError, match="han_only"):
        n("cn_name", output="pinyin", han_only=True)


def test_new_normalisers_are_idempotent_on_synthetic_data():
    pop = generate_population(1500, 3, seed=4, profile="cn-heavy")
    cases = [(n("cn_name", output="pinyin", words=True), "name"), (n("cn_name", han_only=True), "name"),
             (n("cn_address"), "address")]
    for f, column in cases:
        for df in pop.platforms.values():
            for v in df[column]:
                out = f(v)
                assert out is None or f(out) == out


# ------------------------------------------------------------------ fast paths


def _fold_chain(v: str) -> str:
    from pprl.encoding.normalise.text import NOT_WORD, nfkc

    return NOT_WORD.sub("", nfkc(simplify(nfkc(v)).casefold()))


def test_fold_fast_path_equals_the_chain():
    from pprl.encoding.normalise.chinese import fold

    rnd = random.Random(7)
    pool = [chr(c) for c in range(0x20, 0x3000, 7)] + [chr(c) for c in range(0x3000, 0xA000, 13)] + \
        [chr(c) for c in range(0xF900, 0x10000, 3) if not 0xD800 <= c < 0xE000] + ["\u0301", "\u3099", "\u00a0"]
    for ch in pool:
        for v in (ch, "a" + ch, ch + "\u0301", "张" + ch + "伟"):
            assert fold(v) == _fold_chain(v), repr(v)
    for _ in range(20000):
        v = "".join(rnd.choice(pool) for _ in range(rnd.randint(1, 6)))
        assert fold(v) == _fold_chain(v), repr(v)
    pop = generate_population(1000, 3, seed=2, profile="cn-heavy")
    for df in pop.platforms.values():
        for v in [*df.name, *df.address]:
            assert fold(v) == _fold_chain(v)


def test_many_equals_one_at_a_time():
    from pprl.sim.synth import resident_id_check_digit

    rnd = random.Random(3)
    ids = []
    for _ in range(5000):
        body = "".join(rnd.choice("0123456789") for _ in range(17))
        if rnd.random() < 0.7:
            body = body[:6] + f"{rnd.randint(0, 2100):04d}{rnd.randint(0, 13):02d}{rnd.randint(0, 32):02d}" + body[14:]
        ids.append(body + (resident_id_check_digit(body) if rnd.random() < 0.6 else rnd.choice("0123456789Xx")))
    ids += ["11010519000229002X", "11010520000229002X", "00000000000000000X", "11010519491231002x", ""]
    pop = generate_population(1000, 3, seed=2, profile="cn-heavy")
    frames = list(pop.platforms.values())
    for f, values in ((n("cn_resident_id"), ids + [v for df in frames for v in df.resident_id]),
                      (n("cn_mobile"), [v for df in frames for v in df.mobile] + ["13800138000", "12800138000"]),
                      (n("cn_name", output="pinyin", words=True), [v for df in frames for v in df.name]),
                      (n("date"), [v for df in frames for v in df.dob])):
        clear_caches()
        assert f.many(values) == [f(v) for v in values]
