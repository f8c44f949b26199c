"""Random permutations used to shuffle records before they leave a party."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pprl.crypto.shuffle import random_permutation
from pprl.errors import DataValidationError


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 100_003])
def test_is_a_permutation(n):
    order = random_permutation(n)
    assert order.dtype == np.int64 and len(order) == n
    assert np.array_equal(np.sort(order), np.arange(n))


def test_all_orders_about_equally_likely():
    # 6 orders of 3 items, 12,000 draws: each expected 2,000 (sd ~41); bounds at ~7 sd.
    counts = Counter(tuple(random_permutation(3).tolist()) for _ in range(12_000))
    assert len(counts) == 6
    assert all(1_700 < c < 2_300 for c in counts.values())


def test_fresh_every_call():
    assert not np.array_equal(random_permutation(1000), random_permutation(1000))


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_bad_sizes_refused(bad):
    with pytest.raises(DataValidationError):
        random_permutation(bad)
