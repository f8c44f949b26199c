"""Synthetic population: schema, determinism, valid IDs, ground truth, overlap, corruption."""

from __future__ import annotations

import difflib
import re
import unicodedata

import numpy as np
import pandas as pd
import pytest

from pprl.errors import PPRLError
from pprl.sim.synth import (
    COLUMNS,
    Population,
    SynthParameterError,
    generate_population,
    is_valid_resident_id,
    resident_id_check_digit,
    write_population,
)

N = 3000
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "东方", "慕容", "皇甫", "尉迟", "公孙", "令狐", "端木")


@pytest.fixture(scope="module")
def clean() -> Population:
    return generate_population(N, 3, seed=11, corruption=0.0)


@pytest.fixture(scope="module")
def noisy() -> Population:
    return generate_population(N, 3, seed=11, corruption=0.2)


def _copies(pop: Population) -> pd.DataFrame:
    """All rows of all platforms with their true person attached."""
    rows = [df.assign(platform=k) for k, df in pop.platforms.items()]
    return pd.concat(rows, ignore_index=True).merge(pop.truth, on=["platform", "user_id"],
                                                    validate="one_to_one")


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _dob_key(s: str) -> str:
    parts = re.findall(r"\d+", s)
    if len(parts) == 1 and len(parts[0]) == 8:
        return parts[0]
    y, m, d = (int(p) for p in parts)
    return f"{y:04d}{m:02d}{d:02d}"


def _dob_or_empty(s: str) -> str:
    return _dob_key(s) if s else ""


def test_columns_dtypes_and_no_missing_markers(clean, noisy):
    assert COLUMNS == ("user_id", "name", "gender", "dob", "mobile", "resident_id", "address",
                       "repay_score", "spend_score", "travel_score")
    assert list(clean.platforms) == ["platform_1", "platform_2", "platform_3"]
    for pop in (clean, noisy):
        for df in pop.platforms.values():
            assert list(df.columns) == list(COLUMNS)
            assert len(df) > 0
            for col in df.columns:
                assert pd.api.types.is_string_dtype(df[col]), col
                assert not df[col].isna().any(), col
                assert all(isinstance(v, str) for v in df[col]), col
        assert list(pop.truth.columns) == ["platform", "user_id", "person"]
        assert not pop.truth.isna().any().any()


def test_deterministic_per_seed_and_different_across_seeds():
    a = generate_population(500, 3, seed=5)
    b = generate_population(500, 3, seed=5)
    c = generate_population(500, 3, seed=6)
    for k in a.platforms:
        pd.testing.assert_frame_equal(a.platforms[k], b.platforms[k])
        assert not a.platforms[k]["name"].reset_index(drop=True).equals(
            c.platforms[k]["name"].reset_index(drop=True))
        assert set(a.platforms[k]["user_id"]) != set(c.platforms[k]["user_id"])
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not a.truth.equals(c.truth)


def test_clean_records_are_valid_and_consistent(clean):
    rows = _copies(clean)
    mobile = re.compile(r"^1[3-9]\d{9}$")
    for rid, dob, gender, mob in zip(rows.resident_id, rows.dob, rows.gender, rows.mobile):
        assert is_valid_resident_id(rid), rid
        assert rid[6:14] == dob.replace("-", "")
        assert gender == ("男" if int(rid[16]) % 2 else "女")
        assert mobile.match(mob), mob
    dob = pd.to_datetime(rows.dob, format="%Y-%m-%d")
    age = (pd.Timestamp("2025-01-01") - dob).dt.days / 365.25
    assert age.min() >= 17.99 and age.max() <= 81.0
    assert 15 <= age.mean() - 18 <= 45
    assert rows.address.str.match(r"^\w+?(省|市|自治区).+区.+(路|街|大道|巷)\d+号").all()
    people = rows.drop_duplicates("person")
    assert people.resident_id.is_unique and people.mobile.is_unique
    assert 0.4 < (people.gender == "男").mean() < 0.6
    assert people.resident_id.str[:6].nunique() >= 30
    lengths = people.name.str.len()
    assert lengths.between(2, 4).all() and (lengths == 3).mean() > 0.5
    many = generate_population(20_000, 1, seed=1, corruption=0).platforms["platform_1"].name
    assert 0 < many.str[:2].isin(COMPOUND_SURNAMES).mean() < 0.02     # rare two-character surnames


