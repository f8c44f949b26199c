"""Per-purpose release policies and the threshold-key answer path, at the level of the protocol steps.

The bureau's answer is built from ciphertexts as the registry holds them
(one packed ciphertext per record, with masking room per slot); the lender
opens it with the authority's decryption or with T holders' parts.
"""

from __future__ import annotations

import random
import secrets
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from pprl.crypto.exchange import unwrap
from pprl.crypto.paillier.packing import PackingSpec, column_masks, encrypt_packed, mask_sums, unmask_packed
from pprl.crypto.paillier.vector import decode_fixed, decrypt_raw, generate_keypair
from pprl.documents import Answer, DecryptionPart, b64d, b64e
from pprl.errors import DecryptionError, DocumentError, OptionError, PolicyError, SignatureError
from pprl.protocol.identity import create_identity
from pprl.protocol.query import (
    AnswerPolicy,
    Consent,
    Found,
    PurposePolicy,
    answer_part,
    build_answer,
    decrypt_answer,
    make_query,
    open_answer,
)
from pprl.protocol.submit import score_packing
from pprl.protocol.threshold.dealer import ThresholdOptions, deal_threshold_key
from pprl.protocol.threshold.holder import open_share

COLUMNS = ["repay_score", "spend_score", "travel_score"]
BUREAU = create_identity("bureau", "bureau")
AUTHORITY = create_identity("authority", "authority")
BANK = create_identity("bank_a", "lender")
OTHER_BANK = create_identity("bank_b", "lender")
HOLDERS = [create_identity(n, "authority") for n in ("holder_a", "holder_b", "holder_c")]
INSECURE = ThresholdOptions(allow_insecure=True)


