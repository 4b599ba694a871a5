"""The one percentile definition (ragstream.core.stats): linear interpolation, numpy's default."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragstream.core.stats import percentile, percentiles

pytestmark = pytest.mark.unit


def test_hand_computed_values() -> None:
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)  # mean of the two middle values
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)  # h = 3 * 0.95 = 2.85 -> 3 + 0.85 * 1
    assert percentile([4, 1, 3, 2], 0) == 1.0 and percentile([4, 1, 3, 2], 100) == 4.0  # order-free
    assert percentile([7.0], 99) == 7.0


def test_matches_numpy_default_on_skewed_latencies() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 10, 501):
        values = [float(v) for v in rng.exponential(30.0, size=n)]
        for q in (0, 1, 50, 90, 95, 99, 99.9, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_empty_input_gives_the_chosen_value() -> None:
    assert percentile([], 95) == 0.0
    assert math.isnan(percentile([], 95, empty=math.nan))
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_q_outside_the_range_is_an_error() -> None:
    for q in (-1, 101):
        with pytest.raises(ValueError):
            percentile([1.0], q)


def test_percentiles_keys_and_generators() -> None:
    got = percentiles((float(v) for v in range(1, 101)), (50, 95, 99.9))
    assert got == pytest.approx({"p50": 50.5, "p95": 95.05, "p99.9": 99.901})