def test_truth_covers_each_row_once_and_ids_are_opaque(clean):
    truth = clean.truth
    assert len(truth) == sum(len(df) for df in clean.platforms.values())
    assert not truth.duplicated(["platform", "user_id"]).any()
    assert truth.user_id.is_unique                       # distinct across platforms too
    for k, df in clean.platforms.items():
        assert df.user_id.is_unique
        assert set(df.user_id) == set(truth.user_id[truth.platform == k])
        # Not derived from the person id: the numeric parts do not line up.
        merged = df.merge(truth, on="user_id")
        assert (merged.user_id.map(_digits).str[-6:] != merged.person.str[-6:]).mean() > 0.99
        # Rows are shuffled: not in person order.
        assert not merged.person.is_monotonic_increasing
    assert truth.person.str.fullmatch(r"person_\d{6}").all()
    assert truth.person.nunique() == N                   # every person is somewhere
    assert not truth.duplicated(["platform", "person"]).any()   # at most once per platform


@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.6, 1.0])
def test_overlap_fraction(overlap):
    pop = generate_population(2000, 4, seed=3, overlap=overlap, corruption=0)
    per_person = pop.truth.groupby("person").platform.nunique()
    assert len(per_person) == 2000
    assert abs((per_person >= 2).mean() - overlap) < 0.01
    assert per_person.max() <= 4
    sizes = [len(df) for df in pop.platforms.values()]
    assert max(sizes) < 1.3 * min(sizes)


def test_single_platform_holds_everyone_once():
    pop = generate_population(300, 1, seed=2)
    assert list(pop.platforms) == ["platform_1"]
    assert len(pop.platforms["platform_1"]) == 300
    assert pop.truth.person.is_unique


def test_clean_copies_agree(clean):
    rows = _copies(clean)
    fields = ["name", "gender", "dob", "mobile", "resident_id", "address"]
    assert (rows.groupby("person")[fields].nunique() == 1).all().all()
    assert (rows.groupby("person").size() >= 2).mean() == pytest.approx(0.6, abs=0.01)


def test_corruption_is_realistic(clean, noisy):
    assert clean.truth.equals(noisy.truth)               # same seed: same rows, only messier
    a = pd.concat(clean.platforms.values(), ignore_index=True)
    b = pd.concat(noisy.platforms.values(), ignore_index=True)
    assert (a.user_id == b.user_id).all()
    for col in ("repay_score", "spend_score", "travel_score"):
        assert (a[col] == b[col]).all(), col
    changed = {col: (a[col] != b[col]).mean() for col in COLUMNS}
    for col in ("name", "gender", "dob", "mobile", "resident_id", "address"):
        assert 0.01 < changed[col] < 0.35, (col, changed[col])
    assert changed["name"] < 0.2
    # Names that changed stay close (one character off, or traditional forms).
    diff = b.name != a.name
    ratios = [difflib.SequenceMatcher(None, x, y).ratio()
              for x, y in zip(a.name[diff], b.name[diff])]
    assert np.mean(ratios) > 0.5 and min(abs(len(x) - len(y)) for x, y in zip(a.name, b.name)) == 0
    assert b.name.str.contains("[陳劉張楊黃趙吳鄭孫馬羅謝許馮鄧韓葉蘇]").any()
    # Missing values are empty strings, only in the fields that may go missing.
    for col in ("gender", "dob", "mobile", "address"):
        assert 0 < (b[col] == "").mean() < 0.1, col
    for col in ("name", "resident_id", "user_id"):
        assert (b[col] != "").all(), col
    # Format variants keep the information.
    dob = b.dob[b.dob != ""]
    assert dob.str.contains("年").any() and dob.str.contains("/").any()
    assert dob.str.fullmatch(r"\d{8}").any()
    assert (dob.map(_dob_key) == a.dob[dob.index].str.replace("-", "")).all()
    mob = b.mobile[b.mobile != ""]
    assert mob.str.startswith("+86").any() and mob.str.startswith("0086-").any()
    digits = mob.map(_digits).str[-11:]
    wrong = [sum(p != q for p, q in zip(x, y)) for x, y in zip(digits, a.mobile[mob.index])]
    assert max(wrong) == 1 and 0 < np.mean(wrong) < 0.1     # single-digit typos, rarely
    rid = b.resident_id
    assert rid.str.endswith("x").any() and (rid.str.len() == 15).any()
    assert rid.str.contains("[０-９]").any()
    old = rid.str.len() == 15
    canon = rid.map(lambda s: unicodedata.normalize("NFKC", s).upper())
    assert (canon[old] == a.resident_id[old].str[:6] + a.resident_id[old].str[8:17]).all()
    assert (canon[~old] == a.resident_id[~old]).all()
    assert (a.dob[old].str[:4].astype(int) < 1990).all()
    assert (b.address != a.address).mean() > 0.05
    # A pair of copies of one person is still usually linkable on name + dob + mobile.
    rows = _copies(noisy)
    pairs = rows[rows.platform == "platform_1"].merge(rows[rows.platform == "platform_2"],
                                                      on="person")
    same = ((pairs.name_x == pairs.name_y).astype(int)
            + (pairs.dob_x.map(_dob_or_empty) == pairs.dob_y.map(_dob_or_empty))
            + (pairs.mobile_x.map(_digits).str[-11:] == pairs.mobile_y.map(_digits).str[-11:]))
    assert (same >= 2).mean() > 0.9