def _stamp(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat(timespec="seconds")


def _query(count: int, purpose: str = "loan-application", lender=BANK):
    items = [(secrets.token_bytes(32), Consent(secrets.token_hex(32), purpose, _stamp(-1), _stamp(1)))
             for _ in range(count)]
    return make_query(lender, items, purpose)


def _world(public):
    """Registry-like holdings: applicant i has records on some platforms; returns (found, truth, parameters)."""
    spec = score_packing(COLUMNS, public)
    rng = random.Random(11)
    layout = [["p1", "p2", "p2"], ["p3"], [], ["p1", "p3"], ["p2"]]  # applicant 3 is on no platform
    rows = [[rng.randint(-10**8, 10**8) for _ in COLUMNS] for plats in layout for _ in plats]
    enc = encrypt_packed(public, rows, spec)
    width = public.ciphertext_bytes
    blob = enc.to_bytes()
    cts = [blob[i * width : (i + 1) * width] for i in range(len(rows))]
    found, truth, k = [], [], 0
    for plats in layout:
        records, per = [], {}
        for p in plats:
            records.append((p, cts[k]))
            per.setdefault(p, [0] * len(COLUMNS))
            per[p] = [a + b for a, b in zip(per[p], rows[k])]
            k += 1
        found.append(Found(records))
        truth.append(per)
    parameters = {"score_columns": COLUMNS, "score_decimals": spec.decimals, "paillier_key": public.to_dict(),
                  "packing": spec.to_dict()}
    return found, truth, parameters


def _decimal(values: list[int], decimals: int = 2) -> list[Decimal]:
    return decode_fixed(values, decimals)


@pytest.fixture(scope="module")
def single():
    public, private = generate_keypair(2048)
    return public, private, *_world(public)


@pytest.fixture(scope="module")
def threshold():
    dealt = deal_threshold_key(AUTHORITY, 2048, 2, [h.card for h in HOLDERS], allow_insecure=True)
    shares = [open_share(h, dealt.shares[h.name], dealer=AUTHORITY.card, allow_insecure=True) for h in HOLDERS]
    public = shares[0].setup.public.public
    return shares, *_world(public)


def _open_single(single, policy, purpose="loan-application", authority_policy=None):
    _public, private, found, truth, parameters = single
    query = _query(len(found), purpose)
    answer = build_answer(BUREAU, query, BANK.card, found, parameters, policy)
    answer = Answer.from_dict(answer.wire, "answer.json")  # as the authority and the lender read it
    decryption, entry = decrypt_answer(AUTHORITY, private, answer, [], [BUREAU.card], [BANK.card],
                                       authority_policy or policy)
    return answer, open_answer(BANK, answer, decryption, [BUREAU.card], [AUTHORITY.card]), entry, truth


def test_released_columns_are_exact_and_the_others_are_hidden(single):
    policy = AnswerPolicy(purposes={"loan-application": PurposePolicy(columns=("repay_score", "travel_score"))})
    answer, rows, entry, truth = _open_single(single, policy)
    assert answer.header.released_columns == ["repay_score", "travel_score"]
    assert entry["score_columns"] == ["repay_score", "travel_score"]
    assert [r.status for r in rows] == ["found", "found", "not-found", "found", "found"]
    for row, per in zip(rows, truth):
        if row.status != "found":
            continue
        total = [sum(v[j] for v in per.values()) for j in range(3)]
        assert set(row.sums) == {"repay_score", "travel_score"}
        assert row.sums["repay_score"] == _decimal([total[0]])[0]
        assert row.sums["travel_score"] == _decimal([total[2]])[0]
        assert row.platforms == {}
    assert [r.contributors for r in rows] == [3, 1, 0, 2, 1]


def test_what_the_lender_holds_does_not_give_away_a_hidden_column(single):
    public, private, found, truth, parameters = single
    policy = AnswerPolicy(purposes={"loan-application": PurposePolicy(columns=("repay_score",))})
    spec = PackingSpec.from_dict(parameters["packing"])
    seen = []
    for _ in range(2):
        query = _query(len(found))
        answer = build_answer(BUREAU, query, BANK.card, found, parameters, policy)
        decryption, _ = decrypt_answer(AUTHORITY, private, answer, [], [BUREAU.card], [BANK.card], policy)
        # everything the lender can compute: the masked values minus its masks, slot by slot
        width = (public.n.bit_length() + 7) // 8
        masks_raw = unwrap(BANK.identity, BANK.name, BUREAU.card.public.agree_pub, BUREAU.name,
                           answer.payload.masks, b"pprl-answer-masks-v1" + bytes.fromhex(query.hash))
        values_raw = unwrap(BANK.identity, BANK.name, AUTHORITY.card.public.agree_pub, AUTHORITY.name,
                            decryption.payload.values, b"pprl-answer-values-v1" + bytes.fromhex(answer.hash))
        w = spec.position_bits
        x = (int.from_bytes(values_raw[:width], "big") - int.from_bytes(masks_raw[:width], "big")) % public.n
        slot = (x >> w) & ((1 << w) - 1)  # spend_score's position for applicant 1
        true = sum(v[1] for v in truth[0].values()) + 3 * spec.bound
        assert slot != true and slot >> spec.slot_bits  # masked: far above the slot's own range
        seen.append(slot)
    assert seen[0] != seen[1]  # a fresh mask each answer


def test_per_platform_sums_and_totals(single):
    policy = AnswerPolicy(purposes={"post-loan-monitoring": PurposePolicy(per_platform=True)})
    answer, rows, _, truth = _open_single(single, policy, "post-loan-monitoring")
    assert answer.header.per_platform and answer.header.sums == 6
    for row, per in zip(rows, truth):
        if row.status != "found":
            continue
        assert sorted(row.platforms) == sorted(per)
        for platform, values in per.items():
            assert [row.platforms[platform][c] for c in COLUMNS] == _decimal(values)
        assert [row.sums[c] for c in COLUMNS] == _decimal([sum(v[j] for v in per.values()) for j in range(3)])
    assert rows[0].contributors == 3 and rows[1].contributors == 1


def test_a_purposes_floor_withholds_and_a_purpose_left_out_is_refused(single):
    policy = AnswerPolicy(purposes={"credit-limit-review": PurposePolicy(min_platforms=2)})
    _, rows, _, _ = _open_single(single, policy, "credit-limit-review")
    assert [r.status for r in rows] == ["found", "withheld", "not-found", "found", "withheld"]
    _public, _private, found, _truth, parameters = single
    with pytest.raises(PolicyError, match="answers no queries for purpose loan-application"):
        build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, policy)
    bad = AnswerPolicy(purposes={"loan-application": PurposePolicy(columns=("income",))})
    with pytest.raises(PolicyError, match="'income', which the registry does not hold"):
        build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, bad)


