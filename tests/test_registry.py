"""The bureau's persistent registry: stable entity ids across monthly submissions, one transaction per update.

Run against SQLite (always) and PostgreSQL (the server `.ci/run` starts; set
PPRL_TEST_POSTGRES to a URL to run it elsewhere, PPRL_REQUIRE_POSTGRES=1 to
make its absence a failure).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pprl.crypto.paillier.vector import generate_keypair
from pprl.documents import Submission
from pprl.encoding.schema import load_schema
from pprl.errors import KeyMismatchError, PolicyError, RegistryError, SignatureError
from pprl.protocol.identity import create_identity
from pprl.protocol.link import LinkOptions
from pprl.protocol.secret import combine_shares, make_share
from pprl.protocol.submit import SubmitOptions, prepare_submission
from pprl.registry import Registry
from pprl.sim.synth import generate_population

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "examples" / "schema-cn.json")
SCORES = ("repay_score", "spend_score")
OPTIONS = LinkOptions(threshold=0.8)


def _postgres_url() -> str | None:
    url = os.environ.get("PPRL_TEST_POSTGRES")
    if url:
        return url
    if os.environ.get("PPRL_REQUIRE_POSTGRES") == "1":
        pytest.fail("PPRL_REQUIRE_POSTGRES=1 but PPRL_TEST_POSTGRES is not set")
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """A fresh, empty registry location of each kind."""
    if request.param == "sqlite":
        yield tmp_path / "registry.db"
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server (set PPRL_TEST_POSTGRES)")
    import sqlalchemy as sa

    from pprl.registry import registry_url

    name = "pprl_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(registry_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="module")
def world():
    population = generate_population(240, 3, seed=5)
    names = sorted(population.platforms)
    parties = {n: create_identity(n, "platform") for n in names}
    shares = [make_share(parties[n], [parties[m].card for m in names]) for n in names]
    secrets_ = {n: combine_shares(parties[n], shares) for n in names}
    public, _private = generate_keypair(2048)
    return {"population": population, "names": names, "parties": parties, "secrets": secrets_, "key": public,
            "cards": [parties[n].card for n in names]}


def _submit(world, name: str, frame: pd.DataFrame) -> tuple[Submission, dict[str, str]]:
    prepared = prepare_submission(world["parties"][name], SCHEMA, world["secrets"][name], frame,
                                  SubmitOptions(id_column="user_id", scores=SCORES), world["key"])
    return prepared.submission, dict(prepared.token_map)


def _month(world, frames: dict[str, pd.DataFrame]):
    subs, maps = [], {}
    for n in world["names"]:
        sub, token_map = _submit(world, n, frames[n])
        subs.append(sub)
        maps[n] = token_map
    return subs, maps


def _entity_of(reg: Registry, maps: dict[str, dict[str, str]]) -> dict[tuple[str, str], str]:
    """(platform, user id) -> entity id, read back through the platforms' own token maps."""
    out = {}
    for entity, members in reg.members().items():
        for platform, token in members:
            out[(platform, maps[platform][token])] = entity
    return out


def test_first_month_links_and_a_repeat_changes_nothing(world, location):
    frames = world["population"].platforms
    subs, maps = _month(world, frames)
    stages: list[str] = []
    with Registry(location) as reg:
        reports = reg.update(subs, OPTIONS, world["cards"], stage=stages.append)
        assert [r.platform for r in reports] == world["names"]
        first = _entity_of(reg, maps)
    # each submission's stages, told as they begin (a service shows them as the job's progress)
    assert [s.split(" ")[0] for s in stages] == ["reading", "verifying", "comparing", "assigning", "writing"] * len(subs)
    assert stages[2] == f"comparing {len(frames[world['names'][0]]):,} records with the registry's 0"
    with Registry(location) as reg:
        stats = reg.stats()
    assert stats.records == {n: len(frames[n]) for n in world["names"]}
    # every record is in one entity; persons on several platforms share one (checked against the truth)
    truth = world["population"].truth
    person = {(p, u): who for p, u, who in truth.itertuples(index=False)}
    by_entity: dict[str, set[str]] = {}
    for key, entity in first.items():
        by_entity.setdefault(entity, set()).add(person[key])
    pure = sum(1 for people in by_entity.values() if len(people) == 1)
    assert pure / len(by_entity) > 0.97
    assert stats.entities == len(by_entity) == sum(stats.by_platforms.values())

    # the same people next month: new tokens, new ciphertexts, same entities, nothing new or removed
    again, maps2 = _month(world, frames)
    with Registry(location) as reg:
        reports = reg.update(again, OPTIONS, world["cards"])
        second = _entity_of(reg, maps2)
    assert all(r.new == 0 and r.removed == 0 and r.updated == 0 for r in reports), reports
    assert second == first


