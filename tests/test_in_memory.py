"""The whole consortium in memory: every step on messages, no file written (the CLK path and the PSI path).

The steps of :mod:`pprl.protocol` take typed documents and return them; a
service or a pipeline passes them on as they are. This runs both paths with
every write to the file system refused, and checks each decrypted sum
against the plaintext.
"""

from __future__ import annotations

import builtins
import csv
import io
import os
import tempfile
from decimal import Decimal

import pytest

from pprl.crypto.paillier.vector import generate_keypair
from pprl.documents import Linkage, Release, Submission
from pprl.encoding.schema import load_schema
from pprl.errors import OptionError, SignatureError
from pprl.protocol.aggregate import AggregateOptions, aggregate_release
from pprl.protocol.decrypt import DecryptOptions, decrypt_sums, new_paillier_key, open_paillier_private
from pprl.protocol.identity import create_identity
from pprl.protocol.link import LinkOptions, link_submissions
from pprl.protocol.psi import (
    BlindOptions,
    ReblindOptions,
    blind,
    check_session,
    open_session,
    open_state,
    reblind,
    reblind_schedule,
    reveal_table,
    sum_rounds,
)
from pprl.protocol.secret import combine_shares, make_share
from pprl.protocol.submit import PreparedSubmission, SubmitOptions, open_paillier_public, prepare_submission
from pprl.sim.synth import generate_population

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "examples", "schema-cn.json")
SCORES = ("repay_score", "spend_score")