def test_the_decryptor_refuses_an_answer_releasing_more_than_its_own_policy(single):
    _public, private, found, _truth, parameters = single
    generous = AnswerPolicy(purposes={"loan-application": PurposePolicy(per_platform=True)})
    answer = build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, generous)
    strict = AnswerPolicy(purposes={"loan-application": PurposePolicy(columns=("repay_score",))})
    with pytest.raises(PolicyError, match="more than the release policy allows: column 'spend_score'"):
        decrypt_answer(AUTHORITY, private, answer, [], [BUREAU.card], [BANK.card], strict)
    with pytest.raises(PolicyError, match="per-platform sums are not released"):
        decrypt_answer(AUTHORITY, private, answer, [], [BUREAU.card], [BANK.card], AnswerPolicy())
    floor = AnswerPolicy(min_platforms=2)
    plain = build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, AnswerPolicy())
    with pytest.raises(PolicyError, match="at least 2 platforms, not 1"):
        decrypt_answer(AUTHORITY, private, plain, [], [BUREAU.card], [BANK.card], floor)


def test_hiding_a_column_needs_maskable_packing(single):
    public, _private, found, _truth, parameters = single
    tight = PackingSpec.from_dict(parameters["packing"]).single()
    old = {**parameters, "packing": tight.to_dict()}
    policy = AnswerPolicy(purposes={"loan-application": PurposePolicy(columns=("repay_score",))})
    with pytest.raises(PolicyError, match="without masking room"):
        build_answer(BUREAU, _query(len(found)), BANK.card, found, old, policy)
    with pytest.raises(PolicyError, match="maskable"):
        column_masks(tight, [0], 1)


def test_policy_files_are_checked():
    policy = AnswerPolicy.from_dict({"daily_quota": 5, "purposes": {
        "loan-application": {"columns": ["a"], "per_platform": True, "min_platforms": 2}}}, "p.json")
    assert policy.daily_quota == 5 and policy.purposes["loan-application"].columns == ("a",)
    assert AnswerPolicy.from_dict(policy.to_dict()) == policy
    for bad, message in [
        ([], "a JSON object"),
        ({"quota": 1}, "unknown key 'quota'"),
        ({"purposes": {"marketing": {}}}, "marketing"),
        ({"purposes": {"loan-application": {"columns": "a"}}}, "list of score columns"),
        ({"purposes": {"loan-application": {"columns": []}}}, "at least one score column"),
        ({"purposes": {"loan-application": {"per_platform": "yes"}}}, "true or false"),
        ({"purposes": {"loan-application": {"min_platforms": 0}}}, "at least 1"),
        ({"purposes": {"loan-application": {"colums": ["a"]}}}, "keys columns, per_platform"),
        ({"daily_quota": -1}, "daily_quota"),
    ]:
        with pytest.raises(PolicyError, match=message) as info:
            AnswerPolicy.from_dict(bad, "p.json")
        assert str(info.value).startswith("p.json: ")
    with pytest.raises(OptionError):
        PurposePolicy(columns=("a", "a"))


def test_maskable_spec_round_trips_and_unmasks_exactly():
    spec = PackingSpec.plan(1000, 3, 8, count_slot=True, maskable=True)
    d = spec.to_dict()
    assert d["maskable"] is True and d["mask_bits"] == 40 and "records_per_ciphertext" not in d
    assert PackingSpec.from_dict(d) == spec and spec.single().to_dict().keys() == d.keys() - {"maskable", "mask_bits"}
    with pytest.raises(DocumentError):
        PackingSpec.from_dict({k: v for k, v in d.items() if k != "mask_bits"})
    with pytest.raises(DocumentError):
        PackingSpec.from_dict({**d, "maskable": False})
    public, private = generate_keypair(512, _allow_insecure=True)
    rows = [[5, -7, 1000], [-1000, 3, 0]]
    enc = encrypt_packed(public, rows, spec).sum_groups([[0, 1]])
    hide = column_masks(spec, [1], 1)
    masked, masks = mask_sums(enc, hiding=hide)
    out = unmask_packed(decrypt_raw(private, masked), masks, public.n, spec, hidden=[1])
    assert [int(v) for v in out[0]] == [-995, 0, 1000]
    with pytest.raises(DecryptionError):  # without hiding it, the masked column breaks the headroom check
        unmask_packed(decrypt_raw(private, masked), masks, public.n, spec)