def test_a_monthly_update_keeps_ids_and_counts_changes(world, location):
    frames = dict(world["population"].platforms)
    subs, maps = _month(world, frames)
    with Registry(location) as reg:
        reg.update(subs, OPTIONS, world["cards"])
        before = _entity_of(reg, maps)
        entities_before = reg.stats().entities
    p1 = frames["platform_1"]
    gone = p1.iloc[:20]                                        # left platform_1
    changed = p1.iloc[20:30].copy()
    changed["repay_score"] = "1"                               # new scores, same identifiers
    newcomers = generate_population(30, 1, seed=99).platforms["platform_1"].copy()
    newcomers["user_id"] = "new-" + newcomers["user_id"]
    month2 = pd.concat([changed, p1.iloc[30:], newcomers], ignore_index=True)
    sub, token_map = _submit(world, "platform_1", month2)
    with Registry(location) as reg:
        (report,) = reg.update([sub], OPTIONS, world["cards"])
        after = _entity_of(reg, {**maps, "platform_1": token_map})
        stats = reg.stats()
    # kept users keep their entity; users who left are gone; newcomers are somewhere
    for user in p1["user_id"].iloc[20:]:
        assert after[("platform_1", user)] == before[("platform_1", user)]
    for user in gone["user_id"]:
        assert ("platform_1", user) not in after
    assert all(("platform_1", u) in after for u in newcomers["user_id"])
    assert stats.records["platform_1"] == len(month2)
    # the counts add up: every entity before is removed, updated or unchanged; newcomers' entities are new
    alone = Counter(e for (p, _u), e in before.items())
    only_p1_gone = sum(1 for u in gone["user_id"] if alone[before[("platform_1", u)]] == 1)
    assert report.removed == only_p1_gone
    assert report.removed + report.updated + report.unchanged == entities_before
    assert report.updated >= 20 - only_p1_gone   # entities that lost their platform_1 record
    assert stats.entities == entities_before - report.removed + report.new
    assert report.new <= len(newcomers)


def test_refusals_leave_the_registry_unchanged(world, location, tmp_path):
    frames = world["population"].platforms
    subs, _maps = _month(world, frames)
    with Registry(location) as reg:
        reg.update(subs[:1], OPTIONS, world["cards"])
        before = reg.stats()
        with pytest.raises(PolicyError, match="already in the registry"):
            reg.update([subs[1], subs[0]], OPTIONS, world["cards"])  # the second is a replay: neither goes in
        assert reg.stats() == before
        with pytest.raises(SignatureError, match="not among the given cards"):
            reg.update([subs[1]], OPTIONS, world["cards"][:1])
        impostor = create_identity("platform_2", "platform")  # another key under a pinned platform's name
        forged = prepare_submission(impostor, SCHEMA, world["secrets"]["platform_2"], frames["platform_2"],
                                    SubmitOptions(id_column="user_id", scores=SCORES), world["key"]).submission
        with pytest.raises(SignatureError, match="not among the given cards"):
            reg.update([forged], OPTIONS, world["cards"])
        foreign_key, _ = generate_keypair(2048)
        foreign = prepare_submission(world["parties"]["platform_2"], SCHEMA, world["secrets"]["platform_2"],
                                     frames["platform_2"], SubmitOptions(id_column="user_id", scores=SCORES),
                                     foreign_key).submission
        with pytest.raises(KeyMismatchError, match="paillier fingerprint"):
            reg.update([foreign], OPTIONS, world["cards"])
        assert reg.stats() == before