@pytest.fixture
def no_writes(monkeypatch):
    """Refuse every write to the file system for the rest of the test (reads stay allowed)."""
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise AssertionError(f"a step wrote a file: {file}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise AssertionError(f"a step wrote a file: {path}")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.delenv("PPRL_CACHE_DIR", raising=False)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(AssertionError("mkstemp")))


@pytest.fixture(scope="module")
def consortium():
    population = generate_population(60, 3, seed=7)
    names = sorted(population.platforms)
    parties = {n: create_identity(n, "platform") for n in names}
    parties["bureau"] = create_identity("bureau", "bureau")
    parties["authority"] = create_identity("authority", "authority")
    return population, names, parties, load_schema(SCHEMA)


def _expected(population, names, tokens_to_user, linkage: Linkage, minimum: int) -> dict[str, dict[str, Decimal]]:
    scores = {
        (n, row["user_id"]): {c: Decimal(row[c]) for c in SCORES}
        for n in names for row in population.platforms[n].to_dict("records")
    }
    out = {}
    for entity in linkage.payload.entities:
        members = [tokens_to_user[(p, t)] for p, t, _ in entity.members]
        if len({p for p, _ in members}) >= minimum:
            out[entity.entity_id] = {c: sum(scores[m][c] for m in members) for c in SCORES}
    return out


def test_clk_path_in_memory(consortium, no_writes):
    population, names, parties, schema = consortium
    platforms = [parties[n] for n in names]
    # the linkage secret: every platform's share, wrapped for the others, combined by each
    shares = [make_share(p, [q.card for q in platforms]) for p in platforms]
    secrets_ = {p.name: combine_shares(p, shares) for p in platforms}
    assert len({s.secret for s in secrets_.values()}) == 1
    # the authority's key, verified by each platform against the authority's card
    pub, private_doc = new_paillier_key(parties["authority"], 2048)
    key = open_paillier_public(pub, parties["authority"].card)
    prepared: dict[str, PreparedSubmission] = {
        n: prepare_submission(parties[n], schema, secrets_[n], population.platforms[n],
                              SubmitOptions(id_column="user_id", scores=SCORES), key)
        for n in names
    }
    submissions: list[Submission] = [prepared[n].submission for n in names]
    cards = [p.card for p in platforms]
    linked = link_submissions(parties["bureau"], cards, submissions, LinkOptions(threshold=None))
    assert linked.report.entities == len(linked.linkage.payload.entities) > 0
    aggregated = aggregate_release(parties["bureau"], linked.linkage, submissions, AggregateOptions(min_contributors=2),
                                   cards)
    for sealed in [pub, *submissions, linked.linkage, aggregated.release]:
        assert sealed.wire == sealed.to_dict()  # what seal() kept is exactly the document
    private = open_paillier_private(private_doc)
    decrypted = decrypt_sums(parties["authority"], private, aggregated.release, [], DecryptOptions(),
                             [parties["bureau"].card])
    assert decrypted.entry["seq"] == 1 and decrypted.entry["release_hash"] == aggregated.release.hash
    tokens_to_user = {(n, t): (n, u) for n in names for t, u in prepared[n].token_map}
    expected = _expected(population, names, tokens_to_user, linked.linkage, 2)
    rows = list(csv.DictReader(io.StringIO(decrypted.table.decode("utf-8"))))
    assert len(rows) == len(expected) == aggregated.released
    for row in rows:
        for c in SCORES:
            assert Decimal(row[f"{c}_sum"]) == expected[row["entity_id"]][c]
    # the next decryption extends the same in-memory log
    again = decrypt_sums(parties["authority"], private, aggregated.release, [decrypted.entry], DecryptOptions(),
                         [parties["bureau"].card])
    assert again.entry["seq"] == 2


def test_steps_verify_what_they_receive_in_memory(consortium, no_writes):
    population, names, parties, schema = consortium
    platforms = [parties[n] for n in names[:2]]
    shares = [make_share(p, [q.card for q in platforms]) for p in platforms]
    secret = combine_shares(platforms[0], shares)
    sub = prepare_submission(platforms[0], schema, secret, population.platforms[names[0]],
                             SubmitOptions(id_column="user_id")).submission
    other = prepare_submission(platforms[1], schema, combine_shares(platforms[1], shares),
                               population.platforms[names[1]], SubmitOptions(id_column="user_id")).submission
    with pytest.raises(SignatureError, match="not among the given cards"):  # a card the bureau did not pin
        link_submissions(parties["bureau"], [platforms[1].card], [sub, other], LinkOptions())
    with pytest.raises(OptionError, match="min_contributors"):
        AggregateOptions(min_contributors=0)
    with pytest.raises(OptionError, match="delta"):
        AggregateOptions(noise="gaussian", epsilon=1.0)


def test_psi_path_in_memory(consortium, no_writes):
    population, names, parties, _ = consortium
    public, private = generate_keypair(2048)
    session = check_session(
        open_session(parties["bureau"], [parties[n].card for n in names], reveal_intersection=True),
        parties["bureau"].card, [parties[n].card for n in names],
    )
    rounds, states = {}, {}
    for n in names:
        blinded = blind(parties[n], session, population.platforms[n], BlindOptions(id_column="user_id", scores=SCORES),
                        public)
        rounds[n], states[n] = blinded.round, open_state(blinded.state, parties[n])
    for step in reblind_schedule(session):
        rounds = {origin: reblind(parties[p], states[p], rounds[origin], ReblindOptions()) for p, origin in step}
    result = sum_rounds(parties["bureau"], session, [rounds[n] for n in names], 2)
    release: Release = result.release
    decrypted = decrypt_sums(parties["authority"], private, release, [], DecryptOptions(), [parties["bureau"].card])
    got = {r["entity_id"]: r for r in csv.DictReader(io.StringIO(decrypted.table.decode("utf-8")))}
    # each platform reads back which of its users were released; the sums match the plaintext
    members: dict[str, list[tuple[str, str]]] = {}
    for n in names:
        table, _count = reveal_table(parties[n], states[n], result.reveals[n])
        for row in csv.DictReader(io.StringIO(table.decode("utf-8"))):
            members.setdefault(row["entity_id"], []).append((n, row["user_id"]))
    assert set(members) == set(got) and len(got) == result.released > 0
    frames = {n: population.platforms[n].set_index("user_id") for n in names}
    for entity, group in members.items():
        assert int(got[entity]["contributors"]) == len(group)
        for c in SCORES:
            assert Decimal(got[entity][f"{c}_sum"]) == sum(Decimal(frames[n].loc[u, c]) for n, u in group)


def test_the_guard_refuses_the_file_layer(tmp_path, no_writes):
    """The no-writes guard is real: the same step through the file layer is stopped at its first write."""
    from pprl.protocol.files import init_party

    with pytest.raises(AssertionError, match="wrote a file|mkstemp"):
        init_party("someone", "platform", tmp_path)