# -- threshold key ------------------------------------------------------------------------------------


def test_threshold_holders_parts_open_only_for_the_lender(threshold):
    shares, found, truth, parameters = threshold
    policy = AnswerPolicy(purposes={"loan-application": PurposePolicy(columns=("spend_score",), per_platform=True)})
    answer = build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, policy)
    parts, entries = [], []
    for holder, share in zip(HOLDERS[:2], shares[:2]):
        part, entry = answer_part(holder, share, answer, [], [BUREAU.card], [BANK.card], policy, INSECURE)
        parts.append(DecryptionPart.from_dict(part.wire, f"{holder.name}.part.json"))
        entries.append(entry)
    assert all(e["threshold"] == 2 and e["per_platform"] for e in entries)
    assert parts[0].header.combiner == "bank_a" and parts[0].payload.values is None
    rows = open_answer(BANK, answer, parts, [BUREAU.card], [AUTHORITY.card], INSECURE)
    for row, per in zip(rows, truth):
        if row.status == "found":
            assert row.sums == {"spend_score": _decimal([sum(v[1] for v in per.values())])[0]}
            assert {p: s["spend_score"] for p, s in row.platforms.items()} == {
                p: _decimal([v[1]])[0] for p, v in per.items()}
    with pytest.raises(PolicyError, match="need 2 parts"):
        open_answer(BANK, answer, parts[:1], [BUREAU.card], [AUTHORITY.card], INSECURE)
    with pytest.raises(SignatureError, match="signed by 'bank_a'"):  # another lender: not its query
        open_answer(OTHER_BANK, answer, parts, [BUREAU.card], [AUTHORITY.card], INSECURE)
    with pytest.raises(SignatureError):  # a dealer the lender did not pin
        open_answer(BANK, answer, parts, [BUREAU.card], [OTHER_BANK.card], INSECURE)


def test_a_holder_refuses_what_a_decryptor_refuses(threshold, single):
    shares, found, _truth, parameters = threshold
    answer = build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters,
                          AnswerPolicy(purposes={"loan-application": PurposePolicy(per_platform=True)}))
    with pytest.raises(PolicyError, match="per-platform"):
        answer_part(HOLDERS[0], shares[0], answer, [], [BUREAU.card], [BANK.card], AnswerPolicy(), INSECURE)
    with pytest.raises(SignatureError):  # a bureau the holder did not pin
        answer_part(HOLDERS[0], shares[0], answer, [], [OTHER_BANK.card], [BANK.card], None, INSECURE)
    other = build_answer(BUREAU, _query(len(single[2])), BANK.card, single[2], single[4], AnswerPolicy())
    with pytest.raises(Exception, match="different Paillier key"):
        answer_part(HOLDERS[0], shares[0], other, [], [BUREAU.card], [BANK.card], None, INSECURE)


def test_a_tampered_answer_part_is_refused(threshold):
    shares, found, _truth, parameters = threshold
    answer = build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, AnswerPolicy())
    good, _ = answer_part(HOLDERS[0], shares[0], answer, [], [BUREAU.card], [BANK.card], None, INSECURE)
    other_answer = build_answer(BUREAU, _query(len(found)), BANK.card, found, parameters, AnswerPolicy())
    stray, _ = answer_part(HOLDERS[1], shares[1], other_answer, [], [BUREAU.card], [BANK.card], None, INSECURE)
    with pytest.raises(DocumentError, match="for a different release"):
        open_answer(BANK, answer, [good, stray], [BUREAU.card], [AUTHORITY.card], INSECURE)
    wire = good.wire
    blob = bytearray(b64d(wire["payload"]["parts"]))
    blob[-1] ^= 1
    forged = {**wire, "payload": {**wire["payload"], "parts": b64e(bytes(blob))}}
    with pytest.raises(SignatureError):  # the holder's signature covers its wrapped values
        open_answer(BANK, answer, [DecryptionPart.from_dict(forged, "x.json"), stray], [BUREAU.card],
                    [AUTHORITY.card], INSECURE)