def test_more_corruption_means_more_damage():
    low = generate_population(1000, 2, seed=4, corruption=0.1)
    high = generate_population(1000, 2, seed=4, corruption=0.8)
    clean = generate_population(1000, 2, seed=4, corruption=0.0)
    for k in clean.platforms:
        base = clean.platforms[k]
        cols = ["name", "dob", "mobile"]
        d_low = (low.platforms[k][cols] != base[cols]).mean().mean()
        d_high = (high.platforms[k][cols] != base[cols]).mean().mean()
        assert d_low < d_high


def test_scores(clean, noisy):
    rows = _copies(clean)
    assert rows.repay_score.str.fullmatch(r"\d{3}").all()
    repay = rows.repay_score.astype(int)
    assert repay.between(300, 850).all() and 550 < repay.mean() < 750
    assert rows.spend_score.str.fullmatch(r"\d+\.\d{2}").all()
    assert (rows.spend_score.astype(float) >= 0).all()
    wide = rows.pivot(index="person", columns="platform", values="repay_score").dropna().astype(int)
    assert (wide["platform_1"] != wide["platform_2"]).mean() > 0.9        # each platform scores
    assert wide["platform_1"].corr(wide["platform_2"]) > 0.3               # ...the same person
    assert rows.travel_score.str.fullmatch(r"\d+\.\d{2}").all()
    travel = rows.travel_score.astype(float)
    assert (travel >= 0).all() and 200 < travel.median() < 5000
    wide = np.log(rows.pivot(index="person", columns="platform", values="travel_score")
                  .dropna().astype(float))
    assert (wide["platform_1"] != wide["platform_2"]).mean() > 0.9
    assert wide["platform_1"].corr(wide["platform_2"]) > 0.3
    # Travel spending is its own trait, not a copy of general spending.
    spend = np.log(rows.spend_score.astype(float))
    assert abs(np.log(travel).corr(spend)) < 0.3


