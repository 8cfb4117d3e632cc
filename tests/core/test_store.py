"""Append-only participant files: layout, durability, typed reading, refusal to overwrite."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mcmcp import schema
from mcmcp.store import (
    SessionBusy,
    SessionStore,
    read_trials,
    session_dir,
    validate_participant_id,
)


def row(i: int, d: int = 3) -> dict:
    rng = np.random.default_rng(i)
    return {
        "participant": "P001", "session": 1, "block": 0, "emotion": "happy", "row": i,
        "trial": i + 1, "kind": "chain", "chain": i % 2, "iteration": i // 2,
        **{f"current_{k}": float(v) for k, v in enumerate(rng.standard_normal(d))},
        **{f"proposal_{k}": float(v) for k, v in enumerate(rng.standard_normal(d))},
        "kappa_proposal": 5.0, "left_role": "current", "right_role": "proposal",
        "response": "right", "chose_proposal": True, "accepted": i % 3 == 0, "rt": 0.5 + i,
        "agent": "human", "timestamp": "2024-01-01T00:00:00.000+00:00",
        "foil_emotion": 'a "quoted", text',
    }


def test_layout_and_round_trip(tmp_path):
    assert session_dir(tmp_path, "P001", 2) == tmp_path / "sub-P001" / "ses-02"
    store = SessionStore.create(tmp_path, "P001", 1, 3, {"config": {"name": "x"}})
    rows = [row(i) for i in range(5)]
    store.append(rows[0])
    store.append_many(rows[1:])
    store.finish(status="complete", refresh_rate=60.0)
    df = read_trials(store.trials_path)
    assert list(df.columns) == schema.header(3)
    assert str(df["accepted"].dtype) == "boolean" and str(df["trial"].dtype) == "Int64"
    for i, r in enumerate(rows):
        for key, value in r.items():
            assert df[key].iloc[i] == value, key  # floats round-trip exactly
    assert df["gap"].isna().all()
    meta = json.loads(store.session_path.read_text())
    assert meta["status"] == "complete" and meta["refresh_rate"] == 60.0
    assert meta["participant"] == "P001" and meta["d"] == 3 and meta["config"] == {"name": "x"}
    assert meta["start_time"] <= meta["end_time"]
    assert not list(store.folder.glob("*.tmp"))


def test_never_overwrites(tmp_path):
    store = SessionStore.create(tmp_path, "P001", 1, 3, {})
    store.append(row(0))
    store.close()
    with pytest.raises(FileExistsError, match="--resume"):
        SessionStore.create(tmp_path, "P001", 1, 3, {})
    again = SessionStore.resume(tmp_path, "P001", 1)
    again.append(row(1))
    again.close()
    assert again.read_rows()["row"].tolist() == [0, 1]
    assert len(json.loads(again.session_path.read_text())["resumed"]) == 1
    with pytest.raises(FileNotFoundError, match="without --resume"):
        SessionStore.resume(tmp_path, "P002", 1)


def test_torn_line_is_set_aside(tmp_path):
    store = SessionStore.create(tmp_path, "P001", 1, 3, {})
    store.append_many([row(0), row(1)])
    store.close()
    torn = schema.format_row(row(2), schema.header(3))[:25]
    with open(store.trials_path, "a") as f:
        f.write(torn)
    # still readable by pandas, but the last row is incomplete
    raw = pd.read_csv(store.trials_path, dtype=schema.pandas_dtypes(3))
    assert len(raw) == 3 and raw["timestamp"].iloc[-1] is pd.NA
    resumed = SessionStore.resume(tmp_path, "P001", 1)
    assert (resumed.folder / "trials.csv.partial").read_text() == torn + "\n"
    resumed.append(row(2))
    resumed.close()
    assert resumed.read_rows()["row"].tolist() == [0, 1, 2]


def test_gate_rows_of_an_unwritten_trial_are_set_aside(tmp_path):
    # an event (gate rows, then its trial) is one write; a crash or a full disk mid-write can
    # keep the gate rows whole and tear the trial: replaying those gate rows would move the
    # chain past proposals the resumed engine draws again
    store = SessionStore.create(tmp_path, "P001", 1, 3, {})
    store.append_many([row(0), row(1)])
    store.close()
    gates = [{**row(2 + k), "kind": "gate", "trial": None, "response": None} for k in range(2)]
    names = schema.header(3)
    tail = "".join(schema.format_row(r, names) for r in gates)
    torn = schema.format_row(row(4), names)[:30]
    with open(store.trials_path, "a") as f:
        f.write(tail + torn)
    opened = SessionStore.open(tmp_path, "P001", 1)
    assert opened.read_rows()["row"].tolist() == [0, 1]  # before anything is repaired
    opened.begin_run()
    assert (opened.folder / "trials.csv.partial").read_text() == tail + torn + "\n"
    opened.append(row(2))
    opened.close()
    assert read_trials(opened.trials_path)["row"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("pid", ["P001", "sub_7", "a-b", "X" * 32])
def test_valid_ids(pid):
    assert validate_participant_id(pid) == pid


@pytest.mark.parametrize("pid", ["", "../P1", "a/b", "a\\b", "..", "Jane Doe", "é", "X" * 33])
def test_invalid_ids(tmp_path, pid):
    with pytest.raises(ValueError, match="participant id"):
        validate_participant_id(pid)
    with pytest.raises(ValueError):
        SessionStore.create(tmp_path, pid, 1, 3, {})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("session", [0, 100, True, "1"])
def test_invalid_session_numbers(tmp_path, session):
    with pytest.raises(ValueError, match="session number"):
        session_dir(tmp_path, "P001", session)


def test_a_session_is_open_in_one_place_at_a_time(tmp_path):
    store = SessionStore.create(tmp_path, "P001", 1, 3, {"runs": [{"pid": 4242, "host": "h"}]})
    with pytest.raises(SessionBusy, match="process 4242 on h"):
        SessionStore.open(tmp_path, "P001", 1)  # a second open file description is refused
    store.close()  # what the kernel does for a process that dies
    again = SessionStore.open(tmp_path, "P001", 1)
    assert again.metadata["runs"][0]["pid"] == 4242
    again.close()


def test_open_writes_nothing_until_the_run_begins(tmp_path):
    store = SessionStore.create(tmp_path, "P001", 1, 3, {})
    store.append(row(0))
    store.close()
    with open(store.trials_path, "a") as f:
        f.write("P001,1,0,happy")  # torn by a crash
    before = {p.name: p.read_bytes() for p in store.folder.iterdir()}
    opened = SessionStore.open(tmp_path, "P001", 1)
    assert len(opened.read_rows()) == 1  # the torn line is not a row
    assert {p.name: p.read_bytes() for p in store.folder.iterdir()} == before
    opened.begin_run({"run": 2}, refresh_rate=60.0)
    opened.append(row(1))
    opened.close()
    meta = json.loads(store.session_path.read_text())
    assert meta["runs"] == [{"run": 2}] and meta["refresh_rate"] == 60.0
    assert read_trials(store.trials_path)["row"].tolist() == [0, 1]


def test_codebook_and_atomic_creation(tmp_path):
    store = SessionStore.create(tmp_path, "P001", 1, 2, {})
    store.close()
    book = pd.read_csv(store.folder / "codebook.csv")
    assert book["column"].tolist() == schema.header(2)
    assert book["dtype"].tolist() == [c.dtype for c in schema.columns(2)]
    assert not [p for p in store.folder.parent.iterdir() if p.name != "ses-01"]  # no temp left
    with pytest.raises(KeyError, match="chosen"):
        SessionStore.resume(tmp_path, "P001", 1).append({"chosen": 1})


def test_a_file_of_the_earlier_schema_keeps_its_columns(tmp_path):
    """A session started before the lab columns existed is resumed in its own header."""
    store = SessionStore.create(tmp_path, "P001", 1, 3, {})
    store.close()
    old = schema.header(3)[: schema.header(3).index("timestamp") + 1]
    store.trials_path.write_text(",".join(old) + "\n")
    again = SessionStore.resume(tmp_path, "P001", 1)
    again.append({**row(0), "key": "f", "device": "keyboard"})
    again.close()
    df = pd.read_csv(again.trials_path)
    assert list(df.columns) == old and df["rt"].iloc[0] == 0.5


def test_a_damaged_session_json_is_named(tmp_path):
    store = SessionStore.create(tmp_path, "P001", 1, 3, {})
    store.close()
    store.session_path.write_bytes('{"d": 3, "note": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match="session.json is damaged"):
        SessionStore.open(tmp_path, "P001", 1)
    store.session_path.write_text('{"d": 3}')  # the refusal released the lock: it opens now
    SessionStore.open(tmp_path, "P001", 1).close()
