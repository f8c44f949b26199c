"""The hash-chained, signed audit log."""

import json

import pytest

from pprl.errors import DocumentError, SignatureError
from pprl.protocol.files import append_entry, verify_log


def _log(parties, path, n=3):
    keys, cards = parties
    for i in range(n):
        append_entry(path, keys["authority"].identity, cards["authority"], "release", {"entities": i})
    return cards


def test_chain_verifies(parties, tmp_path):
    cards = _log(parties, tmp_path / "audit.log")
    report = verify_log(tmp_path / "audit.log", [cards["authority"]])
    assert report.entries == 3


@pytest.mark.parametrize("attack", ["edit", "delete", "swap"])
def test_tampering_names_the_first_bad_entry(parties, tmp_path, attack):
    path = tmp_path / "audit.log"
    _log(parties, path)
    lines = path.read_text().splitlines()
    if attack == "edit":
        entry = json.loads(lines[1])
        entry["entities"] = 99
        lines[1] = json.dumps(entry)
        expected = "entry 2"
    elif attack == "delete":
        del lines[0]
        expected = "entry 1"
    else:
        lines[1], lines[2] = lines[2], lines[1]
        expected = "entry 2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises((DocumentError, SignatureError), match=expected):
        verify_log(path, [parties[1]["authority"]])


def test_unknown_signer_and_refusal_to_extend_a_damaged_log(parties, tmp_path):
    keys, cards = parties
    path = tmp_path / "audit.log"
    _log(parties, path, 2)
    with pytest.raises(SignatureError, match="not among the given cards"):
        verify_log(path, [cards["bureau"]])
    path.write_text(path.read_text().replace('"entities": 0', '"entities": 5'))
    before = path.read_bytes()
    with pytest.raises(DocumentError, match="damaged"):
        append_entry(path, keys["authority"].identity, cards["authority"], "release", {})
    assert path.read_bytes() == before
