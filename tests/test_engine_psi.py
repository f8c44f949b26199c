"""The PSI bureau's join on a LocalCluster of two workers: the same groups, counts, release and refusals as here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pprl.crypto.paillier.vector import generate_keypair
from pprl.documents import PsiRound, load
from pprl.encoding.normalise.identifiers import resident_id_check_char
from pprl.errors import DocumentError
from pprl.protocol.files import (
    blind_identifiers,
    init_party,
    init_session,
    load_card,
    load_key,
    load_session,
    reblind_round,
)
from pprl.protocol.psi import count_rounds, reblind_schedule, sum_rounds
from pprl.protocol.psi.bureau import match_rounds

distributed = pytest.importorskip("distributed")

from pprl.engine import DaskEngine  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    with DaskEngine.start(workers=2, elements_per_task=9, entities_per_task=5) as e:
        yield e


def _rid(n: int) -> str:
    body = f"1101051980{(n % 12) + 1:02d}{(n % 28) + 1:02d}{n % 1000:03d}"
    return body + resident_id_check_char(body)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """Three platforms' fully blinded lists (overlapping persons, two score columns), in a revealing session."""
    root = tmp_path_factory.mktemp("psi")
    keys, cards = {}, {}
    for name, role in [("p1", "platform"), ("p2", "platform"), ("p3", "platform"), ("bureau", "bureau")]:
        k, c = init_party(name, role, root / "keys")
        keys[name], cards[name] = load_key(k), load_card(c)
    pub, _priv = generate_keypair(2048)
    people = {"p1": range(0, 60), "p2": range(30, 90), "p3": list(range(0, 10)) + list(range(50, 75))}
    names = list(people)
    session = init_session(keys["bureau"], [cards[n] for n in names], root / "session.json",
                           identifier="resident_id", reveal_intersection=True).path
    platforms = [cards[n] for n in names]
    current = {}
    for n in names:
        frame = pd.DataFrame({"user_id": [f"{n}-u{x}" for x in people[n]],
                              "resident_id": [_rid(x) for x in people[n]],
                              "repay_score": [str(500 + 7 * x) for x in people[n]],
                              "spend_score": [f"{x * 1.25:.2f}" for x in people[n]]})
        current[n] = blind_identifiers(keys[n], session, frame, "user_id", root / n / "r0.json", root / n / "state",
                                       paillier=pub, scores=["repay_score", "spend_score"], bureau=cards["bureau"],
                                       platforms=platforms).path
    sess = load_session(session, cards["bureau"], platforms)
    for step, pairs in enumerate(reblind_schedule(sess), start=1):
        for platform, origin in pairs:
            current[origin] = reblind_round(keys[platform], root / platform / "state", current[origin],
                                            root / platform / f"r{step}.{origin}.json").path
    return keys["bureau"], sess, [load(current[n], PsiRound) for n in names], keys


def test_the_join_on_the_cluster_equals_the_join_here(engine, rounds):
    _me, session, docs, _keys = rounds
    here = match_rounds(session, docs)
    there = match_rounds(session, docs, engine=engine)
    assert here.groups and there.groups == here.groups and there.group_elements == here.group_elements
    assert there.transcript_hash == here.transcript_hash
    step = engine.steps[-1]
    assert step["step"] == "joining" and step["tasks"] == 18 and step["workers"] == 2


@pytest.mark.parametrize("min_contributors", [2, 3])
def test_counts_and_release_on_the_cluster_equal_those_here(engine, rounds, min_contributors):
    me, session, docs, _keys = rounds
    assert count_rounds(me, session, docs, engine=engine) == count_rounds(me, session, docs)
    here = sum_rounds(me, session, docs, min_contributors)
    there = sum_rounds(me, session, docs, min_contributors, engine=engine)
    assert here.released > 5 and here.suppressed + here.released == here.intersection
    assert _unstamped(there.release) == _unstamped(here.release)  # the signed documents but their time
    assert {p: _unstamped(r) for p, r in there.reveals.items()} == {p: _unstamped(r) for p, r in here.reveals.items()}
    assert (there.released, there.suppressed, there.intersection) == (here.released, here.suppressed,
                                                                       here.intersection)


def test_the_join_of_random_lists_by_prefix_equals_the_in_process_unique(engine):
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    pool[:5, :2] = 0  # the lowest and the highest prefixes
    pool[5:10, :2] = 255
    lists = [pool[rng.choice(400, size, replace=False)] for size in (150, 220, 90, 0)]
    joined = engine.psi_join([x.tobytes() for x in lists])
    everything = np.concatenate(lists).view("V32").ravel()
    uniq, inverse, counts = np.unique(everything, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    shared = np.flatnonzero(counts >= 2)
    assert joined.repeats == () and len(shared) > 50
    assert joined.groups == [members[starts[g]:starts[g + 1]].tolist() for g in shared]
    assert joined.elements == [uniq[g].tobytes() for g in shared]
    assert engine.psi_join([]).groups == []


def test_a_list_that_repeats_an_element_is_refused_as_here(engine, rounds):
    _me, session, docs, keys = rounds
    doubled = []
    for i, d in enumerate(docs):
        if i == 1:  # the second list: its 5th element again in place of its 20th
            e = bytearray(d.payload.elements)
            e[19 * 32:20 * 32] = e[4 * 32:5 * 32]
            d = _with_elements(d, bytes(e), keys)
        doubled.append(d)
    errors = []
    for engine_ in (None, engine):
        with pytest.raises(DocumentError) as caught:
            match_rounds(session, doubled, engine=engine_)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "repeats an element" in errors[0]


def test_a_small_order_element_is_refused_as_here(engine, rounds):
    from pprl.errors import PPRLError

    _me, session, docs, keys = rounds
    e = bytearray(docs[2].payload.elements)
    e[3 * 32:4 * 32] = bytes(32)  # the all-zero element (small order)
    bad = [docs[0], docs[1], _with_elements(docs[2], bytes(e), keys)]
    errors = []
    for engine_ in (None, engine):
        with pytest.raises(PPRLError) as caught:
            match_rounds(session, bad, engine=engine_)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


def _unstamped(doc) -> dict:
    """A signed document without its timestamp and signature (two runs sign at different times), and a reveal
    without the hash of its release (which holds that time)."""
    out = doc.to_dict()
    out.pop("signature", None)
    out["header"] = {k: v for k, v in out["header"].items() if k not in ("created", "release_hash")}
    return out


def _with_elements(doc: PsiRound, elements: bytes, keys) -> PsiRound:
    """The same round with other elements, signed again by its last hop (so only the elements are wrong)."""
    import dataclasses

    from pprl.documents import seal

    signer = keys[doc.header.hops[-1]]
    return seal(dataclasses.replace(doc, payload=dataclasses.replace(doc.payload, elements=elements)),
                signer.identity, signer.card)
