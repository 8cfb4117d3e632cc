"""analysis.load: typed tidy trials from the files, clear errors, exact chain rebuild."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import chain_states, load_sessions, load_trials, to_draws
from analysis.load import burn_in_steps
from mcmcp import schema
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere


def _digest(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_loads_tree_participant_and_session_with_schema_dtypes(analysis_small_study):
    root = analysis_small_study
    before = _digest(root)
    trials = load_trials(root)
    assert list(trials.columns) == schema.header(3)
    assert {c: str(t) for c, t in trials.dtypes.items()} == schema.pandas_dtypes(3)
    assert sorted(trials["participant"].unique()) == ["sim001", "sim002", "sim003"]
    one = load_trials(root / "sub-sim002")
    ses = load_trials(root / "sub-sim002" / "ses-01")
    pd.testing.assert_frame_equal(one, ses)
    pd.testing.assert_frame_equal(
        one, trials[trials["participant"] == "sim002"].reset_index(drop=True))
    # 2 emotions x 4 chains x 120 steps + 2 x 20 catch trials per participant
    assert len(ses) == 2 * 4 * 120 + 40
    assert _digest(root) == before  # read-only


def test_load_sessions_metadata(analysis_small_study):
    sessions = load_sessions(analysis_small_study)
    assert list(sessions["participant"]) == ["sim001", "sim002", "sim003"]
    assert (sessions["gate_kind"] == "none").all() and sessions["gate_gamma"].isna().all()
    assert (sessions["emotions"] == "happy,sad").all()
    assert (sessions["agent_name"] == "latent").all()
    truth = sessions["ground_truth"].iloc[0]  # as mcmcp.simulate records it
    assert truth["kind"] == "file" and set(truth["densities"]) == {"happy", "sad"}


def test_chain_states_rebuild_the_recorded_chain_with_gate_steps(tmp_path, analysis_simulate):
    truth = {"happy": VMFMixture.single([0.0, 0.0, 1.0], 10.0)}
    gate = {"kind": "manual", "mean": [1.0, 0.0, 0.0], "kappa": 5.0, "gamma": 1.0}
    [folder] = analysis_simulate(tmp_path, ["sim001"], truth, seed=3, n_shown=50, gate=gate)
    trials = load_trials(folder)
    assert (trials["kind"] == "gate").sum() > 10
    steps = trials[trials["kind"].isin(["chain", "gate"])]
    assert (steps[steps["kind"] == "chain"].groupby("chain").size() == 50).all()
    states = chain_states(trials)
    for _, rows in trials[trials["kind"].isin(["chain", "gate"])].groupby("chain"):
        rows = rows.sort_values("iteration")
        ch = states[states["chain"] == rows["chain"].iloc[0]]
        x = ch[["x_0", "x_1", "x_2"]].to_numpy()
        cur = rows[schema.latent_columns("current", 3)].to_numpy(float)
        prop = rows[schema.latent_columns("proposal", 3)].to_numpy(float)
        acc = rows["accepted"].to_numpy(bool)
        # state t is the engine's current at iteration t; the last is where the last step went
        np.testing.assert_array_equal(x[:-1], cur)
        np.testing.assert_array_equal(x[-1], prop[-1] if acc[-1] else cur[-1])
        # screened-out proposals never move the chain
        gate_steps = np.flatnonzero(rows["kind"].to_numpy() == "gate") + 1
        np.testing.assert_array_equal(x[gate_steps], x[gate_steps - 1])
        lg = np.where(acc, rows["log_gate_proposal"], rows["log_gate_current"])
        np.testing.assert_allclose(ch["log_gate"].to_numpy(float)[1:], lg)
    # one state per step, shown or screened out, plus the start
    pd.testing.assert_series_equal(states.groupby("chain")["step"].max(),
                                   steps.groupby("chain").size(), check_names=False)


def test_burn_in_rule_and_draws(analysis_small_study):
    trials = load_trials(analysis_small_study)
    assert burn_in_steps(120) == 60 and burn_in_steps(120, 0.25) == 30
    assert burn_in_steps(120, 100) == 100 and burn_in_steps(50, 100) == 50
    draws = to_draws(trials)
    assert set(draws) == {"happy", "sad"}
    assert draws["happy"].shape == (12, 60, 3)
    assert to_draws(trials, 100)["sad"].shape == (12, 20, 3)
    np.testing.assert_allclose(np.linalg.norm(draws["sad"], axis=-1), 1.0)
    with pytest.raises(ValueError, match="fraction"):
        burn_in_steps(10, 1.5)


def _copy_session(src, dst):
    dst.mkdir(parents=True)
    for name in ("trials.csv", "session.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _set_cell(lines, line, column, value):
    names = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[names.index(column)] = value
    lines[line - 1] = ",".join(cells)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines.__setitem__(5, lines[5] + ",extra"),
         rf"line 6: {len(schema.header(3)) + 1} cells, the header has {len(schema.header(3))}"),
        (lambda lines: _set_cell(lines, 5, "session", "one"),
         r"line 5: column 'session' must be an integer, got 'one'"),
        (lambda lines: _set_cell(lines, 9, "accepted", "maybe"),
         r"line 9: column 'accepted' must be True/False, got 'maybe'"),
        (lambda lines: _set_cell(lines, 7, "current_1", "0.5x"),
         r"line 7: column 'current_1' must be a number, got '0.5x'"),
        (lambda lines: lines.__setitem__(0, lines[0].replace(",rt,", ",reaction,")),
         r"line 1: missing columns \['rt'\]"),
        (lambda lines: _set_cell(lines, 4, "kind", "bogus"), r"line 4: kind 'bogus'"),
    ],
)
def test_malformed_files_name_file_and_line(analysis_small_study, tmp_path, edit, message):
    folder = _copy_session(analysis_small_study / "sub-sim001" / "ses-01", tmp_path / "ses-01")
    lines = (folder / "trials.csv").read_text().splitlines()
    edit(lines)
    (folder / "trials.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message) as err:
        load_trials(folder)
    assert str(folder / "trials.csv") in str(err.value)


def test_torn_last_line_is_dropped_with_a_warning(analysis_small_study, tmp_path):
    folder = _copy_session(analysis_small_study / "sub-sim001" / "ses-01", tmp_path / "ses-01")
    full = load_trials(folder)
    path = folder / "trials.csv"
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # crash in the middle of the last row
    with pytest.warns(UserWarning, match=f"{path}: dropped the torn last line"):
        torn = load_trials(folder)
    pd.testing.assert_frame_equal(torn, full.iloc[:-1])


def test_missing_files_and_bad_json(analysis_small_study, tmp_path):
    with pytest.raises(FileNotFoundError, match="no session folders"):
        load_trials(tmp_path)
    folder = _copy_session(analysis_small_study / "sub-sim001" / "ses-01",
                           tmp_path / "sub-x" / "ses-01")
    (folder / "session.json").write_text('{"participant": "x",\n "session": }')
    with pytest.raises(ValueError, match=r"session.json, line 2: not valid JSON"):
        load_sessions(tmp_path)
    (folder / "trials.csv").unlink()
    with pytest.raises(FileNotFoundError, match=f"missing trials file: {folder / 'trials.csv'}"):
        load_trials(tmp_path)


def test_to_draws_warns_when_pooled_chains_differ_a_lot_in_length(tmp_path, analysis_simulate):
    """A short pilot pooled with a long study would cut every chain to the pilot's length."""
    truth = {"happy": VMFMixture.single(fibonacci_sphere(2, 3)[0], 20.0)}
    analysis_simulate(tmp_path, ["sim001"], truth, seed=1, n_shown=200)
    analysis_simulate(tmp_path, ["sim002"], truth, seed=2, n_shown=20)
    trials = load_trials(tmp_path)
    with pytest.warns(UserWarning, match="chains differ in length"):
        draws = to_draws(trials)
    assert draws["happy"].shape[1] <= 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_draws(trials[trials["participant"] == "sim001"])


