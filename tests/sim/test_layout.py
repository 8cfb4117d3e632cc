"""Columnar trial rows: format_columns writes exactly what format_row writes, row by row."""

import numpy as np
import pandas as pd
import pytest

from mcmcp.schema import format_columns, format_row, header


def test_format_columns_equals_format_row_for_every_kind_of_cell():
    rng = np.random.default_rng(0)
    n, names = 200, header(3)
    floats = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 17, n)
    floats[::7] = np.nan
    floats[3], floats[5], floats[11] = 1.0, -0.0, np.inf
    ints = rng.integers(0, 10**6, n)
    nullable = pd.array(ints, dtype="Int64")
    nullable[::5] = pd.NA
    flags = pd.array(rng.random(n) < 0.5, dtype="boolean")
    flags[1::4] = pd.NA
    words = np.array(rng.choice(["left", "right", None, 'say "hi", twice', "a\nb"], n),
                     dtype=object)
    columns = {"participant": "P01", "session": 1, "block": ints % 7, "row": np.arange(n),
               "trial": nullable, "current_0": floats, "current_1": rng.random(n),
               "kappa_proposal": pd.array(floats, dtype="Float64"), "accepted": flags,
               "correct": rng.random(n) < 0.3, "response": words, "gate_gamma": 0.5,
               "foil_emotion": list(words)}
    rows = [{k: (v if np.isscalar(v) else v[i]) for k, v in columns.items()} for i in range(n)]
    rows = [{k: (None if v is pd.NA else v) for k, v in r.items()} for r in rows]
    expected = "".join(format_row(r, names) for r in rows)
    assert format_columns(columns, n, names) == expected
    assert format_columns({}, 0, names) == ""
    with pytest.raises(KeyError, match="not trial-schema columns"):
        format_columns({"reaction": np.zeros(3)}, 3, names)
