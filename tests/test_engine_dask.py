"""The Dask engine on a LocalCluster of two worker processes: the same candidates as in-process, pair for pair."""

from __future__ import annotations

import numpy as np
import pytest

from pprl.matching.blocking import as_lanes, band_keys_of_lanes, band_positions, lsh_candidates
from pprl.matching.dice.similarity import find_candidates

distributed = pytest.importorskip("distributed")

from pprl.engine import DaskEngine  # noqa: E402


def _datasets(seed: int, sizes: tuple[int, ...], width: int = 128, noise: float = 0.04) -> list[np.ndarray]:
    """Random filters of ~30% fill; each dataset after the first holds noisy copies of half the first's rows."""
    rng = np.random.default_rng(seed)
    base = rng.random((sizes[0], width * 8)) < 0.3
    out = [np.packbits(base, axis=1)]
    for n in sizes[1:]:
        rows = rng.random((n, width * 8)) < 0.3
        copies = min(n // 2, sizes[0])
        pick = rng.choice(sizes[0], copies, replace=False)
        rows[:copies] = base[pick] ^ (rng.random((copies, width * 8)) < noise)
        out.append(np.packbits(rows[rng.permutation(n)], axis=1))
    out[-1][3] = 0  # a record with no bit set is never a candidate
    return out


@pytest.fixture(scope="module")
def engine():
    with DaskEngine.start(workers=2, bands_per_task=3, rows_per_task=700) as e:
        yield e


def _same(a, b) -> None:
    assert np.array_equal(a.similarity, b.similarity)
    assert np.array_equal(a.dataset, b.dataset) and np.array_equal(a.record, b.record)


def test_band_keys_from_lanes_equal_those_from_unpacked_bits():
    (data,) = _datasets(1, (300,), width=100)  # 800 bits: lanes padded to 13 words
    positions = band_positions(b"seed", 800, 7, 19)
    lanes_t = np.ascontiguousarray(as_lanes(data).T)
    bits_t = np.unpackbits(np.ascontiguousarray(data.T), axis=0)
    sel = bits_t[positions.ravel()].reshape(7, 19, -1)
    packed = np.packbits(sel, axis=1)
    keys = np.zeros((7, 4, 300), np.uint8)
    keys[:, :packed.shape[1]] = packed
    expected = np.ascontiguousarray(keys.transpose(0, 2, 1)).view(np.uint32).reshape(7, 300)
    assert np.array_equal(band_keys_of_lanes(lanes_t, positions), expected)
    rows = np.array([5, 0, 299, 17])
    assert np.array_equal(band_keys_of_lanes(lanes_t, positions, rows=rows), expected[:, rows])


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_lsh_candidates_on_the_cluster_equal_the_in_process_ones(engine, threshold):
    datasets = _datasets(2, (1500, 1200, 900))
    local, report = lsh_candidates(datasets, threshold, seed=b"k", bands=10, bits_per_band=12)
    remote, remote_report = engine.lsh_candidates(datasets, threshold, seed=b"k", bands=10, bits_per_band=12)
    assert len(local) > 500
    _same(remote, local)
    assert (remote_report.bands, remote_report.bits_per_band, remote_report.pairs_total) == (
        report.bands, report.bits_per_band, report.pairs_total)
    assert len(local) <= remote_report.comparisons <= 10 * report.comparisons
    step = engine.steps[-1]  # what a cost model needs: tasks, workers, wall time
    assert step["step"] == "blocking" and step["tasks"] == 4 and step["workers"] == 2 and step["seconds"] > 0


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_lsh_by_band_and_bucket_equals_the_in_process_search(engine, threshold):
    datasets = _datasets(4, (1500, 1200, 900))
    datasets.append(datasets[1][:0])  # an empty dataset: no pairs with it
    local, report = lsh_candidates(datasets, threshold, seed=b"k", bands=20, bits_per_band=12)
    engine.lsh_partition, engine.route_rows, engine.key_buckets = "bucket", 400, 5
    try:  # 7 groups of bands: more than the 2 the engine keeps in flight on 2 workers
        remote, remote_report = engine.lsh_candidates(datasets, threshold, seed=b"k", bands=20, bits_per_band=12)
    finally:
        engine.lsh_partition, engine.route_rows, engine.key_buckets = "band", 100_000, 8
    assert len(local) > 500
    _same(remote, local)
    assert remote_report.pairs_total == report.pairs_total
    assert len(local) <= remote_report.comparisons <= 10 * report.comparisons
    step = engine.steps[-1]
    assert step["step"] == "blocking by bucket" and step["tasks"] == 7 * 5


def test_an_unknown_lsh_partition_is_refused(engine):
    from pprl.errors import OptionError

    engine.lsh_partition = "rows"
    try:
        with pytest.raises(OptionError, match="lsh_partition"):
            engine.lsh_candidates(_datasets(5, (50, 40)), 0.8, seed=b"k", bands=2, bits_per_band=8)
    finally:
        engine.lsh_partition = "band"


def test_every_pair_on_the_cluster_equals_the_native_search(engine):
    datasets = _datasets(3, (2000, 1700, 400))
    for threshold in (0.55, 0.9):
        _same(engine.find_candidates(datasets, threshold), find_candidates(datasets, threshold))
    empty = [datasets[0], datasets[1][:0]]
    assert len(engine.find_candidates(empty, 0.5)) == 0


def test_a_scheduler_that_is_not_there_is_a_clear_error():
    from pprl.errors import OptionError

    with pytest.raises(OptionError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskEngine.start("tcp://127.0.0.1:9", timeout=2)


@pytest.fixture(scope="module")
def keys():
    from pprl.crypto.paillier.vector import generate_keypair

    return generate_keypair(1024, _allow_insecure=True)


@pytest.mark.parametrize("records", [1, 3])
def test_sums_per_entity_on_the_cluster_equal_the_in_process_ones(engine, keys, records):
    import random

    from pprl.crypto.paillier.packing import PackingSpec, encrypt_packed
    from pprl.crypto.paillier.packing_records import sum_records

    public, _private = keys
    spec = PackingSpec.plan(1000, 2, 8, count_slot=True, records_per_ciphertext=records)
    rng = random.Random(records)
    rows = np.array([[rng.randint(-1000, 1000) for _ in range(2)] for _ in range(61)], dtype=object)
    enc = encrypt_packed(public, rows, spec, workers=1)
    limit = len(enc) * records
    groups = [rng.sample(range(limit), rng.randint(0, 4)) for _ in range(45)] + [[], [limit - 1]]
    engine.entities_per_task = 7
    try:
        remote = engine.sum_records(enc, groups, spec)
    finally:
        engine.entities_per_task = 20_000
    assert remote.to_bytes() == sum_records(enc, groups, spec, workers=1).to_bytes()
    assert len(remote) == len(groups)


def test_a_release_summed_on_the_cluster_equals_the_one_summed_here(engine):
    import os

    from pprl.encoding.schema import load_schema
    from pprl.protocol.aggregate import AggregateOptions, aggregate_release
    from pprl.protocol.decrypt import new_paillier_key
    from pprl.protocol.identity import create_identity
    from pprl.protocol.link import LinkOptions, link_submissions
    from pprl.protocol.secret import combine_shares, make_share
    from pprl.protocol.submit import SubmitOptions, open_paillier_public, prepare_submission
    from pprl.sim.synth import generate_population

    population = generate_population(80, 3, seed=11)
    names = sorted(population.platforms)
    platforms = [create_identity(n, "platform") for n in names]
    bureau, authority = create_identity("bureau", "bureau"), create_identity("authority", "authority")
    shares = [make_share(p, [q.card for q in platforms]) for p in platforms]
    secrets_ = {p.name: combine_shares(p, shares) for p in platforms}
    pub, _private = new_paillier_key(authority, 2048)
    key = open_paillier_public(pub, authority.card)
    schema = load_schema(os.path.join(os.path.dirname(__file__), "..", "examples", "schema-cn.json"))
    submissions = [prepare_submission(p, schema, secrets_[p.name], population.platforms[p.name],
                                      SubmitOptions(id_column="user_id", scores=("repay_score",)), key).submission
                   for p in platforms]
    cards = [p.card for p in platforms]
    linkage = link_submissions(bureau, cards, submissions, LinkOptions(threshold=None)).linkage
    here = aggregate_release(bureau, linkage, submissions, AggregateOptions(min_contributors=2), cards)
    engine.entities_per_task = 9
    try:
        there = aggregate_release(bureau, linkage, submissions, AggregateOptions(min_contributors=2), cards,
                                  engine=engine)
    finally:
        engine.entities_per_task = 20_000
    assert here.released > 9 and there.released == here.released
    assert there.release.payload.entity_ids == here.release.payload.entity_ids
    assert there.release.payload.sums == here.release.payload.sums


def test_a_submission_encoded_and_encrypted_on_the_cluster_holds_the_same_clks_and_values(engine, keys):
    import os

    from pprl.encoding.clk import encode_with_report
    from pprl.encoding.schema import load_schema
    from pprl.protocol.identity import create_identity
    from pprl.protocol.secret import combine_shares, make_share
    from pprl.protocol.submit import SubmitOptions, prepare_submission
    from pprl.sim.synth import generate_population

    population = generate_population(150, 2, seed=5)
    name = sorted(population.platforms)[0]
    frame = population.platforms[name]
    me = create_identity(name, "platform")
    secret = combine_shares(me, [make_share(me, [me.card])])
    schema = load_schema(os.path.join(os.path.dirname(__file__), "..", "examples", "schema-cn.json"))
    engine.records_per_task = 40
    try:
        encoded = engine.encode(frame, schema, secret.secret)
        public, private = keys
        options = SubmitOptions(id_column="user_id", scores=("repay_score", "spend_score"), records_per_ciphertext=3)
        there = prepare_submission(me, schema, secret, frame, options, public, engine=engine)
    finally:
        engine.records_per_task = 20_000
    here = encode_with_report(frame, schema, secret.secret, workers=1)
    assert np.array_equal(encoded.clks, here.clks) and encoded.report == here.report
    # the submission's records leave shuffled: each token's CLK and scores are its own row's
    from decimal import Decimal

    from pprl.crypto.paillier.packing import PackingSpec, pack_rows
    from pprl.crypto.paillier.vector import EncryptedVector, decrypt_raw

    doc = there.submission
    by_user = frame.set_index("user_id")
    clks = np.frombuffer(doc.payload.clks, np.uint8).reshape(len(doc.payload.tokens), -1)
    position = {user: i for i, user in enumerate(frame["user_id"])}
    assert [t for t, _ in there.token_map] == list(doc.payload.tokens)
    for k, (_token, user) in enumerate(there.token_map):
        assert np.array_equal(clks[k], here.clks[position[user]])
    spec = PackingSpec.from_dict(doc.header.packing)
    scaled = np.array([[int(Decimal(str(by_user.loc[user, c])) * 10 ** doc.header.score_decimals)
                        for c in ("repay_score", "spend_score")] for _t, user in there.token_map], dtype=object)
    vector = EncryptedVector.from_bytes(public, doc.payload.scores_packed)
    assert decrypt_raw(private, vector, workers=1) == pack_rows(scaled, spec)


def test_psi_blinding_on_the_cluster_gives_the_same_elements_and_refuses_the_same_input(engine):
    from pprl.crypto.psi import PSIKey, blind, make_domain, reblind
    from pprl.errors import DataValidationError

    key, other = PSIKey.generate(), PSIKey.generate()
    domain = make_domain("engine test")
    identifiers = [f"11010519900307{i:04d}" for i in range(250)] + [b"raw bytes", "最后"]
    engine.records_per_task = 40
    try:
        there = engine.psi_blind(key, identifiers, domain)
        assert there == blind(key, identifiers, domain, workers=1)
        again = engine.psi_reblind(other, there)
        assert again == reblind(other, there, workers=1)
        # a small-order element (u = 1) in a later partition: refused with its position in the whole list
        bad = there[:32 * 100] + (1).to_bytes(32, "little") + there[32 * 101:]
        with pytest.raises(DataValidationError) as local:
            reblind(other, bad, workers=1, what="the list")
        with pytest.raises(DataValidationError) as remote:
            engine.psi_reblind(other, bad, what="the list")
        assert str(remote.value) == str(local.value) and "101" in str(remote.value)
    finally:
        engine.records_per_task = 20_000