# ----------------------------------------------------------------------------- robustness, scale


def test_non_utf8_session_json_error_names_the_file(analysis_small_study, tmp_path):
    folder = _copy_session(analysis_small_study / "sub-sim001" / "ses-01",
                           tmp_path / "sub-sim001" / "ses-01")
    path = folder / "session.json"
    path.write_bytes(b'{"participant": "sim001", "note": "caf\xe9"}')
    with pytest.raises(ValueError, match="not UTF-8") as err:
        load_sessions(tmp_path)
    assert str(path) in str(err.value)


def test_a_header_without_the_third_coordinate_is_refused_not_read_as_2d(analysis_small_study,
                                                                          tmp_path):
    folder = _copy_session(analysis_small_study / "sub-sim001" / "ses-01", tmp_path / "ses-01")
    path = folder / "trials.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.drop(columns=["current_2", "proposal_2"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"line 1: missing columns \['current_2', 'proposal_2'\] "
                                         r"\(its session.json records d = 3\)") as err:
        load_trials(folder)
    assert str(path) in str(err.value)


def test_columns_the_schema_gained_later_load_as_empty(analysis_small_study, tmp_path,
                                                       monkeypatch):
    """A file written before a column existed still loads; a first-release column may not go."""
    folder = _copy_session(analysis_small_study / "sub-sim001" / "ses-01", tmp_path / "ses-01")
    before = load_trials(folder)
    # columns the schema does not have yet (key and frame_rate, the example once, now exist)
    monkeypatch.setattr(schema, "_AFTER_LATENT", schema._AFTER_LATENT + (
        schema.Column("future_text", "string", "a text column added later"),
        schema.Column("future_number", "Float64", "a number column added later")))
    after = load_trials(folder)
    assert list(after.columns) == schema.header(3)
    assert after["future_text"].isna().all() and str(after["future_text"].dtype) == "string"
    assert after["future_number"].isna().all() and str(after["future_number"].dtype) == "Float64"
    pd.testing.assert_frame_equal(after[list(before.columns)], before)


