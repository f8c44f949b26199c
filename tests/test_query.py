"""The bureau's checks on a lender's query, at unit level: consent present, for this lender and purpose, valid now."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest

from pprl.documents import Query, QueryHeader, QueryPayload, seal
from pprl.errors import OptionError, PolicyError, SignatureError
from pprl.protocol.identity import create_identity
from pprl.protocol.query import Consent, check_query, make_query

BANK = create_identity("bank_a", "lender")
OTHER = create_identity("bank_b", "lender")


def _time(days: float, hours_offset: int = 0) -> str:
    zone = timezone(timedelta(hours=hours_offset))
    return (datetime.now(timezone.utc) + timedelta(days=days)).astimezone(zone).isoformat(timespec="seconds")


def _consent(**change: str) -> Consent:
    fields = {"reference": secrets.token_hex(32), "purpose": "loan-application", "issued": _time(-1), "expires": _time(1)}
    fields.update(change)
    return Consent(**fields)


def _query(items: list[dict], lender=BANK) -> Query:
    header = QueryHeader(lender=lender.name, purpose="loan-application", count=len(items), nonce=secrets.token_hex(16))
    return seal(Query(header=header, payload=QueryPayload(items=items)), lender.identity, lender.card)


def test_a_valid_query_passes_whatever_offset_its_times_carry():
    consent = _consent(issued=_time(-1, 8), expires=_time(1, -5))  # Beijing issue time, another zone's expiry
    query = make_query(BANK, [(secrets.token_bytes(32), consent)], "loan-application")
    assert check_query(query, [BANK.card]).name == "bank_a"


@pytest.mark.parametrize(("change", "message"), [
    ({"expires": _time(-0.1)}, "expired or not yet valid"),
    ({"issued": _time(0.5), "expires": _time(1)}, "expired or not yet valid"),
    ({"purpose": "credit-limit-review"}, "consent is for credit-limit-review"),
])
def test_a_bad_consent_refuses_the_whole_query(change, message):
    good = (secrets.token_bytes(32), _consent())
    bad = (secrets.token_bytes(32), _consent(**change))
    with pytest.raises(PolicyError, match=message):
        check_query(make_query(BANK, [good, bad], "loan-application"), [BANK.card])


def test_foreign_missing_and_repeated_consents_and_unknown_lenders():
    consent = {"reference": secrets.token_hex(32), "purpose": "loan-application", "issued": _time(-1),
               "expires": _time(1)}
    foreign = _query([{"pseudonym": secrets.token_hex(32), "consent": {**consent, "lender": "bank_b"}}])
    with pytest.raises(PolicyError, match="given to another lender"):
        check_query(foreign, [BANK.card])
    missing = _query([{"pseudonym": secrets.token_hex(32)}])
    with pytest.raises(PolicyError, match="has no consent"):
        check_query(missing, [BANK.card])
    twice = _query([{"pseudonym": secrets.token_hex(32), "consent": {**consent, "lender": "bank_a"}}] * 2)
    with pytest.raises(PolicyError, match="used twice"):
        check_query(twice, [BANK.card])
    fine = make_query(OTHER, [(secrets.token_bytes(32), _consent())], "loan-application")
    with pytest.raises(SignatureError):
        check_query(fine, [BANK.card])


def test_consent_records_are_checked_when_made():
    with pytest.raises(OptionError, match="reference"):
        _consent(reference="not-a-hash")
    with pytest.raises(OptionError, match="purpose"):
        _consent(purpose="marketing")
    with pytest.raises(OptionError, match="issued"):
        _consent(issued=_time(2), expires=_time(1))
    with pytest.raises(OptionError, match="UTC offset"):
        _consent(issued="2026-01-01T00:00:00")
