"""Order statistics: the one percentile definition every report uses.

`percentile(values, q)` is **linear interpolation between closest ranks** (Hyndman & Fan type 7: numpy's
`percentile` default, R's `quantile` default, Excel's PERCENTILE.INC). With the n values sorted as
x[0] <= ... <= x[n-1] and q in [0, 100], the position is h = (n - 1) * q / 100 and the result is

    x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])

so p0 is the minimum, p100 the maximum, p50 the median (the mean of the two middle values for even n), and
p95 of [1, 2, 3, 4] is 3.85. Chosen over nearest rank because small samples (a `publish --wait` of a few
files, a 20-question eval set) then move smoothly instead of jumping from one sample to the next.

"freshness p95" from `publish --wait`, the eval reports, the generation report and the benches all come
from here, so one number means one thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

LATENCY_QUANTILES: tuple[int, ...] = (50, 95, 99)


def percentile(values: Iterable[float], q: float, *, empty: float = 0.0) -> float:
    """The q-th percentile (q in [0, 100]) of `values` by linear interpolation; `empty` when there are none.

    `empty` is 0.0 by default (reports store it as a number); a benchmark passes `math.nan` to say
    "no samples" instead of a fake zero.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    xs = sorted(float(v) for v in values)
    if not xs:
        return empty
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def percentiles(
    values: Iterable[float], qs: Sequence[float] = LATENCY_QUANTILES, *, empty: float = 0.0
) -> dict[str, float]:
    """`{"p50": ..., "p95": ..., "p99": ...}` (one key per q, `p<q>` with q as written: `p99.9`)."""
    xs = list(values)
    return {f"p{q:g}": percentile(xs, q, empty=empty) for q in qs}