def test_a_registry_of_another_format_is_refused(tmp_path):
    import sqlalchemy as sa

    path = tmp_path / "old.db"
    Registry(path).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE pprl_meta SET value = 'pprl-registry-0' WHERE key = 'format'"))
    engine.dispose()
    with pytest.raises(RegistryError, match="pprl-registry-0"):
        Registry(path)
    with pytest.raises(RegistryError, match="cannot open"):
        Registry("postgresql://nobody:secret@127.0.0.1:1/none")


def test_the_registry_holds_no_identifier_or_score(world, tmp_path):
    frames = world["population"].platforms
    subs, _maps = _month(world, frames)
    path = tmp_path / "registry.db"
    with Registry(path) as reg:
        reg.update(subs, OPTIONS, world["cards"])
    raw = path.read_bytes()
    for frame in frames.values():
        for column in ("name", "resident_id", "mobile", "user_id"):
            for value in (v for v in frame[column].head(20) if len(v) >= 6):
                assert value.encode("utf-8") not in raw, column



def test_registry_commands(tmp_path):
    """`pprl registry update` and `stats` through the CLI: counts printed, a replay refused in one line."""
    import json

    from cli_runner import cli_consortium, refused, run

    w = tmp_path
    names = ["platform_1", "platform_2"]
    key, card, _ = cli_consortium(w, names, seed=3)
    for n in names:
        run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--out", w / f"{n}.sub.json")
    registry = w / "bureau" / "registry.db"
    cards = [a for n in names for a in ("--cards", card[n])]
    subs = [a for n in names for a in ("--submissions", w / f"{n}.sub.json")]
    result = run("registry", "update", "--me", key["bureau"], "--registry", registry, *cards, *subs)
    counts = dict(zip(result.stdout.split()[::2], map(int, result.stdout.split()[1::2])))
    assert counts["removed"] == 0 and counts["new"] == counts["entities"] > 0
    stats = json.loads(run("registry", "stats", "--registry", registry, "--json").stdout)
    assert stats["entities"] == counts["entities"] and set(stats["records"]) == set(names)
    before = registry.read_bytes()
    again = run("registry", "update", "--me", key["bureau"], "--registry", registry, *cards, *subs, ok=False)
    assert again.exit_code != 0 and "already in the registry" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert registry.read_bytes() == before
    wrong = run("registry", "update", "--me", key["platform_1"], "--registry", w / "other.db", *cards, *subs, ok=False)
    refused(wrong, w / "other.db", "only the bureau")


def test_a_lender_finds_an_applicant_by_pseudonym_alone(world, location):
    """Platforms submit pseudonyms; a lender gets one for its applicant through the OPRF; the registry finds it."""
    from pprl.crypto import oprf
    from pprl.encoding.normalise import normaliser_for

    frames = world["population"].platforms
    subs, maps = [], {}
    for n in world["names"]:
        prepared = prepare_submission(world["parties"][n], SCHEMA, world["secrets"][n], frames[n],
                                      SubmitOptions(id_column="user_id", scores=SCORES, pseudonym_column="resident_id"),
                                      world["key"])
        subs.append(prepared.submission)
        maps[n] = dict(prepared.token_map)
    truth = world["population"].truth
    with Registry(location) as reg:
        reg.update(subs, OPTIONS, world["cards"])
        entity_of = _entity_of(reg, maps)
        # the lender's applicants: a person on several platforms, and an ID no platform has
        linked = truth.groupby("person").filter(
            lambda g: len(g) >= 2 and len({entity_of[(p, u)] for p, u in zip(g["platform"], g["user_id"])}) == 1
        )
        person = linked.iloc[0]
        row = frames[person["platform"]].set_index("user_id").loc[person["user_id"]]
        normalise = normaliser_for("resident_id")
        applicant = normalise(row["resident_id"])
        assert applicant is not None
        stranger = normalise("110101190001010013") or "110101190001010013"
        blinding = oprf.blind_inputs([applicant, stranger], "resident_id")
        evaluator = oprf.derive_key(world["secrets"]["platform_3"].secret, "resident_id")  # any platform evaluates
        found = oprf.finalize(blinding, [applicant, stranger], oprf.evaluate(evaluator, blinding.elements))
        hits = reg.find(found)
    assert hits.get(found[0]) == entity_of[(person["platform"], person["user_id"])]
    assert found[1] not in hits  # not found, never guessed
