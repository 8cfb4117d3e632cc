"""A share of hits with its Clopper-Pearson 95% interval, as the benchmarks' tables print it."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def share(hits, digits: int = 3) -> str:
    """'0.950 [0.92, 0.97]': the share of true values in `hits` and its exact 95% interval."""
    hits = [bool(h) for h in hits]
    ci = binomtest(int(np.sum(hits)), len(hits)).proportion_ci(0.95)
    return f"{np.mean(hits):.{digits}f} [{ci.low:.2f}, {ci.high:.2f}]"
