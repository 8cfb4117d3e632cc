"""The trial schema: every writer's rows read back with pandas as the same typed values."""

import io

import numpy as np
import pandas as pd
import pytest

from mcmcp import schema


def test_numpy_scalars_round_trip_exactly_through_pandas():
    d = 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal(d)
    x /= np.linalg.norm(x)
    row = {
        "participant": "P001", "session": np.int64(1), "emotion": "happy", "kind": "chain",
        "chain": np.int64(2), "iteration": 7, "accepted": np.bool_(True), "rt": np.float32(0.5),
        "response": "left", "agent": 'say "hi", twice',
        **{f"current_{i}": x[i] for i in range(d)},
    }
    names = schema.header(d)
    text = ",".join(names) + "\n" + schema.format_row(row, names)
    df = pd.read_csv(io.StringIO(text), dtype=schema.pandas_dtypes(d))
    assert df.loc[0, "session"] == 1 and df.loc[0, "chain"] == 2
    assert bool(df.loc[0, "accepted"]) is True
    assert df.loc[0, "agent"] == 'say "hi", twice'
    np.testing.assert_array_equal(df[[f"current_{i}" for i in range(d)]].to_numpy(float)[0], x)
    assert pd.isna(df.loc[0, "trial"]) and pd.isna(df.loc[0, "proposal_0"])


def test_unknown_key_is_refused_not_dropped():
    with pytest.raises(KeyError, match="chosen"):
        schema.format_row({"chosen": True}, schema.header(3))


def test_header_has_d_coordinates_per_state():
    names = schema.header(2)
    assert schema.latent_dim(names) == 2
    assert schema.latent_columns("proposal", 2) == ["proposal_0", "proposal_1"]
    assert len(names) == len(set(names))


def test_codebook_explains_every_column():
    book = pd.read_csv(io.StringIO(schema.codebook(3)))
    assert book["column"].tolist() == schema.header(3)
    assert dict(zip(book["column"], book["dtype"], strict=True)) == schema.pandas_dtypes(3)
    assert book["meaning"].str.len().min() > 10


def test_lab_columns_are_appended_after_the_earlier_ones():
    names = schema.header(3)
    after = names[names.index("timestamp") + 1:]
    assert after[:6] == ["run", "key", "device", "experiment", "date", "frame_rate"]
    assert "identity" in after[6:]  # issue 11's child, appended later still


def test_gsp_columns_come_after_the_lab_columns():
    names = schema.header(3)
    gsp = ["paradigm", "gsp_points", "gsp_shift", "gsp_start", "gsp_choice",
           "direction_0", "direction_1", "direction_2"]
    assert names.index("frame_rate") < names.index("paradigm")
    assert [n for n in names if n in gsp] == gsp
    assert names.index("direction_2") < names.index("lease")
    assert schema.latent_dim(names) == 3


def test_shared_chain_columns_come_last():
    """Across-participant chains (issue 22) appended their columns after everything else, so
    files of the earlier schemas keep their column order."""
    assert schema.header(3)[-2:] == ["lease", "chain_step"]