def test_fast_reader_and_careful_reader_give_the_same_table(analysis_small_study, tmp_path):
    folder = _copy_session(analysis_small_study / "sub-sim002" / "ses-01", tmp_path / "ses-01")
    fast = load_trials(folder)
    lines = (folder / "trials.csv").read_text().splitlines()
    _set_cell(lines, 3, "session", "1.0")  # pyarrow refuses an integer written 1.0
    accepted = lines[0].split(",").index("accepted")
    _set_cell(lines, 4, "accepted", lines[3].split(",")[accepted].upper())  # and TRUE / FALSE
    (folder / "trials.csv").write_text("\n".join(lines) + "\n")
    pd.testing.assert_frame_equal(load_trials(folder), fast)


def test_parquet_cache_gives_the_same_trials_and_follows_changed_files(analysis_small_study,
                                                                       tmp_path):
    root = tmp_path / "data"
    for p in ("sim001", "sim002"):
        _copy_session(analysis_small_study / f"sub-{p}" / "ses-01", root / f"sub-{p}" / "ses-01")
    before = _digest(root)
    cache = tmp_path / "cache"
    plain = load_trials(root)
    pd.testing.assert_frame_equal(load_trials(root, cache=cache), plain)
    assert len(list(cache.glob("*.parquet"))) == 2
    pd.testing.assert_frame_equal(load_trials(root, cache=cache), plain)  # read from the cache
    assert _digest(root) == before  # nothing written next to the participants' data
    wanted = load_trials(root, cache=cache, columns=["participant", "rt"])
    assert list(wanted.columns) == ["participant", *schema.latent_columns("current", 3),
                                    *schema.latent_columns("proposal", 3), "rt"]
    pd.testing.assert_frame_equal(wanted, plain[list(wanted.columns)])
    path = root / "sub-sim002" / "ses-01" / "trials.csv"
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1].replace(",sim002,", ",sim002,", 1) + "\n")
    grown = load_trials(root, cache=cache)
    assert len(grown) == len(plain) + 1  # the changed file was read again, not the stale copy
