"""Shared fixtures: party identities in a temporary directory."""

from __future__ import annotations

import pytest

from pprl.protocol.files import init_party, load_card, load_key


@pytest.fixture()
def parties(tmp_path):
    """Three platforms, a bureau and an authority, as (keys, cards) dicts."""
    names = {"platform_1": "platform", "platform_2": "platform", "platform_3": "platform",
             "bureau": "bureau", "authority": "authority"}
    keys, cards = {}, {}
    for name, role in names.items():
        key_path, card_path = init_party(name, role, tmp_path / "keys")
        keys[name], cards[name] = load_key(key_path), load_card(card_path)
    return keys, cards