def test_write_population(tmp_path, noisy):
    out = tmp_path / "a" / "b"
    paths = write_population(noisy, out)
    assert [p.name for p in paths] == [
        "platform_1.csv", "platform_2.csv", "platform_3.csv", "truth.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)   # no temp files
    for path in paths[:3]:
        assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
        back = pd.read_csv(path, dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(back, noisy.platforms[path.stem], check_dtype=False)
    assert paths[3].read_text(encoding="utf-8").splitlines()[0] == "platform,user_id,person"
    truth = pd.read_csv(paths[3], dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(truth, noisy.truth, check_dtype=False)
    write_population(noisy, out)                                       # overwrite in place
    assert len(list(out.iterdir())) == 4


def test_resident_id_helpers():
    assert resident_id_check_digit("11010519491231002") == "X"
    body = "44030519900307123"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(c) * w for c, w in zip(body, weights))
    assert resident_id_check_digit(body) == "10X98765432"[total % 11]
    assert is_valid_resident_id("11010519491231002X")
    assert not is_valid_resident_id("11010519491231002x")
    assert not is_valid_resident_id("110105194912310021")
    assert not is_valid_resident_id("11010519491331002X")             # month 13
    assert not is_valid_resident_id("110105491231002")               # 15-digit form
    assert not is_valid_resident_id("１1010519491231002X")
    for bad in ("1101051949123100", "1101051949123100a", "１１010519491231002"):
        with pytest.raises(SynthParameterError):
            resident_id_check_digit(bad)


@pytest.mark.parametrize("kwargs", [
    {"people": 0, "platforms": 2}, {"people": 10, "platforms": 0}, {"people": -1, "platforms": 2},
    {"people": 10, "platforms": 2, "overlap": 1.5}, {"people": 10, "platforms": 2, "overlap": -0.1},
    {"people": 10, "platforms": 2, "overlap": float("nan")},
    {"people": 10, "platforms": 2, "corruption": 2.0}, {"people": 10, "platforms": 2, "seed": -1},
    {"people": 2.5, "platforms": 2}, {"people": True, "platforms": 2},
])
def test_bad_arguments(kwargs):
    with pytest.raises(SynthParameterError) as err:
        generate_population(**kwargs)
    assert isinstance(err.value, ValueError) and isinstance(err.value, PPRLError)


def test_progress_bar_goes_to_stderr(capsys):
    generate_population(50, 2, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "synth" in captured.err
    generate_population(50, 2)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ cn-heavy profile


@pytest.fixture(scope="module")
def heavy() -> Population:
    return generate_population(2000, 3, seed=11, profile="cn-heavy")


def test_heavy_profile_is_deterministic_and_leaves_the_default_alone(heavy):
    again = generate_population(2000, 3, seed=11, profile="cn-heavy")
    for k in heavy.platforms:
        pd.testing.assert_frame_equal(heavy.platforms[k], again.platforms[k])
    default = generate_population(2000, 3, seed=11, corruption=0.2)
    explicit = generate_population(2000, 3, seed=11, corruption=0.2, profile="default")
    implicit = generate_population(2000, 3, seed=11)            # corruption None: the profile's 0.2
    for k in default.platforms:
        pd.testing.assert_frame_equal(default.platforms[k], explicit.platforms[k])
        pd.testing.assert_frame_equal(default.platforms[k], implicit.platforms[k])
        # same people, ids and scores; only the mess differs
        assert list(heavy.platforms[k].user_id) == list(default.platforms[k].user_id)
        assert list(heavy.platforms[k].repay_score) == list(default.platforms[k].repay_score)
    pd.testing.assert_frame_equal(heavy.truth, default.truth)


def test_heavy_profile_gives_each_platform_its_style(heavy):
    han, pinyin, trad = (heavy.platforms[f"platform_{k}"] for k in (1, 2, 3))
    latin = [bool(re.fullmatch(r"[A-Za-z\u00c0-\u024f ]+", v)) for v in pinyin.name if v]
    assert 0.7 < np.mean(latin) < 0.9                            # names mostly in pinyin there
    assert not any(re.fullmatch(r"[A-Za-z ]+", v) for v in han.name if v)
    traditional = "陳劉張楊黃趙吳鄭孫馬羅謝許馮鄧韓葉蘇盧蔣錢湯龍華偉軍麗紅蘭國東區號"
    share = np.mean([any(ch in traditional for ch in v) for v in trad.name + trad.address])
    assert share > 0.4 and np.mean([any(ch in traditional for ch in v) for v in han.address]) < 0.1
    assert any("+86" in v for v in pinyin.mobile) and any("年" in v for v in trad.dob)
    ids = [unicodedata.normalize("NFKC", v).replace(" ", "") for df in heavy.platforms.values()
           for v in df.resident_id if v]
    assert 0.05 < np.mean([len(v) == 15 for v in ids]) < 0.4     # legacy cards
    for df, low in ((han, 0.05), (pinyin, 0.25)):
        assert np.mean(df.resident_id == "") > low               # international platforms lack IDs


def test_heavy_profile_copies_are_still_the_same_people(heavy):
    from pprl.encoding.normalise import normalise_resident_id

    rows = _copies(heavy)
    rows["rid"] = [normalise_resident_id(v) for v in rows.resident_id]
    agree = rows.dropna(subset=["rid"]).groupby("person").rid.nunique()
    assert (agree == 1).mean() > 0.95                            # typos are rare, IDs mostly agree


def test_heavy_profile_refuses_unknown_profiles():
    with pytest.raises(SynthParameterError, match="profile"):
        generate_population(10, 2, profile="nope")
