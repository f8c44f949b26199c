"""Signed, versioned documents: what is refused and what is written how."""

import json
import os
import stat

import pytest

from pprl.documents import read_document, sign_document, verify_document, write_document
from pprl.errors import DocumentError, SignatureError, UnsupportedVersionError
from pprl.protocol.files import init_party, load_key


def test_sign_verify_and_trusted_cards(parties):
    keys, cards = parties
    doc = sign_document({"kind": "x", "version": 1, "header": {"n": 1}}, keys["bureau"].identity, cards["bureau"])
    assert verify_document(doc, [cards["bureau"]]).name == "bureau"
    with pytest.raises(SignatureError, match="not among the given cards"):
        verify_document(doc, [cards["platform_1"]])
    with pytest.raises(SignatureError, match="expected a platform"):
        verify_document(doc, [cards["bureau"]], role="platform")
    with pytest.raises(SignatureError, match="no pinned cards"):  # there is no unpinned mode
        verify_document(doc, None)  # type: ignore[arg-type]
    doc["header"]["n"] = 2
    with pytest.raises(SignatureError, match="does not verify"):
        verify_document(doc, [cards["bureau"]])


def test_impostor_with_same_name_is_refused(parties, tmp_path):
    keys, cards = parties
    key_path, _ = init_party("bureau", "bureau", tmp_path / "impostor")
    impostor = load_key(key_path)
    doc = sign_document({"kind": "x", "version": 1}, impostor.identity, impostor.card)
    with pytest.raises(SignatureError, match="not among the given cards"):
        verify_document(doc, [cards["bureau"]])


def test_read_checks_kind_version_and_content(parties, tmp_path):
    card = tmp_path / "keys" / "bureau.card.json"
    assert read_document(card, "card")["kind"] == "card"
    path = tmp_path / "doc.json"
    write_document(path, {"kind": "release", "version": 1})
    with pytest.raises(DocumentError, match="expected submission"):
        read_document(path, "submission")
    # kind and version alone are not a release: the schema wants its header (and the rest)
    with pytest.raises(DocumentError, match="doc.json: not a valid release document: header: required"):
        read_document(path, "release")
    write_document(path, {"kind": "release", "version": 99})
    with pytest.raises(UnsupportedVersionError):
        read_document(path, "release")
    path.write_text("")
    with pytest.raises(DocumentError, match="empty"):
        read_document(path, "release")
    path.write_text("{not json")
    with pytest.raises(DocumentError, match="not valid JSON"):
        read_document(path, "release")
    with pytest.raises(DocumentError, match="no such file"):
        read_document(tmp_path / "absent.json", "release")


def test_private_files_are_0600_and_no_temp_left(parties, tmp_path):
    keys, _ = parties
    key_file = tmp_path / "keys" / "bureau.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    card = json.loads((tmp_path / "keys" / "bureau.card.json").read_text())
    assert "sign_seed" not in card and "agree_seed" not in card
    assert not [p for p in os.listdir(tmp_path / "keys") if p.endswith(".tmp")]
    assert repr(keys["bureau"].identity).find(keys["bureau"].identity.sign_seed.hex()) == -1


def test_init_refuses_to_overwrite(tmp_path):
    init_party("a", "platform", tmp_path)
    with pytest.raises(DocumentError, match="refusing to overwrite"):
        init_party("a", "platform", tmp_path)


def test_parts_compare_hash_and_print_as_stdlib_dataclasses_would():
    """Part writes __eq__, __hash__ and __repr__ once for every kind (``@part``); they must be what
    ``@dataclass(frozen=True, kw_only=True)`` generates, checked against such a twin of each class met."""
    import dataclasses

    from pprl.documents import Part
    from pprl.protocol.identity import card_document, create_identity, key_document
    from pprl.protocol.secret import make_share

    me, peer = create_identity("platform_1", "platform"), create_identity("platform_2", "platform")
    seen = set()

    def check(value):
        if isinstance(value, list):
            for v in value:
                check(v)
        if not isinstance(value, Part):
            return
        cls, fields = type(value), dataclasses.fields(value)
        twin_cls = dataclasses.make_dataclass(
            cls.__qualname__, [(f.name, object, dataclasses.field(repr=f.repr, compare=f.compare)) for f in fields],
            frozen=True, kw_only=True)
        twin = twin_cls(**{f.name: getattr(value, f.name) for f in fields})
        assert repr(value) == repr(twin)
        assert value == dataclasses.replace(value)
        assert (value != dataclasses.replace(value)) is False
        assert value != twin and value != object()
        try:
            assert hash(value) == hash(twin)
        except TypeError:
            with pytest.raises(TypeError):
                hash(twin)
        for f in fields:
            if f.compare and getattr(value, f.name) is not None:
                assert value != dataclasses.replace(value, **{f.name: None})
            check(getattr(value, f.name))
        seen.add(cls.__name__)

    for doc in (card_document(me), key_document(me), make_share(me, [peer.card])):
        check(doc)
    assert {"CardDocument", "IdentityKeyDocument", "Share", "SharePayload"} <= seen
    assert "seed" not in repr(key_document(me)).replace("IdentityKeyDocument", "")
